#!/usr/bin/env bash
# Installs what the test Strapi app and the test Next.js site need (their Node packages, and the
# site's build), each only when out of date. `make demo` and `make test` run it in the background
# beside the Rust build: it waits on the network and the disk, the build on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-strapi-app.sh
scripts/ensure-nextjs-app.sh
