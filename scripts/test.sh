#!/usr/bin/env bash
# The one test command (`make test`): installs what the suite needs, idempotently, then runs
# lint and every test. Safe on a fresh machine and fast on a warm one.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each phase says when it started, so a slow first run shows where its time goes.
phase() { echo "==> $* (at ${SECONDS}s)"; }

scripts/test-deps.sh

# The test Strapi's and Next.js site's Node packages wait on the network and the disk, the Rust
# builds below on the CPU: they run side by side, and the tests wait for both.
node_log="$(mktemp "${TMPDIR:-/tmp}/swo-node-install.XXXXXX")"
scripts/ensure-test-apps.sh >"$node_log" 2>&1 &
node_install=$!
trap 'kill "$node_install" 2>/dev/null || true' EXIT

phase "lint"
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
scripts/lint-workflows.sh

phase "Helm chart and deploy/"
scripts/check-chart.sh

phase "alert rules"
promtool check rules charts/strapi-webhook-operator/files/prometheus-rules.yaml
promtool test rules tests/prometheus/rules_test.yaml

phase "image"
# The release binary in a FROM scratch image, checked inside its own root filesystem as the
# chart runs it (scripts/check-image.sh). Before the tests, so a broken image fails fast.
# The release build is a second full dependency build: 1028 s user + 45 s system CPU when cold
# (measured on this project's 2-core machine), so about 9 to 12 minutes of a cold CI run.
scripts/build-image.sh
scripts/check-image.sh

phase "Node packages of the test Strapi and Next.js apps"
if ! wait "$node_install"; then
  cat "$node_log" >&2
  echo "error: installing the test apps' Node packages failed (its log is above)" >&2
  exit 1
fi
cat "$node_log"
rm -f "$node_log"

phase "tests"
# One real Strapi serves every test that needs one (tests/support/strapi.rs).
scripts/with-strapi.sh cargo nextest run --no-fail-fast

phase "receiver suite on NATS JetStream"
# The same receiver tests against the JetStream queue: each test starts its own `nats-server -js`
# on a free loopback port (tests/support/nats_server.rs). receiver_ha always uses JetStream and
# already ran above.
SWO_TEST_QUEUE=nats cargo nextest run --no-fail-fast \
  --test receiver_ingest --test receiver_delivery --test receiver_crash --test sinks_engine

phase "done"
