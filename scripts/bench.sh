#!/usr/bin/env bash
# Runs the benchmark scenarios of BENCHMARKS.md against a release build of Signet started here,
# each compared with the baseline server in the same run (--compare). A fresh server per scenario,
# so one scenario's allocations do not inflate the next one's memory figures.
#
#   ./scripts/bench.sh                 # every scenario at the sizes of BENCHMARKS.md
#   ./scripts/bench.sh echo broadcast  # only these
#   IDLE_N=20000 ./scripts/bench.sh idle
#   BENCH_ARGS="--rate 5" ./scripts/bench.sh broadcast           # more generator flags
#   SIGNET__HUB__MAX_PARALLEL_INVOCATIONS=32 ./scripts/bench.sh broadcast   # server settings
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
SIGNET=./target/release/signet
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
trap 'stop_server; rm -rf "$DATA_DIR"' EXIT

# The signed scenarios send from few sessions as fast as they can: one session's unexpired nonces
# (envelope.max_nonces_per_session, 10,000 by default, a guard against one user filling the store)
# would cap them at about 150 signed commands per second per session. They raise it; the others
# run with the default. An explicit SIGNET__ENVELOPE__MAX_NONCES_PER_SESSION wins.
SIGNED_NONCE_QUOTA=${SIGNET__ENVELOPE__MAX_NONCES_PER_SESSION:-1000000}
NONCE_QUOTA=${SIGNET__ENVELOPE__MAX_NONCES_PER_SESSION:-10000}

start_server() {
  SIGNET__SERVER__LISTEN=127.0.0.1:$PORT SIGNET__SERVER__DATA_DIR=$DATA_DIR \
    SIGNET__LOG__LEVEL=${SIGNET_LOG_LEVEL:-warn} \
    SIGNET__ENVELOPE__MAX_NONCES_PER_SESSION=$NONCE_QUOTA \
    "$SIGNET" serve >>"$DATA_DIR/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "signet did not start; its log:" >&2
  cat "$DATA_DIR/server.log" >&2
  exit 1
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

{
  echo "== $(date -u +%FT%TZ) $(uname -sr), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "   load average: $(cut -d' ' -f1-3 /proc/loadavg)"
} >&2

scenarios=("$@")
[[ ${#scenarios[@]} -gt 0 ]] || scenarios=(connect idle echo broadcast command)
for scenario in "${scenarios[@]}"; do
  case "$scenario" in
    connect) run connect -c "$CONNECT_N" ;;
    idle) run idle -c "$IDLE_N" --hold "$DURATION" ;;
    echo) NONCE_QUOTA=$SIGNED_NONCE_QUOTA run echo -c "$ECHO_N" --duration "$DURATION" ;;
    broadcast) run broadcast -c "$BROADCAST_N" --duration "$DURATION" ;;
    command)
      # The bootstrap admin (created on the first start) logs in and provisions the devices.
      NONCE_QUOTA=$SIGNED_NONCE_QUOTA run command -c "${COMMAND_USERS:-4}" --devices "${COMMAND_DEVICES:-20}" --duration "$DURATION"
      ;;
    *) echo "unknown scenario: $scenario" >&2; exit 2 ;;
  esac
done
