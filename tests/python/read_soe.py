"""Decode chitose single-object encoded messages with stock fastavro.

Another team's consumer needs nothing but the shipped .avsc files: this
script loads every .avsc under a folder, computes each schema's CRC-64-AVRO
fingerprint with fastavro, and decodes each message with the schema its
header names. Input: length-prefixed messages (4-byte big-endian length).
Output: one JSON line per record; timestamps as epoch milliseconds, dates
as ISO strings.
"""

import datetime
import io
import json
import pathlib
import struct
import sys

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def load(folder):
    schemas = {}
    for path in sorted(pathlib.Path(folder).rglob("*.avsc")):
        parsed = parse_schema(json.loads(path.read_text(encoding="utf-8")), named_schemas={})
        fp = fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
        schemas[fp] = parsed
    return schemas


def plain(v):
    if isinstance(v, datetime.datetime):
        return (v - EPOCH) // datetime.timedelta(milliseconds=1)
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


def main(folder, messages):
    schemas = load(folder)
    data = pathlib.Path(messages).read_bytes()
    pos = 0
    out = sys.stdout
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        msg = data[pos + 4 : pos + 4 + n]
        pos += 4 + n
        if msg[:2] != b"\xc3\x01":
            sys.exit(f"message at byte {pos - n}: expected the C3 01 marker")
        fp = msg[2:10].hex()
        if fp not in schemas:
            sys.exit(f"message at byte {pos - n}: fingerprint {fp} matches no shipped .avsc")
        body = io.BytesIO(msg[10:])
        record = fastavro.schemaless_reader(body, schemas[fp])
        if body.read():
            sys.exit(f"message at byte {pos - n}: bytes left after the record")
        out.write(json.dumps(plain(record), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
