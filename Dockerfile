# syntax=docker/dockerfile:1
# The one Herald image: `herald operator` and `herald broker` (the operator starts brokers with
# its own image). Build: docker build --build-arg VERSION=v0.1.0 -t ghcr.io/heraldmq/herald:v0.1.0 .
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 ... (cross-compiles; no emulation).

FROM --platform=$BUILDPLATFORM golang:1.26 AS builder
ARG TARGETOS=linux
ARG TARGETARCH
# Stamped into the binary with -X; VERSION_VAR names the package variable that receives it (the
# linker ignores -X for a variable that does not exist, so a rename never breaks the build).
ARG VERSION=dev
ARG VERSION_VAR=github.com/heraldmq/herald/internal/version.Version
WORKDIR /src
# Modules first, so a source change reuses the cached download layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X ${VERSION_VAR}=${VERSION}" \
      -o /out/herald .

# Static binary, no shell, no package manager; runs as the distroless "nonroot" user.
FROM gcr.io/distroless/static:nonroot
LABEL org.opencontainers.image.title="herald" \
      org.opencontainers.image.description="Herald: a Kubernetes operator and message broker" \
      org.opencontainers.image.source="https://github.com/heraldmq/herald"
COPY --from=builder /out/herald /herald
USER 65532:65532
ENTRYPOINT ["/herald"]
