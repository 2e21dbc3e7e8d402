#!/usr/bin/env bash
# Starts or stops the throwaway PostgreSQL server the test suite runs against.
#   scripts/postgres.sh start   -> prints the URL to export as BKR_TEST_PG_URL
#   scripts/postgres.sh stop
#   scripts/postgres.sh status  -> "up" or "down"
# It uses the PostgreSQL binaries on the machine, installing Debian's `postgresql` if none are
# found. The server listens on a Unix socket and 127.0.0.1 only, with its data under .pg/.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
data="$here/.pg/data"
sock="$here/.pg/sock"
port="${BKR_TEST_PG_PORT:-54329}"

find_bin() {
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/pg_ctl" ] && { echo "$dir"; return; }
  done
  command -v pg_ctl >/dev/null 2>&1 && { dirname "$(command -v pg_ctl)"; return; }
  return 1
}

bin=$(find_bin || true)
if [ -z "$bin" ]; then
  echo "installing PostgreSQL (Debian's postgresql package)..." >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  bin=$(find_bin)
fi

# initdb and postgres refuse to run as root: run them as an unprivileged account.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    id bkrpg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin bkrpg
    chown -R bkrpg "$here/.pg"
    runuser -u bkrpg -- "$@"
  else
    "$@"
  fi
}

case "${1:-}" in
  start)
    mkdir -p "$data" "$sock"
    if [ ! -f "$data/PG_VERSION" ]; then
      as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
    fi
    if ! as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      as_owner "$bin/pg_ctl" -D "$data" -l "$here/.pg/server.log" -w -t 60 start \
        -o "-p $port -k $sock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >/dev/null
    fi
    echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    [ -f "$data/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
  status)  # "up" or "down": make's targets stop only a server they started themselves
    if [ -f "$data/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
      echo up
    else
      echo down
    fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
