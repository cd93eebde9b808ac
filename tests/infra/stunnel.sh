#!/usr/bin/env bash
# stunnel, the TLS terminator the Kafka TLS tests put in front of nisshi
# (nisshi speaks plain TCP only). Installed from Debian's stunnel4 package.
#   stunnel.sh install   prints stunnel's path
set -euo pipefail
source "$(dirname "$0")/common.sh"

case "${1:-}" in
install)
    if ! command -v stunnel >/dev/null 2>&1; then
        log "installing Debian's stunnel4"
        export DEBIAN_FRONTEND=noninteractive
        # A fresh machine may have no package lists yet.
        if ! apt-get install -y -q stunnel4 >&2 2>/dev/null; then
            apt-get update >&2
            apt-get install -y -q stunnel4 >&2
        fi
    fi
    command -v stunnel
    ;;
*)
    echo "usage: $0 install" >&2
    exit 2
    ;;
esac
