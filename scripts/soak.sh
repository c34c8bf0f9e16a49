#!/usr/bin/env bash
# Soak test (not in CI): connection churn for a long time against a release build of Signet, with
# short-lived tokens, admin revocations and malformed frames and requests mixed in, then a check
# that the server gave back what it took: resident memory, open files, threads and connections
# return to their values before the churn. See BENCHMARKS.md ("Soak").
#
#   ./scripts/soak.sh                          # 19,000 slots for 10 minutes
#   SOAK_N=2000 SOAK_DURATION=1m ./scripts/soak.sh   # a short run
#   SOAK_NO_BUILD=1 ...                           # use the release binaries as they are
#
# "Start" is measured after a warm-up churn (SOAK_WARMUP) and a settle pause, so one-time
# allocations (pools, caches, allocator arenas) count as start-up cost, not as growth.
# Tolerances: RSS within SOAK_RSS_TOLERANCE_PCT percent (default 10), open files within 16,
# threads within 2, connections back to 0. Exit status 1 when a value did not come back.
# The table goes to stderr and, unless SOAK_RECORD=0, into BENCHMARKS.md between the soak markers.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${SOAK_N:-19000}
DURATION=${SOAK_DURATION:-10m}
WARMUP=${SOAK_WARMUP:-60s}
TOKEN_TTL=${SOAK_TOKEN_TTL:-30s}
SETTLE=${SOAK_SETTLE:-30}
USERS=${SOAK_USERS:-40}
RSS_TOLERANCE_PCT=${SOAK_RSS_TOLERANCE_PCT:-10}
PORT=${PORT:-18090}
NICE=${SOAK_NICE:-10}

[[ -n "${SOAK_NO_BUILD:-}" ]] || cargo build --release -p signet -p signet-bench >&2
SIGNET=./target/release/signet
BENCH=./target/release/signet-bench

SIGNET__JWT__SECRET=${SIGNET__JWT__SECRET:-$("$SIGNET" keygen)}
SIGNET__ENVELOPE__SECRET=${SIGNET__ENVELOPE__SECRET:-$("$SIGNET" keygen)}
export SIGNET__JWT__SECRET SIGNET__ENVELOPE__SECRET

ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "open-file limit: $(ulimit -n)" >&2

