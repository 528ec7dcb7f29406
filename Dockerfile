# syntax=docker/dockerfile:1
# One image for both components: `strapi-webhook-operator controller` and `… receiver`.
#
#   docker build -t ghcr.io/strapi-webhook-operator/strapi-webhook-operator:0.1.0 .
#
# `make image` builds the same image without Docker: it compiles the binary on the machine, lays
# out the same root filesystem with scripts/image-rootfs.sh and runs this file's last stage with
# buildah, handing it that folder as the `rootfs` stage (`--build-context rootfs=…`). So the
# binary that `make test` checks inside the image (scripts/check-image.sh) is built the way this
# file builds it: `cargo build --release --locked --target <arch>-unknown-linux-musl`.

FROM docker.io/library/rust:1.95-bookworm AS rootfs
# musl: a static binary whose resolver reads /etc/hosts and /etc/resolv.conf itself, so the
# image needs no libc and no NSS modules (docs/install.md#the-image). musl-tools compiles the
# C parts (SQLite, ring) for it.
RUN apt-get update && apt-get install -y --no-install-recommends musl-tools file ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
# The cache mounts keep the registry and compiled dependencies between builds; the target folder
# is a cache, so the root filesystem is laid out of it in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
 && cargo build --release --locked --target "$target" --bin strapi-webhook-operator \
 && scripts/image-rootfs.sh "target/$target/release/strapi-webhook-operator" /out

# No shell, no package manager, no libc: the binary, CA certificates, /etc/passwd and the queue
# folder. Runs as uid 65532.
FROM scratch
# Ownership comes along: /var/lib/strapi-webhook-operator (the receiver's SQLite queue; in
# Kubernetes a volume is mounted there) is 65532's, everything else root's.
COPY --from=rootfs /out/ /
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="strapi-webhook-operator" \
      org.opencontainers.image.description="Declarative, durable and observable Strapi CMS webhooks" \
      org.opencontainers.image.source="https://github.com/strapi-webhook-operator/strapi-webhook-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
USER 65532:65532
# 8080: receiver ingest; 9091: receiver admin; 9090: controller metrics and probes.
EXPOSE 8080 9090 9091
ENTRYPOINT ["/usr/local/bin/strapi-webhook-operator"]
