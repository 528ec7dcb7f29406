#!/usr/bin/env bash
# Installs the tools and packages the test suite needs, each only when missing or out of date.
# Every step prints one line saying what it did, so a slow first run is never silent.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> $*"; }

step "rust components"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
scripts/ensure-strapi-app.sh
scripts/ensure-nextjs-app.sh
scripts/ensure-chart-tools.sh
scripts/ensure-nats.sh >/dev/null
scripts/ensure-prometheus.sh
scripts/ensure-image-tools.sh
