# syntax=docker/dockerfile:1
# egressd: a small static binary on a distroless base, running as non-root.
#
#   docker build -t egressd .
#   docker run --rm -p 3128:3128 -p 9090:9090 egressd
#
# The build stage runs exactly the command in .ci/build-static, which CI
# also runs, so the image's build steps are tested without a Docker engine.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN bash .ci/build-static && cp target/x86_64-unknown-linux-gnu/release/egressd /egressd

FROM gcr.io/distroless/static-debian12:nonroot AS runtime
COPY --from=build /egressd /usr/local/bin/egressd
COPY policy/ /etc/egressd/
# Inside a container the proxy listens on every interface, so only loopback
# and private source networks may use it; set EGRESSD_ALLOW_CLIENTS to narrow.
ENV EGRESSD_POLICY=/etc/egressd/qualtrics.toml \
    EGRESSD_LISTEN=0.0.0.0:3128 \
    EGRESSD_ADMIN=0.0.0.0:9090 \
    EGRESSD_ALLOW_CLIENTS=127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7 \
    EGRESSD_LOG_FORMAT=json
USER 65532:65532
EXPOSE 3128 9090
# Probes: GET :9090/healthz (liveness) and :9090/readyz (readiness; 503 while
# draining). Distroless has no shell or curl, so orchestrator probes are used
# rather than a HEALTHCHECK command (see deploy/kubernetes/).
ENTRYPOINT ["/usr/local/bin/egressd"]
CMD ["run"]
