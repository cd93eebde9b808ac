"""Re-identification attacks on a chitose lake, as docs/privacy.md states
them, computed with DuckDB over the lake's Parquet files (not with
chitose's code).

usage: attacks.py <lake-root> <truth.json>

truth.json maps each lake event id (the keyed hash, computed by the test
from the key it generated) to what the attacker is assumed to know or what
the evaluation needs: {"person", "real_date", "birth_date"}. The truth is
used only to (a) give the attacker the knowledge the attack assumes (a
target's birth date) and (b) score the result; the attacks themselves read
only the lake.

Prints one JSON object:
  rows, persons, columns (name -> type, all tables),
  shift: per person the true offset (lake date - real date) and its
         consistency, what each shift attack estimates;
  birth: per person the candidate birth dates each birth-date attack keeps;
  control: the same attacks run on values made with the rule chitose used
           before (exact age at the exact date, wall-clock transformed_at),
           from the same truth - proof that the attacks work.
"""
import datetime as dt
import json
import os
import sys

import duckdb

import lakeio

root, truth_path = sys.argv[1], sys.argv[2]
truth = json.load(open(truth_path, encoding="utf-8"))

HIVE = "{'prefecture': 'VARCHAR', 'event_month': 'VARCHAR'}"
base = os.path.join(root, "pseudonymized")
con = duckdb.connect()
rows = []
columns = {}
for table in sorted(os.listdir(base)):
    src = lakeio.duckdb_source(os.path.join(base, table))
    if src is None:
        continue
    for name, typ, *_ in con.execute(f"describe select * from {src}").fetchall():
        columns[name] = typ
    has_ts = "transformed_at" in [r[0] for r in con.execute(f"describe select * from {src}").fetchall()]
    ts = "transformed_at" if has_ts else "null"
    for r in con.execute(
        f"select event_id, pseudonym, event_date, birth_year, age_at_event, {ts} from {src}"
    ).fetchall():
        rows.append(r)


def exact_age(birth, day):
    a = day.year - birth.year
    if (day.month, day.day) < (birth.month, birth.day):
        a -= 1
    return min(a, 90)


def calendar_age(birth, day):
    return min(day.year - birth.year, 90)


# The attacker's view, grouped by pseudonym; the truth says whose it is.
by_person = {}
for event_id, pseudonym, event_date, birth_year, age, transformed_at in rows:
    t = truth.get(event_id)
    if t is None:
        continue
    by_person.setdefault(t["person"], []).append(
        dict(
            pseudonym=pseudonym,
            date=event_date,
            birth_year=birth_year,
            age=age,
            transformed_at=transformed_at,
            real=dt.date.fromisoformat(t["real_date"]),
            birth=dt.date.fromisoformat(t["birth_date"]),
            streamed=t.get("streamed", False),
        )
    )

SHIFTS = range(-30, 31)


def birth_candidates(recs, rule):
    """Birth dates consistent with every row's (birth_year, age, date)."""
    years = {r["birth_year"] for r in recs if r["birth_year"] is not None}
    if len(years) > 1:
        return []
    if years:
        span = [years.pop()]
    else:
        # Top-coded: any year that makes every age 90+.
        span = range(1890, min(r["date"].year for r in recs) - 89)
    out = []
    for y in span:
        d = dt.date(y, 1, 1)
        while d.year == y:
            if all(rule(d, r["date"]) == r["age"] for r in recs):
                out.append(d)
            d += dt.timedelta(days=1)
    return out


def shift_candidates(recs, birth, rule):
    """Offsets s consistent with every row, given the target's birth date:
    the age the lake shows must be the rule's age at (lake date - s)."""
    return [
        s
        for s in SHIFTS
        if all(rule(birth, r["date"] - dt.timedelta(days=s)) == r["age"] for r in recs)
    ]


def transformed_at_estimate(recs):
    """For streamed records the transform's clock is the real date:
    lake date - date(transformed_at) is the offset."""
    vals = [
        (r["date"] - r["transformed_at"].date()).days
        for r in recs
        if r["transformed_at"] is not None and r["streamed"]
    ]
    return max(vals) if vals else None


report = {"rows": len(rows), "persons": len(by_person), "columns": columns, "shift": {}, "birth": {}, "control": {}}
for person, recs in sorted(by_person.items()):
    offsets = sorted({(r["date"] - r["real"]).days for r in recs})
    birth = recs[0]["birth"]
    report["shift"][person] = {
        "offsets": offsets,
        "pseudonyms": len({r["pseudonym"] for r in recs}),
        "records": len(recs),
        "transformed_at_estimate": transformed_at_estimate(recs),
        "age_step_candidates": len(shift_candidates(recs, birth, exact_age)),
        # The documented rule takes the age on the shifted date (the lake's
        # own): an offset s fits when every row's age is the calendar-year
        # age at the lake date, whatever s is.
        "age_step_candidates_documented_rule": len(
            [s for s in SHIFTS if all(calendar_age(birth, r["date"]) == r["age"] for r in recs)]
        ),
    }
    exact = birth_candidates(recs, exact_age)
    calendar = birth_candidates(recs, calendar_age)
    report["birth"][person] = {
        "exact_rule": len(exact),
        "exact_rule_has_truth": birth in exact,
        "documented_rule": len(calendar),
        "documented_rule_has_truth": birth in calendar,
        "ages_follow_the_year_only": all(
            r["age"] == calendar_age(dt.date(r["birth_year"], 1, 1), r["date"])
            for r in recs
            if r["birth_year"] is not None
        ),
    }
    # Control: the values chitose wrote before (exact age at the real date
    # for the unshifted zone, at the shifted date's source for the shifted
    # one; the transform's wall clock for streamed records), same truth.
    shift = offsets[0]
    old = [
        dict(r, age=exact_age(birth, r["real"]), transformed_at=dt.datetime.combine(r["real"], dt.time(12)))
        for r in recs
    ]
    report["control"][person] = {
        "birth_exact_rule": len(birth_candidates(old, exact_age)) if shift == 0 else None,
        "age_step_candidates": len(shift_candidates(old, birth, exact_age)),
        "transformed_at_estimate": transformed_at_estimate(old),
    }
print(json.dumps(report, default=str))
