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
#
# Base images are pinned by digest, the tag beside it for people: a rebuild of
# an old commit gets the same bases, and a moved tag changes nothing until the
# digest is updated here on purpose. To update one, resolve its tag to the
# digest of the multi-platform index and replace it (and the date):
#
#   docker buildx imagetools inspect node:24-bookworm-slim --format '{{json .Manifest.Digest}}'
#   crane digest gcr.io/distroless/static-debian12:nonroot            # the same, with crane
#
# The Go toolchain itself comes from the Go module proxy at the exact
# version in GO_TOOLCHAIN (checksum-verified), so a security release of Go
# needs no new base image. Digests as of 2026-08 (node 24.18.0 LTS; Go 1.26.8
# base; distroless static-debian12).

ARG GO_TOOLCHAIN=go1.26.10

# --- web assets: asciinema-player copied into players/web/assets ----------
FROM node:24-bookworm-slim@sha256:6f7b03f7c2c8e2e784dcf9295400527b9b1270fd37b7e9a7285cf83b6951452d AS web
WORKDIR /src/players/web
COPY players/web/package.json players/web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY players/web/ ./
RUN node build.mjs

# --- static Go binary ------------------------------------------------------
FROM golang:1.26.8-bookworm@sha256:a688600ca24f8a4d3ca77f95b0dd40704a9fc787c826660eb7ba0b641b8b175d AS build
ARG GO_TOOLCHAIN
ENV GOTOOLCHAIN=${GO_TOOLCHAIN}
WORKDIR /src
COPY go.mod go.sum ./
# go.mod replaces golang.org/x/crypto with the copy in third_party/.
COPY third_party/ third_party/
RUN go mod download
COPY . .
COPY --from=web /src/players/web/assets/ players/web/assets/
ARG VERSION=dev
ARG COMMIT=
# -tags nodevidp: a release has no development mode (and none of its
# OpenID provider's dependencies).
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false -tags nodevidp \
      -ldflags "-s -w -X github.com/posternhq/postern/internal/buildinfo.version=${VERSION} -X github.com/posternhq/postern/internal/buildinfo.commit=${COMMIT}" \
      -o /out/postern ./cmd/postern \
 && mkdir -p /out/data /out/config

# --- runtime -----------------------------------------------------------------
FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab
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
