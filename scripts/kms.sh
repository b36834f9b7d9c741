#!/usr/bin/env bash
# Run a throwaway AWS-KMS-compatible server (local-kms) on this machine for tests and CI.
#
#   scripts/kms.sh start    build local-kms if missing, start it with a fresh seed key, print env
#   scripts/kms.sh stop     stop the server started here (by pid) and drop its data folder
#   scripts/kms.sh status   exit 0 when the server answers, 3 when it is not running
#
# local-kms (github.com/nsmithuk/local-kms) speaks KMS's JSON protocol — CreateKey,
# GenerateDataKey, Decrypt with encryption contexts — with real AES-GCM, so boto3 talks
# to it exactly as to AWS KMS. It is built from the Go module proxy (`go install`), once,
# into $CARNET_CACHE/bin (outside the repo); the module has no tagged release, so it is
# pinned by its pseudo-version. The build takes about a minute on 2 cores.
#
# The seed key (an AES-256 key, alias/carnet-test) is made at each start from fresh random
# bytes, like the data folder: nothing in it outlives the server. local-kms has no
# bind-address option and listens on every interface: it holds only these throwaway keys.
#
# `start` prints the variables tests use, as shell `export` lines on stdout, so
# `eval "$(scripts/kms.sh start)"` works; progress goes to stderr.
#
# Environment: CARNET_CACHE (build and state folder), CARNET_LOCAL_KMS_VERSION,
# CARNET_KMS_PORT (4599), CARNET_KMS_TIMEOUT (start timeout, s).
set -euo pipefail

KMS_MODULE="github.com/nsmithuk/local-kms"
KMS_VERSION="${CARNET_LOCAL_KMS_VERSION:-v0.0.0-20260228092603-2a5e92d09ab6}"
KMS_PORT="${CARNET_KMS_PORT:-4599}"
START_TIMEOUT_S="${CARNET_KMS_TIMEOUT:-60}"
# The region and account local-kms puts in its key ARNs; the tests' region.
KMS_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
SEED_KEY_ID="6f1c0a52-3d0e-4c9b-9a57-0c6a7a1e2b01"  # fixed id, fresh key material per start
SEED_ALIAS="alias/carnet-test"

CACHE="${CARNET_CACHE:-$HOME/.cache/carnet}"
SERVER_NAME="local-kms"
SERVER_BIN="$CACHE/bin/local-kms"
GO_MODULE="$KMS_MODULE"
GO_VERSION="$KMS_VERSION"
STATE_DIR="$CACHE/kms-$KMS_PORT"  # pid, log and data-folder path of this server
PID_FILE="$STATE_DIR/local-kms.pid"
LOG_FILE="$STATE_DIR/local-kms.log"
DATA_PREFIX="carnet-kms"
URL="http://127.0.0.1:$KMS_PORT"

log() { printf 'kms.sh: %s\n' "$*" >&2; }

ready() {
  # A real KMS request: the seed key must be there, not just the port open.
  curl -fsS --max-time 2 -o /dev/null -X POST "$URL/" \
    -H 'Content-Type: application/x-amz-json-1.1' -H 'X-Amz-Target: TrentService.DescribeKey' \
    -d "{\"KeyId\": \"$SEED_ALIAS\"}" 2>/dev/null
}

# shellcheck source=scripts/lib/go_server.sh
source "$(dirname "$0")/lib/go_server.sh"

print_env() {
  cat <<EOF
export CARNET_TEST_KMS_URL=$URL
export CARNET_TEST_KMS_KEY_ID=$SEED_ALIAS
EOF
}

write_seed() {
  # One AES-256 key under a fixed id and alias; its key material is new at every start.
  cat >"$1" <<EOF
Keys:
  Symmetric:
    Aes:
      - Metadata:
          KeyId: $SEED_KEY_ID
          Description: Carnet test master key (throwaway, made by scripts/kms.sh)
        BackingKeys:
          - $(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
Aliases:
  - AliasName: $SEED_ALIAS
    TargetKeyId: $SEED_KEY_ID
EOF
}

start() {
  local pid
  if pid=$(running_pid); then
    log "already running (pid $pid) at $URL"
    print_env
    return 0
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$KMS_PORT") 2>/dev/null; then
    die "something else already listens at $URL (not started by this script)"
  fi
  build
  local data
  data=$(new_data_dir)
  write_seed "$data/seed.yaml"
  log "starting local-kms at $URL (data in $data)"
  launch "$START_TIMEOUT_S" env PORT="$KMS_PORT" KMS_REGION="$KMS_REGION" \
    KMS_DATA_PATH="$data/db" KMS_SEED_PATH="$data/seed.yaml" "$SERVER_BIN"
  print_env
}

main "$@"
