# Kappa: one static binary; the subcommand is the container command
# (e.g. `docker run kappa ingest`, or `command: ["ingest"]` in compose).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /kappa ./cmd/kappa
# The processors' state directory; a volume mounted there starts with its
# owner, so the nonroot user can write it.
RUN mkdir -p /state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /kappa /kappa
COPY --from=build --chown=65532:65532 /state /var/lib/kappa
USER nonroot:nonroot
ENTRYPOINT ["/kappa"]
