#!/usr/bin/env bash
# Installs the tools and packages the test suite needs, each only when missing or out of date.
# Every step prints one line saying what it did, so a slow first run is never silent.
# The Node apps (tests/strapi, tests/nextjs) are installed by scripts/test.sh, beside the build
# (scripts/ensure-test-apps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> $*"; }

step "rust components"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
scripts/ensure-chart-tools.sh
scripts/ensure-nats.sh >/dev/null
scripts/ensure-prometheus.sh

step "lua5.1 (the Argo CD health check test, tests/controller/health.rs)"
if ! command -v lua5.1 >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends lua5.1 >/dev/null
fi

scripts/ensure-image-tools.sh
