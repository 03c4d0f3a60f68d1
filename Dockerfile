# syntax=docker/dockerfile:1
# One image per service, from one Dockerfile: the build stage compiles all four services once
# (they share nearly all their code, so one build and one cache beat four), and the runtime stage
# keeps only the service named by SERVICE.
#
#   docker build --build-arg SERVICE=order -t bazaar/order .
#
# Tests/Deploy/test_container.py builds the binaries with the same flags and checks with ldd that
# every shared library they need comes from a package installed below (or already in the base
# image): a missing runtime library fails CI, not a user's `docker run`.

ARG SWIFT_IMAGE=swift:6.3-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- build -------------------------------------------------------------------------------------
FROM ${SWIFT_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends librabbitmq-dev libpq-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that a source change doesn't fetch them again.
COPY Package.swift ./
RUN swift package resolve
COPY . .
# Static Swift standard library and Foundation: the runtime image needs no Swift toolchain.
# (The four services only; the bazaar CLI is a developer tool, not shipped.)
RUN for service in order inventory payment notification; do \
      swift build -c release --static-swift-stdlib --product "$service-service" || exit 1; \
    done \
 && bin="$(swift build -c release --static-swift-stdlib --show-bin-path)" \
 && mkdir -p /staging/resources \
 && cp "$bin"/order-service "$bin"/inventory-service "$bin"/payment-service "$bin"/notification-service /staging/ \
 && cp -R "$bin"/*.resources /staging/resources/

# ---- runtime -----------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
ARG SERVICE
RUN test -n "$SERVICE" || { echo "build with --build-arg SERVICE=order|inventory|payment|notification" >&2; exit 1; }
# The C libraries the binaries link (librabbitmq, libpq), certificates for TLS, curl for the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends librabbitmq4 libpq5 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin bazaar
WORKDIR /app
# The migrations travel as resource bundles beside the binary.
COPY --from=build /staging/${SERVICE}-service /app/
COPY --from=build /staging/resources/ /app/
USER 10001
ENV SERVICE=${SERVICE} \
    HTTP_HOST=0.0.0.0
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${HTTP_PORT:-8080}/health/live" >/dev/null || exit 1
# exec: the service is PID 1 and gets SIGTERM itself, so it shuts down gracefully.
ENTRYPOINT ["/bin/sh", "-c", "exec /app/${SERVICE}-service"]
