"""
### carnet_ingest — ingest producer batches from one feed

Producers drop batches as ``<feed>/<producer>/<batch>/`` and mark them complete with
``_READY`` or ``_manifest.json``. Each run:

1. **discover** lists the complete batches the ledger has not processed yet;
2. **process** runs once per batch (dynamic task mapping; never per document): parse,
   identify, classify, check, index, write ``_report.json`` back into the batch;
3. **summarize** logs a table of outcomes and returns the totals, also when there was
   nothing to do (the mapped task is then skipped).

Re-running is safe: batches already in the ledger are not discovered again and
``process`` is idempotent. Trigger with ``{"feed_url": "<folder or s3://bucket/prefix>"}``
to read another feed than the default (``CARNET_FEED_URL``, else
``<CARNET_DATA_DIR or ./.carnet>/feed``). Storage and index come from ``CARNET_*``
variables (see ``pipeline.settings``).

This file only wires tasks: the work lives in ``pipeline.ingest``, imported inside the
tasks so that parsing the DAG stays cheap.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Param, dag, task

log = logging.getLogger(__name__)


def _default_feed_url() -> str:
    if url := os.environ.get("CARNET_FEED_URL"):
        return url
    data_dir = Path(os.environ.get("CARNET_DATA_DIR", ".carnet"))
    return str(data_dir / "feed")


@dag(
    dag_id="carnet_ingest",
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["carnet", "ingest"],
    doc_md=__doc__,
    max_active_runs=1,  # two runs on one feed would race for the same batches
    max_active_tasks=4,
    default_args={
        "owner": "carnet",
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(hours=1),
    },
    params={
        "feed_url": Param(
            _default_feed_url(),
            type="string",
            minLength=1,
            description="Feed root: a folder or s3://bucket/prefix",
        ),
    },
)
def carnet_ingest() -> None:
    @task
    def discover(params: dict[str, Any] | None = None) -> list[str]:
        """Keys ``producer/batch`` of the complete batches not processed yet."""
        from pipeline.ingest import discover_batches
        from pipeline.settings import Settings

        assert params is not None  # injected by Airflow from the run's context
        keys = discover_batches(Settings.from_env(), params["feed_url"])
        log.info("%d batch(es) to process in %s", len(keys), params["feed_url"])
        return keys

    @task(max_active_tis_per_dagrun=2)
    def process(feed_url: str, batch_key: str) -> dict[str, Any]:
        """Ingest one batch; only its counts travel through XCom."""
        from pipeline.ingest import process_batch
        from pipeline.settings import Settings

        summary = process_batch(Settings.from_env(), feed_url, batch_key)
        return summary.model_dump(mode="json")

    # none_failed: with an empty feed the mapped task is skipped, and the summary must
    # still run; a failed batch still fails the run.
    @task(trigger_rule="none_failed")
    def summarize(summaries: list[dict[str, Any]]) -> dict[str, Any]:
        """Log a readable table of the run's outcomes and return the totals."""
        from pipeline.ingest import BatchSummary, summarize_batches

        # Indexing up to len() rather than iterating: the lazy XCom sequence finds its end
        # by a failed lookup, which Airflow logs as an error.
        parsed = [BatchSummary.model_validate(summaries[i]) for i in range(len(summaries))]
        totals = summarize_batches(parsed)
        log.info("Ingest summary\n%s", format_summary(parsed, totals))
        return totals

    keys = discover()
    summaries = process.partial(feed_url="{{ params.feed_url }}").expand(batch_key=keys)
    summarize(summaries)


def format_summary(summaries: list[Any], totals: dict[str, Any]) -> str:
    """A plain-text table: one line per batch, then the run's totals."""
    statuses = sorted({s for b in summaries for s in b.by_status})
    header = ["batch", "total", *statuses]
    rows = [[b.batch_key, str(b.total), *(str(b.by_status.get(s, 0)) for s in statuses)] for b in summaries]
    if not rows:
        rows = [["(no new batch)", "0"]]
        header = header[:2]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"totals: {totals}")
    return "\n".join(lines)


carnet_ingest()
