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
SERVER_NAME="MinIO"
SERVER_BIN="$CACHE/bin/minio"
GO_MODULE="$MINIO_MODULE"
GO_VERSION="$MINIO_VERSION"
STATE_DIR="$CACHE/s3-$S3_PORT"  # pid, log and data-folder path of this server
PID_FILE="$STATE_DIR/minio.pid"
LOG_FILE="$STATE_DIR/minio.log"
DATA_PREFIX="carnet-s3"
URL="http://127.0.0.1:$S3_PORT"

log() { printf 's3.sh: %s\n' "$*" >&2; }

ready() {
  curl -fsS --max-time 2 -o /dev/null "$URL/minio/health/ready" 2>/dev/null
}

# shellcheck source=scripts/lib/go_server.sh
source "$(dirname "$0")/lib/go_server.sh"

print_env() {
  cat <<EOF
export AWS_ENDPOINT_URL=$URL
export AWS_ACCESS_KEY_ID=$ROOT_USER
export AWS_SECRET_ACCESS_KEY=$ROOT_PASSWORD
export AWS_DEFAULT_REGION=us-east-1
EOF
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
  local data
  data=$(new_data_dir)
  log "starting MinIO at $URL (data in $data)"
  # A static KMS key (fresh per start, like the data folder) so that SSE-S3 requests are
  # honoured as on AWS; without one MinIO answers NotImplemented to every SSE request.
  local kms=()
  if [[ "${CARNET_S3_SSE:-1}" != 0 ]]; then
    kms=("MINIO_KMS_SECRET_KEY=carnet-test-key:$(head -c 32 /dev/urandom | base64)")
  fi
  launch "$START_TIMEOUT_S" env MINIO_ROOT_USER="$ROOT_USER" MINIO_ROOT_PASSWORD="$ROOT_PASSWORD" \
    MINIO_BROWSER=off MINIO_UPDATE=off "${kms[@]}" \
    "$SERVER_BIN" server --quiet --address "127.0.0.1:$S3_PORT" "$data"
  print_env
}

main "$@"
