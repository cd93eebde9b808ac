"""Plants one patient nobody else resembles into a chitose lake: a rare
diagnosis (A20.0, plague) in a small municipality (29449, Nosegawa, Nara)
that no other record has. The record is a copy of a real lake row with
those fields changed, written as its own file and committed through a
ledger partition of its own (p999), so the lake stays consistent for
`chitose lake verify` and the release's snapshot sees it.

usage: plant_patient.py LAKE_DIR  → prints the planted record as JSON
"""
import glob
import json
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq

lake = sys.argv[1]
files = sorted(glob.glob(f"{lake}/pseudonymized/diagnosis/**/*.parquet", recursive=True))
src = files[0]
# ParquetFile, not read_table: no partition columns guessed from the path.
table = pq.ParquetFile(src).read()
row = table.slice(0, 1).to_pylist()[0]
row.update(
    event_id="planted-0001",
    pseudonym="plantedpatient" + "a" * 38,
    residence_municipality_code="29449",
    residence_prefecture="29",
    icd10_code="A20.0",
    icd10_3char="A20",
    icd10_block="A20-A28",
    icd10_block_name="Certain zoonotic bacterial diseases",
    icd10_chapter="I",
    icd10_chapter_name="Certain infectious and parasitic diseases",
    source_partition=999,
    source_offset=0,
)
planted = pa.Table.from_pylist([row], schema=table.schema)
folder = os.path.dirname(src)
key = os.path.relpath(folder, f"{lake}/pseudonymized/diagnosis")
path = f"{folder}/part-999-{0:020}-e0.parquet"
pq.write_table(planted, path, compression="zstd")
rel = os.path.relpath(path, lake)
ledger = f"{lake}/_chitose/ledger/diagnosis/p999"
os.makedirs(ledger, exist_ok=True)
commit = {
    "seq": 0,
    "kind": "flush",
    "owner": "plant_patient.py",
    "epoch": 0,
    "next_offset": 1,
    "landed": [],
    "watermarks": {},
    "files": [
        {
            "key": key,
            "path": rel,
            "first": 0,
            "last": 0,
            "rows": 1,
            "bytes": os.path.getsize(path),
        }
    ],
    "at_ms": 0,
}
with open(f"{ledger}/{0:020}.json", "w") as f:
    json.dump(commit, f)
print(json.dumps({k: (str(v) if v is not None else None) for k, v in row.items()}))
