#!/usr/bin/env bash
# stunnel, the TLS terminator the Kafka TLS tests put in front of nisshi
# (nisshi speaks plain TCP only). Installed from Debian's stunnel4 package.
#   stunnel.sh install   prints stunnel's path
set -euo pipefail
source "$(dirname "$0")/common.sh"

case "${1:-}" in
install) debian_install stunnel4 stunnel ;;
*)
    echo "usage: $0 install" >&2
    exit 2
    ;;
esac
