#!/usr/bin/env bash
# `make image`: builds the OCI image offline, without a Docker engine, and writes it to
# target/image/strapi-webhook-operator.oci.tar (an OCI archive, tag = the crate version):
#   1. the static release binary: `cargo build --release --locked --target x86_64-unknown-linux-musl`,
#      the build the Dockerfile runs;
#   2. its root filesystem, laid out by scripts/image-rootfs.sh (the Dockerfile's build stage
#      runs the same script);
#   3. the Dockerfile's final `FROM scratch` stage, run by buildah with that folder standing in
#      for the `rootfs` stage, so nothing is pulled from a registry.
# buildah keeps its storage in target/image/storage (vfs driver: works unprivileged in a
# container and needs no overlay support).
# Push it with `skopeo copy oci-archive:target/image/strapi-webhook-operator.oci.tar docker://<ref>`.
set -euo pipefail
cd "$(dirname "$0")/.."

rust_target="x86_64-unknown-linux-musl"
cargo_target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
out="$PWD/target/image"
archive="$out/strapi-webhook-operator.oci.tar"
version="$(cargo metadata --no-deps --format-version 1 \
  | jq -r '.packages[] | select(.name == "strapi-webhook-operator") | .version')"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
# Layers are stamped with the commit's time, not the build's, so a rebuild of one commit gives
# the same layers.
timestamp="$(git log -1 --format=%ct 2>/dev/null || echo 0)"

for tool in buildah musl-gcc jq file; do
  command -v "$tool" >/dev/null || { echo "error: $tool is missing: run scripts/test-deps.sh" >&2; exit 1; }
done

echo "==> image: release binary for $rust_target"
cargo build --release --locked --target "$rust_target" --bin strapi-webhook-operator
binary="$cargo_target_dir/$rust_target/release/strapi-webhook-operator"

echo "==> image: root filesystem"
rm -rf "$out/context"
mkdir -p "$out/context/rootfs"
scripts/image-rootfs.sh "$binary" "$out/context/rootfs/out"

echo "==> image: $archive"
buildah_=(buildah --root "$out/storage" --runroot "$out/run" --storage-driver vfs)
name="localhost/strapi-webhook-operator:$version"
"${buildah_[@]}" build --quiet --layers=false --timestamp "$timestamp" \
  --build-context "rootfs=$out/context/rootfs" \
  --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
  -f "$PWD/Dockerfile" -t "$name" "$out/context" > /dev/null
rm -f "$archive"
"${buildah_[@]}" push --quiet "$name" "oci-archive:$archive:$version"
# The image is in the archive; buildah's copy is not needed again.
"${buildah_[@]}" rmi --all > /dev/null
echo "==> image: $(du -k "$archive" | cut -f1) KiB in $archive (tag $version)"
