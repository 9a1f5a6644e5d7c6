#!/usr/bin/python3
"""Validates moe-bench JSON reports against reports/schema-v1.json (python3-jsonschema).

Usage: reports/validate_schema.py REPORT.json [...]; exit 0 when every report is valid.
"""
import json
import os
import sys

import jsonschema


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "schema-v1.json")) as f:
        schema = json.load(f)
    validator = jsonschema.Draft202012Validator(schema)
    bad = 0
    for path in sys.argv[1:]:
        with open(path) as f:
            report = json.load(f)
        errors = sorted(validator.iter_errors(report), key=lambda e: list(e.path))
        for e in errors[:5]:
            print("{}: {}: {}".format(path, "/".join(map(str, e.path)), e.message))
        bad += bool(errors)
        if not errors:
            print("{}: valid against schema v1".format(path))
    sys.exit(1 if bad or len(sys.argv) < 2 else 0)


if __name__ == "__main__":
    main()
