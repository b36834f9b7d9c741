#!/usr/bin/env bash
# Run Carnet's whole test suite with the real services it needs: an Elasticsearch node,
# an S3-compatible server, a KMS-compatible server and a PostgreSQL cluster (the state
# database) started by the project's own scripts, stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARNET_TEST_ES_URL=${CARNET_TEST_ES_URL:-http://127.0.0.1:9200}
export AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://127.0.0.1:9000}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-carnet-test}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-carnet-test-secret}
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
# The KMS server of scripts/kms.sh and its seed key (tests pass them to Settings themselves).
export CARNET_TEST_KMS_URL=${CARNET_TEST_KMS_URL:-http://127.0.0.1:${CARNET_KMS_PORT:-4599}}
export CARNET_TEST_KMS_KEY_ID=${CARNET_TEST_KMS_KEY_ID:-alias/carnet-test}
# The PostgreSQL cluster of scripts/postgres.sh (the state tests make a database per test in it).
export CARNET_TEST_STATE_URL=${CARNET_TEST_STATE_URL:-postgresql://carnet:carnet@127.0.0.1:${CARNET_PG_TEST_PORT:-5434}/carnet}
# tesseract's OpenMP threads fight each other on small machines: one thread per process.
export OMP_THREAD_LIMIT=1

started=()
cleanup() {
  for svc in "${started[@]:-}"; do
    [ -n "$svc" ] && "scripts/$svc.sh" stop >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

if [ "${CARNET_SKIP_SERVICES:-}" != "1" ]; then
  for svc in elasticsearch s3 kms postgres; do
    if [ -x "scripts/$svc.sh" ]; then
      if ! "scripts/$svc.sh" status >/dev/null 2>&1; then
        "scripts/$svc.sh" start
        started+=("$svc")
      fi
    fi
  done
fi

.venv/bin/python -m pytest "$@"
