"""Reads a chitose lake the way analysts do and prints one JSON object.

usage: read_lake.py <lake-root-or-s3-url> [s3-endpoint] [--dump FILE]

Per table: DuckDB count, count(distinct event_id), the event ids, pyarrow
row count and column types (union_by_name, so files of several schema
versions read as one table). --dump writes every value of every row, one
JSON row per line, for the PII-leak scan. With an S3 URL, files are fetched through pyarrow's S3
filesystem (DuckDB's httpfs extension would need the internet) into a
temporary folder first.
"""
import json
import os
import sys
import tempfile

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

args = sys.argv[1:]
dump = None
if "--dump" in args:
    i = args.index("--dump")
    dump = open(args[i + 1], "w", encoding="utf-8")
    del args[i : i + 2]
root = args[0]
if root.startswith("s3://"):
    from pyarrow import fs

    s3 = fs.S3FileSystem(
        endpoint_override=args[1],
        access_key="test",
        secret_key="test",
        region="us-east-1",
        scheme="http",
    )
    bucket_prefix = root[len("s3://"):]
    local = tempfile.mkdtemp()
    for info in s3.get_file_info(fs.FileSelector(bucket_prefix, recursive=True)):
        if info.type == fs.FileType.File:
            rel = os.path.relpath(info.path, bucket_prefix)
            dest = os.path.join(local, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with s3.open_input_stream(info.path) as src, open(dest, "wb") as out:
                out.write(src.read())
    root = local

# Partition values are codes ('01' is Hokkaido): read them as strings, as the
# files themselves hold them.
HIVE = "{'prefecture': 'VARCHAR', 'event_month': 'VARCHAR'}"
PARTITIONING = ds.partitioning(
    pa.schema([("prefecture", pa.string()), ("event_month", pa.string())]), flavor="hive"
)

out = {}
base = os.path.join(root, "pseudonymized")
for table in sorted(os.listdir(base)) if os.path.isdir(base) else []:
    glob = os.path.join(base, table, "**", "*.parquet")
    con = duckdb.connect()
    n, distinct = con.execute(
        f"select count(*), count(distinct event_id) from read_parquet('{glob}', hive_partitioning = true, hive_types = {HIVE}, union_by_name = true)"
    ).fetchone()
    cols = [
        r[0] + ":" + r[1]
        for r in con.execute(
            f"describe select * from read_parquet('{glob}', hive_partitioning = true, hive_types = {HIVE}, union_by_name = true)"
        ).fetchall()
    ]
    files = con.execute(f"select count(*) from glob('{glob}')").fetchone()[0]
    dataset = ds.dataset(os.path.join(base, table), format="parquet", partitioning=PARTITIONING)
    types = {f.name: str(f.type) for f in dataset.schema}
    ids = [r[0] for r in con.execute(
        f"select event_id from read_parquet('{glob}', hive_partitioning = true, hive_types = {HIVE}, union_by_name = true) order by 1"
    ).fetchall()]
    if dump is not None:
        for row in dataset.to_table().to_pylist():
            dump.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    out[table] = {
        "event_ids": ids,
        "duckdb_rows": n,
        "distinct_event_ids": distinct,
        "pyarrow_rows": dataset.count_rows(),
        "files": files,
        "duckdb_columns": cols,
        "arrow_types": types,
    }
if dump is not None:
    dump.close()
print(json.dumps(out))
