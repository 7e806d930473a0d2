#!/usr/bin/env bash
# Installs chdb (current ClickHouse, in-process, from PyPI) into a virtual
# environment under the stack directory and prints its python's path. The
# ClickHouse DDL chosen for current servers is tested with it, because the
# local server is Debian's 18.16. Idempotent: an existing venv is reused.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
STACK="${KAPPA_STACK_DIR:-$(cd "$SCRIPT_DIR/.." && pwd -P)/.stack}"
VENV="$STACK/chdb-venv"
CHDB_VERSION=4.4.0

log() { printf '[chdb] %s\n' "$*" >&2; }

if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "import chdb" 2>/dev/null; then
  echo "$VENV/bin/python"
  exit 0
fi
if ! python3 -m venv --help >/dev/null 2>&1; then
  log "installing python3-venv"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2
fi
mkdir -p "$STACK"
log "creating $VENV and installing chdb $CHDB_VERSION"
python3 -m venv "$VENV" >&2
"$VENV/bin/pip" install -q --disable-pip-version-check "chdb==$CHDB_VERSION" >&2
echo "$VENV/bin/python"
