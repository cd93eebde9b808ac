"""Plants corrections into a chitose lake: the first N diagnosis rows are
withdrawn by rows of the `correction` table carrying their event_id, as
the sink writes them from a cancelled SS-MIX2 order. Appended to the
correction Delta table by delta-rs.

usage: plant_corrections.py LAKE_DIR N  → prints the withdrawn event ids
"""
import json
import sys

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

lake, n = sys.argv[1], int(sys.argv[2])
rows = DeltaTable(f"{lake}/pseudonymized/diagnosis").to_pyarrow_table().slice(0, n).to_pylist()
ids = [r["event_id"] for r in rows]
path = f"{lake}/pseudonymized/correction"
schema = DeltaTable(path).to_pyarrow_table().schema
out = [
    {f.name: r.get(f.name) for f in schema} | {"corrected_event_type": "diagnosis", "reason": "cancelled"}
    for r in rows
]
write_deltalake(path, pa.Table.from_pylist(out, schema=schema), mode="append")
print(json.dumps(ids))
