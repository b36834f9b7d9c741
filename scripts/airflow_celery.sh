#!/usr/bin/env bash
# Airflow scale-out on this machine, without Docker: PostgreSQL (metadata database) and
# Redis (broker) from Debian's packages, an Airflow API server, scheduler, DAG processor
# and two Celery workers over Carnet's dags/. Every service runs in its own process
# group (its pgid is kept in $STATE/<service>.pgid) and `stop` ends each group.
#
#   scripts/airflow_celery.sh start|stop|purge|status|env   (purge: stop, delete all state)
#
# STATE=${CARNET_CELERY_HOME:-.carnet/airflow-celery} holds AIRFLOW_HOME, logs and pids.
# Ports: CARNET_AIRFLOW_PORT (API, default 8080), CARNET_PG_PORT (default 5433),
# CARNET_REDIS_PORT (default 6380). `env` prints the Airflow settings, for `airflow` CLI
# use against this deployment (eval "$(scripts/airflow_celery.sh env)").
#
# Carnet's own settings (CARNET_*, AWS_*) are passed to every service as given. The
# PostgreSQL cluster also holds a `carnet` database (role carnet, password carnet) for
# CARNET_STATE_URL; when that variable is set, `carnet db upgrade` runs before the workers
# start. CARNET_WORKER_DATA_ROOT: each worker gets CARNET_DATA_DIR=<root>/<worker>, a
# private folder of its own (as on separate hosts), instead of one shared CARNET_DATA_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

STATE=$(mkdir -p "${CARNET_CELERY_HOME:-$REPO/.carnet/airflow-celery}" && cd "${CARNET_CELERY_HOME:-$REPO/.carnet/airflow-celery}" && pwd)
API_PORT=${CARNET_AIRFLOW_PORT:-8080}
PG_PORT=${CARNET_PG_PORT:-5433}
REDIS_PORT=${CARNET_REDIS_PORT:-6380}
# PostgreSQL runs as the postgres user, which cannot enter root-only folders (/tmp/pytest-…).
PGDATA=/var/tmp/carnet-pg-$PG_PORT
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
AIRFLOW="$REPO/.venv/bin/airflow"
WORKERS=(worker1 worker2)

export AIRFLOW_HOME=$STATE/home
export AIRFLOW__CORE__DAGS_FOLDER=$REPO/dags
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR=CeleryExecutor
export AIRFLOW__CORE__PARALLELISM=${AIRFLOW__CORE__PARALLELISM:-4}
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True
export AIRFLOW__CORE__HOSTNAME_CALLABLE=pipeline.monitoring.worker_hostname
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$API_PORT/execution/
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql+psycopg://airflow:airflow@127.0.0.1:$PG_PORT/airflow
# psycopg 3 serves the async engine too (else Airflow wants asyncpg).
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC=$AIRFLOW__DATABASE__SQL_ALCHEMY_CONN
export AIRFLOW__CELERY__BROKER_URL=redis://127.0.0.1:$REDIS_PORT/0
export AIRFLOW__CELERY__RESULT_BACKEND=db+postgresql+psycopg://airflow:airflow@127.0.0.1:$PG_PORT/airflow
export AIRFLOW__CELERY__WORKER_CONCURRENCY=1
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=${AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL:-10}
export AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC=2
export OMP_THREAD_LIMIT=1
export PATH=$REPO/.venv/bin:$PATH
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
# Every service must sign and check the same tokens.
[ -f "$STATE/jwt_secret" ] || head -c 48 /dev/urandom | base64 | tr -d '\n=' >"$STATE/jwt_secret"
export AIRFLOW__API_AUTH__JWT_SECRET=$(cat "$STATE/jwt_secret")
export AIRFLOW__API__SECRET_KEY=$AIRFLOW__API_AUTH__JWT_SECRET

running() { [ -f "$STATE/$1.pgid" ] && kill -0 -- "-$(cat "$STATE/$1.pgid")" 2>/dev/null; }

# Start "$@" as service $1 in a process group of its own (job control: pgid = its pid).
spawn() {
  local name=$1; shift
  set -m
  nohup "$@" >"$STATE/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pgid"
  set +m
}

stop_group() {
  local name=$1
  running "$name" || { rm -f "$STATE/$name.pgid"; return 0; }
  local pgid; pgid=$(cat "$STATE/$name.pgid")
  kill -TERM -- "-$pgid" 2>/dev/null || true
  for _ in $(seq 20); do running "$name" || break; sleep 1; done
  running "$name" && kill -KILL -- "-$pgid" 2>/dev/null || true
  rm -f "$STATE/$name.pgid"
}

