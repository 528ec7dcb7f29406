#!/usr/bin/env bash
# Starts and stops the test Next.js app (tests/nextjs) for humans, the demo and the Rust tests.
#
#   scripts/nextjs.sh start    copy the app's build into the run directory, `next start` it on a
#                              free loopback port, wait until it answers, and print
#                              `export NEXTJS_TEST_URL=...` (also written to $NEXTJS_RUN_DIR/env)
#   scripts/nextjs.sh stop     stop the server this run directory started (its process group)
#
# Each run directory gets its own copy of the build, so servers running side by side never share
# a cache: what one revalidates, another does not see. NEXTJS_RUN_DIR (default
# tests/nextjs/.run) holds the copy, pid, log and env file; NEXTJS_PORT picks the port. The
# route handlers check REVALIDATE_SECRET (default change-me, as in examples/secrets.yaml). With
# NEXTJS_OWNER_PID set, the server is also stopped once that process is gone. Installs and builds
# nothing: run scripts/ensure-nextjs-app.sh first.
set -euo pipefail
app="$(cd "$(dirname "$0")/../tests/nextjs" && pwd)"
run_dir="${NEXTJS_RUN_DIR:-$app/.run}"
pid_file="$run_dir/pid"
log_file="$run_dir/next.log"
env_file="$run_dir/env"
ready_timeout="${NEXTJS_READY_TIMEOUT:-60}"

fail() { echo "nextjs.sh: $*" >&2; exit 1; }

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
    command -v "$tool" >/dev/null || fail "$tool is needed to run the test Next.js app"
  done
  [[ -f "$app/.next/.built-sha256" ]] \
    || fail "the test Next.js app is not built ($app/.next); run scripts/ensure-nextjs-app.sh"
  if pid="$(running_pid)"; then
    fail "a Next.js server started from $run_dir already runs (pid $pid); run scripts/nextjs.sh stop first"
  fi
  local site="$run_dir/site"
  rm -rf "$site" "$env_file"
  mkdir -p "$site/.next"
  for file in node_modules package.json next.config.mjs; do
    ln -s "$app/$file" "$site/$file"
  done
  # The build without its compiler cache (25 MB), so the copy takes a moment.
  (cd "$app/.next" && tar cf - --exclude=./cache .) | (cd "$site/.next" && tar xf -)
  local port="${NEXTJS_PORT:-$(free_port)}"
  local url="http://127.0.0.1:$port"
  local started=$SECONDS
  # setsid: the server leads its own process group, so stop ends it and every child.
  cd "$site"
  NEXT_TELEMETRY_DISABLED=1 REVALIDATE_SECRET="${REVALIDATE_SECRET:-change-me}" \
    setsid node_modules/.bin/next start -H 127.0.0.1 -p "$port" >"$log_file" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$pid_file"
  if [[ -n "${NEXTJS_OWNER_PID:-}" ]]; then
    (
      while kill -0 "$NEXTJS_OWNER_PID" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 1; done
      kill -TERM -- "-$pid" 2>/dev/null || true
    ) >/dev/null 2>&1 </dev/null &
  fi
  # Any answer will do (a GET of the handler is 405): asking for a page would render it.
  until curl -sS -o /dev/null "$url/api/revalidate" 2>/dev/null; do
    if ! running_pid >/dev/null; then
      tail -n 30 "$log_file" >&2 || true
      fail "Next.js exited while starting (log: $log_file)"
    fi
    if (( SECONDS - started > ready_timeout )); then
      tail -n 30 "$log_file" >&2 || true
      stop
      fail "Next.js did not answer on $url within ${ready_timeout}s (log: $log_file)"
    fi
    sleep 0.1
  done
  printf 'export NEXTJS_TEST_URL=%s\n' "$url" >"$env_file"
  echo "nextjs.sh: Next.js ready on $url in $((SECONDS - started))s (pid $pid, log $log_file)" >&2
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
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$pid_file"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
