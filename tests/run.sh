#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy (warnings are errors) and all tests.
# The tests start their own nats-server processes (Debian package `nats-server`) on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nats-server >/dev/null 2>&1; then
  echo "tests need nats-server on PATH: sudo apt-get install -y nats-server" >&2
  exit 1
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> tests"
# The load balancer's tests run real instances of this stand-in program.
cargo build -p vibehq-test-support --bin vibehq-echo --locked
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked
fi
