"""Plants corrections into a chitose lake: the first N diagnosis rows are
withdrawn by rows of the `correction` table carrying their event_id, as
the sink writes them from a cancelled SS-MIX2 order. Written as its own
file and committed through a ledger partition of its own (p998).

usage: plant_corrections.py LAKE_DIR N  → prints the withdrawn event ids
"""
import glob
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq

lake, n = sys.argv[1], int(sys.argv[2])
files = sorted(glob.glob(f"{lake}/pseudonymized/diagnosis/**/*.parquet", recursive=True))
ids, rows = [], []
for f in files:
    t = pq.ParquetFile(f).read()
    for r in t.to_pylist():
        if len(ids) == n:
            break
        ids.append(r["event_id"])
        rows.append(r)
common = ["event_id", "pseudonym", "pseudonym_key_id", "linkage_basis", "policy_profile",
          "policy_version", "prefecture", "event_month", "age_band", "sex"]
out = [{**{c: r.get(c) for c in common}, "corrected_event_type": "diagnosis", "reason": "cancelled"}
       for r in rows]
table = pa.Table.from_pylist(out)
folder = f"{lake}/pseudonymized/correction/prefecture={rows[0]['prefecture']}/event_month={rows[0]['event_month']}"
os.makedirs(folder, exist_ok=True)
path = f"{folder}/part-998-{0:020}-e0.parquet"
pq.write_table(table, path, compression="zstd")
ledger = f"{lake}/_chitose/ledger/correction/p998"
os.makedirs(ledger, exist_ok=True)
commit = {"seq": 0, "kind": "flush", "owner": "plant_corrections.py", "epoch": 0,
          "next_offset": len(out), "landed": [], "watermarks": {},
          "files": [{"key": os.path.relpath(folder, f"{lake}/pseudonymized/correction"),
                     "path": os.path.relpath(path, lake), "first": 0, "last": len(out) - 1,
                     "rows": len(out), "bytes": os.path.getsize(path)}],
          "at_ms": 0}
with open(f"{ledger}/{0:020}.json", "w") as f:
    json.dump(commit, f)
print(json.dumps(ids))
