"""
### carnet_maintenance — daily integrity check, retention purge, optional reindex

1. **check_integrity**: every indexed document has its raw bytes in the store, and every
   document the ledger recorded as accepted is in the index. Discrepancies are logged one
   per line (doc id, patient, producer, source), raised as one alert, and returned.
2. **check_feeds**: a silence alert for each feed of the feeds file quiet for longer
   than its ``max_silence_hours``.
3. **purge**: quarantine records untouched for ``quarantine_days`` (with their raw bytes
   when nothing else uses them) and batch metrics older than ``metrics_days``; 0 keeps
   everything. Indexed documents are never purged here.
4. **reindex** (``reindex: true`` only): Elasticsearch copies into a new index and swaps
   the alias; SQLite merges its full-text segments. Pause ingestion while it runs.

This file only wires: the work is in ``pipeline.maintenance`` and ``pipeline.monitoring``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, task

from pipeline.monitoring import on_task_failure

# Named, not __name__: Airflow imports DAG files under a mangled module name.
log = logging.getLogger("carnet.dags.maintenance")


@dag(
    dag_id="carnet_maintenance",
    schedule="@daily",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["carnet", "maintenance"],
    doc_md=__doc__,
    max_active_runs=1,
    default_args={
        "owner": "carnet",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(hours=6),
        "on_failure_callback": on_task_failure,
    },
    params={
        "quarantine_days": Param(
            365, type="integer", minimum=0, description="Purge quarantine records idle this long (0: never)"
        ),
        "metrics_days": Param(
            400, type="integer", minimum=0, description="Purge batch metrics older than this (0: never)"
        ),
        "purge_dry_run": Param(False, type="boolean", description="Only count what would go"),
        "reindex": Param(False, type="boolean", description="Rebuild the index (alias swap)"),
    },
)
def carnet_maintenance() -> None:
    @task
    def check_integrity() -> dict[str, Any]:
        """Compare index, store and ledger; alert on any discrepancy."""
        from carnet_settings import task_settings

        from pipeline.maintenance import check_integrity as check
        from pipeline.monitoring import Alert, AlertKind, default_notifier, notify_all

        settings = task_settings()
        report = check(settings)
        if not report.ok:
            kinds = sorted({d.kind for d in report.discrepancies})
            notify_all(
                [
                    Alert(
                        kind=AlertKind.INTEGRITY,
                        at=report.checked_at,
                        message=f"{len(report.discrepancies)} discrepancies ({', '.join(kinds)})",
                        details={"first": report.discrepancies[0].model_dump(mode="json")},
                    )
                ],
                default_notifier(settings),
                settings=settings,
            )
        return {
            "ok": report.ok,
            "indexed": report.indexed,
            "accepted_in_ledger": report.accepted_in_ledger,
            # Ids only (no content): enough to investigate, small enough for XCom.
            "discrepancies": [d.model_dump(mode="json") for d in report.discrepancies[:100]],
            "discrepancy_count": len(report.discrepancies),
        }

    @task
    def check_feeds() -> int:
        """Alert on configured feeds silent for too long; return how many."""
        from carnet_settings import task_settings

        from pipeline.feeds.config import load_feeds
        from pipeline.monitoring import check_silent_feeds

        settings = task_settings()
        feeds = load_feeds(settings.ingestion.feeds_file) if settings.ingestion.feeds_file else ()
        return len(check_silent_feeds(settings, feeds))

    @task
    def purge(params: dict[str, Any] | None = None) -> dict[str, int]:
        from carnet_settings import task_settings

        from pipeline.maintenance import purge_retention

        assert params is not None
        report = purge_retention(
            task_settings(),
            quarantine_days=params["quarantine_days"],
            metrics_days=params["metrics_days"],
            dry_run=params["purge_dry_run"],
        )
        return report.model_dump()

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def reindex_requested(params: dict[str, Any] | None = None) -> bool:
        assert params is not None
        return bool(params["reindex"])

    @task
    def reindex() -> dict[str, Any]:
        from carnet_settings import task_settings

        from pipeline.maintenance import rebuild_index

        return rebuild_index(task_settings())

    checked = check_integrity()
    checked >> check_feeds()
    # Purge and reindex only after the check, so its report describes the untouched state.
    checked >> purge() >> reindex_requested() >> reindex()


carnet_maintenance()
