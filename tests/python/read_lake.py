"""Reads a chitose lake the way analysts do and prints one JSON object.

usage: read_lake.py <lake-root-or-s3-url> [s3-endpoint] [--dump FILE]

Each table under pseudonymized/ is a Delta table. Per table, through the
analysts' own readers and nothing of chitose's:
- delta-rs (Python `deltalake`): version, the snapshot's files, rows and
  column types (pyarrow), txn versions are not looked at;
- Polars `scan_delta`: rows;
- DuckDB over the snapshot's file list (its `delta` extension cannot be
  downloaded on these machines; `delta_scan` reads the same list): count,
  count(distinct event_id), the event ids, column types;
- files under the table that the snapshot does not list (invisible to
  every reader above).
--dump writes every value of every row, one JSON row per line, for the
PII-leak scan. With an S3 URL, delta-rs and Polars read the bucket
directly; DuckDB (its httpfs extension would need the internet) reads a
local copy.
"""
import json
import os
import sys
import tempfile

import duckdb
import polars as pl
from deltalake import DeltaTable

args = sys.argv[1:]
dump = None
if "--dump" in args:
    i = args.index("--dump")
    dump = open(args[i + 1], "w", encoding="utf-8")
    del args[i : i + 2]
root = args[0]
storage = None
remote_root = None
if root.startswith("s3://"):
    from pyarrow import fs

    endpoint = args[1]
    storage = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }
    s3 = fs.S3FileSystem(
        endpoint_override=endpoint,
        access_key="test",
        secret_key="test",
        region="us-east-1",
        scheme="http",
    )
    bucket_prefix = root[len("s3://"):].rstrip("/")
    remote_root = root.rstrip("/")
    local = tempfile.mkdtemp()
    for info in s3.get_file_info(fs.FileSelector(bucket_prefix, recursive=True)):
        if info.type == fs.FileType.File:
            rel = os.path.relpath(info.path, bucket_prefix)
            dest = os.path.join(local, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with s3.open_input_stream(info.path) as src, open(dest, "wb") as out:
                out.write(src.read())
    root = local

out = {}
base = os.path.join(root, "pseudonymized")
for table in sorted(os.listdir(base)) if os.path.isdir(base) else []:
    path = os.path.join(base, table)
    if not os.path.isdir(os.path.join(path, "_delta_log")):
        continue
    if remote_root is not None:
        uri = f"{remote_root}/pseudonymized/{table}"
        dt = DeltaTable(uri, storage_options=storage)
        polars_rows = pl.scan_delta(uri, storage_options=storage).select(pl.len()).collect().item()
        local_dt = DeltaTable(path)
    else:
        dt = DeltaTable(path)
        local_dt = dt
        polars_rows = pl.scan_delta(path).select(pl.len()).collect().item()
    arrow = dt.to_pyarrow_table()
    types = {f.name: str(f.type) for f in arrow.schema}
    # DuckDB over the snapshot's own file list; partition values come from
    # the hive-style folders, read as strings ('01' is Hokkaido).
    uris = [u.removeprefix("file://") for u in local_dt.file_uris()]
    listed = {os.path.realpath(u) for u in uris}
    on_disk = set()
    for d, _, fs_ in os.walk(path):
        if "_delta_log" in d:
            continue
        on_disk.update(os.path.realpath(os.path.join(d, f)) for f in fs_ if f.endswith(".parquet"))
    con = duckdb.connect()
    if uris:
        src = (
            f"read_parquet({json.dumps(uris)}, hive_partitioning = true, "
            "hive_types = {'prefecture': 'VARCHAR', 'event_month': 'VARCHAR'}, union_by_name = true)"
        )
        n, distinct = con.execute(f"select count(*), count(distinct event_id) from {src}").fetchone()
        cols = [r[0] + ":" + r[1] for r in con.execute(f"describe select * from {src}").fetchall()]
        ids = [r[0] for r in con.execute(f"select event_id from {src} order by 1").fetchall()]
    else:
        n, distinct, cols, ids = 0, 0, [], []
    if dump is not None:
        for row in arrow.to_pylist():
            dump.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    out[table] = {
        "version": dt.version(),
        "event_ids": ids,
        "duckdb_rows": n,
        "distinct_event_ids": distinct,
        "pyarrow_rows": arrow.num_rows,
        "polars_rows": polars_rows,
        "files": len(uris),
        "unreferenced_files": len(on_disk - listed),
        "duckdb_columns": cols,
        "arrow_types": types,
    }
if dump is not None:
    dump.close()
print(json.dumps(out))
