#!/usr/bin/env bash
# nisshi, the Kafka-compatible broker of the integration tests.
#   nisshi.sh install   build it once into $CHITOSE_TOOLS (skipped when present)
#   nisshi.sh start     start on a free loopback port with SQLite storage;
#                       prints the bootstrap address
#   nisshi.sh stop      stop it
#   nisshi.sh restart   kill -9 and start again on the same port and data
set -euo pipefail
source "$(dirname "$0")/common.sh"

VERSION=0.7.0
BIN="$TOOLS/bin/nisshi"
DIR="$STATE/nisshi"

install() {
    if [[ -x "$BIN" ]] && [[ "$(cat "$TOOLS/nisshi.version" 2>/dev/null)" == "$VERSION" ]]; then
        return 0
    fi
    log "installing nisshi $VERSION (about 14 minutes on 2 cores, once)"
    cargo install --locked --ignore-rust-version "nisshi@$VERSION" \
        --no-default-features --features dynostore,libsql --root "$TOOLS" >&2
    echo "$VERSION" >"$TOOLS/nisshi.version"
}

launch() {
    local port=$1
    mkdir -p "$DIR"
    # nisshi resolves sqlite:// paths against its working directory.
    (cd "$DIR" && exec nohup "$BIN" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "sqlite://nisshi.db" \
        --group-initial-rebalance-delay 100ms >>"$DIR/broker.log" 2>&1) &
    echo $! >"$DIR/pid"
    echo "$port" >"$DIR/port"
    if ! wait_tcp 127.0.0.1 "$port" 60 "$(cat "$DIR/pid")"; then
        log "nisshi did not listen on $port; its log:"
        tail -50 "$DIR/broker.log" >&2
        exit 1
    fi
    echo "127.0.0.1:$port"
}

case "${1:-}" in
install) install ;;
start)
    install
    stop_pid "$DIR/pid"
    rm -rf "$DIR"
    launch "$(free_port)"
    ;;
stop) stop_pid "$DIR/pid" ;;
restart)
    [[ -f "$DIR/pid" ]] && kill -9 "$(cat "$DIR/pid")" 2>/dev/null || true
    rm -f "$DIR/pid"
    sleep 0.5
    launch "$(cat "$DIR/port")"
    ;;
*)
    echo "usage: $0 install|start|stop|restart" >&2
    exit 2
    ;;
esac
