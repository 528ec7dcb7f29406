#!/usr/bin/env bash
# Lays out the image's root filesystem in <out>: the one place that says what the image holds,
# used by `make image` (scripts/build-image.sh) and by the Dockerfile's build stage alike, so
# both produce the same layout:
#   /usr/local/bin/strapi-webhook-operator   the static binary (no libc, no NSS modules needed)
#   /etc/passwd, /etc/group                  uid/gid 65532 `nonroot`, as distroless names it
#   /etc/ssl/certs/ca-certificates.crt       the CA bundle rustls-native-certs reads
#   /var/lib/strapi-webhook-operator/        the SQLite queue, owned by 65532
#   /tmp/                                    SQLite's temporary files (a volume in the chart)
# Usage: scripts/image-rootfs.sh <static binary> <out> [<CA bundle>]
set -euo pipefail

binary="$1"
out="$2"
ca_bundle="${3:-/etc/ssl/certs/ca-certificates.crt}"

# A dynamically linked binary would start nowhere in a FROM scratch image: refuse it here.
if ! file -L "$binary" | grep -Eq 'static(ally|-pie) linked'; then
  echo "error: $binary is not statically linked: $(file -L "$binary")" >&2
  exit 1
fi
[[ -s "$ca_bundle" ]] || { echo "error: no CA bundle at $ca_bundle (install ca-certificates)" >&2; exit 1; }

rm -rf "$out"
install -D -m 0755 "$binary" "$out/usr/local/bin/strapi-webhook-operator"
install -D -m 0644 "$ca_bundle" "$out/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
  > "$out/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$out/etc/group"
chmod 0644 "$out/etc/passwd" "$out/etc/group"
install -d -m 0750 "$out/var/lib/strapi-webhook-operator"
# Owned by the runtime user, for a receiver run without a volume there. Only root can give it
# away; both builds run this as root, and a build that cannot is refused rather than wrong.
chown 65532:65532 "$out/var/lib/strapi-webhook-operator"
install -d -m 1777 "$out/tmp"
