#!/usr/bin/env bash
# Installs the test Strapi app's Node packages (tests/strapi) when the lockfile changed since the
# last install. The first install takes about five minutes and 700 MB; later runs take a second.
set -euo pipefail
app="$(cd "$(dirname "$0")/../tests/strapi" && pwd)"
stamp="$app/node_modules/.installed-lock-sha256"
want="$(sha256sum "$app/package-lock.json" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "==> test Strapi app: node_modules up to date"
  exit 0
fi
echo "==> test Strapi app: npm ci (first run takes about 5 minutes)"
cd "$app"
npm ci --no-audit --no-fund --loglevel=error --foreground-scripts=false
mkdir -p public/uploads
echo "$want" > "$stamp"
