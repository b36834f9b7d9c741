#!/usr/bin/env bash
# Run a throwaway MinIO server on 127.0.0.1 for tests and CI (no Docker).
#
#   scripts/s3.sh start    build MinIO if missing, start it, wait until ready, print env
#   scripts/s3.sh stop     stop the server started here (by pid) and drop its data folder
#   scripts/s3.sh status   exit 0 when the server answers, 3 when it is not running
#
# MinIO is built from source through the Go module proxy (`go install`), once, into
# $CARNET_CACHE/bin (outside the repo). The proxy does not resolve MinIO's RELEASE.* tags
# (they are not semantic versions), so the module is pinned by its pseudo-version.
# The first build takes several minutes on 2 cores.
#
# `start` prints the variables tests use, as shell `export` lines on stdout, so
# `eval "$(scripts/s3.sh start)"` works; progress goes to stderr.
#
# Environment: CARNET_CACHE (build and state folder), CARNET_MINIO_VERSION,
# CARNET_S3_PORT (9000), CARNET_S3_TIMEOUT (start timeout, s), MINIO_ROOT_USER and
# MINIO_ROOT_PASSWORD (test credentials by default), CARNET_S3_SSE=0 (start without a KMS
# key, to see how Carnet behaves on a server that cannot encrypt).
set -euo pipefail

MINIO_MODULE="github.com/minio/minio"
MINIO_VERSION="${CARNET_MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
S3_PORT="${CARNET_S3_PORT:-9000}"
START_TIMEOUT_S="${CARNET_S3_TIMEOUT:-60}"
ROOT_USER="${MINIO_ROOT_USER:-carnet-test}"
ROOT_PASSWORD="${MINIO_ROOT_PASSWORD:-carnet-test-secret}"

CACHE="${CARNET_CACHE:-$HOME/.cache/carnet}"
BIN_DIR="$CACHE/bin"
MINIO_BIN="$BIN_DIR/minio"
VERSION_STAMP="$BIN_DIR/minio.version"  # which module version $MINIO_BIN was built from
STATE_DIR="$CACHE/s3-$S3_PORT"          # pid, log and data-folder path of this server
PID_FILE="$STATE_DIR/minio.pid"
DATA_FILE="$STATE_DIR/data-dir"
LOG_FILE="$STATE_DIR/minio.log"
URL="http://127.0.0.1:$S3_PORT"

