#!/usr/bin/env bash
# `make demo`: the whole product on this machine, start to finish, without a cluster.
#
# Installs what is missing (the test Strapi's and the test Next.js site's Node packages, the
# Rust build), starts a fresh Strapi on 127.0.0.1:1337, the real test Next.js site (:3000, the
# handler of docs/nextjs.md), loopback sinks standing in for Slack (:3100) and a CRM (:4000), and
# `strapi-webhook-operator local` with a copy of examples/. Then it edits content in Strapi
# through its admin API, shows a cached Next.js page before and after (its render time), shows
# the deliveries, edits a route while local mode
# runs, takes the CRM down for a few seconds to show retries and recovery, and prints a summary. Everything it started is stopped on exit,
# whatever happens; its files live in a temporary folder that is removed.
set -euo pipefail
cd "$(dirname "$0")/.."

ingest_port=18080
admin_port=19091
admin_url="http://127.0.0.1:$admin_port"
bin=target/debug/strapi-webhook-operator
demo=target/debug/examples/demo
crm_args=(sink crm --port 4000 --secret change-me --signing-secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw)

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
fail() { echo "demo: $*" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/swo-demo.XXXXXX")"
export STRAPI_RUN_DIR="$work/strapi" NEXTJS_RUN_DIR="$work/nextjs" NEXTJS_OWNER_PID=$$
declare -A pids=()
cleanup() {
  local status=$?
  for name in "${!pids[@]}"; do
    kill -TERM "${pids[$name]}" 2>/dev/null || true
  done
  for name in "${!pids[@]}"; do
    wait "${pids[$name]}" 2>/dev/null || true
  done
  scripts/strapi.sh stop
  scripts/nextjs.sh stop
  if (( status != 0 )) && [[ -f "$work/local.log" ]]; then
    echo "--- last lines of the local mode log ---" >&2
    tail -n 20 "$work/local.log" >&2
  fi
  # A failed step may be Strapi's doing (a first-admin call that failed, say): its whole log is
  # kept outside the folder about to be removed.
  if (( status != 0 )) && [[ -s "$STRAPI_RUN_DIR/strapi.log" ]]; then
    kept="${TMPDIR:-/tmp}/swo-demo-strapi.$$.log"
    cp "$STRAPI_RUN_DIR/strapi.log" "$kept"
    echo "--- last lines of Strapi's log (all of it kept in $kept) ---" >&2
    tail -n 20 "$kept" >&2
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Checked once before the long install and build, and again right before each service starts:
# a port taken in between would otherwise surface as a failure that names no port.
require_free() {
  local port=$1 what=$2
  if port_in_use "$port"; then
    fail "port $port on 127.0.0.1 is in use, and $what needs it (examples/ name 1337, 3000, 3100 and 4000); stop what listens there and run the demo again"
  fi
}
for port in 1337 3000 3100 4000 "$ingest_port" "$admin_port"; do
  require_free "$port" "the demo"
done

# Waits for a background job, printing the elapsed time every 20 s while it stays quiet.
wait_with_progress() {
  local pid=$1 started=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    if (( (SECONDS - started) % 20 == 0 )) && kill -0 "$pid" 2>/dev/null; then
      echo "    ... still working ($((SECONDS - started))s)"
    fi
  done
  wait "$pid"
}

# Waits until the receiver has nothing pending or in flight.
wait_settled() {
  for _ in $(seq 150); do
    if [[ "$("$bin" deliveries --admin-url "$admin_url" list --state pending --json)" == "[]" &&
          "$("$bin" deliveries --admin-url "$admin_url" list --state inflight --json)" == "[]" ]]; then
      return 0
    fi
    sleep 0.2
  done
  fail "deliveries did not settle within 30s"
}

start_sink() {
  local name=$1 port=$2
  shift 2
  require_free "$port" "the demo's $name sink"
  "$demo" "$@" &
  pids[$name]=$!
}

say "1/9 installing what is missing: the Node packages (in the background) while Rust compiles"
# npm waits on the network and the disk, cargo on the CPU: side by side, a first run is the
# longer of the two, not their sum. The build is the `dev` one `make test` uses, so either
# command reuses what the other compiled.
scripts/ensure-test-apps.sh >"$work/install.log" 2>&1 &
node_install=$!
pids[node-install]=$node_install
build_started=$SECONDS
cargo build --bin strapi-webhook-operator --example demo
echo "    Rust build: $((SECONDS - build_started))s"
if ! wait_with_progress "$node_install"; then
  tail -n 30 "$work/install.log" >&2
  fail "installing the Node packages failed (the lines above are the end of its log)"
fi
unset 'pids[node-install]'
grep '^==>' "$work/install.log" | sed 's/^==> /    /'
echo "    installed in $SECONDS s since the demo started"

say "2/9 starting a fresh Strapi (SQLite, first admin) on 127.0.0.1:1337"
require_free 1337 "Strapi"
STRAPI_PORT=1337 scripts/strapi.sh start >"$work/strapi.env"
# shellcheck disable=SC1091
source "$work/strapi.env"

say "3/9 starting the test Next.js site on :3000 and the demo sinks: Slack :3100, CRM :4000"
require_free 3000 "the Next.js site"
NEXTJS_PORT=3000 REVALIDATE_SECRET=change-me scripts/nextjs.sh start >/dev/null
start_sink slack 3100 sink slack --port 3100
start_sink crm 4000 "${crm_args[@]}"

say "4/9 starting local mode with a copy of examples/"
require_free "$ingest_port" "local mode's ingest port"
require_free "$admin_port" "local mode's admin port"
# A copy, so that step 7 can edit a route without touching the repository.
mkdir "$work/config"
cp examples/*.yaml "$work/config/"
# examples/secrets.yaml holds placeholders; the environment supplies the real values.
SWO_SECRET_WEB_STRAPI_ADMIN_EMAIL="$STRAPI_TEST_EMAIL" \
  SWO_SECRET_WEB_STRAPI_ADMIN_PASSWORD="$STRAPI_TEST_PASSWORD" \
  SWO_SECRET_WEB_SLACK_WEBHOOK_URL="http://127.0.0.1:3100/services/T0/B0/demo" \
  "$bin" --log-format text local -f "$work/config" --data-dir "$work/data" \
  --ingest-addr "127.0.0.1:$ingest_port" --admin-addr "127.0.0.1:$admin_port" \
  >"$work/local.log" 2>&1 &
pids[local]=$!
for _ in $(seq 300); do
  grep -q "registration in Strapi verified" "$work/local.log" && break
  kill -0 "${pids[local]}" 2>/dev/null || fail "local mode exited"
  sleep 0.2
done
grep -q "registration in Strapi verified" "$work/local.log" || fail "Strapi's webhook was not verified within 60s"
# The admin API needs the token local mode generated; `deliveries` and the summary read it here.
export RECEIVER_ADMIN_TOKEN_FILE="$work/data/admin-token"
echo "    Strapi holds one catch-all webhook to http://127.0.0.1:$ingest_port/v1/instances/web/cms;"
echo "    its test call reached the receiver with the shared secret."

# When the site rendered a page, as the page prints it.
rendered_at() {
  curl -fsS "http://127.0.0.1:3000$1" | grep -o 'data-rendered-at="[^"]*"' | cut -d'"' -f2
}

say "5/9 editing content in Strapi"
page=/articles/hello-strapi
before="$(rendered_at "$page")"
echo "    next.js: $page rendered at $before; asked again: $(rendered_at "$page") (cached)"
"$demo" drive content
wait_settled
after="$(rendered_at "$page")"
[[ "$after" != "$before" ]] || fail "$page was not refreshed"
echo "    next.js: $page now rendered at $after: refreshed by the operator's revalidation"

say "6/9 the deliveries (strapi-webhook-operator deliveries list)"
"$bin" deliveries --admin-url "$admin_url" list

say "7/9 editing the Slack route while local mode runs"
sed -i 's/New comment from/:speech_balloon: new comment from/' "$work/config/slack-comments.yaml"
echo "    slack-comments.yaml: text: ':speech_balloon: new comment from {{ entry.author }}: ...'"
for _ in $(seq 150); do
  grep -q "configuration reloaded and applied" "$work/local.log" && break
  sleep 0.2
done
grep -q "configuration reloaded and applied" "$work/local.log" || fail "the edit was not applied within 30s"
echo "    applied without a restart"
"$demo" drive comment
wait_settled

say "8/9 the CRM goes down for 5 seconds"
kill -TERM "${pids[crm]}"
wait "${pids[crm]}" 2>/dev/null || true
"$demo" drive lead
sleep 5
"$bin" deliveries --admin-url "$admin_url" list --sink crm --limit 3
echo "    ... the CRM comes back"
start_sink crm 4000 "${crm_args[@]}"
wait_settled
"$bin" deliveries --admin-url "$admin_url" list --sink crm --limit 3

say "9/9 summary"
"$demo" summary --admin-url "$admin_url"
echo
echo "Done. Everything the demo started is being stopped."
