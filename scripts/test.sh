#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every Rust test (unit and integration, including
# the official-client conformance suite in tests/conformance, which needs Node.js 20+ and npm).
# The README's test command runs this script; .ci/run runs the README's command.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== npm ci tests/conformance (the official SignalR clients the conformance suite drives)"
npm ci --prefix tests/conformance --no-audit --no-fund
echo "== cargo test"
cargo test --workspace

echo "== node --test clients/js"
node --test clients/js/
