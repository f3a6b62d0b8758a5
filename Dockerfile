# One image with every binary of the backend and the svrkit CLI, for
# `svrkit deploy --render kubernetes` (docs/deploy-kubernetes.md):
#   docker build -t svrkit-backend:latest .
# Stage 1 builds with the toolchain the workspace needs (rust-version in Cargo.toml) and
# protoc (the etcd client's generated code); stage 2 is a slim Debian with the binaries,
# run as an unprivileged user.
FROM rust:1.90-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
      -p wx-storage -p account -p contact -p seq -p message -p moments -p wallet -p access \
      -p svrkit-cli \
 && mkdir /out \
 && cd target/release \
 && cp accountstore contactstore msgstore seqstore momentsstore walletstore wx-backup \
       wx-replica account contact seq message moments wallet access svrkit /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --no-create-home svrkit
COPY --from=build /out/ /usr/local/bin/
USER 10001
WORKDIR /data
