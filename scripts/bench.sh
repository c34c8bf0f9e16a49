#!/usr/bin/env bash
# Runs the benchmark scenarios of BENCHMARKS.md against a release build of Signet started here,
# each compared with the baseline server in the same run (--compare). A fresh server per scenario,
# so one scenario's allocations do not inflate the next one's memory figures.
#
#   ./scripts/bench.sh                 # every scenario at the sizes of BENCHMARKS.md
#   ./scripts/bench.sh echo broadcast  # only these
#   ./scripts/bench.sh connect-direct  # connect with skipNegotiation: one upgrade and the handshake
#   IDLE_N=20000 ./scripts/bench.sh idle
#   BENCH_ARGS="--rate 5" ./scripts/bench.sh broadcast           # more generator flags
#   SIGNET__HUB__MAX_PARALLEL_INVOCATIONS=32 ./scripts/bench.sh broadcast   # server settings
#   ./scripts/bench.sh cluster         # the many-node scenarios (below), or one: cluster-latency
#   ./scripts/bench.sh peers           # idle, echo, broadcast: Signet, baseline and every peer
#   ./scripts/bench.sh curves          # the scaling curves (below), then docs/*.svg
#
# The peers (clients/bench/peers, BENCHMARKS.md "Peers") are built or installed here on first
# use, under target/peers: socketioxide with cargo (release), Node's socket.io with `npm ci`,
# aiosignalr into a Python venv from its pinned requirements. PEERS chooses them (default
# "socketioxide socketio-node aiosignalr"); PEERS_IDLE_N (10,000) sizes the peers' idle run.
# `curves` measures idle memory at CURVE_IDLE connections ("1000 5000 10000 19000") and
# broadcast at CURVE_RECEIVERS receivers ("100 1000 10000"), unpaced (throughput) and at
# CURVE_RATE broadcasts/s (2, for the p99 latency), for Signet, the baseline and the peers;
# appends the lines to $CURVES_OUT (docs/bench-curves.jsonl) and draws the charts from it
# with scripts/charts.py.
#
# The cluster scenarios start their own redis-server and PostgreSQL (initdb) on free ports in a
# temporary directory (never the system ones), and two `signet serve` nodes sharing them
# (127.0.0.1:$PORT and $PORT+1), each pinned to its own core with taskset (PIN=0 to leave them
# unpinned); the one-node figures beside them use the same set-up with one node. Sizes:
# CLUSTER_BROADCAST_N (10,000), CLUSTER_RATE (10,000 msg/s), REVOKE_N (200), REPLAY_N (10,000).
#
# JSON lines go to stdout and to $OUT (default bench-results.jsonl); summaries to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECT_N=${CONNECT_N:-10000}
IDLE_N=${IDLE_N:-50000}
ECHO_N=${ECHO_N:-1000}
BROADCAST_N=${BROADCAST_N:-10000}
DURATION=${DURATION:-10s}
PROTOCOL=${PROTOCOL:-json}
PORT=${PORT:-18080}
OUT=${OUT:-bench-results.jsonl}

cargo build --release -p signet -p signet-bench >&2
PEERS=${PEERS:-socketioxide socketio-node aiosignalr}
PEERS_IDLE_N=${PEERS_IDLE_N:-10000}
CURVE_IDLE=${CURVE_IDLE:-1000 5000 10000 19000}
CURVE_RECEIVERS=${CURVE_RECEIVERS:-100 1000 10000}
CURVE_RATE=${CURVE_RATE:-2}
CURVES_OUT=${CURVES_OUT:-docs/bench-curves.jsonl}
PEER_ARGS=()
# SIGNET_BIN measures another build of the server (e.g. an older commit's, for before/after)
# with this generator and baseline.
SIGNET=${SIGNET_BIN:-./target/release/signet}
BENCH=./target/release/signet-bench

# One secret pair for the server and the generator; never printed.
SIGNET__JWT__SECRET=${SIGNET__JWT__SECRET:-$("$SIGNET" keygen)}
SIGNET__ENVELOPE__SECRET=${SIGNET__ENVELOPE__SECRET:-$("$SIGNET" keygen)}
export SIGNET__JWT__SECRET SIGNET__ENVELOPE__SECRET

