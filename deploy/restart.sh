#!/usr/bin/env bash
# Measures how long a processor takes from its start to deciding a command
# on every partition, against a deployment kept by a load-test run
# (KAPPA_LOADTEST_KEEP=1 bash deploy/loadtest.sh ...). Usage:
#   bash deploy/restart.sh <run prefix> <state dir> [commands]
# It starts ingest, then `kappa process` with the state directory and
# instance id m0, sends commands (default 60, new articles spread over the
# partitions) with Prefer: wait, and prints the seconds until every one
# was decided. Run it with the state directory the load test's processor
# used (a restart that keeps its store) or an empty one (a lost store).
# State dir "default" runs the processor as the load test does, without a
# state directory or instance id: it takes the first free store slot in
# $TMPDIR/kappa-state, the one the load test's processor left.
# KAPPA_BIN runs another build of kappa (default ./kappa).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
RUN=$1 STATE=$2 N=${3:-60} BIN=${KAPPA_BIN:-./kappa}
eval "$(bash deploy/stack.sh env)"
export KAPPA_TOPIC_PREFIX="$RUN" KAPPA_GROUP_PREFIX="$RUN" KAPPA_POSTGRES_SCHEMA="$RUN" KAPPA_CLICKHOUSE_DATABASE="$RUN" KAPPA_LOG_LEVEL=info
HTTP=127.0.0.1:18080 OPS=127.0.0.1:19193
KEY="Authorization: Bearer $(cat ".stack/loadtest-logs/$RUN/api-key")"
LOGS=".stack/loadtest-logs/$RUN"
pids=()
trap 'for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
# A processor from before the changelog replays all events first: long.
"$BIN" ingest --auth api-keys --max-wait 600s --http-write-timeout 660s --http-addr "$HTTP" >"$LOGS/restart-ingest.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://$HTTP/readyz" >/dev/null && break; sleep 0.1; done
start=$(date +%s.%N)
PLOG="$LOGS/restart-process-$(date +%s).log"
if [ "$STATE" = default ]; then
  KAPPA_OPS_ADDR=$OPS "$BIN" process >"$PLOG" 2>&1 & pids+=($!)
else
  KAPPA_OPS_ADDR=$OPS KAPPA_STATE_DIR="$STATE" KAPPA_INSTANCE_ID=m0 "$BIN" process >"$PLOG" 2>&1 & pids+=($!)
fi
proc=$!
seq 1 "$N" | xargs -P "$N" -I{} curl -s -o /dev/null -w '%{http_code}\n' -X POST "http://$HTTP/v1/commands" -H "$KEY" \
  -H 'Content-Type: application/json' -H 'Prefer: wait=600' \
  -d "{\"type\":\"article.publish\",\"aggregate_id\":\"restart-$(date +%s%N)-{}\",\"data\":{\"author_id\":\"a\",\"title\":\"t\",\"body\":\"b\"}}" |
  sort | uniq -c
end=$(date +%s.%N)
echo "every command decided $(echo "$end - $start" | bc) s after the processor started; its RSS then: $(($(ps -o rss= -p "$proc") / 1024)) MiB"
grep -E "(restored|rebuilt) aggregate state" "$PLOG" | sed 's/^/[process] /'
curl -s "http://$OPS/metrics" | grep -E '^kappa_processor_aggregates ' | sed 's/^/[process] /' || true
