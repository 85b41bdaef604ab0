# syntax=docker/dockerfile:1
#
# postern container image: a static binary on a distroless base, running as
# the unprivileged "nonroot" user (uid 65532).
#
#   docker build -t postern:dev --build-arg VERSION=$(git describe --tags --always) \
#     --build-arg COMMIT=$(git rev-parse HEAD) .
#
# Health: the image has no shell, so there is no HEALTHCHECK instruction here.
# Orchestrators probe the HTTP listener instead:
#   GET /healthz  liveness (the process serves HTTP)
#   GET /readyz   readiness (state store, recording store and spool reachable)
# The Helm chart and deploy/compose use these endpoints.

ARG GO_VERSION=1.26.8

# --- web assets: asciinema-player copied into players/web/assets ----------
FROM node:20-bookworm-slim AS web
WORKDIR /src/players/web
COPY players/web/package.json players/web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY players/web/ ./
RUN node build.mjs

# --- static Go binary ------------------------------------------------------
FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
COPY --from=web /src/players/web/assets/ players/web/assets/
ARG VERSION=dev
ARG COMMIT=
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X github.com/posternhq/postern/internal/buildinfo.version=${VERSION} -X github.com/posternhq/postern/internal/buildinfo.commit=${COMMIT}" \
      -o /out/postern ./cmd/postern \
 && mkdir -p /out/data /out/config

# --- runtime -----------------------------------------------------------------
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/postern /usr/local/bin/postern
# The data directory (generated CA keys when none are mounted, spool, SQLite
# state) belongs to the runtime user; mount a volume over it.
COPY --from=build --chown=65532:65532 /out/data /var/lib/postern
COPY --from=build --chown=65532:65532 /out/config /etc/postern
USER 65532:65532
ENV POSTERN_CONFIG=/etc/postern/config.yaml
EXPOSE 2222 8080
VOLUME ["/var/lib/postern"]
ENTRYPOINT ["/usr/local/bin/postern"]
CMD ["serve"]
