"""Validate NDJSON lines against the generated JSON Schema of the JSON form
with the stock jsonschema package; print "valid" or "invalid" per line."""

import json
import sys

from jsonschema import Draft202012Validator, FormatChecker


def main(schema_path, lines_path):
    schema = json.load(open(schema_path, encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    v = Draft202012Validator(schema, format_checker=FormatChecker())
    with open(lines_path, "rb") as f:
        for raw in f:
            try:
                doc = json.loads(raw)
            except ValueError:
                print("invalid")
                continue
            print("valid" if v.is_valid(doc) else "invalid")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