log() { printf 's3.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

running_pid() {
  # The pid from the pid file, if that process is alive and is our minio binary.
  [[ -s "$PID_FILE" ]] || return 1
  local pid
  pid=$(<"$PID_FILE")
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$MINIO_BIN" ]] || return 1
  echo "$pid"
}

ready() {
  curl -fsS --max-time 2 -o /dev/null "$URL/minio/health/ready" 2>/dev/null
}

print_env() {
  cat <<EOF
export AWS_ENDPOINT_URL=$URL
export AWS_ACCESS_KEY_ID=$ROOT_USER
export AWS_SECRET_ACCESS_KEY=$ROOT_PASSWORD
export AWS_DEFAULT_REGION=us-east-1
EOF
}

build() {
  if [[ -x "$MINIO_BIN" && "$(cat "$VERSION_STAMP" 2>/dev/null)" == "$MINIO_VERSION" ]]; then
    return 0
  fi
  # The official Go tarball's place, for shells whose PATH lacks it (CI, cron).
  command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
  command -v go >/dev/null || die "go not found: MinIO is built with the Go toolchain (>= 1.24)"
  command -v flock >/dev/null || die "flock not found (apt-get install -y util-linux)"
  mkdir -p "$BIN_DIR"
  # Two concurrent starts must not build at once: the second waits, then finds the binary.
  exec 9>"$BIN_DIR/.minio-build.lock"
  flock 9
  if [[ -x "$MINIO_BIN" && "$(cat "$VERSION_STAMP" 2>/dev/null)" == "$MINIO_VERSION" ]]; then
    exec 9>&-
    return 0
  fi
  log "building $MINIO_MODULE@$MINIO_VERSION into $BIN_DIR (several minutes on first run)"
  local started=$SECONDS
  # CGO off: MinIO's own release builds are static; -trimpath keeps local paths out.
  CGO_ENABLED=0 GOBIN="$BIN_DIR" GOFLAGS="-trimpath -buildvcs=false" \
    go install "$MINIO_MODULE@$MINIO_VERSION" >&2 \
    || die "go install $MINIO_MODULE@$MINIO_VERSION failed"
  echo "$MINIO_VERSION" >"$VERSION_STAMP"
  exec 9>&-
  log "built in $((SECONDS - started))s"
}

show_log() {
  [[ -s "$LOG_FILE" ]] && { log "--- tail of $LOG_FILE"; tail -n 40 "$LOG_FILE" >&2; }
  return 0
}

start() {
  local pid
  if pid=$(running_pid); then
    log "already running (pid $pid) at $URL"
    print_env
    return 0
  fi
  if curl -fsS --max-time 2 -o /dev/null "$URL" 2>/dev/null \
    || (exec 3<>"/dev/tcp/127.0.0.1/$S3_PORT") 2>/dev/null; then
    die "something else already listens at $URL (not started by this script)"
  fi
  build
  mkdir -p "$STATE_DIR"
  cleanup_data
  local data
  data=$(mktemp -d "${TMPDIR:-/tmp}/carnet-s3.XXXXXX")
  echo "$data" >"$DATA_FILE"
  rm -f "$PID_FILE"
  log "starting MinIO at $URL (data in $data)"
  # A static KMS key (fresh per start, like the data folder) so that SSE-S3 requests are
  # honoured as on AWS; without one MinIO answers NotImplemented to every SSE request.
  local kms=()
  if [[ "${CARNET_S3_SSE:-1}" != 0 ]]; then
    kms=("MINIO_KMS_SECRET_KEY=carnet-test-key:$(head -c 32 /dev/urandom | base64)")
  fi
  # setsid: its own session and process group, so the test runner's signals do not
  # reach it and `stop` can end it (and only it) by pid.
  env MINIO_ROOT_USER="$ROOT_USER" MINIO_ROOT_PASSWORD="$ROOT_PASSWORD" MINIO_BROWSER=off \
    MINIO_UPDATE=off "${kms[@]}" setsid "$MINIO_BIN" server --quiet --address "127.0.0.1:$S3_PORT" \
    "$data" >"$LOG_FILE" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  local deadline=$((SECONDS + START_TIMEOUT_S))
  until ready; do
    if (( SECONDS >= deadline )) || ! running_pid >/dev/null; then
      show_log
      stop >/dev/null 2>&1 || true
      die "MinIO did not become ready at $URL within ${START_TIMEOUT_S}s"
    fi
    sleep 0.5
  done
  log "up (pid $(running_pid)) at $URL"
  print_env
}

cleanup_data() {
  # Remove the data folder of a previous server (only one this script created).
  if [[ -s "$DATA_FILE" ]]; then
    local data
    data=$(<"$DATA_FILE")
    [[ "$data" == */carnet-s3.* && -d "$data" ]] && rm -rf "$data"
    rm -f "$DATA_FILE"
  fi
  return 0
}

stop() {
  local pid
  if ! pid=$(running_pid); then
    log "not running"
    rm -f "$PID_FILE"
    cleanup_data
    return 0
  fi
  kill -TERM "$pid"
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if (( SECONDS >= deadline )); then
      log "pid $pid ignored SIGTERM for 30s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.2
  done
  rm -f "$PID_FILE"
  cleanup_data
  log "stopped (pid $pid)"
}

status() {
  local pid
  if ! pid=$(running_pid); then
    echo "not running"
    return 3
  fi
  if ready; then
    echo "running (pid $pid) at $URL"
  else
    echo "running (pid $pid) at $URL but not ready yet"
    return 1
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  build) build ;;
  *) echo "usage: $0 start|stop|status|build" >&2; exit 2 ;;
esac
