# syntax=docker/dockerfile:1
# One image for both components: `strapi-webhook-operator controller` and `… receiver`.
#
#   docker build -t ghcr.io/strapi-webhook-operator/strapi-webhook-operator:0.1.0 .
#
# Not exercised by CI (no container engine runs there); see docs/install.md.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The cache mounts keep the registry and compiled dependencies between builds, so a change in
# src/ recompiles the crate only. The target folder is a cache, so the binary is copied out of it
# in the same step. SQLite is compiled in (rusqlite `bundled`) and TLS is rustls, so the binary
# needs nothing but glibc at run time.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin strapi-webhook-operator \
 && install -D target/release/strapi-webhook-operator /out/strapi-webhook-operator \
 && mkdir -p /out/var/lib/strapi-webhook-operator

# glibc and CA certificates, no shell, no package manager; runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.source="https://github.com/strapi-webhook-operator/strapi-webhook-operator" \
      org.opencontainers.image.description="Declarative, durable and observable Strapi CMS webhooks" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/strapi-webhook-operator /usr/local/bin/strapi-webhook-operator
# The receiver's SQLite queue; in Kubernetes a volume is mounted here.
COPY --from=build --chown=65532:65532 /out/var/lib/strapi-webhook-operator /var/lib/strapi-webhook-operator
USER 65532:65532
# 8080: receiver ingest; 9091: receiver admin; 9090: controller metrics and probes.
EXPOSE 8080 9090 9091
ENTRYPOINT ["/usr/local/bin/strapi-webhook-operator"]