install_missing() {
  local need=()
  [ -n "$PGBIN" ] || need+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  if [ "${#need[@]}" -gt 0 ]; then
    echo "airflow_celery: installing ${need[*]} (apt)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  .venv/bin/python -c "import airflow.providers.celery, psycopg" 2>/dev/null || \
    .venv/bin/pip install -q "apache-airflow-providers-celery" "celery<5.7" "psycopg[binary]"
}

# A Celery worker: its own name (task instances show it), its own log-server port, and
# with CARNET_WORKER_DATA_ROOT its own data folder.
start_worker() {
  local w=$1 port=$2
  if [ -n "${CARNET_WORKER_DATA_ROOT:-}" ]; then
    mkdir -p "$CARNET_WORKER_DATA_ROOT/$w"
    local -x CARNET_DATA_DIR="$CARNET_WORKER_DATA_ROOT/$w"
  fi
  CARNET_WORKER_NAME=$w AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=$port \
    spawn "$w" "$AIRFLOW" celery worker --celery-hostname "$w@%h" --concurrency 1
}

as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

start_postgres() {
  if [ ! -f "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$PGDATA"
    as_postgres "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust >"$STATE/initdb.log" 2>&1
  fi
  local run_as=(); [ "$(id -u)" -eq 0 ] && run_as=(runuser -u postgres --)
  spawn postgres "${run_as[@]}" "$PGBIN/postgres" -D "$PGDATA" -p "$PG_PORT" \
    -c listen_addresses=127.0.0.1 -c unix_socket_directories="$PGDATA" -c fsync=off
  for _ in $(seq 60); do
    as_postgres "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break; sleep 1
  done
  as_postgres "$PGBIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -tc \
    "SELECT 1 FROM pg_roles WHERE rolname='airflow'" | grep -q 1 || \
    as_postgres "$PGBIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres \
      -c "CREATE ROLE airflow LOGIN PASSWORD 'airflow'" -c "CREATE DATABASE airflow OWNER airflow"
  as_postgres "$PGBIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -tc \
    "SELECT 1 FROM pg_roles WHERE rolname='carnet'" | grep -q 1 || \
    as_postgres "$PGBIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres \
      -c "CREATE ROLE carnet LOGIN PASSWORD 'carnet'" -c "CREATE DATABASE carnet OWNER carnet"
}

case "${1:-}" in
  start)
    install_missing
    mkdir -p "$AIRFLOW_HOME"
    running postgres || start_postgres
    running redis || spawn redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no
    "$AIRFLOW" db migrate >"$STATE/migrate.log" 2>&1
    "$AIRFLOW" pools set ocr "$(nproc)" "OCR-heavy batches (slots = cores)" >>"$STATE/migrate.log" 2>&1
    # Carnet's state schema: once, before any worker runs a task (never by the workers).
    [ -z "${CARNET_STATE_URL:-}" ] || "$REPO/.venv/bin/carnet" db upgrade >>"$STATE/migrate.log" 2>&1
    running api-server || spawn api-server "$AIRFLOW" api-server --host 127.0.0.1 --port "$API_PORT"
    running scheduler || spawn scheduler "$AIRFLOW" scheduler
    running dag-processor || spawn dag-processor "$AIRFLOW" dag-processor
    port=$((API_PORT + 100))
    for w in "${WORKERS[@]}"; do
      port=$((port + 1))
      running "$w" || start_worker "$w" "$port"
    done
    echo "airflow celery: API on 127.0.0.1:$API_PORT, PostgreSQL :$PG_PORT, Redis :$REDIS_PORT (state $STATE)"
    ;;
  stop)
    for s in "${WORKERS[@]}" dag-processor scheduler api-server redis postgres; do stop_group "$s"; done
    echo "airflow celery stopped"
    ;;
  purge)
    for s in "${WORKERS[@]}" dag-processor scheduler api-server redis postgres; do stop_group "$s"; done
    rm -rf "$PGDATA" "$STATE"
    echo "airflow celery stopped and its state deleted"
    ;;
  status)
    rc=0
    for s in postgres redis api-server scheduler dag-processor "${WORKERS[@]}"; do
      if running "$s"; then echo "$s: running (pgid $(cat "$STATE/$s.pgid"))"; else echo "$s: stopped"; rc=1; fi
    done
    exit $rc
    ;;
  env)
    env | grep -E '^(AIRFLOW_HOME|AIRFLOW__|PYTHONPATH)=' | sed 's/^/export /'
    ;;
  *)
    echo "usage: $0 start|stop|purge|status|env" >&2; exit 2 ;;
esac
