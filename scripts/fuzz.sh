#!/usr/bin/env bash
# Runs Signet's cargo-fuzz targets (fuzz/, see docs/fuzzing.md), one at a time, each for a given
# number of seconds. Not part of scripts/test.sh or CI.
#
#   ./scripts/fuzz.sh                      # every target, 300 s each
#   ./scripts/fuzz.sh 30 envelope jwt      # these targets, 30 s each (a smoke run)
#   FUZZ_SANITIZER=address ./scripts/fuzz.sh 600 msgpack_protocol
#   FUZZ_JOBS=2 ./scripts/fuzz.sh 300      # libFuzzer workers per target (default 1)
#
# Stable toolchains work through RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly-only flags). Signet
# has no `unsafe` code, so the default sanitizer is `none` (several times the executions per
# second); set FUZZ_SANITIZER=address to look for memory errors in dependencies' unsafe code.
# Seeds come from `cargo run --example fuzz_seeds`; the corpus grows in fuzz/corpus/<target>
# and crashes land in fuzz/artifacts/<target> (both ignored by git). A crash fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${1:-300}
shift || true
ALL_TARGETS=(json_protocol msgpack_protocol handshake envelope jwt negotiate_query settings)
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")
SANITIZER=${FUZZ_SANITIZER:-none}
JOBS=${FUZZ_JOBS:-1}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

cargo run --quiet --example fuzz_seeds -- fuzz/corpus >&2
cd fuzz
cargo fuzz build -O --sanitizer "$SANITIZER" >&2
PARALLEL=()
[ "$JOBS" -le 1 ] || PARALLEL=(-jobs="$JOBS" -workers="$JOBS")

status=0
for target in "${TARGETS[@]}"; do
    echo "== $target: ${SECONDS_PER_TARGET}s" >&2
    started=$(date +%s)
    # user+sys CPU seconds of the fuzzer, for docs/fuzzing.md
    if ! /usr/bin/time -f "cpu_seconds=%U+%S" \
        cargo fuzz run -O --sanitizer "$SANITIZER" "$target" -- \
            -max_total_time="$SECONDS_PER_TARGET" "${PARALLEL[@]}" \
            -print_final_stats=1 -timeout=10 -rss_limit_mb=2048; then
        echo "!! $target failed: see fuzz/artifacts/$target" >&2
        status=1
    fi
    echo "== $target done after $(( $(date +%s) - started ))s" >&2
done
exit $status
