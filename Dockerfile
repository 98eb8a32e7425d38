# The jembatan binary in a small runtime image that runs as a non-root user.
#   docker build -t jembatan .
# The same binary runs the broker, an adapter, the PKI tools and the audit
# tools: `docker run jembatan broker --config /etc/jembatan/broker.toml`.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p jembatan-cli \
 && install -m 0755 target/release/jembatan /usr/local/bin/jembatan

FROM debian:bookworm-slim
# uid/gid 10001: not root, not a user of the host
RUN groupadd --system --gid 10001 jembatan \
 && useradd --system --uid 10001 --gid jembatan --home-dir /var/lib/jembatan \
      --shell /usr/sbin/nologin jembatan \
 && install -d -o jembatan -g jembatan -m 0750 /var/lib/jembatan \
 && install -d -o jembatan -g jembatan -m 0700 /var/lib/jembatan-ca
COPY --from=build /usr/local/bin/jembatan /usr/local/bin/jembatan
# /var/lib/jembatan: state (stores, keys, receipt logs); /var/lib/jembatan-ca:
# a CA kept by `jembatan pki`, when one runs in this image
USER 10001:10001
WORKDIR /var/lib/jembatan
# gRPC and HTTP/JSON (broker 7000, adapter 7100), Prometheus metrics (9464)
EXPOSE 7000 7100 9464
ENTRYPOINT ["/usr/local/bin/jembatan"]
CMD ["--help"]
