#!/usr/bin/env bash
# moto server: a real S3 API on loopback (it honours If-None-Match, which
# the sink's conditional puts rely on; it does not check signatures).
#   moto.sh start   prints the endpoint URL
#   moto.sh stop
set -euo pipefail
source "$(dirname "$0")/common.sh"

DIR="$STATE/moto"

case "${1:-}" in
start)
    py="$("$(dirname "$0")/python.sh" install)"
    stop_pid "$DIR/pid"
    mkdir -p "$DIR"
    port="$(free_port)"
    nohup "$(dirname "$py")/moto_server" -H 127.0.0.1 -p "$port" >"$DIR/moto.log" 2>&1 &
    echo $! >"$DIR/pid"
    if ! wait_tcp 127.0.0.1 "$port" 60 "$(cat "$DIR/pid")"; then
        log "moto did not listen on $port; its log:"
        tail -50 "$DIR/moto.log" >&2
        exit 1
    fi
    echo "http://127.0.0.1:$port"
    ;;
stop) stop_pid "$DIR/pid" ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
