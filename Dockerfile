# syntax=docker/dockerfile:1
#
# Images for room-svc, msg-svc and loadtest, one target each:
#
#   docker build --target room-svc -t chatroom/room-svc .
#   docker build --target msg-svc  -t chatroom/msg-svc .
#   docker build --target loadtest -t chatroom/loadtest .
#
# One builder stage compiles all three binaries (release, --locked); each
# runtime stage is debian:bookworm-slim with one binary, no build tools,
# and a non-root user. Every flag is also a CHATROOM_* environment
# variable; the images set only the listen addresses, on all interfaces.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p room-svc -p msg-svc -p loadtest \
 && mkdir -p /out \
 && cp target/release/room-svc target/release/msg-svc target/release/loadtest /out/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# tini reaps the loadtest's worker processes and forwards SIGTERM, so a
# service drains on `kubectl delete pod` as it does on Ctrl-C.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 chatroom \
 && useradd --system --uid 10001 --gid chatroom --home-dir /var/lib/chatroom --create-home chatroom
ENV XDG_STATE_HOME=/var/lib/chatroom/state
WORKDIR /var/lib/chatroom
USER 10001:10001

FROM runtime AS room-svc
COPY --from=builder /out/room-svc /usr/local/bin/room-svc
ENV CHATROOM_LINK_LISTEN=0.0.0.0:7500 \
    CHATROOM_HTTP_LISTEN=0.0.0.0:7501
# 7500: links from msg-svc nodes; 7501: /healthz, /readyz, /metrics, /admin/v1.
EXPOSE 7500/tcp 7501/tcp
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/room-svc"]

FROM runtime AS loadtest
COPY --from=builder /out/loadtest /usr/local/bin/loadtest
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/loadtest"]
CMD ["--help"]

# Last, so a plain `docker build .` makes the message service.
FROM runtime AS msg-svc
COPY --from=builder /out/msg-svc /usr/local/bin/msg-svc
ENV CHATROOM_WS_LISTEN=0.0.0.0:7400 \
    CHATROOM_HTTP_LISTEN=0.0.0.0:7401 \
    CHATROOM_QUIC_LISTEN=0.0.0.0:7402
# 7400: WebSocket (/ws); 7401: /healthz, /readyz, /metrics; 7402/udp: QUIC.
EXPOSE 7400/tcp 7401/tcp 7402/udp
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/msg-svc"]
