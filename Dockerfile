# sentry-rs container image: a static (musl) binary at /sentry on an empty base, run as the
# numeric non-root user 65532 (distroless's "nonroot"), as Dapr's Helm chart runs its sentry
# (runAsNonRoot, read-only root filesystem). scripts/image builds the same image without a Docker
# engine. arm64: docker buildx build --platform linux/arm64 --build-arg TARGET=aarch64-unknown-linux-musl .
ARG RUST_VERSION=1.89

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
ARG TARGET=x86_64-unknown-linux-musl
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add "${TARGET}"
WORKDIR /src
COPY . .
# aws-lc-sys compiles C for the target with musl-gcc.
RUN export "CC_$(echo "${TARGET}" | tr - _)=musl-gcc" \
 && cargo build --release --locked --target "${TARGET}" --bin sentry \
 && cp "target/${TARGET}/release/sentry" /sentry \
 && file /sentry | grep -Eq 'statically linked|static-pie linked'

FROM scratch
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="sentry-rs" \
      org.opencontainers.image.description="Drop-in Rust replacement for Dapr Sentry, the Dapr control-plane CA" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /sentry /sentry
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ENTRYPOINT ["/sentry"]
