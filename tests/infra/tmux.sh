#!/usr/bin/env bash
# tmux, the terminal the `chitose up` test runs in (a real pty, captured
# as a person would see it). Installed from Debian's tmux package.
#   tmux.sh install   prints tmux's path
set -euo pipefail
source "$(dirname "$0")/common.sh"

case "${1:-}" in
install)
    if ! command -v tmux >/dev/null 2>&1; then
        log "installing Debian's tmux"
        export DEBIAN_FRONTEND=noninteractive
        # A fresh machine may have no package lists yet.
        if ! apt-get install -y -q tmux >&2 2>/dev/null; then
            apt-get update >&2
            apt-get install -y -q tmux >&2
        fi
    fi
    command -v tmux
    ;;
*)
    echo "usage: $0 install" >&2
    exit 2
    ;;
esac
