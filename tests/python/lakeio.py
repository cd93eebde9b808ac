"""How the tests' DuckDB queries read a chitose Delta table: over the
snapshot's file list (what `delta_scan` reads; DuckDB's delta extension
cannot be downloaded on these machines), partition values from the
hive-style folders, as strings ('01' is Hokkaido).

    import lakeio; src = lakeio.duckdb_source("/lake/pseudonymized/diagnosis")
    con.sql(f"select count(*) from {src}")
"""
import json
import os

from deltalake import DeltaTable

HIVE = "{'prefecture': 'VARCHAR', 'event_month': 'VARCHAR'}"


def files(table_path):
    """The snapshot's data files (local paths); [] when the table is empty."""
    if not os.path.isdir(os.path.join(table_path, "_delta_log")):
        return []
    return [u.removeprefix("file://") for u in DeltaTable(table_path).file_uris()]


def duckdb_source(table_path):
    """A DuckDB table expression for a Delta table (None when it has no file)."""
    fs = files(table_path)
    if not fs:
        return None
    dt = DeltaTable(table_path)
    partitioned = bool(dt.metadata().partition_columns)
    hive = f"hive_partitioning = true, hive_types = {HIVE}" if partitioned else "hive_partitioning = false"
    return f"read_parquet({json.dumps(fs)}, {hive}, union_by_name = true)"
