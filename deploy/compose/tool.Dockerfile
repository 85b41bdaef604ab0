# Builds one Go program from a tools/ module (its go.mod pins the version),
# for the quick-start's Dex and versitygw. Context: tools/<name>; PKG: the
# main package.
ARG GO_VERSION=1.26.8
FROM golang:${GO_VERSION}-bookworm AS build
ARG PKG
WORKDIR /src
COPY go.mod go.sum ./
RUN CGO_ENABLED=0 GOWORK=off go build -trimpath -o /out/tool "${PKG}" && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tool /usr/local/bin/tool
# /data: versitygw's posix root (a volume), writable by the runtime user.
COPY --from=build --chown=65532:65532 /out/data /data
ENTRYPOINT ["/usr/local/bin/tool"]
