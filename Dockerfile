# Kappa: one static binary; the subcommand is the container command
# (e.g. `docker run kappa ingest`, or `command: ["ingest"]` in compose).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /kappa ./cmd/kappa

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /kappa /kappa
USER nonroot:nonroot
ENTRYPOINT ["/kappa"]
