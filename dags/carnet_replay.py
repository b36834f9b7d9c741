"""
### carnet_replay — reprocess quarantined documents

After a parser fix or a corrected upload, run the quarantined documents through the
pipeline again: all of them, or those of one producer, one reason code and/or a
quarantine-date window, or given quarantine ids. A replayed document that now passes
leaves quarantine (its feed batch's `_report.json` and ACK rewritten to say so); one
that fails again stays, with the new attempt appended to its
history. One refused before its content was judged (a link, an unreadable file, a
manifest mismatch) is not replayed: the producer must send it again.

With ``dry_run`` (the default) nothing is reprocessed: the task logs and returns what
would be replayed. Trigger with e.g.
``{"producer": "labo-biolyon", "reason": "missing_ins", "dry_run": false}``.

This file only wires: the work is ``pipeline.replay.replay_quarantine``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Param, dag, task

from pipeline.monitoring import on_task_failure

# Named, not __name__: Airflow imports DAG files under a mangled module name.
log = logging.getLogger("carnet.dags.replay")


@dag(
    dag_id="carnet_replay",
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["carnet", "replay"],
    doc_md=__doc__,
    max_active_runs=1,  # two replays of the same records would both re-file them
    default_args={
        "owner": "carnet",
        "retries": 1,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(hours=2),
        "on_failure_callback": on_task_failure,
    },
    params={
        "producer": Param(None, type=["null", "string"], description="Only this producer"),
        "reason": Param(None, type=["null", "string"], description="Only this reason code"),
        "since": Param(
            None, type=["null", "string"], format="date", description="Quarantined on or after (YYYY-MM-DD)"
        ),
        "until": Param(
            None, type=["null", "string"], format="date", description="Quarantined on or before (YYYY-MM-DD)"
        ),
        "ids": Param(
            [], type="array", items={"type": "string"}, description="Only these quarantine ids (32 hex)"
        ),
        "dry_run": Param(True, type="boolean", description="Only list what would be replayed"),
    },
)
def carnet_replay() -> None:
    @task
    def replay(params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Replay the selected quarantine records; return counts (ids when few)."""
        from carnet_settings import task_settings

        from pipeline.replay import ReplayFilter, replay_quarantine

        assert params is not None
        selection = ReplayFilter(
            producer=params["producer"],
            reason=params["reason"],
            since=params["since"],
            until=params["until"],
            ids=tuple(params.get("ids") or ()),
        )
        result = replay_quarantine(task_settings(), selection, dry_run=params["dry_run"])
        for q in result.selected:
            log.info(
                "%s: id=%s producer=%s batch=%s document=%s reasons=%s",
                "would replay" if result.dry_run else "replayed",
                q.quarantine_id,
                q.producer,
                q.batch,
                q.source,
                ", ".join(r.code.value for r in q.reasons),
            )
        for o in result.outcomes:
            if o.status.value == "rejected":
                log.warning(
                    "still rejected: producer=%s document=%s reasons=%s",
                    o.producer,
                    o.source,
                    "; ".join(r.render() for r in o.reasons),
                )
        return {
            "dry_run": result.dry_run,
            "selected": len(result.selected),
            "released": len(result.released),
            "still_rejected": len(result.still_rejected),
            "not_replayable": len(result.not_replayable),
            "filter": selection.model_dump(mode="json", exclude_none=True),
        }

    replay()


carnet_replay()
