#!/usr/bin/env bash
# Installs the test Next.js app's Node packages (tests/nextjs) when its lockfile changed since the
# last install, and builds it (`next build`) when its sources or packages changed since the last
# build. A cold run (empty npm cache) takes about a minute: 15 s for npm ci (150 MB of downloads,
# 370 MB installed), the rest for next build. A warm run takes well under a second.
# Nothing is fetched but npm packages: telemetry is off and the app loads no remote fonts.
set -euo pipefail
app="$(cd "$(dirname "$0")/../tests/nextjs" && pwd)"
export NEXT_TELEMETRY_DISABLED=1

installed="$app/node_modules/.installed-lock-sha256"
lock="$(sha256sum "$app/package-lock.json" | cut -d' ' -f1)"
if [[ -f "$installed" && "$(cat "$installed")" == "$lock" ]]; then
  echo "==> test Next.js app: node_modules up to date"
else
  echo "==> test Next.js app: npm ci"
  (cd "$app" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock" > "$installed"
fi

built="$app/.next/.built-sha256"
sources="$(cd "$app" && find app package-lock.json next.config.mjs tsconfig.json -type f | LC_ALL=C sort \
  | xargs sha256sum | sha256sum | cut -d' ' -f1)"
if [[ -f "$built" && "$(cat "$built")" == "$sources" ]]; then
  echo "==> test Next.js app: build up to date"
  exit 0
fi
echo "==> test Next.js app: next build"
log="$(mktemp)"
if ! (cd "$app" && node_modules/.bin/next build) >"$log" 2>&1; then
  cat "$log" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
echo "$sources" > "$built"
