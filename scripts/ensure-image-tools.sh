#!/usr/bin/env bash
# Installs what `make image` and scripts/check-image.sh need, each only when missing: the musl
# target of the Rust toolchain and Debian's packages for the C parts (musl-tools), a daemonless
# image build (buildah, skopeo, umoci) and running the image's root filesystem as a pod would
# (capsh, unshare, ip). One line of output when nothing was missing.
set -euo pipefail
rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 \
  || rustup target list --installed | grep -qx x86_64-unknown-linux-musl
declare -A image_tools=(
  [buildah]=buildah [skopeo]=skopeo [umoci]=umoci [musl-gcc]=musl-tools [capsh]=libcap2-bin
  [file]=file [jq]=jq [curl]=curl [ip]=iproute2 [unshare]=util-linux
)
missing=()
for tool in "${!image_tools[@]}"; do
  command -v "$tool" >/dev/null || missing+=("${image_tools[$tool]}")
done
[[ -f /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
if (( ${#missing[@]} > 0 )); then
  echo "==> image tools: apt-get install ${missing[*]}"
  sudo_=()
  [[ "$(id -u)" == 0 ]] || sudo_=(sudo)
  "${sudo_[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "==> image tools: up to date"
fi
