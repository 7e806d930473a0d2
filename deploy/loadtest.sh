#!/usr/bin/env bash
# Runs `kappa loadtest` against a fresh Kappa deployment on the local stack:
# every role as its own process on the real Kafka broker, under a unique
# topic prefix, Postgres schema and ClickHouse database, so runs never mix.
# Arguments are passed to `kappa loadtest`. Needs `make stack` and `make build`.
# The deployment's topics, schema and database are dropped when the run ends
# (a 10-minute run leaves gigabytes); KAPPA_LOADTEST_KEEP=1 keeps them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
eval "$(bash deploy/stack.sh env)"
# KAPPA_LOADTEST_RUN names a deployment a run kept (KAPPA_LOADTEST_KEEP=1) to
# load it again: history that grows run after run.
RUN="${KAPPA_LOADTEST_RUN:-lt$(date +%s)}"
LOGS="$ROOT/.stack/loadtest-logs/$RUN"
mkdir -p "$LOGS"
export KAPPA_TOPIC_PREFIX="$RUN" KAPPA_GROUP_PREFIX="$RUN" KAPPA_POSTGRES_SCHEMA="$RUN" KAPPA_CLICKHOUSE_DATABASE="$RUN"
export KAPPA_PARTITIONS="${KAPPA_PARTITIONS:-6}" KAPPA_LOG_LEVEL=warn
HTTP=127.0.0.1:18080 OPS_CH=127.0.0.1:19191 OPS_PG=127.0.0.1:19192 OPS_PROC=127.0.0.1:19193 OPS_INGEST=127.0.0.1:19194

pids=()
drop_deployment() {
  if [ "${KAPPA_LOADTEST_KEEP:-0}" = 1 ]; then
    echo "[loadtest] kept deployment $RUN (topics $RUN.*, Postgres schema and ClickHouse database $RUN)" >&2
    return
  fi
  local stack="${KAPPA_STACK_DIR:-$ROOT/.stack}" failed=() addr
  psql -X -q -w "$KAPPA_POSTGRES_URL" -c "DROP SCHEMA IF EXISTS \"$RUN\" CASCADE" >/dev/null 2>&1 || failed+=("Postgres schema")
  addr="${KAPPA_CLICKHOUSE_ADDR%%,*}"
  clickhouse-client --host "${addr%:*}" --port "${addr##*:}" -q "DROP DATABASE IF EXISTS $RUN" </dev/null >/dev/null 2>&1 ||
    failed+=("ClickHouse database")
  java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$stack/kafka/tools-log4j2.properties" \
    -cp "$stack/kafka/libs/*" org.apache.kafka.tools.TopicCommand --bootstrap-server "${KAPPA_KAFKA_BROKERS%%,*}" \
    --delete --if-exists --topic "$RUN\\..*" >/dev/null 2>&1 || failed+=("topics")
  # The processor's store slots (its default state directory).
  rm -rf "${TMPDIR:-/tmp}/kappa-state/$RUN-processor-"* || failed+=("processor state")
  if [ ${#failed[@]} -gt 0 ]; then
    echo "[loadtest] could not drop all of deployment $RUN: ${failed[*]}" >&2
  else
    echo "[loadtest] dropped deployment $RUN (KAPPA_LOADTEST_KEEP=1 keeps it)" >&2
  fi
}
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  drop_deployment
}
trap cleanup EXIT

./kappa migrate >"$LOGS/migrate.log" 2>&1
# The load goes through authentication like any caller's: a key of the
# default tenant, the one the correctness check reads.
./kappa apikey create --tenant default --scopes commands:write,read --name loadtest >"$LOGS/api-key" 2>>"$LOGS/migrate.log"
export KAPPA_PPROF=true # profiles on every role's ops address, for go tool pprof under load
KAPPA_OPS_ADDR=$OPS_PROC ./kappa process >"$LOGS/process.log" 2>&1 & pids+=($!)
KAPPA_OPS_ADDR=$OPS_CH ./kappa project clickhouse >"$LOGS/clickhouse.log" 2>&1 & pids+=($!)
KAPPA_OPS_ADDR=$OPS_PG ./kappa project postgres >"$LOGS/postgres.log" 2>&1 & pids+=($!)
# One key sends the whole load, so its rate limit is raised far above what
# the machine can do: the run measures Kappa, with the limiter's cost, not
# the limit.
KAPPA_OPS_ADDR=$OPS_INGEST ./kappa ingest --auth api-keys --command-rate-limit 1000000 --command-burst 2000000 --http-addr "$HTTP" >"$LOGS/ingest.log" 2>&1 & pids+=($!)
for _ in $(seq 1 150); do
  curl -sf "http://$HTTP/readyz" >/dev/null && curl -sf "http://$OPS_CH/readyz" >/dev/null && curl -sf "http://$OPS_PG/readyz" >/dev/null && break
  sleep 0.2
done
echo "[loadtest] deployment $RUN ready; logs in $LOGS" >&2
./kappa loadtest --target "http://$HTTP" --metrics-url "http://$OPS_CH/metrics" --metrics-url "http://$OPS_PG/metrics" --metrics-url "http://$OPS_PROC/metrics" --ingest-metrics-url "http://$OPS_INGEST/metrics" --api-key-file "$LOGS/api-key" "$@"
