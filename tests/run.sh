#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy (warnings are errors) and all tests.
#
# The tests start their own nats-server processes on free ports, of the version vibehq is tested
# with (deploy/nats-server.version); it is installed into target/tools on first use (see
# deploy/install-nats-server.sh) and put first on PATH for the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

nats_server="$(deploy/install-nats-server.sh)"
export PATH="$(dirname "$nats_server"):$PATH"
echo "==> tests use $(nats-server --version) at $nats_server"

# The dashboard's browser test (tests/it/dashboard.rs) runs tests/browser/dashboard.mjs in Debian's
# Chromium; playwright-core comes from the npm registry, pinned by package-lock.json.
if ! command -v chromium >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "the browser test needs Chromium and Node.js: apt-get install chromium chromium-driver nodejs npm (.ci/run does)" >&2
  exit 1
fi
echo "==> npm ci (tests/browser, tests/node)"
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
npm ci --prefix tests/node --no-audit --no-fund --loglevel=error

# The outside Python clients (the `openai` package, schemathesis), pinned, into target/tools/python (not the
# system's site-packages); the tests' python3 finds them through PYTHONPATH.
python_clients="$PWD/target/tools/python"
if ! cmp -s tests/python/requirements.txt "$python_clients/.requirements.txt"; then
  echo "==> pip install -r tests/python/requirements.txt (into $python_clients)"
  python3 -m pip install --quiet --disable-pip-version-check --upgrade \
    --target "$python_clients" -r tests/python/requirements.txt
  cp tests/python/requirements.txt "$python_clients/.requirements.txt"
fi
export PYTHONPATH="$python_clients${PYTHONPATH:+:$PYTHONPATH}"

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> tests"
# The load balancer's tests run real instances of this stand-in program.
cargo build -p vibehq-test-support --bin vibehq-echo --locked
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  # Tests that load the machine for minutes (`vibehq new worker`'s Rust crate built from
  # scratch, schemathesis against /openapi.json), on their own so they do not compete for the
  # cores with the timing-sensitive ones.
  echo "==> tests that build projects or fuzz the API"
  cargo nextest run --workspace --locked --no-fail-fast --run-ignored only
else
  cargo test --workspace --locked
  cargo test --workspace --locked -- --ignored
fi
