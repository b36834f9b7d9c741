#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for Carnet's state database in tests and CI, from Debian's
# postgresql package (installed with apt when missing), run as the postgres user.
#
#   scripts/postgres.sh start    init the cluster if needed, start it, create role and database
#   scripts/postgres.sh stop     stop it (its data folder stays for the next start)
#   scripts/postgres.sh purge    stop it and delete its data folder
#   scripts/postgres.sh status   exit 0 when it accepts connections, 3 when it is not running
#   scripts/postgres.sh url      print the CARNET_STATE_URL of its database
#
# Port CARNET_PG_TEST_PORT (default 5434; scripts/airflow_celery.sh's metadata cluster
# uses 5433); database and role `carnet` (password `carnet`, CREATEDB: the tests make a
# database per test). The data folder is under /var/tmp: the postgres user cannot enter
# root-only folders. fsync is off: nothing here outlives a test run.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${CARNET_PG_TEST_PORT:-5434}
PGDATA=/var/tmp/carnet-state-pg-$PORT
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
URL="postgresql://carnet:carnet@127.0.0.1:$PORT/carnet"

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
ready() { [ -n "$PGBIN" ] && "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; }
psql_admin() { as_postgres "$PGBIN/psql" -q -h 127.0.0.1 -p "$PORT" -U postgres "$@"; }

install_missing() {
  [ -n "$PGBIN" ] && return 0
  log "installing postgresql (apt)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
}

start() {
  install_missing
  if ready; then log "already running on 127.0.0.1:$PORT"; echo "export CARNET_TEST_STATE_URL=$URL"; return 0; fi
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$PGDATA"
    as_postgres "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust >/dev/null
  fi
  as_postgres "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 start \
    -o "-p $PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PGDATA -c fsync=off \
        -c max_connections=200" >/dev/null
  psql_admin -tc "SELECT 1 FROM pg_roles WHERE rolname='carnet'" | grep -q 1 || \
    psql_admin -c "CREATE ROLE carnet LOGIN CREATEDB PASSWORD 'carnet'"
  # A test's DROP DATABASE … WITH (FORCE) must end an autovacuum worker that has just
  # entered its database; that takes pg_signal_backend.
  psql_admin -qc "GRANT pg_signal_backend TO carnet" >/dev/null
  psql_admin -tc "SELECT 1 FROM pg_database WHERE datname='carnet'" | grep -q 1 || \
    psql_admin -c "CREATE DATABASE carnet OWNER carnet"
  log "PostgreSQL on 127.0.0.1:$PORT (data $PGDATA)"
  echo "export CARNET_TEST_STATE_URL=$URL"
}

stop() {
  if [ -n "$PGBIN" ] && [ -f "$PGDATA/postmaster.pid" ]; then
    as_postgres "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null || true
  fi
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  purge) stop; rm -rf "$PGDATA"; log "data folder deleted" ;;
  status) if ready; then echo "PostgreSQL: running on 127.0.0.1:$PORT"; else echo "PostgreSQL: not running"; exit 3; fi ;;
  url) echo "$URL" ;;
  *) echo "usage: $0 start|stop|purge|status|url" >&2; exit 2 ;;
esac
