#!/usr/bin/env bash
# Local Kappa stack without Docker: PostgreSQL 15, ClickHouse (Debian's 18.16)
# and a single-node KRaft Apache Kafka 4.x broker, each as its own process on
# loopback-only, non-default ports, with all state under one directory.
#
#   deploy/stack.sh up     [postgres|clickhouse|kafka ...]   install if needed, start, wait until ready
#   deploy/stack.sh down   [--purge] [component ...]         stop (--purge: also delete the data)
#   deploy/stack.sh status [component ...]                   exit 0 only if all named components are up
#   deploy/stack.sh env    [component ...]                   print `export KAPPA_...=` lines
#   deploy/stack.sh env-secure [component ...]               the same for the secured endpoints
#
# Every server also serves a secured endpoint, with certificates from a
# local CA the script makes under <state dir>/tls (ca.pem is the CA):
# Kafka SASL_SSL on 127.0.0.1:19094 (SCRAM-SHA-512 and -256, PLAIN, and
# OAUTHBEARER with Kafka's unsecured validator, for tests), Postgres over TLS
# for the user kappa_tls (refused without TLS), and ClickHouse's secure
# native port 19440 with the user kappa_tls and a password. The open
# endpoints stay for the open-stack tests; `env-secure` points at the others.
#
# No component argument means all three. State dir: ${KAPPA_STACK_DIR:-<repo>/.stack}.
# The broker's JVM: KAPPA_STACK_KAFKA_HEAP (512m) and KAPPA_STACK_KAFKA_GC (G1 with
# a 20 ms pause goal; ZGC measured no better for Kappa's ack latency here).
# Everything the script says goes to stderr prefixed with [stack]; `env` and
# `status` results go to stdout.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd -P)"
STACK="${KAPPA_STACK_DIR:-$REPO_ROOT/.stack}"
case "$STACK" in /*) ;; *) STACK="$PWD/$STACK" ;; esac
STACK="${STACK%/}"

# Fixed, loopback-only, non-default ports.
PG_PORT=55432
CH_TCP_PORT=19000
CH_HTTP_PORT=18123
KAFKA_PORT=19092
KAFKA_CONTROLLER_PORT=19093
KAFKA_SASL_PORT=19094
CH_TLS_PORT=19440

PG_URL="postgres://kappa:kappa@127.0.0.1:${PG_PORT}/kappa?sslmode=disable"
# The secured endpoints' user and password; a local test stack's, not a secret.
SECURE_USER=kappa_tls
SECURE_PASSWORD=kappa-tls-password
KEYSTORE_PASSWORD=kappa-keystore
TLS_DIR="$STACK/tls"
ALL_COMPONENTS=(postgres clickhouse kafka)

PG_TIMEOUT="${KAPPA_STACK_PG_TIMEOUT:-60}"
CH_TIMEOUT="${KAPPA_STACK_CH_TIMEOUT:-60}"
KAFKA_TIMEOUT="${KAPPA_STACK_KAFKA_TIMEOUT:-90}"
KAFKA_HEAP="${KAPPA_STACK_KAFKA_HEAP:-512m}"
KAFKA_GC="${KAPPA_STACK_KAFKA_GC:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35}"

PG_DIR="$STACK/postgres"
PG_DATA="$PG_DIR/data"
PG_SOCK="$PG_DIR/run"
PG_LOG="$PG_DIR/postgres.log"

CH_DIR="$STACK/clickhouse"
CH_LOG="$CH_DIR/log/clickhouse-server.log"
CH_ERRLOG="$CH_DIR/log/clickhouse-server.err.log"
CH_STDOUT="$CH_DIR/stdout.log"
CH_PID="$CH_DIR/clickhouse-server.pid"

KAFKA_DIR="$STACK/kafka"
KAFKA_LIBS="$KAFKA_DIR/libs"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_LOG="$KAFKA_DIR/kafka.log"
KAFKA_STDOUT="$KAFKA_DIR/stdout.log"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
KAFKA_POM="$SCRIPT_DIR/kafka/pom.xml"

export DEBIAN_FRONTEND=noninteractive

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

usage() {
  cat >&2 <<EOF
usage: deploy/stack.sh up|down|status|env|env-secure [postgres|clickhouse|kafka ...]
       deploy/stack.sh down --purge [component ...]   (also deletes the data)
state dir: $STACK
EOF
  exit 2
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# ---------------------------------------------------------------- helpers --

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Pid of the process listening on 127.0.0.1:$1, if `ss` can tell.
listener_pid() {
  command -v ss >/dev/null 2>&1 || return 1
  ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2
}

# pid_matches PIDFILE PATTERN: the pid in PIDFILE is alive and its command line matches PATTERN.
pid_matches() {
  local file=$1 pattern=$2 pid
  [ -s "$file" ] || return 1
  pid=$(head -n1 "$file" | tr -dc 0-9)
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"
}

pid_of() { head -n1 "$1" 2>/dev/null | tr -dc 0-9; }

# True while process $1 exists and is not a zombie.
pid_alive() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

# stop_pid NAME PIDFILE PATTERN GRACE_SECONDS
stop_pid() {
  local name=$1 file=$2 pattern=$3 grace=$4 pid i
  if ! pid_matches "$file" "$pattern"; then
    rm -f "$file"
    return 1
  fi
  pid=$(pid_of "$file")
  log "$name: stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 5; i++)); do
    pid_alive "$pid" || break
    sleep 0.2
  done
  if pid_alive "$pid"; then
    log "$name: still running after ${grace}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 1
  fi
  rm -f "$file"
  return 0
}

show_log_tail() {
  local f
  for f in "$@"; do
    [ -s "$f" ] || continue
    log "---- last lines of $f ----"
    tail -n 40 "$f" >&2 || true
  done
}

# wait_ready NAME TIMEOUT CHECK_FN LOGFILE...
# CHECK_FN returns 0 = ready, 1 = not yet, 2 = gave up (process died).
wait_ready() {
  local name=$1 timeout=$2 check=$3 rc start=$SECONDS
  shift 3
  while :; do
    rc=0
    "$check" || rc=$?
    if [ "$rc" -eq 0 ]; then
      [ "${WAIT_QUIET:-0}" -eq 1 ] || log "$name: ready after $((SECONDS - start))s"
      return 0
    fi
    if [ "$rc" -eq 2 ]; then
      log "$name: process exited during startup"
      show_log_tail "$@"
      die "$name failed to start"
    fi
    if ((SECONDS - start >= timeout)); then
      log "$name: not ready after ${timeout}s"
      show_log_tail "$@"
      die "$name did not become ready within ${timeout}s"
    fi
    sleep 1
  done
}

# Run a command as another user when we are root (setpriv: no PAM session,
# no extra process); as non-root, just run it as ourselves.
as_user() {
  local user=$1
  shift
  if is_root && [ "$user" != root ]; then
    setpriv --reuid="$user" --regid="$user" --init-groups -- "$@"
  else
    "$@"
  fi
}

# ------------------------------------------------------------- installing --

APT_UPDATED=0
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

apt_install() {
  local pkgs=("$@") rc=0 made_policy=0
  [ ${#pkgs[@]} -gt 0 ] || return 0
  is_root || die "packages missing: ${pkgs[*]} (run as root so the script can apt-get install them)"
  command -v apt-get >/dev/null || die "apt-get not found; install ${pkgs[*]} yourself"
  mkdir -p "$STACK/logs"
  # Package maintainer scripts must not try to start system services (there
  # may be no init system at all); our own processes are started below.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# temporary, written by kappa deploy/stack.sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    apt-get -q -o DPkg::Lock::Timeout=300 update >>"$STACK/logs/apt.log" 2>&1 || rc=$?
    APT_UPDATED=1
  fi
  if [ "$rc" -eq 0 ]; then
    log "apt-get install ${pkgs[*]} (log: $STACK/logs/apt.log)"
    apt-get -y -q -o DPkg::Lock::Timeout=300 \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
      install --no-install-recommends "${pkgs[@]}" </dev/null >>"$STACK/logs/apt.log" 2>&1 || rc=$?
  fi
  [ "$made_policy" -eq 0 ] || rm -f /usr/sbin/policy-rc.d
  if [ "$rc" -ne 0 ]; then
    show_log_tail "$STACK/logs/apt.log"
    die "apt-get failed (exit $rc)"
  fi
}

pg_bindir() {
  local d
  for d in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/psql" ] && { echo "$d"; return 0; }
  done
  return 1
}

java_major() {
  local v
  v=$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
  v=${v#1.}
  echo "${v%%[.-]*}"
}

ensure_packages() {
  local c need=()
  for c in "$@"; do
    case "$c" in
      postgres)
        pg_bindir >/dev/null || need+=(postgresql)
        ;;
      clickhouse)
        pkg_installed clickhouse-server || need+=(clickhouse-server)
        pkg_installed clickhouse-client || need+=(clickhouse-client)
        ;;
      kafka)
        if ! command -v java >/dev/null || [ "$(java_major)" -lt 17 ] 2>/dev/null; then
          need+=(openjdk-17-jre-headless)
        fi
        command -v mvn >/dev/null || need+=(maven)
        ;;
    esac
  done
  apt_install "${need[@]}"
}

# ------------------------------------------------------------------ postgres --

PG_BIN=""
PG_USER=postgres

# ---------------------------------------------------------------------- tls --
# A CA and one server certificate for 127.0.0.1 and localhost, made once
# with openssl and remade when the certificate has less than a week left.
tls_setup() {
  mkdir -p "$TLS_DIR"
  chmod 755 "$TLS_DIR"
  if [ -s "$TLS_DIR/server.p12" ] && openssl x509 -checkend 604800 -noout -in "$TLS_DIR/server.pem" >/dev/null 2>&1; then
    return 0
  fi
  log "tls: making a local CA and a server certificate in $TLS_DIR"
  (
    cd "$TLS_DIR"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
      -subj "/CN=Kappa local stack CA" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 825 -extfile server.ext
    openssl pkcs12 -export -in server.pem -inkey server.key -certfile ca.pem -out server.p12 -passout "pass:$KEYSTORE_PASSWORD"
    chmod 644 ca.pem server.pem
    chmod 600 ca.key server.key server.p12
  ) >"$TLS_DIR/openssl.log" 2>&1 || { show_log_tail "$TLS_DIR/openssl.log"; die "tls: openssl failed"; }
}

# tls_copy FILE DEST OWNER: a private copy of a key or certificate for a
# server that runs as OWNER and insists on owning it.
tls_copy() {
  install -m 600 -o "$3" "$1" "$2" 2>/dev/null || { cp "$1" "$2" && chmod 600 "$2"; }
}

pg_setup_vars() {
  PG_BIN=$(pg_bindir) || die "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin"
  if is_root; then PG_USER=postgres; else PG_USER=$(id -un); fi
}

pg_ours_running() {
  [ -f "$PG_DATA/PG_VERSION" ] || return 1
  as_user "$PG_USER" "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 >/dev/null 2>&1; }

pg_login_ok() { PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -w -q -At "$PG_URL" -c 'select 1' </dev/null >/dev/null 2>&1; }

pg_write_config() {
  cat >"$PG_DATA/kappa.conf" <<EOF
# Written by deploy/stack.sh on every 'up'; edits here are overwritten.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
max_connections = 200
shared_buffers = 256MB
# Durability matters to this project: keep the defaults explicit.
fsync = on
synchronous_commit = on
full_page_writes = on
password_encryption = scram-sha-256
timezone = 'UTC'
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
# TLS for the secured endpoint (user $SECURE_USER, see pg_hba.conf).
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
ssl_min_protocol_version = 'TLSv1.2'
EOF
  tls_copy "$TLS_DIR/server.pem" "$PG_DATA/server.crt" "$PG_USER"
  tls_copy "$TLS_DIR/server.key" "$PG_DATA/server.key" "$PG_USER"
  grep -q "^include_if_exists = 'kappa.conf'" "$PG_DATA/postgresql.conf" ||
    printf "\n# kappa deploy/stack.sh settings\ninclude_if_exists = 'kappa.conf'\n" >>"$PG_DATA/postgresql.conf"
  cat >"$PG_DATA/pg_hba.conf" <<'EOF'
# Written by deploy/stack.sh on every 'up'; edits here are overwritten.
# TYPE  DATABASE  USER      ADDRESS        METHOD
local   all       postgres                 trust
local   all       all                      scram-sha-256
hostssl all       kappa_tls 127.0.0.1/32   scram-sha-256
hostnossl all     kappa_tls 127.0.0.1/32   reject
host    all       all       127.0.0.1/32   scram-sha-256
EOF
  chown "$PG_USER:" "$PG_DATA/kappa.conf" "$PG_DATA/pg_hba.conf" 2>/dev/null || true
}

pg_init() {
  mkdir -p "$PG_DIR" "$PG_SOCK"
  chown "$PG_USER:" "$PG_DIR" "$PG_SOCK"
  chmod 700 "$PG_SOCK"
  if [ -f "$PG_DATA/PG_VERSION" ]; then
    return 0
  fi
  if [ -e "$PG_DATA" ]; then
    log "postgres: removing incomplete data dir $PG_DATA"
    rm -rf "$PG_DATA"
  fi
  as_user "$PG_USER" test -w "$PG_DIR" ||
    die "user $PG_USER cannot write $PG_DIR (are all parent directories of $STACK searchable by it?)"
  log "postgres: initdb $PG_DATA"
  as_user "$PG_USER" "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C \
    --auth-local=trust --auth-host=scram-sha-256 >"$PG_DIR/initdb.log" 2>&1 ||
    { show_log_tail "$PG_DIR/initdb.log"; die "postgres: initdb failed"; }
}

pg_bootstrap_roles() {
  "$PG_BIN/psql" -X -w -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres >/dev/null <<'SQL'
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'kappa') THEN
    CREATE ROLE kappa LOGIN CREATEDB PASSWORD 'kappa';
  ELSE
    ALTER ROLE kappa LOGIN CREATEDB PASSWORD 'kappa';
  END IF;
END
$$;
SELECT 'CREATE DATABASE kappa OWNER kappa'
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = 'kappa') \gexec
SQL
  "$PG_BIN/psql" -X -w -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres >/dev/null <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '$SECURE_USER') THEN
    CREATE ROLE $SECURE_USER LOGIN CREATEDB PASSWORD '$SECURE_PASSWORD';
  ELSE
    ALTER ROLE $SECURE_USER LOGIN CREATEDB PASSWORD '$SECURE_PASSWORD';
  END IF;
END
\$\$;
GRANT ALL ON DATABASE kappa TO $SECURE_USER;
SQL
}

pg_up() {
  pg_setup_vars
  if pg_ours_running; then
    WAIT_QUIET=1 wait_ready postgres "$PG_TIMEOUT" pg_check_ready "$PG_LOG"
    # Settings of newer versions of this script (TLS) apply on a reload.
    pg_write_config
    as_user "$PG_USER" "$PG_BIN/pg_ctl" -D "$PG_DATA" -s reload >/dev/null 2>&1 || true
    log "postgres: already running and ready (pid $(pid_of "$PG_DATA/postmaster.pid")), reusing it"
  elif port_open "$PG_PORT"; then
    if pg_login_ok; then
      log "postgres: port $PG_PORT already serves $PG_URL (not started from $STACK), reusing"
      return 0
    fi
    die "postgres: port $PG_PORT is in use by something that is not this stack's PostgreSQL"
  else
    pg_init
    pg_write_config
    log "postgres: starting on 127.0.0.1:$PG_PORT (log: $PG_LOG)"
    touch "$PG_LOG" && chown "$PG_USER:" "$PG_LOG"
    local tries=0
    until as_user "$PG_USER" setsid "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -s -w -t "$PG_TIMEOUT" start \
      </dev/null >>"$PG_LOG" 2>&1 9>&-; do
      tries=$((tries + 1))
      # The port is in Linux's ephemeral range: a closed client connection
      # that happened to use it holds it in TIME_WAIT for up to a minute,
      # while nothing listens there.
      if [ "$tries" -le 8 ] && tail -n 20 "$PG_LOG" | grep -q "Address already in use" && ! port_open "$PG_PORT"; then
        log "postgres: port $PG_PORT is held by a closed connection (TIME_WAIT); trying again in 10s"
        sleep 10
        continue
      fi
      show_log_tail "$PG_LOG"
      die "postgres: pg_ctl start failed"
    done
    wait_ready postgres "$PG_TIMEOUT" pg_check_ready "$PG_LOG"
  fi
  pg_bootstrap_roles || die "postgres: could not create role/database kappa"
  pg_login_ok || die "postgres: cannot log in with $PG_URL"
  log "postgres: $PG_URL"
}

pg_check_ready() {
  pg_ready && return 0
  pg_ours_running || { [ -f "$PG_DATA/postmaster.pid" ] || return 2; }
  return 1
}

pg_down() {
  pg_bindir >/dev/null || { log "postgres: not installed, nothing to stop"; return 0; }
  pg_setup_vars
  if pg_ours_running; then
    log "postgres: stopping (pg_ctl stop -m fast)"
    as_user "$PG_USER" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 -s stop </dev/null 9>&- ||
      die "postgres: pg_ctl stop failed"
  else
    log "postgres: not running"
    if port_open "$PG_PORT"; then log "postgres: port $PG_PORT is served by a process not started from $STACK; leaving it"; fi
  fi
}

pg_status() {
  local b
  b=$(pg_bindir) || { echo "postgres    down  (not installed)"; return 1; }
  PG_BIN=$b
  if pg_ready; then
    if [ -f "$PG_DATA/postmaster.pid" ]; then
      echo "postgres    up    127.0.0.1:$PG_PORT  pid $(pid_of "$PG_DATA/postmaster.pid")  data $PG_DATA"
    else
      echo "postgres    up    127.0.0.1:$PG_PORT  (not started from $STACK)"
    fi
    return 0
  fi
  echo "postgres    down  127.0.0.1:$PG_PORT"
  return 1
}

# --------------------------------------------------------------- clickhouse --

CH_USER=root

ch_setup_vars() {
  if is_root; then
    if id clickhouse >/dev/null 2>&1; then CH_USER=clickhouse; else CH_USER=root; fi
  else
    CH_USER=$(id -un)
  fi
}

ch_query() { timeout 15 clickhouse-client --host 127.0.0.1 --port "$CH_TCP_PORT" -q "$1" </dev/null 2>/dev/null; }

ch_ours_running() { pid_matches "$CH_PID" clickhouse-server; }

ch_check_ready() {
  [ "$(ch_query 'SELECT 1')" = 1 ] && return 0
  ch_ours_running || return 2
  return 1
}

ch_write_config() {
  local d=$CH_DIR
  cat >"$d/config.xml" <<EOF
<?xml version="1.0"?>
<!-- Written by deploy/stack.sh on every 'up'; edits here are overwritten.
     ClickHouse 18.16 (Debian 12): root element is <yandex>. -->
<yandex>
    <logger>
        <level>information</level>
        <log>$d/log/clickhouse-server.log</log>
        <errorlog>$d/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>3</count>
    </logger>

    <listen_host>127.0.0.1</listen_host>
    <tcp_port>$CH_TCP_PORT</tcp_port>
    <tcp_port_secure>$CH_TLS_PORT</tcp_port_secure>
    <http_port>$CH_HTTP_PORT</http_port>
    <openSSL>
        <server>
            <certificateFile>$d/tls/server.pem</certificateFile>
            <privateKeyFile>$d/tls/server.key</privateKeyFile>
            <verificationMode>none</verificationMode>
            <loadDefaultCAFile>false</loadDefaultCAFile>
            <cacheSessions>true</cacheSessions>
            <disableProtocols>sslv2,sslv3,tlsv1,tlsv1_1</disableProtocols>
            <preferServerCiphers>true</preferServerCiphers>
        </server>
    </openSSL>
    <!-- No interserver_http_port: the replication endpoint stays disabled. -->

    <max_connections>1024</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>1073741824</uncompressed_cache_size>
    <mark_cache_size>1073741824</mark_cache_size>

    <path>$d/data/</path>
    <tmp_path>$d/tmp/</tmp_path>
    <user_files_path>$d/user_files/</user_files_path>
    <format_schema_path>$d/format_schemas/</format_schema_path>
    <users_config>$d/users.xml</users_config>

    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mlock_executable>false</mlock_executable>
    <builtin_dictionaries_reload_interval>3600</builtin_dictionaries_reload_interval>
    <max_session_timeout>3600</max_session_timeout>
    <default_session_timeout>60</default_session_timeout>
</yandex>
EOF
  cat >"$d/users.xml" <<'EOF'
<?xml version="1.0"?>
<!-- Written by deploy/stack.sh on every 'up'; edits here are overwritten. -->
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <use_uncompressed_cache>0</use_uncompressed_cache>
            <load_balancing>random</load_balancing>
        </default>
        <readonly>
            <readonly>1</readonly>
        </readonly>
    </profiles>
    <users>
        <kappa_tls>
            <password_sha256_hex>SECURE_PASSWORD_SHA256</password_sha256_hex>
            <networks replace="replace">
                <ip>::1</ip>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </kappa_tls>
        <default>
            <password></password>
            <networks replace="replace">
                <ip>::1</ip>
                <ip>127.0.0.1</ip>
            </networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
  sed -i "s/SECURE_PASSWORD_SHA256/$(printf '%s' "$SECURE_PASSWORD" | sha256sum | cut -d' ' -f1)/" "$d/users.xml"
  mkdir -p "$d/tls"
  tls_copy "$TLS_DIR/server.pem" "$d/tls/server.pem" "$CH_USER"
  tls_copy "$TLS_DIR/server.key" "$d/tls/server.key" "$CH_USER"
}

ch_up() {
  local pid
  ch_setup_vars
  if ch_ours_running; then
    WAIT_QUIET=1 wait_ready clickhouse "$CH_TIMEOUT" ch_check_ready "$CH_ERRLOG" "$CH_STDOUT"
    log "clickhouse: already running and ready (pid $(pid_of "$CH_PID")), reusing it"
  elif port_open "$CH_TCP_PORT"; then
    if [ "$(ch_query 'SELECT 1')" = 1 ]; then
      log "clickhouse: port $CH_TCP_PORT already serves ClickHouse (not started from $STACK), reusing"
    else
      die "clickhouse: port $CH_TCP_PORT is in use by something that is not this stack's ClickHouse"
    fi
  else
    ch_start
    wait_ready clickhouse "$CH_TIMEOUT" ch_check_ready "$CH_ERRLOG" "$CH_STDOUT"
    # setsid may have forked: trust the process that owns the port.
    pid=$(listener_pid "$CH_TCP_PORT" || true)
    [ -z "$pid" ] || echo "$pid" >"$CH_PID"
  fi
  log "clickhouse: 127.0.0.1:$CH_TCP_PORT (native), 127.0.0.1:$CH_HTTP_PORT (http), $(ch_query 'SELECT version()' || echo '?')"
}

ch_start() {
  local d=$CH_DIR
  mkdir -p "$d/data" "$d/tmp" "$d/user_files" "$d/format_schemas" "$d/log"
  ch_write_config
  if [ "$(stat -c %U "$d/data")" != "$CH_USER" ] || [ "$(stat -c %U "$d")" != "$CH_USER" ]; then
    chown -R "$CH_USER:" "$d"
  else
    chown "$CH_USER:" "$d" "$d"/*.xml "$d/log" "$d/tmp" "$d/user_files" "$d/format_schemas" "$d/tls"
  fi
  as_user "$CH_USER" test -w "$d/data" ||
    die "user $CH_USER cannot write $d/data (are all parent directories of $STACK searchable by it?)"
  log "clickhouse: starting $(command -v clickhouse-server) as $CH_USER on 127.0.0.1:$CH_TCP_PORT (log: $CH_LOG)"
  touch "$CH_STDOUT"
  local cmd=(/usr/sbin/clickhouse-server --config-file="$d/config.xml")
  if is_root && [ "$CH_USER" != root ]; then
    cmd=(setpriv --reuid="$CH_USER" --regid="$CH_USER" --init-groups -- "${cmd[@]}")
  fi
  (cd "$d" && exec setsid "${cmd[@]}" </dev/null >>"$CH_STDOUT" 2>&1 9>&-) &
  echo $! >"$CH_PID"
}

ch_down() {
  if ! stop_pid clickhouse "$CH_PID" clickhouse-server 30; then
    log "clickhouse: not running"
    if port_open "$CH_TCP_PORT"; then log "clickhouse: port $CH_TCP_PORT is served by a process not started from $STACK; leaving it"; fi
  fi
}

ch_status() {
  if command -v clickhouse-client >/dev/null && [ "$(ch_query 'SELECT 1')" = 1 ]; then
    if ch_ours_running; then
      echo "clickhouse  up    127.0.0.1:$CH_TCP_PORT  pid $(pid_of "$CH_PID")  $(ch_query 'SELECT version()')  data $CH_DIR/data"
    else
      echo "clickhouse  up    127.0.0.1:$CH_TCP_PORT  (not started from $STACK)"
    fi
    return 0
  fi
  echo "clickhouse  down  127.0.0.1:$CH_TCP_PORT"
  return 1
}

# -------------------------------------------------------------------- kafka --

kafka_cp() { echo "$KAFKA_LIBS/*"; }

# Run a Kafka CLI class (org.apache.kafka.tools.*, kafka.tools.*) quietly.
kafka_tool() {
  java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$KAFKA_DIR/tools-log4j2.properties" \
    -cp "$(kafka_cp)" "$@"
}

kafka_fetch_libs() {
  local want have=""
  [ -f "$KAFKA_POM" ] || die "kafka: $KAFKA_POM not found"
  want=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
  [ -f "$KAFKA_LIBS/.pom.sha256" ] && have=$(cat "$KAFKA_LIBS/.pom.sha256")
  if [ "$want" = "$have" ] && ls "$KAFKA_LIBS"/kafka_2.13-*.jar >/dev/null 2>&1; then
    return 0
  fi
  log "kafka: downloading broker jars from Maven Central (mvn, pom $KAFKA_POM)"
  rm -rf "$KAFKA_LIBS.tmp"
  mkdir -p "$STACK/logs"
  mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies \
    -DoutputDirectory="$KAFKA_LIBS.tmp" -DincludeScope=runtime </dev/null >"$STACK/logs/mvn.log" 2>&1 ||
    { show_log_tail "$STACK/logs/mvn.log"; die "kafka: mvn dependency:copy-dependencies failed"; }
  ls "$KAFKA_LIBS.tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "kafka: no kafka_2.13 jar after mvn"
  echo "$want" >"$KAFKA_LIBS.tmp/.pom.sha256"
  rm -rf "$KAFKA_LIBS"
  mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
  log "kafka: $(ls "$KAFKA_LIBS"/*.jar | wc -l) jars in $KAFKA_LIBS"
}

kafka_write_config() {
  cat >"$KAFKA_DIR/server.properties" <<EOF
# Written by deploy/stack.sh on every 'up'; edits here are overwritten.
# Single-node KRaft: this process is both broker and controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL

# The secured endpoint: TLS with the local CA's certificate, then SASL.
# SCRAM users are created after start (kafka_scram_users); PLAIN's is here;
# OAUTHBEARER checks tokens with Kafka's unsecured validator (unsigned JWTs,
# for tests only).
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS_DIR/server.p12
ssl.keystore.password=$KEYSTORE_PASSWORD
ssl.enabled.protocols=TLSv1.2,TLSv1.3
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN,OAUTHBEARER
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SECURE_USER="$SECURE_PASSWORD";
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;
listener.name.sasl_ssl.oauthbearer.sasl.server.callback.handler.class=org.apache.kafka.common.security.oauthbearer.internals.unsecured.OAuthBearerUnsecuredValidatorCallbackHandler

log.dirs=$KAFKA_DATA
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false

# Internal topics on a single node (consumer offsets, transactions, share groups).
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

group.initial.rebalance.delay.ms=0
EOF
  cat >"$KAFKA_DIR/log4j2.properties" <<EOF
# Written by deploy/stack.sh: broker logging to $KAFKA_LOG at INFO.
status = warn
name = kappa-kafka-broker
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = $KAFKA_LOG
appender.file.filePattern = $KAFKA_LOG.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 100MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
  cat >"$KAFKA_DIR/tools-client.properties" <<'EOF'
# Written by deploy/stack.sh: short client timeouts for the readiness probe.
request.timeout.ms=5000
default.api.timeout.ms=10000
EOF
  cat >"$KAFKA_DIR/tools-log4j2.properties" <<'EOF'
# Written by deploy/stack.sh: Kafka CLI tools log warnings to stderr.
status = error
name = kappa-kafka-tools
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
EOF
}

kafka_format() {
  local id
  if [ -f "$KAFKA_DATA/meta.properties" ]; then
    id=$(sed -n 's/^cluster\.id=//p' "$KAFKA_DATA/meta.properties")
    log "kafka: storage already formatted (cluster.id $id), not reformatting"
    return 0
  fi
  if [ -s "$KAFKA_DIR/cluster.id" ]; then
    id=$(cat "$KAFKA_DIR/cluster.id")
  else
    id=$(kafka_tool kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1) ||
      die "kafka: StorageTool random-uuid failed"
    echo "$id" >"$KAFKA_DIR/cluster.id"
  fi
  log "kafka: formatting $KAFKA_DATA (cluster.id $id)"
  mkdir -p "$KAFKA_DATA"
  kafka_tool kafka.tools.StorageTool format --ignore-formatted -t "$id" -c "$KAFKA_DIR/server.properties" \
    </dev/null >"$KAFKA_DIR/format.log" 2>&1 ||
    { show_log_tail "$KAFKA_DIR/format.log"; die "kafka: StorageTool format failed"; }
}

# Kafka 4 enables transactions v2 (KIP-890 part 2) on new clusters; Kappa's
# transactional clients speak version 1 on any cluster (kafka.TransactionsV1),
# so the stack keeps Kafka's default, and the tests run where users do. A
# stack an older version of this script pinned to 1 is set back. Idempotent.
kafka_default_transaction_version() {
  if kafka_tool org.apache.kafka.tools.FeatureCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
      --command-config "$KAFKA_DIR/tools-client.properties" upgrade --feature transaction.version=2 \
      </dev/null >>"$KAFKA_DIR/readiness.log" 2>&1; then
    log "kafka: transaction.version 2 (Kafka 4's default)"
  else
    log "kafka: could not set transaction.version to 2 (see $KAFKA_DIR/readiness.log); tests run with the cluster's own"
  fi
}

# The secured endpoint's SCRAM user, created (again) through the open one;
# idempotent.
kafka_scram_users() {
  local m
  for m in SCRAM-SHA-512 SCRAM-SHA-256; do
    kafka_tool kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
      --command-config "$KAFKA_DIR/tools-client.properties" --alter --entity-type users --entity-name "$SECURE_USER" \
      --add-config "$m=[password=$SECURE_PASSWORD]" </dev/null >>"$KAFKA_DIR/readiness.log" 2>&1 ||
      die "kafka: could not create the $m user $SECURE_USER (see $KAFKA_DIR/readiness.log)"
  done
}

kafka_ours_running() { pid_matches "$KAFKA_PID" 'kafka\.Kafka'; }

kafka_check_ready() {
  if port_open "$KAFKA_PORT" &&
    timeout 30 bash -c 'kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$1" \
      --command-config "$KAFKA_DIR/tools-client.properties" --list' \
      _ "$KAFKA_PORT" </dev/null >/dev/null 2>>"$KAFKA_DIR/readiness.log"; then
    return 0
  fi
  kafka_ours_running || return 2
  return 1
}

kafka_up() {
  local pid
  mkdir -p "$KAFKA_DIR"
  kafka_fetch_libs
  kafka_write_config
  export -f kafka_tool kafka_cp
  export KAFKA_DIR KAFKA_LIBS
  if kafka_ours_running; then
    WAIT_QUIET=1 wait_ready kafka "$KAFKA_TIMEOUT" kafka_check_ready "$KAFKA_LOG" "$KAFKA_STDOUT"
    log "kafka: already running and ready (pid $(pid_of "$KAFKA_PID")), reusing it"
  elif port_open "$KAFKA_PORT"; then
    if kafka_check_ready; then
      log "kafka: port $KAFKA_PORT already serves Kafka (not started from $STACK), reusing"
    else
      die "kafka: port $KAFKA_PORT is in use by something that is not this stack's Kafka"
    fi
  else
    port_open "$KAFKA_CONTROLLER_PORT" && die "kafka: controller port $KAFKA_CONTROLLER_PORT is already in use"
    kafka_format
    kafka_start
    : >"$KAFKA_DIR/readiness.log"
    wait_ready kafka "$KAFKA_TIMEOUT" kafka_check_ready "$KAFKA_LOG" "$KAFKA_STDOUT" "$KAFKA_DIR/readiness.log"
    pid=$(listener_pid "$KAFKA_PORT" || true)
    [ -z "$pid" ] || echo "$pid" >"$KAFKA_PID"
    kafka_default_transaction_version
  fi
  kafka_scram_users
  log "kafka: 127.0.0.1:$KAFKA_PORT, SASL_SSL on 127.0.0.1:$KAFKA_SASL_PORT ($(ls "$KAFKA_LIBS"/kafka_2.13-*.jar | sed 's/.*kafka_2.13-\(.*\)\.jar/Kafka \1/'))"
}

kafka_start() {
  log "kafka: starting broker+controller on 127.0.0.1:$KAFKA_PORT (log: $KAFKA_LOG)"
  echo "==== $(date -u +%FT%TZ) starting kafka.Kafka" >>"$KAFKA_STDOUT"
  # shellcheck disable=SC2086 # KAFKA_GC is a list of JVM options
  setsid java -Xms256m -Xmx"$KAFKA_HEAP" -server $KAFKA_GC \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dkafka.logs.dir="$KAFKA_DIR" \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
    -cp "$(kafka_cp)" kafka.Kafka "$KAFKA_DIR/server.properties" \
    </dev/null >>"$KAFKA_STDOUT" 2>&1 9>&- &
  echo $! >"$KAFKA_PID"
}

kafka_down() {
  if ! stop_pid kafka "$KAFKA_PID" 'kafka\.Kafka' 60; then
    log "kafka: not running"
    if port_open "$KAFKA_PORT"; then log "kafka: port $KAFKA_PORT is served by a process not started from $STACK; leaving it"; fi
  fi
}

kafka_status() {
  if port_open "$KAFKA_PORT"; then
    if kafka_ours_running; then
      echo "kafka       up    127.0.0.1:$KAFKA_PORT  pid $(pid_of "$KAFKA_PID")  data $KAFKA_DATA"
    else
      echo "kafka       up    127.0.0.1:$KAFKA_PORT  (not started from $STACK)"
    fi
    return 0
  fi
  echo "kafka       down  127.0.0.1:$KAFKA_PORT"
  return 1
}

# --------------------------------------------------------------- commands --

lock_stack() {
  mkdir -p "$STACK"
  chmod 755 "$STACK"
  exec 9>"$STACK/.lock"
  flock -w 600 9 || die "another deploy/stack.sh is busy with $STACK"
}

has() {
  local want=$1 c
  for c in "${COMPONENTS[@]}"; do [ "$c" = "$want" ] && return 0; done
  return 1
}

cmd_up() {
  local t0=$SECONDS
  lock_stack
  log "up: ${COMPONENTS[*]} (state dir $STACK)"
  ensure_packages "${COMPONENTS[@]}"
  tls_setup
  # Postgres and ClickHouse start quickly; Kafka last, it is the slowest.
  if has postgres; then pg_up; fi
  if has clickhouse; then ch_up; fi
  if has kafka; then kafka_up; fi
  log "up: done in $((SECONDS - t0))s"
  cmd_env | sed 's/^/[stack]   /' >&2
}

cmd_down() {
  lock_stack
  if has kafka; then kafka_down; fi
  if has clickhouse; then ch_down; fi
  if has postgres; then pg_down; fi
  if [ "$PURGE" -eq 1 ]; then
    if [ ${#COMPONENTS[@]} -eq ${#ALL_COMPONENTS[@]} ]; then
      log "purge: removing $STACK"
      rm -rf "$STACK"
    else
      local c
      for c in "${COMPONENTS[@]}"; do
        log "purge: removing $STACK/$c"
        rm -rf "${STACK:?}/$c"
      done
    fi
  fi
  log "down: done"
}

cmd_status() {
  local rc=0
  if has postgres; then pg_status || rc=1; fi
  if has clickhouse; then ch_status || rc=1; fi
  if has kafka; then kafka_status || rc=1; fi
  return "$rc"
}

cmd_env() {
  if has kafka; then echo "export KAPPA_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"; fi
  if has postgres; then echo "export KAPPA_POSTGRES_URL=$PG_URL"; fi
  if has clickhouse; then echo "export KAPPA_CLICKHOUSE_ADDR=127.0.0.1:$CH_TCP_PORT"; fi
}

# The secured endpoints, as Kappa's flags take them (KAPPA_* variables).
cmd_env_secure() {
  if has kafka; then
    echo "export KAPPA_KAFKA_BROKERS=127.0.0.1:$KAFKA_SASL_PORT"
    echo "export KAPPA_KAFKA_TLS_CA_FILE=$TLS_DIR/ca.pem"
    echo "export KAPPA_KAFKA_SASL_MECHANISM=SCRAM-SHA-512"
    echo "export KAPPA_KAFKA_SASL_USERNAME=$SECURE_USER"
    echo "export KAPPA_KAFKA_SASL_PASSWORD=$SECURE_PASSWORD"
  fi
  if has postgres; then
    echo "export KAPPA_POSTGRES_URL='postgres://$SECURE_USER@localhost:$PG_PORT/kappa?sslmode=verify-full&sslrootcert=$TLS_DIR/ca.pem'"
    echo "export KAPPA_POSTGRES_PASSWORD=$SECURE_PASSWORD"
  fi
  if has clickhouse; then
    echo "export KAPPA_CLICKHOUSE_ADDR=localhost:$CH_TLS_PORT"
    echo "export KAPPA_CLICKHOUSE_TLS_CA_FILE=$TLS_DIR/ca.pem"
    echo "export KAPPA_CLICKHOUSE_USER=$SECURE_USER"
    echo "export KAPPA_CLICKHOUSE_PASSWORD=$SECURE_PASSWORD"
  fi
}

main() {
  [ $# -ge 1 ] || usage
  local action=$1 a
  shift
  PURGE=0
  COMPONENTS=()
  for a in "$@"; do
    case "$a" in
      --purge) [ "$action" = down ] || usage; PURGE=1 ;;
      postgres | clickhouse | kafka) has "$a" 2>/dev/null || COMPONENTS+=("$a") ;;
      -h | --help) usage ;;
      *) log "unknown argument: $a"; usage ;;
    esac
  done
  [ ${#COMPONENTS[@]} -gt 0 ] || COMPONENTS=("${ALL_COMPONENTS[@]}")
  case "$action" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    env-secure) cmd_env_secure ;;
    -h | --help | help) usage ;;
    *) log "unknown command: $action"; usage ;;
  esac
}

main "$@"
