#!/usr/bin/env bash
# Starts and stops the test Strapi (tests/strapi) for humans, CI and the Rust test harness.
#
#   scripts/strapi.sh start    start Strapi on a free loopback port with a fresh SQLite database,
#                              wait until it answers, create the first admin, and print
#                              `export STRAPI_TEST_URL=... STRAPI_TEST_EMAIL=... STRAPI_TEST_PASSWORD=...`
#                              (also written to $STRAPI_RUN_DIR/env)
#   scripts/strapi.sh stop     stop the Strapi this run directory started (its whole process group)
#   scripts/strapi.sh status   say whether it runs
#
# STRAPI_RUN_DIR (default tests/strapi/.tmp/run) holds the pid, log, database and env file, so
# several Strapis can run side by side. STRAPI_PORT picks the port. With STRAPI_OWNER_PID set,
# Strapi is also stopped once that process is gone, even if it was killed before it could stop
# Strapi itself (a test process killed on timeout leaves no node behind). Every other variable in the
# environment reaches Strapi, e.g. ADMIN_ACCESS_TOKEN_LIFESPAN=2 or ADMIN_RATE_LIMIT=true
# (see tests/strapi/config/admin.js). Installs nothing: run scripts/ensure-strapi-app.sh first.
set -euo pipefail
app="$(cd "$(dirname "$0")/../tests/strapi" && pwd)"
run_dir="${STRAPI_RUN_DIR:-$app/.tmp/run}"
pid_file="$run_dir/pid"
log_file="$run_dir/strapi.log"
env_file="$run_dir/env"
ready_timeout="${STRAPI_READY_TIMEOUT:-120}"

fail() { echo "strapi.sh: $*" >&2; exit 1; }

running_pid() {
  [[ -f "$pid_file" ]] || return 1
  local pid
  pid="$(cat "$pid_file")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

free_port() {
  node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

start() {
  for tool in node curl setsid; do
    command -v "$tool" >/dev/null || fail "$tool is needed to run the test Strapi"
  done
  [[ -x "$app/node_modules/.bin/strapi" ]] \
    || fail "the test Strapi app is not installed ($app/node_modules is missing); run scripts/ensure-strapi-app.sh"
  if pid="$(running_pid)"; then
    fail "a Strapi started from $run_dir already runs (pid $pid); run scripts/strapi.sh stop first"
  fi
  mkdir -p "$run_dir" "$app/public/uploads"
  rm -f "$run_dir/data.db" "$env_file"
  local port="${STRAPI_PORT:-$(free_port)}"
  local url="http://127.0.0.1:$port"
  local started=$SECONDS
  # setsid makes Strapi the leader of a new process group, so stop ends it and every child. It
  # is a simple command, not a subshell, so $! is Strapi's own pid and nothing else holds our
  # stdout open (callers read it to the end).
  cd "$app"
  PORT="$port" HOST=127.0.0.1 DATABASE_FILENAME="$run_dir/data.db" \
    STRAPI_TELEMETRY_DISABLED=true NODE_ENV="${NODE_ENV:-development}" BROWSER=none \
    setsid node_modules/.bin/strapi start >"$log_file" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$pid_file"
  if [[ -n "${STRAPI_OWNER_PID:-}" ]]; then
    # The watchdog's output goes nowhere, so it never holds a caller's pipe open.
    (
      while kill -0 "$STRAPI_OWNER_PID" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 1; done
      kill -TERM -- "-$pid" 2>/dev/null || true
    ) >/dev/null 2>&1 </dev/null &
  fi
  until curl -fsS -o /dev/null "$url/_health" 2>/dev/null; do
    if ! running_pid >/dev/null; then
      tail -n 30 "$log_file" >&2 || true
      fail "Strapi exited while starting (log: $log_file)"
    fi
    if (( SECONDS - started > ready_timeout )); then
      tail -n 30 "$log_file" >&2 || true
      stop
      fail "Strapi did not answer on $url within ${ready_timeout}s (log: $log_file)"
    fi
    sleep 0.3
  done
  local email="admin@strapi-webhook-operator.test"
  local password
  password="Test-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')-A1"
  local answer
  if ! answer="$(curl -fsS -X POST "$url/admin/register-admin" -H 'Content-Type: application/json' \
      -d "{\"firstname\":\"Test\",\"lastname\":\"Admin\",\"email\":\"$email\",\"password\":\"$password\"}" 2>&1)"; then
    stop
    fail "creating the first admin failed: $answer"
  fi
  printf 'export STRAPI_TEST_URL=%s\nexport STRAPI_TEST_EMAIL=%s\nexport STRAPI_TEST_PASSWORD=%s\n' \
    "$url" "$email" "$password" >"$env_file"
  echo "strapi.sh: Strapi ready on $url in $((SECONDS - started))s (pid $(cat "$pid_file"), log $log_file)" >&2
  cat "$env_file"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$pid_file"
    return 0
  fi
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pid_file"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if pid="$(running_pid)"; then echo "running (pid $pid)"; cat "$env_file" 2>/dev/null; else echo "stopped"; exit 3; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
