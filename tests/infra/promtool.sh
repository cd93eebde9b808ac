#!/usr/bin/env bash
# promtool (Prometheus' rule and metrics checker), taken from Debian's
# `prometheus` package without installing the server: downloaded once,
# unpacked into $CHITOSE_TOOLS/promtool, cached.
#   promtool.sh install   prints promtool's path
set -euo pipefail
source "$(dirname "$0")/common.sh"

DIR="$TOOLS/promtool"
BIN="$DIR/usr/bin/promtool"

case "${1:-}" in
install)
    if [[ ! -x "$BIN" ]]; then
        log "downloading Debian's prometheus package for promtool"
        tmp="$(mktemp -d)"
        trap 'rm -rf "$tmp"' EXIT
        # A fresh machine may have no package lists yet.
        if ! (cd "$tmp" && apt-get download prometheus >&2 2>/dev/null); then
            apt-get update >&2
            (cd "$tmp" && apt-get download prometheus >&2)
        fi
        rm -rf "$DIR"
        mkdir -p "$DIR"
        dpkg-deb -x "$tmp"/prometheus_*.deb "$DIR"
        find "$DIR" -mindepth 1 -maxdepth 1 ! -name usr -exec rm -rf {} +
    fi
    "$BIN" --version >/dev/null
    echo "$BIN"
    ;;
*)
    echo "usage: $0 install" >&2
    exit 2
    ;;
esac
