#!/usr/bin/env bash
# Run Airflow for real on this machine: `airflow standalone` (API server, scheduler,
# DAG processor, triggerer; SQLite, LocalExecutor) over Carnet's dags/, in its own
# process group so that `stop` ends every process it started.
#
#   scripts/airflow_standalone.sh start|stop|status
#
# AIRFLOW_HOME (default .carnet/airflow-standalone) holds the database, logs and the pid
# file; CARNET_AIRFLOW_PORT (default 8080) is the API server's port. CARNET_* variables
# set here reach the tasks. Authentication: simple auth manager, everyone admin (local
# use only); GET /auth/token gives a JWT for the REST API.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

export AIRFLOW_HOME=${AIRFLOW_HOME:-$REPO/.carnet/airflow-standalone}
PORT=${CARNET_AIRFLOW_PORT:-8080}
PIDFILE=$AIRFLOW_HOME/standalone.pgid
LOG=$AIRFLOW_HOME/standalone.log
AIRFLOW="$REPO/.venv/bin/airflow"
CORES=$(nproc)

export AIRFLOW__CORE__DAGS_FOLDER=$REPO/dags
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR=LocalExecutor
export AIRFLOW__CORE__PARALLELISM=${AIRFLOW__CORE__PARALLELISM:-2}
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:$PORT/execution/
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=sqlite:///$AIRFLOW_HOME/airflow.db
export AIRFLOW__API__PORT=$PORT
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL=${AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL:-10}
export AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC=2
export OMP_THREAD_LIMIT=1
# standalone starts its services as `airflow <command>`, found on PATH.
export PATH=$REPO/.venv/bin:$PATH
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}

running() { [ -f "$PIDFILE" ] && kill -0 -- "-$(cat "$PIDFILE")" 2>/dev/null; }

case "${1:-}" in
  start)
    if running; then echo "airflow standalone already running (pgid $(cat "$PIDFILE"))"; exit 0; fi
    mkdir -p "$AIRFLOW_HOME"
    "$AIRFLOW" db migrate >"$AIRFLOW_HOME/migrate.log" 2>&1
    # The OCR pool: as many slots as cores, so scans never take every worker.
    "$AIRFLOW" pools set ocr "$CORES" "OCR-heavy batches (slots = cores)" >>"$AIRFLOW_HOME/migrate.log" 2>&1
    # Job control on: the background job gets its own process group, whose id is its pid.
    set -m
    nohup "$AIRFLOW" standalone >"$LOG" 2>&1 < /dev/null &
    echo $! >"$PIDFILE"
    set +m
    echo "airflow standalone starting on 127.0.0.1:$PORT (pgid $!, log $LOG)"
    ;;
  stop)
    if ! running; then rm -f "$PIDFILE"; echo "airflow standalone not running"; exit 0; fi
    pgid=$(cat "$PIDFILE")
    kill -TERM -- "-$pgid" 2>/dev/null || true
    for _ in $(seq 30); do running || break; sleep 1; done
    if running; then
      echo "still running after 30 s (SIGKILL):" >&2
      ps -o pid,ppid,stat,etime,args -g "$pgid" >&2 || true
      kill -KILL -- "-$pgid" 2>/dev/null || true
      # Killed processes linger until their parent reaps them: stopped means gone.
      for _ in $(seq 50); do running || break; sleep 0.2; done
    fi
    rm -f "$PIDFILE"
    echo "airflow standalone stopped"
    ;;
  status)
    if running; then echo "running (pgid $(cat "$PIDFILE"), port $PORT)"; else echo "stopped"; exit 1; fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
