#!/usr/bin/env bash
# Installs Debian's prometheus package (promtool for the alert-rule tests, and a real Prometheus)
# when promtool is missing.
set -euo pipefail
if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
  echo "==> prometheus: $(promtool --version 2>&1 | head -n1)"
  exit 0
fi
echo "==> prometheus: installing Debian's prometheus package"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package's service is not wanted: tests start their own Prometheus on a loopback port.
if pgrep -x prometheus >/dev/null; then pkill -x prometheus || true; fi
promtool --version 2>&1 | head -n1
