#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/) for SECONDS (default 20) starting from
# its committed seed corpus, copied so the committed seeds stay as reviewed.
# A crash fails the run and leaves its input in fuzz/artifacts/<target>/.
# cargo-fuzz is installed once into $CHITOSE_TOOLS; libFuzzer's
# instrumentation flags are nightly-only, so the machine's stable toolchain
# runs them with RUSTC_BOOTSTRAP=1. No sanitizer: the code forbids unsafe.
#   tests/fuzz.sh [SECONDS]
#   tests/fuzz.sh install    only install cargo-fuzz
set -euo pipefail
source "$(dirname "$0")/infra/common.sh"
secs="${1:-20}"
CARGO_FUZZ="$TOOLS/cargo-fuzz/bin/cargo-fuzz"
if [[ ! -x "$CARGO_FUZZ" ]]; then
    log "installing cargo-fuzz into $TOOLS/cargo-fuzz"
    cargo install cargo-fuzz --version 0.13.2 --locked --root "$TOOLS/cargo-fuzz" >&2
fi
[[ "$secs" == install ]] && exit 0
cd "$REPO/fuzz"
for target in json_to_avro soe_decode; do
    work="$(mktemp -d)"
    cp corpus/"$target"/* "$work"/
    log "$target: ${secs} s from $(ls "$work" | wc -l) seeds"
    out="$work.log"
    if ! RUSTC_BOOTSTRAP=1 "$CARGO_FUZZ" fuzz run --sanitizer none "$target" "$work" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$out" 2>&1; then
        tail -40 "$out" >&2
        log "$target: FAILED (input kept in fuzz/artifacts/$target/)"
        exit 1
    fi
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb|^Done" "$out" >&2 || true
    rm -rf "$work" "$out"
done
