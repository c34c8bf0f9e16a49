#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every Rust test (unit and integration, including
# the official-client conformance suite in tests/conformance and the client matrix in
# tests/clients, which need Node.js 20+ and npm,
# and the browser suite in tests/browser, which needs Debian's chromium: installed here with
# apt-get when missing if this runs as root; SIGNET_SKIP_BROWSER_TESTS=1 skips that suite; and
# the PostgreSQL store tests, which need Debian's postgresql package, installed the same way, as
# are redis-server and nginx for the cluster tests).
# The README's test command runs this script; .ci/run runs the README's command.
set -euo pipefail
cd "$(dirname "$0")/.."

# apt_install PACKAGE WHY HINT: installs a missing Debian package when root, else says how.
apt_install() {
  echo "== apt-get install $1 ($2)"
  if [ "$(id -u)" -ne 0 ]; then
    echo "$1 is missing and only root can install it: run \`apt-get install $1\` $3" >&2
    exit 1
  fi
  apt_log="$(mktemp)"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1"; } \
    >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    exit 1
  fi
  rm -f "$apt_log"
}

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
# The library as a dependent builds it, without the `internals` feature (the builds above and
# below have it: the package's dev-dependency on itself): an internal item nothing uses
# without the feature is dead code, and a doc link to a private item is broken.
echo "== cargo clippy -p signet --lib (the library without the internals feature)"
cargo clippy -p signet --lib -- -D warnings
echo "== cargo doc -p signet (its rustdoc, warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p signet
# The internal modules' docs too: as the `internals` feature shows them (a link to an item that
# is private there is broken), and with every private item (what a contributor reads).
echo "== cargo doc -p signet --features internals (with and without private items, warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p signet --features internals
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p signet --features internals --document-private-items
# The fuzz targets are their own workspace (fuzz/Cargo.toml), which nothing here builds: its
# lock file must still name every dependency signet gained.
echo "== fuzz/Cargo.lock up to date (cargo metadata --locked)"
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null
echo "== import graph (no circle between the modules of src/, nothing imports startup, the home hub uses only the public API)"
python3 scripts/import-graph.py >/dev/null || python3 scripts/import-graph.py
echo "== npm ci tests/conformance (the official SignalR clients the conformance suite drives)"
npm ci --prefix tests/conformance --no-audit --no-fund
echo "== npm ci tests/clients (the older official SignalR clients of the client matrix)"
npm ci --prefix tests/clients --no-audit --no-fund
echo "== npm ci clients/bench/peers/socketio-node (Node's socket.io, a peer signet-bench measures)"
npm ci --prefix clients/bench/peers/socketio-node --no-audit --no-fund
if [ "${SIGNET_SKIP_BROWSER_TESTS:-}" != "1" ]; then
  if ! command -v chromium >/dev/null 2>&1; then
    apt_install chromium "the browser suite drives Debian's Chromium" \
      "or set SIGNET_SKIP_BROWSER_TESTS=1"
  fi
  echo "== npm ci tests/browser (playwright-core, which drives that Chromium)"
  npm ci --prefix tests/browser --no-audit --no-fund
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  # The store tests start a throwaway cluster of their own (tests/api/postgres.rs); the system
  # PostgreSQL service, if any, is never used.
  apt_install postgresql "the store tests run a throwaway PostgreSQL cluster" ""
fi
if ! command -v redis-server >/dev/null 2>&1; then
  # The cluster tests start throwaway Redis servers of their own (tests/api/redis_server.rs);
  # the system Redis service, if any, is never used.
  apt_install redis-server "the cluster tests run throwaway Redis servers" ""
fi
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  # The cluster harness puts a throwaway nginx of its own in front of several nodes
  # (tests/api/balancer.rs: its config, logs and port in a temp dir); the system nginx service,
  # if any, is never used. nginx-light is only nginx plus an echo module on Debian 12.
  apt_install nginx "the cluster harness balances nodes with nginx round robin" ""
fi
echo "== npm ci tests/typescript (TypeScript, which type-checks the declarations of clients/js)"
npm ci --prefix tests/typescript --no-audit --no-fund
echo "== python venv target/python-venv (the Python clients some tests drive; tests/python/requirements.txt)"
venv="$PWD/target/python-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
export SIGNET_PYTHON="$venv/bin/python"
echo "== python venv target/peers/aiosignalr-venv (aiosignalr, a peer signet-bench measures; clients/bench/peers/aiosignalr/requirements.txt)"
peer_venv="$PWD/target/peers/aiosignalr-venv"
if [ ! -x "$peer_venv/bin/python" ]; then
  python3 -m venv "$peer_venv"
fi
"$peer_venv/bin/python" -m pip install --quiet --disable-pip-version-check -r clients/bench/peers/aiosignalr/requirements.txt
export SIGNET_AIOSIGNALR_PYTHON="$peer_venv/bin/python"
echo "== cargo test"
cargo test --workspace --exclude signet-dependent
# On its own: within the build above `signet` has the `internals` feature (tests/dependent).
echo "== cargo test -p signet-dependent (a dependent sees only the public API; the examples build against it)"
cargo test -p signet-dependent

echo "== node --test clients/js"
node --test clients/js/
