"""An independent oracle for a chitose release: DuckDB and plain Python,
none of the Rust code that made it. Prints the facts as JSON for the test
to compare with the release report.

usage: check_release.py LAKE_DIR RELEASE_ID SPEC.toml [TRUTH.json]

TRUTH maps lake pseudonyms to the people the test planted (ground truth,
not the release's union–find). Every other pseudonym's person comes from a
union–find written here over every lake table's `pseudonym` and
`linkage_pseudonyms`.

People are counted from the lake side: the algorithm docs/release.md
states is written again here, in Python, over the lake rows of the
snapshot the report names, at the report's levels (age bands, periods,
ladders; rare values rolled up within their class; groups below k or ℓ
suppressed), with people from the ground truth. Every group it predicts
must hold exactly as many rows as the released table's (`mismatched` lists
those that do not), so its people counts are the release's. Per table:
- k: the smallest released group (every qi and every rare column as
  released) in people; classes_below_k: groups below the spec's k;
- rare[c].below: (class, value) groups with fewer than `threshold` people,
  value not null; levels: records per `<c>_level`; nulls;
- l: per sensitive attribute, the fewest distinct values in a group;
- records, records_in, columns, values, pseudonyms, lake_overlap;
- order: per qi, the share of adjacent released rows with equal values,
  what a random order gives (Σ p²), and the lake's read order.
"""
import collections
import json
import os
import sys
import tomllib

import duckdb
from deltalake import DeltaTable

import lakeio

lake, release_id = sys.argv[1], sys.argv[2]
with open(sys.argv[3], "rb") as f:
    spec = tomllib.load(f)
truth = {}
if len(sys.argv) > 4:
    with open(sys.argv[4]) as f:
        truth = json.load(f)["people"]
with open(f"{lake}/anonymized/{release_id}/release-report.json") as f:
    report = json.load(f)
con = duckdb.connect()


def one(sql):
    return con.sql(sql).fetchall()[0][0]


# --- people: ground truth first, else a union-find over the whole lake ---
parent = {}


def find(x):
    parent.setdefault(x, x)
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


def union(a, b):
    ra, rb = find(a), find(b)
    if ra != rb:
        parent[ra] = rb


root = f"{lake}/pseudonymized"
for t in sorted(os.listdir(root)):
    if not os.path.isdir(f"{root}/{t}/_delta_log"):
        continue
    dt = DeltaTable(f"{root}/{t}")
    cols = [c for c in ("pseudonym", "linkage_pseudonyms") if c in dt.schema().to_arrow().names]
    if "pseudonym" not in cols:
        continue
    tab = dt.to_pyarrow_table(columns=cols).to_pydict()
    links = tab.get("linkage_pseudonyms", [None] * len(tab["pseudonym"]))
    for p, ls in zip(tab["pseudonym"], links):
        if p in truth:
            continue
        find(p)
        for l in (ls or "").split():
            union(p, l)


def person(p):
    return ("truth", truth[p]) if p in truth else ("uf", find(p))


# --- the hierarchies, as docs/release.md states them ---
def age_band(age, width, top):
    if age >= top:
        return f"{top}+"
    lo = max(age, 0) // width * width
    return f"{lo}+" if lo + width > top else f"{lo}-{lo + width - 1}"


def period(v, p):
    y, m = v[:4], int(v[5:7])
    return {"quarter": f"{y}-Q{(m - 1) // 3 + 1}", "half": f"{y}-H{(m - 1) // 6 + 1}", "year": y}[p]


def text(v):
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def qi_label(q, row, level, top):
    if level == top:
        return "*"
    v = row[q["column"]]
    if level == 0:
        return text(v)
    if "age_bands" in q:
        return None if v is None else age_band(int(v), q["age_bands"][level - 1], q.get("top_age", 90))
    if "periods" in q:
        return None if v is None else period(v, q["periods"][level - 1])
    return text(row[q["ladder"][level - 1]])


def level_name(column, ladder, level):
    return column if level == 0 else ladder[level - 1]


def withdrawn(table):
    path = f"{root}/correction"
    if not os.path.isdir(f"{path}/_delta_log"):
        return set()
    c = DeltaTable(path).to_pyarrow_table(columns=["event_id", "corrected_event_type"]).to_pydict()
    return {e for e, t in zip(c["event_id"], c["corrected_event_type"]) if t == table}


def adjacency(values):
    if len(values) < 2:
        return None
    return sum(a == b for a, b in zip(values, values[1:])) / (len(values) - 1)


