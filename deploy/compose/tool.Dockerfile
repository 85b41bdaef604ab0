# Builds one Go program from a tools/ module (its go.mod pins the version),
# for the quick-start's Dex and versitygw. Context: tools/<name>; PKG: the
# main package. Base images are pinned by digest; the repository's
# Dockerfile says how to update them.
FROM golang:1.26.8-bookworm@sha256:a688600ca24f8a4d3ca77f95b0dd40704a9fc787c826660eb7ba0b641b8b175d AS build
ARG PKG
WORKDIR /src
COPY go.mod go.sum ./
RUN CGO_ENABLED=0 GOWORK=off go build -trimpath -o /out/tool "${PKG}" && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot@sha256:afa5c872c891853ca7fcf1f12c3edb23f7eeef36189728842dd51042ff57f7ab
COPY --from=build /out/tool /usr/local/bin/tool
# /data: versitygw's posix root (a volume), writable by the runtime user.
COPY --from=build --chown=65532:65532 /out/data /data
ENTRYPOINT ["/usr/local/bin/tool"]
