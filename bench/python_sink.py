"""The baseline: what a data engineer would write instead of `chitose sink`.

A plain confluent-kafka consumer reads the pseudonymized topics, decodes
each single-object-encoded record with fastavro (schemaless reader, the
table's .avsc), collects rows per table and writes Parquet with pyarrow
(zstd), flushing every 100 000 rows per table. No exactly-once, no ledger,
no lake partitioning: the cheapest correct-looking version.

usage: python_sink.py BOOTSTRAP TOPIC_PREFIX EXPECTED_ROWS OUT_DIR SCHEMA_DIR
prints one JSON object: rows, wall_s, cpu_s, peak_rss_mb
"""
import io
import json
import os
import resource
import sys
import time

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
from confluent_kafka import Consumer

bootstrap, prefix, expected, out_dir, schema_dir = sys.argv[1:6]
expected = int(expected)
os.makedirs(out_dir, exist_ok=True)

schemas = {}
for name in os.listdir(schema_dir):
    table = name.split(".")[0]
    with open(os.path.join(schema_dir, name)) as f:
        schemas[table] = fastavro.parse_schema(json.load(f))

consumer = Consumer(
    {
        "bootstrap.servers": bootstrap,
        "group.id": f"python-baseline-{os.getpid()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    }
)
consumer.subscribe([f"^{prefix.replace('.', chr(92) + '.')}.+"])

start_wall = time.monotonic()
start_cpu = time.process_time()
rows = {t: [] for t in schemas}
parts = {t: 0 for t in schemas}
total = 0


def flush(table):
    if not rows[table]:
        return
    t = pa.Table.from_pylist(rows[table])
    pq.write_table(t, os.path.join(out_dir, f"{table}-{parts[table]:05}.parquet"), compression="zstd")
    parts[table] += 1
    rows[table] = []


idle_since = None
while total < expected:
    batch = consumer.consume(num_messages=10000, timeout=1.0)
    if not batch:
        idle_since = idle_since or time.monotonic()
        if time.monotonic() - idle_since > 30:
            break
        continue
    idle_since = None
    for m in batch:
        if m.error():
            continue
        table = m.topic().rsplit(".", 1)[1]
        rec = fastavro.schemaless_reader(io.BytesIO(m.value()[10:]), schemas[table], None)
        rows[table].append(rec)
        total += 1
        if len(rows[table]) >= 100_000:
            flush(table)
for t in schemas:
    flush(t)
consumer.close()
print(
    json.dumps(
        {
            "rows": total,
            "wall_s": time.monotonic() - start_wall,
            "cpu_s": time.process_time() - start_cpu,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )
)
