#!/usr/bin/env bash
# Runs a command while the local broker logs every request it completes
# (kafka.request.logger at DEBUG), then prints, per request type, how many
# there were and how long the broker spent on them: where a decision's
# milliseconds go, broker side. Client-side time is what is left of the
# client's own measurement.
#
#   bash deploy/broker-requests.sh -- bash deploy/loadtest.sh --rate 20 --connections 1 --duration 15s --no-check --prefer-wait 5s
#
# Needs `make stack`. The request log is verbose: use it with light loads.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
[ "${1:-}" = -- ] && shift
[ $# -gt 0 ] || { echo "usage: $0 -- COMMAND [ARGS...]" >&2; exit 2; }
eval "$(bash deploy/stack.sh env)"
KAFKA_DIR="${KAPPA_STACK_DIR:-$ROOT/.stack}/kafka"
LOG="$KAFKA_DIR/kafka.log"
[ -f "$LOG" ] || { echo "no broker log at $LOG: is the stack up (make stack)?" >&2; exit 1; }

request_log() {
  java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile="$KAFKA_DIR/tools-log4j2.properties" \
    -cp "$KAFKA_DIR/libs/*" kafka.admin.ConfigCommand --bootstrap-server "${KAPPA_KAFKA_BROKERS%%,*}" \
    --command-config "$KAFKA_DIR/tools-client.properties" --alter --entity-type broker-loggers --entity-name 1 \
    --add-config "kafka.request.logger=$1" >/dev/null
}

before=$(wc -l <"$LOG")
request_log DEBUG
trap 'request_log WARN' EXIT
status=0
"$@" || status=$?
request_log WARN
trap - EXIT
if [ "$(wc -l <"$LOG")" -lt "$before" ]; then
  echo "the broker log rolled over during the command; use a lighter load" >&2
  exit 1
fi

echo
echo "broker time per request type, ms (total = queue + local + remote + response queue + send)"
tail -n +"$((before + 1))" "$LOG" | grep 'Completed request:' | awk '
  function field(name,   m) {
    if (!match($0, "\"" name "\":[^,}]*")) return ""
    m = substr($0, RSTART + length(name) + 3, RLENGTH - length(name) - 3)
    gsub(/"/, "", m)
    return m
  }
  { print field("requestApiKeyName"), field("totalTimeMs"), field("localTimeMs"), field("remoteTimeMs") }' |
  sort -k1,1 -k2,2n | awk '
  function flush() {
    if (n == 0) return
    printf "%-28s %7d  p50 %6.2f  p90 %6.2f  local mean %5.2f  remote mean %5.2f\n", key, n, t[int((n - 1) * 0.5) + 1], t[int((n - 1) * 0.9) + 1], local / n, remote / n
  }
  $1 != key { flush(); key = $1; n = 0; local = 0; remote = 0 }
  { t[++n] = $2; local += $3; remote += $4 }
  END { flush() }' | sort -k2,2nr
exit "$status"
