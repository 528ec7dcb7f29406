#!/usr/bin/env bash
# Runs a command with one test Strapi available to it, then stops that Strapi whatever happens:
#   scripts/with-strapi.sh cargo nextest run
# The command sees STRAPI_TEST_URL, STRAPI_TEST_EMAIL and STRAPI_TEST_PASSWORD; tests share this
# Strapi through `StrapiServer::shared()` (tests/support) instead of starting one each.
set -euo pipefail
cd "$(dirname "$0")/.."
(( $# > 0 )) || { echo "usage: $0 <command> [args...]" >&2; exit 2; }

STRAPI_RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/strapi-test.XXXXXX")"
STRAPI_OWNER_PID=$$
export STRAPI_RUN_DIR STRAPI_OWNER_PID
cleanup() { scripts/strapi.sh stop; rm -rf "$STRAPI_RUN_DIR"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck disable=SC1090
source <(scripts/strapi.sh start)
"$@"
