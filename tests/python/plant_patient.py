"""Plants one patient nobody else resembles into a chitose lake: a rare
diagnosis (A20.0, plague) in a small municipality (29449, Nosegawa, Nara)
that no other record has. The record is a copy of a real lake row with
those fields changed, appended to the diagnosis Delta table by delta-rs
(another writer than the sink, as a backfill would be), so the lake stays
consistent for `chitose lake verify` and the release's snapshot sees it.

usage: plant_patient.py LAKE_DIR  → prints the planted record as JSON
"""
import json
import sys

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

lake = sys.argv[1]
path = f"{lake}/pseudonymized/diagnosis"
table = DeltaTable(path).to_pyarrow_table()
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
write_deltalake(path, pa.Table.from_pylist([row], schema=table.schema), mode="append")
print(json.dumps({k: (str(v) if v is not None else None) for k, v in row.items()}))
