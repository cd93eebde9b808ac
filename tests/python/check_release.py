"""Checks a chitose release with DuckDB, independently of the Rust code
that made it, and prints the facts as JSON for the test to compare with
the release report.

usage: check_release.py LAKE_DIR RELEASE_ID SPEC.toml

Per table of the spec:
- classes_below_k: released classes (all quasi-identifier columns) with
  fewer than k distinct pseudonyms — must be empty;
- k: the smallest class;
- rare_below: (area, period, value) groups of each rare rule with fewer
  than `threshold` distinct pseudonyms, value not null — must be empty;
- records, levels (records per `<column>_level`), nulls per rare column;
- records_in, nulls_in: the pseudonymized table;
- pseudonyms: the released pseudonyms; lake_overlap: how many of them are
  pseudonyms of the lake;
- columns: the released column names;
- values: the distinct released values of each quasi-identifier and rare
  column.
"""
import json
import sys
import tomllib

import duckdb

import lakeio

lake, release_id, spec_path = sys.argv[1:4]
with open(spec_path, "rb") as f:
    spec = tomllib.load(f)
con = duckdb.connect()


def one(sql):
    return con.sql(sql).fetchall()[0][0]


out = {}
for t in spec["table"]:
    name = t["name"]
    rel = lakeio.duckdb_source(f"{lake}/anonymized/{release_id}/{name}")
    src = lakeio.duckdb_source(f"{lake}/pseudonymized/{name}")
    qis = [q["column"] for q in t["qi"]]
    cols = ", ".join(qis)
    sizes = con.sql(
        f"select {cols}, count(distinct pseudonym) as n from {rel} group by all"
    ).fetchall()
    facts = {
        "records": one(f"select count(*) from {rel}"),
        "records_in": one(f"select count(*) from {src}"),
        "classes": len(sizes),
        "k": min((r[-1] for r in sizes), default=0),
        "classes_below_k": [list(map(str, r)) for r in sizes if r[-1] < spec["k"]],
        "columns": [r[0] for r in con.sql(f"describe select * from {rel}").fetchall()],
        "pseudonyms": sorted(r[0] for r in con.sql(f"select distinct pseudonym from {rel}").fetchall()),
        "lake_overlap": one(f"select count(*) from (select distinct pseudonym from {rel}) r "
            f"join (select distinct pseudonym from {src}) l using (pseudonym)"),
        "rare": {},
        "values": {
            c: sorted(
                str(r[0]) for r in con.sql(f"select distinct {c} from {rel}").fetchall()
            )
            for c in qis + [r["column"] for r in t.get("rare", [])]
        },
    }
    for r in t.get("rare", []):
        c = r["column"]
        below = con.sql(
            f"select {r['area']}, {r['period']}, {c}, count(distinct pseudonym) as n from {rel} "
            f"where {c} is not null group by all having n < {r['threshold']}"
        ).fetchall()
        levels = dict(
            con.sql(f"select {c}_level, count(*) from {rel} group by all").fetchall()
        )
        facts["rare"][c] = {
            "below": [list(map(str, x)) for x in below],
            "levels": levels,
            "nulls": one(f"select count(*) from {rel} where {c} is null"),
        }
    out[name] = facts
print(json.dumps(out))
