#!/usr/bin/env bash
# The benchmarks (`make bench`), never part of `make test`. Installs what they need
# (idempotently), runs the receiver benches and, with one test Strapi up, the controller and
# Strapi benches, then writes one summary with ratios to target/bench/summary.md. Every number
# has a baseline measured in the same run: on a shared machine only the ratios travel.
# See docs/benchmarks.md for what each row means.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> $* (at ${SECONDS}s)"; }

if command -v wrk >/dev/null; then
  step "load generator: wrk is installed"
else
  step "load generator: installing wrk (Debian package)"
  sudo=""
  (( EUID == 0 )) || sudo="sudo"
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq wrk >/dev/null
fi
scripts/ensure-strapi-app.sh
# The receiver bench's JetStream ingest row starts this nats-server.
NATS_SERVER="$(scripts/ensure-nats.sh)"
export NATS_SERVER

step "building the benches (release profile)"
cargo bench --no-run --benches --quiet

mkdir -p target/bench
rm -f target/bench/*.md

step "receiver: ingest ceiling (SQLite and JetStream), added latency, coalescing, memory, bounded evaluation"
cargo bench --quiet --bench receiver

step "controller scale, real Strapi throughput, save-to-sink latency, gap repair check (one test Strapi)"
scripts/with-strapi.sh cargo bench --quiet --bench strapi

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
memory="$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)"
filesystem="$(df -T target | awk 'NR == 2 {print $2}')"
{
  echo "# Benchmark summary"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (with local changes)')."
  echo "Machine: ${cpu:-unknown CPU}, $(nproc) cores, ${memory}, $(uname -sr), queue on ${filesystem}."
  echo "Ratios are value ÷ baseline, both measured in this run. Command: \`make bench\`."
  echo
  echo "## Receiver"
  echo
  cat target/bench/receiver.md
  echo
  echo "## Controller and real Strapi"
  echo
  cat target/bench/strapi.md
} >target/bench/summary.md

step "summary (target/bench/summary.md)"
cat target/bench/summary.md