# Tens of thousands of sockets need more descriptors than the usual 1024 or 20000; raising the
# hard limit needs root (or CAP_SYS_RESOURCE). The generator raises its own limit as far as it can.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open-file limit: $(ulimit -n)" >&2

DATA_DIR=$(mktemp -d)
SERVER_PID=
stop_server() {
  if [[ -n "$SERVER_PID" ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}
trap 'stop_server; stop_cluster; rm -rf "$DATA_DIR"' EXIT

# The signed scenarios send from few sessions as fast as they can: one session's unexpired nonces
# (envelope.max_nonces_per_session, 10,000 by default, a guard against one user filling the store)
# would cap them at about 150 signed commands per second per session. They raise it; the others
# run with the default. An explicit SIGNET__ENVELOPE__MAX_NONCES_PER_SESSION wins.
SIGNED_NONCE_QUOTA=${SIGNET__ENVELOPE__MAX_NONCES_PER_SESSION:-1000000}
NONCE_QUOTA=${SIGNET__ENVELOPE__MAX_NONCES_PER_SESSION:-10000}

wait_port() { # PORT WHAT LOG
  for _ in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "$2 did not start; its log:" >&2
  cat "$3" >&2
  exit 1
}

start_server() {
  SIGNET__SERVER__LISTEN=127.0.0.1:$PORT SIGNET__SERVER__DATA_DIR=$DATA_DIR \
    SIGNET__LOG__LEVEL=${SIGNET_LOG_LEVEL:-warn} \
    SIGNET__ENVELOPE__MAX_NONCES_PER_SESSION=$NONCE_QUOTA \
    "$SIGNET" serve >>"$DATA_DIR/server.log" 2>&1 &
  SERVER_PID=$!
  wait_port "$PORT" signet "$DATA_DIR/server.log"
}

run() {
  start_server
  # The bootstrap admin's password, written on the first start, for the command scenario.
  if [[ -f "$DATA_DIR/initial-admin-password" ]]; then
    SIGNET_BENCH_PASSWORD=$(cat "$DATA_DIR/initial-admin-password")
    export SIGNET_BENCH_PASSWORD
  fi
  "$BENCH" "$@" --url "http://127.0.0.1:$PORT" --protocol "$PROTOCOL" \
    --server-pid "$SERVER_PID" --compare ${BENCH_ARGS:-} | tee -a "$OUT"
  stop_server
}

# --- Peers --------------------------------------------------------------------------------
# Builds or installs each peer once (idempotent) and sets PEER_ARGS to the --peer flags.
prepare_peers() {
  [[ ${#PEER_ARGS[@]} -eq 0 ]] || return 0
  local peer dir=clients/bench/peers
  for peer in $PEERS; do
    case "$peer" in
      socketioxide)
        echo "== building the socketioxide peer (target/peers)" >&2
        cargo build --release --manifest-path "$dir/socketioxide/Cargo.toml" \
          --target-dir target/peers >&2
        PEER_ARGS+=(--peer "socketioxide=target/peers/release/signet-peer-socketioxide")
        ;;
      socketio-node)
        echo "== npm ci $dir/socketio-node" >&2
        npm ci --prefix "$dir/socketio-node" --no-audit --no-fund >&2
        PEER_ARGS+=(--peer "socketio-node=node $dir/socketio-node/server.mjs")
        ;;
      aiosignalr)
        local venv=target/peers/aiosignalr-venv
        if [[ ! -x $venv/bin/python ]]; then python3 -m venv "$venv" >&2; fi
        echo "== pip install -r $dir/aiosignalr/requirements.txt ($venv)" >&2
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
          -r "$dir/aiosignalr/requirements.txt" >&2
        PEER_ARGS+=(--peer "aiosignalr=$venv/bin/python $dir/aiosignalr/server.py")
        ;;
      *) echo "unknown peer: $peer" >&2; exit 2 ;;
    esac
  done
}

# Every scenario the peers implement, Signet first, then the baseline and each peer in the same
# run (one JSON line each). Echo is plain only: the peers have no signed calls.
run_peers() {
  prepare_peers
  run idle -c "$PEERS_IDLE_N" --hold "$DURATION" "${PEER_ARGS[@]}"
  run echo -c "$ECHO_N" --duration "$DURATION" --mode plain "${PEER_ARGS[@]}"
  run broadcast -c "$BROADCAST_N" --duration "$DURATION" "${PEER_ARGS[@]}"
}

# The scaling curves of BENCHMARKS.md, then the charts.
run_curves() {
  prepare_peers
  local n
  for n in $CURVE_IDLE; do
    OUT=$CURVES_OUT run idle -c "$n" --hold "$DURATION" "${PEER_ARGS[@]}"
  done
  for n in $CURVE_RECEIVERS; do
    OUT=$CURVES_OUT run broadcast -c "$n" --duration "$DURATION" "${PEER_ARGS[@]}"
    OUT=$CURVES_OUT run broadcast -c "$n" --duration "$DURATION" --rate "$CURVE_RATE" \
      "${PEER_ARGS[@]}"
  done
  python3 scripts/charts.py "$CURVES_OUT" docs \
    "commit $(git rev-parse --short HEAD), $(date -u +%F)" >&2
}

# --- Many nodes ---------------------------------------------------------------------------
CLUSTER_BROADCAST_N=${CLUSTER_BROADCAST_N:-10000}
CLUSTER_ECHO_N=${CLUSTER_ECHO_N:-1000}
CLUSTER_RATE=${CLUSTER_RATE:-10000}
REVOKE_N=${REVOKE_N:-200}
REPLAY_N=${REPLAY_N:-10000}
PIN=${PIN:-1}
CLUSTER_DIR=
REDIS_PID=
PG_PID=
NODE_PIDS=()

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# As `nobody` when root: PostgreSQL refuses to run as root.
as_pg_owner() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u nobody -- "$@"; else "$@"; fi
}

