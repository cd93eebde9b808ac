#!/usr/bin/env bash
# The long chaos run: 20 rounds of kill -9 across ingest, transform and sink
# with one broker restart, on nisshi (SQLite) and moto, then the lake checked
# with DuckDB against what the generator sent (tests/it/chaos.rs).
#   tests/chaos.sh [ROUNDS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/infra/common.sh
trap 'tests/infra/moto.sh stop || true' EXIT
CHITOSE_TEST_PYTHON="$(tests/infra/python.sh install)"
tests/infra/nisshi.sh install
CHITOSE_TEST_S3="$(tests/infra/moto.sh start)"
export CHITOSE_TEST_PYTHON CHITOSE_TEST_S3
export CHITOSE_CHAOS_ROUNDS="${1:-20}"
[[ -n "${2:-}" ]] && export CHITOSE_CHAOS_SEED="$2"
cargo test --locked --test it chaos:: -- --nocapture
