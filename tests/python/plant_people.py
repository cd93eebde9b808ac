"""Plants the release attacks of docs/release.md into a chitose lake's
diagnosis table (appended by delta-rs, as a backfill would be), in two
residence prefectures no generated record has:

- person P under four pseudonyms, each with the `linkage_pseudonyms` the
  transform writes (insurance as sent; a FHIR bundle without Coverage,
  kana basis; a new insurer at 75; the same after a key rotation, both
  keys loaded), and people B and C: five pseudonyms, three people, alike
  on every quasi-identifier (`first`);
- in `second`: five men with C50.9, five women with J06.9, one woman
  (the target) with C50.9 — common in the prefecture, unique among the
  women — and one woman with J06.9 who died (deaths are public).

usage: plant_people.py LAKE_DIR  → prints {"people": {pseudonym: person},
"first": pref, "second": pref, "rows": n} (the ground truth)
"""
import json
import sys

import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

lake = sys.argv[1]
path = f"{lake}/pseudonymized/diagnosis"
table = DeltaTable(path).to_pyarrow_table()
used = set(table.column("residence_prefecture").to_pylist())
free = [p for p in ["47", "46", "45", "44", "43", "42", "41", "40"] if p not in used]
first, second = free[0], free[1]
template = table.slice(0, 1).to_pylist()[0]


def name(tag):
    # A base32-looking value of a pseudonym's length.
    return (tag + "x" * 52)[:52].replace("_", "y")


people = {}
rows = []


def row(tag, person, links, pref, sex, code, outcome):
    p = name(tag)
    people[p] = person
    r = dict(template)
    r.update(
        event_id=f"planted-{len(rows):04d}",
        pseudonym=p,
        linkage_pseudonyms=" ".join(sorted(name(x) for x in links)),
        residence_prefecture=pref,
        residence_municipality_code=f"{pref}201",
        sex=sex,
        age_at_event=40,
        icd10_code=code,
        icd10_3char=code[:3],
        icd10_block={"C50": "C50-C50", "J06": "J00-J06"}[code[:3]],
        icd10_chapter={"C": "II", "J": "X"}[code[0]],
        outcome=outcome,
        source_partition=998,
        source_offset=len(rows),
    )
    rows.append(r)


# P: insurance A; no Coverage (its pseudonym is the kana one); insurer B
# at 75; insurer B after a rotation to key 2 (both keys loaded).
row("pins_a_k1", "P", ["pins_a_k1", "pkana_k1", "phub_k1"], first, "female", "J06.9", "cured")
row("pkana_k1", "P", ["pkana_k1", "phub_k1"], first, "female", "J06.9", "cured")
row("pins_b_k1", "P", ["pins_b_k1", "pkana_k1", "phub_k1"], first, "female", "J06.9", "cured")
row(
    "pins_b_k2",
    "P",
    ["pins_b_k1", "pins_b_k2", "pkana_k1", "pkana_k2", "phub_k1", "phub_k2"],
    first,
    "female",
    "J06.9",
    "cured",
)
for who in ["b", "c"]:
    row(f"q{who}_ins", who.upper(), [f"q{who}_ins", f"q{who}_kana"], first, "female", "J06.9", "cured")
for i in range(5):
    row(f"m{i}_ins", f"M{i}", [f"m{i}_ins"], second, "male", "C50.9", "cured")
    row(f"w{i}_ins", f"W{i}", [f"w{i}_ins"], second, "female", "J06.9", "cured")
row("target_ins", "TARGET", ["target_ins"], second, "female", "C50.9", "cured")
row("dead_ins", "DEAD", ["dead_ins"], second, "female", "J06.9", "died")
write_deltalake(path, pa.Table.from_pylist(rows, schema=table.schema), mode="append")
print(json.dumps({"people": people, "first": first, "second": second, "rows": len(rows)}))
