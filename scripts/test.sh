#!/usr/bin/env bash
# The one test command (`make test`): installs what the suite needs, idempotently, then runs
# lint and every test. Safe on a fresh machine and fast on a warm one.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/test-deps.sh

echo "==> lint"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings

echo "==> Helm chart and deploy/"
scripts/check-chart.sh

echo "==> tests"
# One real Strapi serves every test that needs one (tests/support/strapi.rs).
scripts/with-strapi.sh cargo nextest run --no-fail-fast
