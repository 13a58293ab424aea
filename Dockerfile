# syntax=docker/dockerfile:1
#
# thanos-fanout container image.
#
#   docker build -t thanos-fanout .
#   docker run -v "$PWD/config.yaml:/etc/thanos-fanout/config.yaml:ro" \
#     -p 10901:10901 -p 10902:10902 thanos-fanout
#
# Build stage: the official Rust image, pinned (Cargo.toml's rust-version is
# the minimum; this is the toolchain the project is built and tested with).
FROM rust:1.95.0-slim-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target directories are BuildKit caches, so a rebuild after a
# source change does not compile every dependency again. The binary is copied
# out of the cache mount so the next stage can take it. Without default
# features it carries no demo (synthetic remotes, certificate minting): the
# image only serves.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --bin thanos-fanout \
    && cp target/release/thanos-fanout /thanos-fanout

# Runtime: glibc and libgcc only (rustls, no OpenSSL), no shell, runs as the
# image's non-root user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /thanos-fanout /usr/local/bin/thanos-fanout
USER 65532:65532
# 10901: StoreAPI for the querier (plaintext gRPC); 10902: /metrics and probes.
EXPOSE 10901 10902
ENTRYPOINT ["/usr/local/bin/thanos-fanout", "--config", "/etc/thanos-fanout/config.yaml"]
