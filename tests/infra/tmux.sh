#!/usr/bin/env bash
# tmux, the terminal the `chitose up` test runs in (a real pty, captured
# as a person would see it). Installed from Debian's tmux package.
#   tmux.sh install   prints tmux's path
set -euo pipefail
source "$(dirname "$0")/common.sh"

case "${1:-}" in
install) debian_install tmux tmux ;;
*)
    echo "usage: $0 install" >&2
    exit 2
    ;;
esac