DATA_DIR=$(mktemp -d)
export SIGNET__SERVER__DATA_DIR=$DATA_DIR SIGNET__SERVER__LISTEN=127.0.0.1:$PORT
export SIGNET__LOG__LEVEL=${SIGNET_LOG_LEVEL:-warn}
SERVER_PID=
SAMPLER_PID=
cleanup() {
  [[ -z "$SAMPLER_PID" ]] || kill "$SAMPLER_PID" 2>/dev/null || true
  if [[ -n "$SERVER_PID" ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$DATA_DIR"
}
trap cleanup EXIT

# Real users, so an admin revoke has someone to revoke; their ids are the `sub` of the tokens.
for i in $(seq "$USERS"); do
  head -c 24 /dev/urandom | base64 | "$SIGNET" user add "soak-$i" --password-stdin >/dev/null
done
REVOCABLE=()
while read -r name id _; do
  [[ "$name" == soak-* ]] && REVOCABLE+=(--revocable "$name=$id")
done < <("$SIGNET" user list)

nice -n "$NICE" "$SIGNET" serve >>"$DATA_DIR/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
  sleep 0.1
done
MONITOR_TOKEN=$("$SIGNET" token mint --sub soak-monitor --role admin --ttl 4h)

# rss_kib fds threads connections
sample() {
  local rss fds threads conns
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status")
  threads=$(awk '/^Threads:/ {print $2}' "/proc/$SERVER_PID/status")
  fds=$(find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  conns=$(curl -sf -H "Authorization: Bearer $MONITOR_TOKEN" "http://127.0.0.1:$PORT/metrics" \
    | awk '/^signet_connections[{ ]/ {sum += $NF; seen = 1} END {if (seen) print sum}')
  echo "$rss $fds $threads ${conns:-?}"
}

settle() {
  # Until every connection is gone (at most 120 s), then SETTLE more seconds.
  for _ in $(seq 120); do
    [[ "$(sample | cut -d' ' -f4)" == "0" ]] && break
    sleep 1
  done
  sleep "$SETTLE"
}

churn() {
  nice -n "$NICE" "$BENCH" soak --url "http://127.0.0.1:$PORT" -c "$N" --users 1000 \
    --token-ttl "$TOKEN_TTL" --duration "$1" --server-pid "$SERVER_PID" "${REVOCABLE[@]}"
}

read -r idle_rss idle_fds idle_threads idle_conns < <(sample)
echo "== idle: rss ${idle_rss} KiB, fds $idle_fds, threads $idle_threads, connections $idle_conns" >&2
echo "== warm-up churn, $WARMUP" >&2
churn "$WARMUP" >"$DATA_DIR/warmup.json"
settle
read -r start_rss start_fds start_threads start_conns < <(sample)
echo "== start: rss ${start_rss} KiB, fds $start_fds, threads $start_threads, connections $start_conns" >&2

SAMPLES="$DATA_DIR/samples.txt"
(
  peak_rss=0 peak_fds=0 peak_threads=0 peak_conns=0
  while sleep 15; do
    read -r rss fds threads conns < <(sample) || break
    (( rss > peak_rss )) && peak_rss=$rss
    (( fds > peak_fds )) && peak_fds=$fds
    (( threads > peak_threads )) && peak_threads=$threads
    [[ "$conns" =~ ^[0-9]+$ ]] && (( conns > peak_conns )) && peak_conns=$conns
    echo "$peak_rss $peak_fds $peak_threads $peak_conns" >"$SAMPLES"
    echo "   $(date -u +%T) rss ${rss} KiB, fds $fds, threads $threads, connections $conns" >&2
  done
) &
SAMPLER_PID=$!

echo "== churn, $DURATION, $N slots" >&2
churn "$DURATION" | tee "$DATA_DIR/soak.json"
kill "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=
read -r peak_rss peak_fds peak_threads peak_conns <"$SAMPLES"
settle
read -r after_rss after_fds after_threads after_conns < <(sample)
echo "== after: rss ${after_rss} KiB, fds $after_fds, threads $after_threads, connections $after_conns" >&2
closes=$(curl -sf -H "Authorization: Bearer $MONITOR_TOKEN" "http://127.0.0.1:$PORT/metrics" \
  | awk -F'[{}"]' '/^signet_connections_closed_total/ {split($0, v, " "); printf "%s%s %s", sep, $3, v[2]; sep=", "}')
errors=$(grep -c '"ERROR"\| ERROR ' "$DATA_DIR/server.log" || true)

verdict=pass
mib() { awk -v k="$1" 'BEGIN {printf "%.0f", k / 1024}'; }
check() { # name start after ok
  if [[ "$4" == 1 ]]; then echo "yes"; else echo "**no**"; verdict=fail; fi
}
rss_ok=$(awk -v s="$start_rss" -v a="$after_rss" -v t="$RSS_TOLERANCE_PCT" 'BEGIN {print (a <= s * (1 + t / 100)) ? 1 : 0}')
fds_ok=$(( after_fds <= start_fds + 16 ? 1 : 0 ))
threads_ok=$(( after_threads <= start_threads + 2 ? 1 : 0 ))
conns_ok=$([[ "$after_conns" == 0 ]] && echo 1 || echo 0)
opened=$(sed -n 's/.*"opened":\([0-9]*\).*/\1/p' "$DATA_DIR/soak.json")
rate=$(sed -n 's/.*"opened_per_s":\([0-9.]*\).*/\1/p' "$DATA_DIR/soak.json")
revokes=$(sed -n 's/.*"revokes":{"failed":\([0-9]*\),"ok":\([0-9]*\)}.*/\2 ok, \1 failed/p' "$DATA_DIR/soak.json")
garbage=$(sed -n 's/.*"garbage_frames":\([0-9]*\).*/\1/p' "$DATA_DIR/soak.json")
http_garbage=$(sed -n 's/.*"http_garbage_requests":\([0-9]*\).*/\1/p' "$DATA_DIR/soak.json")

TABLE=$(cat <<TABLE
Run $(date -u +%FT%TZ), $(nproc) cores (shared, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end),
$N slots for $DURATION after a $WARMUP warm-up, tokens of $TOKEN_TTL, $USERS revocable users,
allocator: ${SOAK_ALLOCATOR:-mimalloc}. $opened connections opened ($rate/s); revocations: $revokes;
$garbage malformed frames; $http_garbage malformed HTTP requests; server ERROR lines: $errors.
Closes by reason: $closes.

| | idle | start (after warm-up) | peak | after | back? |
|---|---|---|---|---|---|
| RSS (MiB) | $(mib "$idle_rss") | $(mib "$start_rss") | $(mib "$peak_rss") | $(mib "$after_rss") | $(check rss "$start_rss" "$after_rss" "$rss_ok") (within ${RSS_TOLERANCE_PCT}%) |
| open files | $idle_fds | $start_fds | $peak_fds | $after_fds | $(check fds "$start_fds" "$after_fds" "$fds_ok") (within 16) |
| threads | $idle_threads | $start_threads | $peak_threads | $after_threads | $(check threads "$start_threads" "$after_threads" "$threads_ok") (within 2) |
| connections | $idle_conns | $start_conns | $peak_conns | $after_conns | $(check conns 0 "$after_conns" "$conns_ok") (0) |
TABLE
)
# check() ran in subshells above; recompute the verdict here.
(( rss_ok && fds_ok && threads_ok && conns_ok )) || verdict=fail
echo "$TABLE" >&2
echo "== verdict: $verdict" >&2

if [[ "${SOAK_RECORD:-1}" == 1 ]] && grep -q '<!-- soak:begin -->' BENCHMARKS.md; then
  awk -v table="$TABLE" '
    /<!-- soak:begin -->/ {print; print table; skip = 1; next}
    /<!-- soak:end -->/ {skip = 0}
    !skip {print}
  ' BENCHMARKS.md >BENCHMARKS.md.new && mv BENCHMARKS.md.new BENCHMARKS.md
  echo "recorded in BENCHMARKS.md" >&2
fi
[[ "$verdict" == pass ]]
