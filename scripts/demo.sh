#!/usr/bin/env bash
# Carnet demo on the embedded defaults (no servers): generate a synthetic producer feed,
# ingest it through the Airflow DAG (dag.test, SQLite), print the summary and searches.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARNET_DATA_DIR=${CARNET_DATA_DIR:-$PWD/.carnet/demo}
export OMP_THREAD_LIMIT=1
rm -rf "$CARNET_DATA_DIR"
mkdir -p "$CARNET_DATA_DIR"
feed="$CARNET_DATA_DIR/feed"

echo "== 1. Generating a synthetic producer feed in $feed"
.venv/bin/carnet generate "$feed" --seed 2026 --patients 25 --documents 90 \
  --expected "$CARNET_DATA_DIR/expected.jsonl"

echo "== 2. Ingesting it through the Airflow DAG carnet_ingest (dag.test, embedded index)"
AIRFLOW_HOME="$CARNET_DATA_DIR/airflow" .venv/bin/python scripts/run_dag.py --feed "$feed"

echo "== 3. What the ledger says"
.venv/bin/carnet status --limit 5

echo "== 4. Example searches"
.venv/bin/python scripts/demo_searches.py "$CARNET_DATA_DIR/expected.jsonl"
echo
echo "Acknowledgements for producers: $feed/<producer>/<batch>/_report.json"
echo "Try: .venv/bin/carnet search <INS> 'hémoglobine'   (with CARNET_DATA_DIR=$CARNET_DATA_DIR)"
