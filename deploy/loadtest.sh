#!/usr/bin/env bash
# Runs `kappa loadtest` against a fresh Kappa deployment on the local stack:
# every role as its own process on the real Kafka broker, under a unique
# topic prefix, Postgres schema and ClickHouse database, so runs never mix.
# Arguments are passed to `kappa loadtest`. Needs `make stack` and `make build`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
eval "$(bash deploy/stack.sh env)"
RUN="lt$(date +%s)"
LOGS="$ROOT/.stack/loadtest-logs/$RUN"
mkdir -p "$LOGS"
export KAPPA_TOPIC_PREFIX="$RUN" KAPPA_GROUP_PREFIX="$RUN" KAPPA_POSTGRES_SCHEMA="$RUN" KAPPA_CLICKHOUSE_DATABASE="$RUN"
export KAPPA_PARTITIONS="${KAPPA_PARTITIONS:-6}" KAPPA_LOG_LEVEL=warn
HTTP=127.0.0.1:18080 OPS_CH=127.0.0.1:19191 OPS_PG=127.0.0.1:19192 OPS_PROC=127.0.0.1:19193 OPS_INGEST=127.0.0.1:19194

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

./kappa migrate >"$LOGS/migrate.log" 2>&1
KAPPA_OPS_ADDR=$OPS_PROC ./kappa process >"$LOGS/process.log" 2>&1 & pids+=($!)
KAPPA_OPS_ADDR=$OPS_CH ./kappa project clickhouse >"$LOGS/clickhouse.log" 2>&1 & pids+=($!)
KAPPA_OPS_ADDR=$OPS_PG ./kappa project postgres >"$LOGS/postgres.log" 2>&1 & pids+=($!)
KAPPA_OPS_ADDR=$OPS_INGEST ./kappa ingest --http-addr "$HTTP" >"$LOGS/ingest.log" 2>&1 & pids+=($!)
for _ in $(seq 1 150); do
  curl -sf "http://$HTTP/readyz" >/dev/null && curl -sf "http://$OPS_CH/readyz" >/dev/null && curl -sf "http://$OPS_PG/readyz" >/dev/null && break
  sleep 0.2
done
echo "[loadtest] deployment $RUN ready; logs in $LOGS" >&2
./kappa loadtest --target "http://$HTTP" --metrics-url "http://$OPS_CH/metrics" --metrics-url "http://$OPS_PG/metrics" --metrics-url "http://$OPS_PROC/metrics" "$@"