# A throwaway redis-server and PostgreSQL cluster (fsync off) shared by the nodes of every
# cluster scenario of this run.
start_backends() {
  CLUSTER_DIR=$(mktemp -d)
  chmod 755 "$CLUSTER_DIR"
  local redis_port pg_port pg_bin
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$CLUSTER_DIR" --save '' \
    --appendonly no >"$CLUSTER_DIR/redis.log" 2>&1 &
  REDIS_PID=$!
  wait_port "$redis_port" redis-server "$CLUSTER_DIR/redis.log"
  REDIS_URL=redis://127.0.0.1:$redis_port
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  mkdir "$CLUSTER_DIR/pg"
  [[ $(id -u) -ne 0 ]] || chown nobody: "$CLUSTER_DIR/pg"
  as_pg_owner "$pg_bin/initdb" -D "$CLUSTER_DIR/pg/data" -A trust -U signet -E UTF8 \
    --locale=C --no-sync >"$CLUSTER_DIR/initdb.log" 2>&1
  pg_port=$(free_port)
  as_pg_owner "$pg_bin/postgres" -D "$CLUSTER_DIR/pg/data" -k "$CLUSTER_DIR/pg" -p "$pg_port" \
    -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
    -c full_page_writes=off >"$CLUSTER_DIR/postgres.log" 2>&1 &
  PG_PID=$!
  wait_port "$pg_port" postgres "$CLUSTER_DIR/postgres.log"
  STORE_URL=postgres://signet@127.0.0.1:$pg_port/postgres
  echo "redis-server on $redis_port, PostgreSQL on $pg_port ($CLUSTER_DIR)" >&2
}

stop_nodes() {
  local pid
  for pid in "${NODE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${NODE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  NODE_PIDS=()
}

