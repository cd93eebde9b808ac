#!/usr/bin/env bash
# The Python tools of the tests (fastavro, pyarrow, DuckDB, jsonschema,
# moto server), pinned in tests/python/requirements.txt, in a virtualenv
# under $CHITOSE_TOOLS. Reinstalls only when the requirements change.
#   python.sh install   prints the interpreter's path
set -euo pipefail
source "$(dirname "$0")/common.sh"

VENV="$TOOLS/venv"
REQ="$REPO/tests/python/requirements.txt"

case "${1:-}" in
install)
    want="$(sha256sum "$REQ" | cut -d' ' -f1)"
    if [[ ! -x "$VENV/bin/python" ]] || [[ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$want" ]]; then
        log "installing Python test tools into $VENV"
        python3 -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ" >&2
        echo "$want" >"$VENV/.requirements"
    fi
    # Fail here, clearly, rather than in the middle of a test.
    "$VENV/bin/python" -c 'import fastavro, pyarrow, duckdb, deltalake, polars, jsonschema, moto' >&2
    echo "$VENV/bin/python"
    ;;
*)
    echo "usage: $0 install" >&2
    exit 2
    ;;
esac
