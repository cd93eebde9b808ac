# Shared by the infra scripts: where tools are cached, where services keep
# their state, and small helpers. Sourced, not run.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Tools survive between runs (nisshi takes ~14 min to build once).
TOOLS="${CHITOSE_TOOLS:-$HOME/.cache/chitose-tools}"
STATE="${CHITOSE_STATE:-$REPO/target/chitose-test}"
mkdir -p "$TOOLS" "$STATE"

log() { echo "[$(basename "$0" .sh)] $*" >&2; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_tcp HOST PORT SECONDS [PID]: until something accepts connections;
# gives up early when PID has exited.
wait_tcp() {
    local host=$1 port=$2 deadline=$((SECONDS + $3)) pid=${4:-}
    until python3 -c "import socket,sys; s=socket.socket(); s.settimeout(1); sys.exit(s.connect_ex(('$host', $port)))" 2>/dev/null; do
        if ((SECONDS > deadline)); then
            return 1
        fi
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        sleep 0.2
    done
}

# stop_pid FILE: TERM, then KILL after 10 s.
stop_pid() {
    local f=$1
    [[ -f "$f" ]] || return 0
    local pid
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

# debian_install PACKAGE COMMAND: installs Debian's PACKAGE unless COMMAND
# is already on PATH, then prints COMMAND's path. A fresh machine may have
# no package lists yet.
debian_install() {
    local package=$1 command=$2
    if ! command -v "$command" >/dev/null 2>&1; then
        log "installing Debian's $package"
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -q "$package" >&2 2>/dev/null; then
            apt-get update >&2
            apt-get install -y -q "$package" >&2
        fi
    fi
    command -v "$command"
}