stop_cluster() {
  stop_nodes
  local pid
  for pid in $REDIS_PID $PG_PID; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  REDIS_PID= PG_PID=
  # KEEP_LOGS=DIR keeps the nodes' logs (each run appends to node-<i>.log).
  if [[ -n "${KEEP_LOGS:-}" && -n "$CLUSTER_DIR" ]]; then
    mkdir -p "$KEEP_LOGS" && cp "$CLUSTER_DIR"/*.log "$KEEP_LOGS"/ 2>/dev/null || true
  fi
  [[ -z "$CLUSTER_DIR" ]] || rm -rf "$CLUSTER_DIR"
  CLUSTER_DIR=
}

# start_nodes N: N nodes on $PORT, $PORT+1, ..., node i pinned (PIN=1) to core i, or to the
# i-th of NODE_CORES (e.g. 0,0), with one worker each; sets NODE_PIDS and SERVERS.
start_nodes() {
  [[ -n "$CLUSTER_DIR" ]] || start_backends
  local i port pin=() cores
  IFS=, read -ra cores <<<"${NODE_CORES:-0,1}"
  SERVERS=
  for ((i = 0; i < $1; i++)); do
    port=$((PORT + i))
    mkdir -p "$CLUSTER_DIR/node-$i"
    [[ $PIN != 1 ]] || pin=(taskset -c "${cores[i % ${#cores[@]}]}")
    local settings=(SIGNET__SERVER__LISTEN=127.0.0.1:$port
      SIGNET__SERVER__DATA_DIR=$CLUSTER_DIR/node-$i SIGNET__SERVER__WORKERS=${NODE_WORKERS:-1}
      SIGNET__LOG__LEVEL=${SIGNET_LOG_LEVEL:-warn} SIGNET__STORE__URL=$STORE_URL
      SIGNET__ENVELOPE__MAX_NONCES_PER_SESSION=$SIGNED_NONCE_QUOTA)
    # A lone node is a plain node (no [cluster]) unless SOLO_CLUSTER=1 gives it Redis too.
    if [[ $1 -gt 1 || ${SOLO_CLUSTER:-0} == 1 ]]; then
      settings+=(SIGNET__CLUSTER__REDIS_URL=$REDIS_URL SIGNET__CLUSTER__NODE_ID=bench-node-$i)
    fi
    "${pin[@]}" env "${settings[@]}" "$SIGNET" serve >>"$CLUSTER_DIR/node-$i.log" 2>&1 &
    NODE_PIDS+=($!)
    # One after the other: the first applies the migrations and creates the bootstrap admin.
    wait_port "$port" "node $i" "$CLUSTER_DIR/node-$i.log"
    SERVERS+="${SERVERS:+,}http://127.0.0.1:$port"
  done
  # The bootstrap admin is created once, by the first node on the fresh store; keep its password
  # for the command scenario of later runs.
  if [[ -f "$CLUSTER_DIR/node-0/initial-admin-password" ]]; then
    cp "$CLUSTER_DIR/node-0/initial-admin-password" "$CLUSTER_DIR/admin-password"
  fi
  if [[ -f "$CLUSTER_DIR/admin-password" ]]; then
    SIGNET_BENCH_PASSWORD=$(cat "$CLUSTER_DIR/admin-password")
    export SIGNET_BENCH_PASSWORD
  fi
  # A node shows itself to the others once its subscriptions are confirmed: wait until ready.
  for ((i = 0; i < $1; i++)); do
    for _ in $(seq 100); do
      if curl -sf "http://127.0.0.1:$((PORT + i))/readyz" >/dev/null; then break; fi
      sleep 0.1
    done
  done
}

redis_cpu_ticks() { awk '{print $14 + $15}' "/proc/$REDIS_PID/stat"; }

# run_nodes N GENERATOR_CORE SCENARIO ARGS...: a scenario against N fresh nodes; the generator
# pinned to GENERATOR_CORE ("" for none). Appends the JSON line and Redis's CPU to $OUT.
run_nodes() {
  local nodes=$1 core=$2 pin=()
  shift 2
  start_nodes "$nodes"
  [[ $PIN != 1 || -z "$core" ]] || pin=(taskset -c "$core")
  local before pids
  before=$(redis_cpu_ticks)
  pids=$(IFS=,; echo "${NODE_PIDS[*]}")
  "${pin[@]}" "$BENCH" "$@" --servers "$SERVERS" --server-pid "$pids" --protocol "$PROTOCOL" \
    ${BENCH_ARGS:-} | tee -a "$OUT"
  echo "{\"redis_cpu_s\": $(( $(redis_cpu_ticks) - before ))e-2, \"nodes\": $nodes, \"scenario\": \"$1\"}" | tee -a "$OUT"
  stop_nodes
}

run_cluster() {
  local broadcast=(broadcast -c "$CLUSTER_BROADCAST_N" --duration "$DURATION")
  local echo_=(echo -c "$CLUSTER_ECHO_N" --duration "$DURATION" --mode plain)
  local latency=(broadcast -c 1 --rate "$CLUSTER_RATE" --duration "$DURATION" --spread across)
  case "$1" in
    # One node on core 0 with the generator on core 1, then two nodes on cores 0 and 1 with
    # the generator unpinned (it competes with both: two cores are all this machine has).
    cluster-broadcast) run_nodes 1 1 "${broadcast[@]}"; run_nodes 2 "" "${broadcast[@]}" ;;
    # Both nodes on core 0, the generator on core 1: what two nodes cost against one on the
    # same CPU (the generator has a core of its own here, as in the one-node run).
    cluster-broadcast-onecore) NODE_CORES=0,0 run_nodes 2 1 "${broadcast[@]}" ;;
    cluster-echo) run_nodes 1 1 "${echo_[@]}"; run_nodes 2 "" "${echo_[@]}" ;;
    # A sender on node 0, its receiver on node 1 (one node: both on it), CLUSTER_RATE msg/s.
    cluster-latency) run_nodes 1 1 "${latency[@]}"; run_nodes 2 "" "${latency[@]}" ;;
    # The user's 4 connections on node 0, its 20 devices on node 1: SendCommand -> Command on
    # the device -> CommandResult back to the user crosses nodes twice.
    cluster-command)
      local command=(command -c "${COMMAND_USERS:-4}" --devices "${COMMAND_DEVICES:-20}"
        --duration "$DURATION" --spread across)
      run_nodes 1 1 "${command[@]}"
      run_nodes 2 "" "${command[@]}"
      ;;
    cluster-revocation) run_nodes 2 "" revocation -c "$REVOKE_N" ;;
    cluster-replay) run_nodes 2 "" replay --attempts "$REPLAY_N" -c 20 ;;
    *) echo "unknown scenario: $1" >&2; exit 2 ;;
  esac
}

{
  echo "== $(date -u +%FT%TZ) $(uname -sr), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "   load average: $(cut -d' ' -f1-3 /proc/loadavg)"
} >&2

scenarios=("$@")
[[ ${#scenarios[@]} -gt 0 ]] || scenarios=(connect connect-direct idle echo broadcast command)
for scenario in "${scenarios[@]}"; do
  case "$scenario" in
    connect) run connect -c "$CONNECT_N" ;;
    # The secondary connect figure: without negotiate's request, as skipNegotiation clients
    # connect; the gap to `connect` is what negotiate costs.
    connect-direct) run connect -c "$CONNECT_N" --skip-negotiation ;;
    idle) run idle -c "$IDLE_N" --hold "$DURATION" ;;
    echo) NONCE_QUOTA=$SIGNED_NONCE_QUOTA run echo -c "$ECHO_N" --duration "$DURATION" ;;
    broadcast) run broadcast -c "$BROADCAST_N" --duration "$DURATION" ;;
    command)
      # The bootstrap admin (created on the first start) logs in and provisions the devices.
      NONCE_QUOTA=$SIGNED_NONCE_QUOTA run command -c "${COMMAND_USERS:-4}" --devices "${COMMAND_DEVICES:-20}" --duration "$DURATION"
      ;;
    cluster)
      for one in cluster-broadcast cluster-broadcast-onecore cluster-echo cluster-latency \
        cluster-command cluster-revocation cluster-replay; do
        run_cluster "$one"
      done
      ;;
    cluster-*) run_cluster "$scenario" ;;
    peers) run_peers ;;
    curves) run_curves ;;
    *) echo "unknown scenario: $scenario" >&2; exit 2 ;;
  esac
done