out = {}
for t in spec["table"]:
    name = t["name"]
    tr = next(x for x in report["tables"] if x["table"] == name)
    rel = lakeio.duckdb_source(f"{lake}/anonymized/{release_id}/{name}")
    qis = t["qi"]
    rares = t.get("rare", [])
    qcols = [q["column"] for q in qis]
    rcols = [r["column"] for r in rares]
    key_cols = qcols + [c for r in rcols for c in (r, f"{r}_level")]
    released = con.sql(f"select * from {rel}").to_arrow_table().to_pydict()
    n_rel = len(released[key_cols[0]])
    rel_rows = [tuple(text(released[c][i]) for c in key_cols) for i in range(n_rel)]
    rel_count = collections.Counter(rel_rows)
    # The lake rows the release read (its snapshot, withdrawals left out).
    levels = {g["column"]: (g["level"], g["of"]) for g in tr["generalization"]}
    dt = DeltaTable(f"{root}/{name}", version=tr["snapshot"]["version"])
    names = dt.schema().to_arrow().names
    need = set(qcols) | {"pseudonym", "event_id"}
    for q in qis:
        need |= set(q.get("ladder", []))
    for r in rares:
        need |= {r["column"], *r.get("ladder", [])}
    need |= set(t.get("attributes", []))
    lake_tab = dt.to_pyarrow_table(columns=sorted(c for c in need if c in names)).to_pylist()
    gone = withdrawn(name)
    lake_rows = [r for r in lake_tab if r["event_id"] not in gone]
    # The documented algorithm, written again here: classes of k people;
    # each rare rule rolled up within (class, labels before it) to a label
    # of max(threshold, k) people, else null; groups below k, or below l
    # distinct values of a sensitive attribute, suppressed.
    k = spec["k"]
    ell = t.get("l")
    by_class = collections.defaultdict(list)
    for row in lake_rows:
        for c in need:
            row.setdefault(c, None)
        row["_person"] = person(row["pseudonym"])
        by_class[tuple(qi_label(q, row, *levels[q["column"]]) for q in qis)].append(row)
    work = []
    for key, rows in by_class.items():
        if len({r["_person"] for r in rows}) >= k:
            work.append((key, rows))
    for r in rares:
        ladder = r.get("ladder", [])
        cols = [r["column"]] + ladder
        thr = max(r["threshold"], k)
        nxt = collections.defaultdict(list)
        for key, rows in work:
            pending = [x for x in rows if x[r["column"]] is not None]
            for x in rows:
                if x[r["column"]] is None:
                    nxt[key + (None, "suppressed")].append(x)
            for lvl, col in enumerate(cols):
                people = collections.defaultdict(set)
                for x in pending:
                    if x[col] is not None:
                        people[text(x[col])].add(x["_person"])
                keep = []
                for x in pending:
                    lab = text(x[col])
                    if lab is not None and len(people[lab]) >= thr:
                        nxt[key + (lab, level_name(r["column"], ladder, lvl))].append(x)
                    else:
                        keep.append(x)
                pending = keep
            for x in pending:
                nxt[key + (None, "suppressed")].append(x)
        work = list(nxt.items())
    groups = {}
    for key, rows in work:
        people = {x["_person"] for x in rows}
        if len(people) < k:
            continue
        if ell and any(
            len({text(x[a]) for x in rows if x[a] is not None}) < ell for a in t.get("sensitive", [])
        ):
            continue
        groups[key] = [len(rows), people]
    mismatched = [
        [list(g), rel_count.get(g, 0), groups[g][0] if g in groups else 0]
        for g in set(rel_count) | set(groups)
        if rel_count.get(g, 0) != (groups[g][0] if g in groups else 0)
    ]
    people = {g: len(v[1]) for g, v in groups.items()}
    facts = {
        "records": n_rel,
        "records_in": len(lake_rows),
        "groups": len(rel_count),
        "mismatched": mismatched,
        "k": min(people.values(), default=0),
        "classes_below_k": [list(map(str, g)) + [n] for g, n in people.items() if n < spec["k"]],
        "columns": list(released.keys()),
        "pseudonyms": sorted(set(released.get("pseudonym", []))),
        "lake_overlap": 0,
        "rare": {},
        "l": {},
        "values": {c: sorted({str(v) for v in released[c]}) for c in qcols + rcols},
        "order": {},
    }
    if "pseudonym" in released:
        lake_ps = {r["pseudonym"] for r in lake_tab}
        facts["lake_overlap"] = len(set(released["pseudonym"]) & lake_ps)
    for i, r in enumerate(rares):
        c, thr = r["column"], r["threshold"]
        # (class, value): the class is every qi; the value as released.
        by = collections.defaultdict(set)
        for k, g in groups.items():
            if k[len(qcols) + 2 * i] is not None:
                by[k[: len(qcols)] + (k[len(qcols) + 2 * i], k[len(qcols) + 2 * i + 1])] |= g[1]
        facts["rare"][c] = {
            "below": [list(map(str, k)) for k, ps in by.items() if len(ps) < thr],
            "levels": dict(collections.Counter(released[f"{c}_level"])),
            "nulls": sum(v is None for v in released[c]),
        }
    for s in t.get("sensitive", []):
        distinct = collections.defaultdict(set)
        for i in range(n_rel):
            if released[s][i] is not None:
                distinct[rel_rows[i]].add(text(released[s][i]))
        facts["l"][s] = min((len(v) for v in distinct.values()), default=0)
    for c in qcols:
        vals = [text(v) for v in released[c]]
        counts = collections.Counter(vals)
        facts["order"][c] = {
            "released": adjacency(vals),
            "random": sum((n / len(vals)) ** 2 for n in counts.values()) if vals else None,
            "lake": adjacency([text(r[c]) for r in lake_tab]),
        }
    out[name] = facts
print(json.dumps(out))
