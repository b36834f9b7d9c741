"""
### carnet_ingest — ingest producer batches from one feed

Producers drop batches as ``<feed>/<producer>/<batch>/`` and mark them complete with
``_READY`` or ``_manifest.json``. Each run:

1. **discover** lists the complete batches the ledger has not processed yet, as one
   *lane* per producer (its batch keys in arrival order: a later batch may repeat or
   replace a document of an earlier one, so one producer's batches never run
   concurrently), and splits the lanes by file names: a lane holding scans (images) goes
   to the OCR pool;
2. **text_lanes** / **ocr_lanes** pick each pool's lanes, and **process_text** /
   **process_ocr** run once per lane (dynamic task mapping over batches, never per
   document), processing its batches one by one: parse, identify, classify, check,
   index, write ``_report.json`` (and HL7 ACKs) back into the batch, keep the batch's
   metrics and raise its alerts. ``process_ocr`` runs in the ``ocr`` pool (slots =
   cores), so scans cannot starve the HL7/text work;
3. **summarize** logs a table of outcomes and returns the totals, also when there was
   nothing to do (the mapped tasks are then skipped).

Re-running is safe: batches already in the ledger are not discovered again (unless the
producer closed one again under its name: a new delivery, processed anew) and
``process`` is idempotent. Every task alerts on failure (``pipeline.monitoring``); a feed
URL that leads nowhere fails ``discover`` at once, without retries.

What the grid shows: each mapped ``process_*`` task is named after its lane
(``map_index_template``: producer, batch count, and alerts if any were raised). A lane
that raised alerts (reject rate above the feed's threshold, a jump, quality flags) stays
green, because the batch was processed, but its name says ``ALERT``, its asset events on
``carnet://index`` and ``carnet://store`` carry the metrics and alerts, ``carnet status``
lists them, and the notifier sends them. Counters and timers go to Airflow's StatsD
(``Stats``) when ``[metrics] statsd_on`` is set.

Two kinds of DAG come from this file:
- ``carnet_ingest``: unscheduled, the feed is a parameter. Trigger it with
  ``{"feed_url": "<folder or s3://bucket/prefix>"}`` (default ``CARNET_FEED_URL``, else
  ``<CARNET_DATA_DIR or ./.carnet>/feed``); used by the demo and the tests.
- ``carnet_ingest_<feed id>``: one per feed of the feeds file (``CARNET_FEEDS_FILE``),
  run when the feed's asset ``carnet-feed://<id>`` is updated (the producer's upload
  tool or a storage notification posts the event when it closes a batch) or, as a safety
  net, on the feed's cron ``schedule``: no sensor polls the storage.

This file only wires tasks: the work lives in ``pipeline.*``, imported inside the tasks
so that parsing the DAG stays cheap.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from airflow.sdk import DAG, Asset, Param, dag, get_current_context, task

from pipeline.feeds.config import FeedConfig, load_feeds
from pipeline.monitoring import on_task_failure
from pipeline.settings import Settings

# Named, not __name__: Airflow imports DAG files under a mangled module name.
log = logging.getLogger("carnet.dags.ingest")

OCR_POOL = "ocr"
# What an ingestion run changes: the index and the raw-document store (lineage, asset views).
INDEX_ASSET = Asset(name="carnet_index", uri="carnet://index", group="carnet")
STORE_ASSET = Asset(name="carnet_store", uri="carnet://store", group="carnet")
# The mapped tasks' names in the grid: set by the task in its context (see run_lane).
LANE_LABEL = "{{ lane_label }}"
DEFAULT_ARGS: dict[str, Any] = {
    "owner": "carnet",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(hours=1),
    "on_failure_callback": on_task_failure,
}


def _default_feed_url() -> str:
    return Settings.from_env().effective_feed_url


def _schedule(feed: FeedConfig | None) -> Any:
    if feed is None:
        return None
    from airflow.timetables.assets import AssetOrTimeSchedule
    from airflow.timetables.trigger import CronTriggerTimetable

    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(feed.schedule, timezone="UTC"),
        assets=[Asset(feed.asset_uri, group="carnet-feeds")],
    )


def build_ingest_dag(dag_id: str, feed: FeedConfig | None = None) -> DAG:
    """The ingestion DAG for one configured feed, or the generic one (feed as a param)."""

    @dag(
        dag_id=dag_id,
        schedule=_schedule(feed),
        start_date=datetime(2025, 1, 1, tzinfo=UTC),
        catchup=False,
        tags=["carnet", "ingest"] + ([f"feed:{feed.id}"] if feed else []),
        doc_md=__doc__,
        max_active_runs=1,  # two runs on one feed would race for the same batches
        max_active_tasks=4,
        default_args=DEFAULT_ARGS,
        params={
            "feed_url": Param(
                feed.url if feed else _default_feed_url(),
                type="string",
                minLength=1,
                description="Feed root: a folder or s3://bucket/prefix",
            ),
            "feed_id": Param(
                feed.id if feed else None,
                type=["null", "string"],
                description="Feeds-file id (thresholds, metrics); none: the URL",
            ),
            "max_reject_rate": Param(
                feed.max_reject_rate if feed else None,
                type=["null", "number"],
                description="Alert above this reject rate (default: CARNET_MAX_REJECT_RATE)",
            ),
            "scans": Param(
                bool(feed and feed.scans),
                type="boolean",
                description="Every batch of this feed goes to the OCR pool",
            ),
        },
    )
    def ingest() -> None:
        @task
        def discover(params: dict[str, Any] | None = None) -> dict[str, list[list[str]]]:
            """Per-producer lanes of ``producer/batch`` keys not processed yet, by pool."""
            from airflow.exceptions import AirflowFailException
            from carnet_settings import task_settings

            from pipeline.errors import CarnetError
            from pipeline.feeds.plan import plan_batches
            from pipeline.monitoring import is_configuration_error

            assert params is not None  # injected by Airflow from the run's context
            try:
                plan = plan_batches(task_settings(), params["feed_url"], scans=params["scans"])
            except CarnetError as exc:
                if is_configuration_error(exc):
                    # Retrying a feed URL that leads nowhere only delays the alert. Airflow
                    # hands no exception to the failure callback for this one: say it here.
                    context = cast(dict[str, Any], get_current_context())
                    context["carnet_error"] = f"feed configuration: {exc}"
                    raise AirflowFailException(context["carnet_error"]) from exc
                raise
            log.info(
                "%d batch(es) in %d text lane(s), %d batch(es) in %d OCR lane(s)",
                sum(map(len, plan["text"])),
                len(plan["text"]),
                sum(map(len, plan["ocr"])),
                len(plan["ocr"]),
                extra={"feed": params["feed_url"]},
            )
            return plan

        @task
        def pick(plan: dict[str, list[list[str]]], pool: str) -> list[list[str]]:
            """The lanes of one pool (mapping needs a task's own return value)."""
            return plan[pool]

        def run_lane(lane: list[str], params: dict[str, Any]) -> list[dict[str, Any]]:
            """Process a producer's batches in order; name the mapped task after the lane,
            and put the metrics and alerts on the index/store asset events."""
            # The template reads a key of our own in the task's context.
            context = cast(dict[str, Any], get_current_context())
            producer = lane[0].split("/", 1)[0] if lane else "?"
            plural = "batch" if len(lane) == 1 else "batches"
            context["lane_label"] = f"{producer} ({len(lane)} {plural})"
            results = [run_batch(key, params) for key in lane]
            alerts = [a for r in results for a in r["alerts"]]
            if alerts:
                context["lane_label"] += f" ALERT: {alerts[0]['message']}" + (
                    f" (+{len(alerts) - 1})" if len(alerts) > 1 else ""
                )
            extra = {
                "feed": params["feed_id"] or params["feed_url"],
                "producer": producer,
                "batches": [r["metrics"] for r in results],
                "alerts": alerts,
            }
            for asset in (INDEX_ASSET, STORE_ASSET):
                context["outlet_events"][asset].extra = extra
            return [r["summary"] for r in results]

        def run_batch(batch_key: str, params: dict[str, Any]) -> dict[str, Any]:
            from airflow.stats import Stats
            from carnet_settings import task_settings

            from pipeline.errors import CarnetError
            from pipeline.ingest.batch import process_batch
            from pipeline.monitoring import check_batch, log_fields, log_rejections

            # The feed's threshold, when it has one, decides flagged and alerts alike.
            settings = task_settings(max_reject_rate=params["max_reject_rate"])
            feed = params["feed_id"] or params["feed_url"]
            producer = batch_key.split("/", 1)[0]
            with log_fields(feed=feed, producer=producer, batch=batch_key):
                try:
                    summary = process_batch(settings, params["feed_url"], batch_key)
                except (CarnetError, OSError) as exc:
                    document = getattr(exc, "context", {}).get("source")
                    log.error(
                        "batch failed: %s",
                        exc,
                        extra={"feed": feed, "producer": producer, "batch": batch_key, "document": document},
                    )
                    raise
                log_rejections(settings, summary.run_id, batch_key=batch_key)
                check = check_batch(
                    settings, feed, summary, max_reject_rate=settings.ingestion.max_reject_rate, stats=Stats
                )
            summary = summary.model_copy(update={"flagged": check.metrics.flagged})
            return {
                "summary": summary.model_dump(mode="json"),
                "metrics": check.metrics.model_dump(mode="json"),
                "alerts": [a.model_dump(mode="json") for a in check.alerts],
            }

        @task(max_active_tis_per_dagrun=2, map_index_template=LANE_LABEL, outlets=[INDEX_ASSET, STORE_ASSET])
        def process_text(lane: list[str], params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
            """Ingest one producer's HL7/text batches; only counts travel through XCom."""
            assert params is not None
            return run_lane(lane, params)

        @task(pool=OCR_POOL, map_index_template=LANE_LABEL, outlets=[INDEX_ASSET, STORE_ASSET])
        def process_ocr(lane: list[str], params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
            """Ingest one producer's batches, some scan-heavy, in the OCR pool."""
            assert params is not None
            return run_lane(lane, params)

        # none_failed: with an empty feed the mapped tasks are skipped, and the summary
        # must still run; a failed batch still fails the run.
        @task(trigger_rule="none_failed")
        def summarize(text: list[list[dict[str, Any]]], ocr: list[list[dict[str, Any]]]) -> dict[str, Any]:
            """Log a readable table of the run's outcomes and return the totals."""
            from pipeline.ingest.batch import BatchSummary, summarize_batches

            # Indexing up to len() rather than iterating: the lazy XCom sequence finds its
            # end by a failed lookup, which Airflow logs as an error.
            parsed = [
                BatchSummary.model_validate(b)
                for lanes in (text, ocr)
                for i in range(len(lanes))
                for b in lanes[i]
            ]
            totals = summarize_batches(parsed)
            totals["ocr_pages"] = sum(b.ocr_pages for b in parsed)
            log.info("Ingest summary\n%s", format_summary(parsed, totals))
            return totals

        # Calling a task while the DAG is defined gives an XComArg, which Airflow resolves
        # to the annotated value when the task runs: mypy sees only the former.
        plan = discover()
        text = pick.override(task_id="text_lanes")(plan, "text")  # type: ignore[arg-type]
        ocr = pick.override(task_id="ocr_lanes")(plan, "ocr")  # type: ignore[arg-type]
        summarize(process_text.expand(lane=text), process_ocr.expand(lane=ocr))  # type: ignore[arg-type]

    return ingest()


def format_summary(summaries: list[Any], totals: dict[str, Any]) -> str:
    """A plain-text table: one line per batch, then the run's totals."""
    statuses = sorted({s for b in summaries for s in b.by_status})
    header = ["batch", "total", *statuses, "ocr pages"]
    rows = [
        [b.batch_key, str(b.total), *(str(b.by_status.get(s, 0)) for s in statuses), str(b.ocr_pages)]
        for b in summaries
    ]
    if not rows:
        rows = [["(no new batch)", "0"]]
        header = header[:2]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    by_status = totals.get("by_status") or {}
    lines.append(
        f"totals: {totals.get('batches', 0)} batch(es), {totals.get('documents', 0)} "
        "document(s)" + "".join(f", {k} {v}" for k, v in sorted(by_status.items()))
    )
    if totals.get("flagged_batches"):
        lines.append("flagged (alerts raised): " + ", ".join(totals["flagged_batches"]))
    return "\n".join(lines)


def _configured_feeds() -> tuple[FeedConfig, ...]:
    path = Settings.from_env().ingestion.feeds_file
    return load_feeds(path) if path else ()


carnet_ingest = build_ingest_dag("carnet_ingest")
for _feed in _configured_feeds():
    globals()[_feed.dag_id] = build_ingest_dag(_feed.dag_id, _feed)
