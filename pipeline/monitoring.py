"""Run metrics kept queryable, and the alerts raised on them.

Each processed batch leaves one row in the state database's ``batch_metrics`` (feed,
producer, batch, counts per status and reason, OCR pages and confidence, seconds per
stage, its Data Docs); the ledger holds the same run with its per-document outcomes.
``load_metrics`` reads them back, ``producer_status`` condenses them per producer for
``carnet status``. Whichever worker processed a batch, every other process sees it.

Alerts go through a ``Notifier``: ``LogNotifier`` (default) logs them, ``WebhookNotifier``
also POSTs them as JSON (``CARNET_ALERT_WEBHOOK``). They are raised when a batch task
fails, when a producer's reject rate crosses its feed's threshold or jumps above its
recent baseline, when the quality gate flags a batch, and when a feed has been silent
for longer than its ``max_silence``. Each alert is also kept in the state database
(``alerts``) for ``carnet status``. A batch's ``flagged`` is true exactly when
it raised an alert: one threshold, one answer.

``emit_stats`` sends the batch counters and stage timers to a StatsD-style client (the
DAG passes Airflow's ``Stats``). Log lines name producer, batch and document as fields
(``log_fields``), not inside the message.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import re
import urllib.request
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pipeline.model import Frozen
from pipeline.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger(__name__)

# A batch whose reject rate exceeds the producer's recent mean by this much is a jump.
REJECT_JUMP = 0.2
# How many earlier batches of a producer make its baseline.
BASELINE_BATCHES = 10
# How many entries outside any batch a stray_entry alert names (it counts them all): one
# kept every hour while they stand, it must stay small however many there are.
STRAY_NAMED = 100


class AlertKind(StrEnum):
    BATCH_FAILED = "batch_failed"
    REJECT_RATE = "reject_rate"
    REJECT_RATE_JUMP = "reject_rate_jump"
    QUALITY_FLAGS = "quality_flags"
    FEED_SILENT = "feed_silent"
    FOLDER_UNLISTED = "folder_unlisted"
    STRAY_ENTRY = "stray_entry"
    BATCH_CHANGED = "batch_changed"
    INTEGRITY = "integrity"


@contextlib.contextmanager
def log_fields(**fields: object) -> Iterator[None]:
    """Bind ``producer``/``batch``/``document``… to every log line written meanwhile.

    Airflow's task logs are structlog: bound context variables become fields of each
    line (JSON in the log file, ``key=value`` in the UI), for this module's lines and
    for those of every ``pipeline`` module alike. Without structlog, nothing is bound.
    """
    try:
        import structlog.contextvars
    except ImportError:  # outside Airflow: the plain stdlib logging of the CLI
        yield
        return
    with structlog.contextvars.bound_contextvars(**{k: v for k, v in fields.items() if v is not None}):
        yield


class Alert(Frozen):
    kind: AlertKind
    message: str
    feed: str | None = None
    producer: str | None = None
    batch: str | None = None
    at: dt.datetime
    details: dict[str, Any] = {}


@runtime_checkable
class Notifier(Protocol):
    def notify(self, alert: Alert) -> None: ...


class LogNotifier:
    """Alerts as ERROR log lines (the task log, and whatever ships logs)."""

    def notify(self, alert: Alert) -> None:
        fields = {
            "alert": alert.kind.value,
            "feed": alert.feed,
            "producer": alert.producer,
            "batch": alert.batch,
        }
        with log_fields(**fields):
            log.error("ALERT %s: %s", alert.kind.value, alert.message, extra=fields)


class WebhookNotifier:
    """Alerts POSTed as JSON to a URL (chat, paging, incident tool), also logged."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    def notify(self, alert: Alert) -> None:
        LogNotifier().notify(alert)
        request = urllib.request.Request(
            self.url,
            data=alert.model_dump_json().encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                response.read()
        except OSError as exc:
            # An unreachable webhook must not hide the alert nor fail the task that raised it.
            log.error(
                "alert webhook %s unreachable (%s); alert %s was logged only", self.url, exc, alert.kind.value
            )


def default_notifier(settings: Settings) -> Notifier:
    """``WebhookNotifier`` when an alert webhook is configured (``CARNET_ALERT_WEBHOOK``),
    else ``LogNotifier``."""
    url = settings.alerts.webhook
    return WebhookNotifier(url) if url else LogNotifier()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- metrics ---------------------------------------------------------------------------------


class BatchCounts(Frozen):
    """What one processed batch counts: the fields the ingestion's summary
    (``pipeline.ingest.batch.BatchSummary``) and the recorded metrics share, defined once."""

    run_id: str
    producer: str
    batch_key: str
    total: int
    by_status: dict[str, int]
    rejected_by_reason: dict[str, int]
    reject_rate: float
    flagged: bool
    ocr_pages: int = 0
    ocr_mean_confidence: float | None = None
    seconds_per_stage: dict[str, float] = {}
    data_docs: str | None = None  # the batch's pseudonymised Data Docs (URL in the store)


class BatchMetrics(BatchCounts):
    """The metrics of one processed batch, as kept in the state database."""

    feed: str
    recorded_at: dt.datetime


# -- the state database (batch_metrics, alerts) ----------------------------------------------


@contextlib.contextmanager
def _state(settings: Settings) -> Iterator[Engine]:
    from pipeline.state import ensure_current, open_engine

    engine = open_engine(settings)
    try:
        ensure_current(engine)
        yield engine
    finally:
        engine.dispose()


def _stamp(at: dt.datetime) -> str:
    """Fixed-width UTC text (as the ledger keeps times): it orders like the time."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def record_batch_metrics(
    settings: Settings,
    feed: str,
    summary: BatchCounts | Mapping[str, Any],
    *,
    flagged: bool | None = None,
    at: dt.datetime | None = None,
) -> BatchMetrics:
    """Keep one batch's metrics (idempotent: keyed by the batch's run id) and log them.

    ``summary`` is the ingestion's ``BatchSummary`` or its JSON form (from XCom);
    ``flagged``, when given, is the monitoring's verdict (any alert raised); ``at``: when
    it is recorded (now by default)."""
    from sqlalchemy import select

    from pipeline.state.engine import insert_new
    from pipeline.state.tables import batch_metrics

    fields = summary.model_dump() if isinstance(summary, BatchCounts) else dict(summary)
    counts = {k: fields[k] for k in BatchCounts.model_fields if k in fields}
    if flagged is not None:
        counts["flagged"] = flagged
    m = BatchMetrics(feed=feed, recorded_at=at or _now(), **counts)
    with _state(settings) as engine, engine.begin() as conn:
        if not insert_new(
            conn,
            batch_metrics,
            {
                "run_id": m.run_id,
                "feed": m.feed,
                "producer": m.producer,
                "recorded_at": _stamp(m.recorded_at),
                "metrics": m.model_dump_json(),
            },
        ):
            # A retried task: the first record stands, its time included.
            kept = conn.execute(
                select(batch_metrics.c.metrics).where(batch_metrics.c.run_id == m.run_id)
            ).scalar_one()
            return BatchMetrics.model_validate_json(kept)
    log.info(
        "batch metrics: %d document(s), reject rate %.0f%%%s",
        m.total,
        m.reject_rate * 100,
        " (flagged)" if m.flagged else "",
        extra={"metrics": m.model_dump(mode="json")},
    )
    return m


def load_metrics(
    settings: Settings,
    *,
    producer: str | None = None,
    feed: str | None = None,
    since: dt.datetime | None = None,
) -> list[BatchMetrics]:
    """Recorded batch metrics, oldest first, optionally for one producer or feed."""
    from sqlalchemy import select

    from pipeline.state.tables import batch_metrics as t

    query = select(t.c.metrics).order_by(t.c.recorded_at, t.c.run_id)
    if producer is not None:
        query = query.where(t.c.producer == producer)
    if feed is not None:
        query = query.where(t.c.feed == feed)
    if since is not None:
        query = query.where(t.c.recorded_at >= _stamp(since))
    with _state(settings) as engine, engine.connect() as conn:
        return [BatchMetrics.model_validate_json(row) for row in conn.execute(query).scalars()]


def purge_metrics(settings: Settings, *, before: dt.datetime, dry_run: bool = False) -> int:
    """Drop the metrics recorded before ``before``; return how many (would) go."""
    from sqlalchemy import delete, func, select

    from pipeline.state.tables import batch_metrics as t

    old = t.c.recorded_at < _stamp(before)
    with _state(settings) as engine, engine.begin() as conn:
        if dry_run:
            return int(conn.execute(select(func.count()).where(old)).scalar_one())
        return int(conn.execute(delete(t).where(old)).rowcount)


# -- alerts ----------------------------------------------------------------------------------


def quality_flag_alert(current: BatchMetrics, flags: Sequence[str]) -> Alert | None:
    """An alert carrying the quality gate's batch-level findings, if it had any."""
    if not flags:
        return None
    return Alert(
        kind=AlertKind.QUALITY_FLAGS,
        feed=current.feed,
        producer=current.producer,
        batch=current.batch_key,
        at=current.recorded_at,
        details={"flags": list(flags)},
        message="quality gate flagged the batch: " + "; ".join(flags),
    )


def reject_rate_alerts(
    current: BatchMetrics, history: Sequence[BatchMetrics], *, max_reject_rate: float
) -> list[Alert]:
    """Alerts for a batch above its feed's threshold, or far above the producer's baseline
    (its batches recorded before this one). Dated when the batch was recorded, so that
    a retried task raises the very same alerts (kept, and sent, once)."""
    alerts = []
    base: dict[str, Any] = dict(
        feed=current.feed, producer=current.producer, batch=current.batch_key, at=current.recorded_at
    )
    if current.reject_rate > max_reject_rate:
        alerts.append(
            Alert(
                kind=AlertKind.REJECT_RATE,
                details={
                    "reject_rate": current.reject_rate,
                    "threshold": max_reject_rate,
                    "rejected_by_reason": current.rejected_by_reason,
                },
                message=f"reject rate {current.reject_rate:.0%} above the threshold {max_reject_rate:.0%}",
                **base,
            )
        )
    earlier = [
        m for m in history if m.run_id != current.run_id and m.total and m.recorded_at < current.recorded_at
    ][-BASELINE_BATCHES:]
    if earlier:
        baseline = sum(m.reject_rate for m in earlier) / len(earlier)
        if current.reject_rate - baseline > REJECT_JUMP:
            alerts.append(
                Alert(
                    kind=AlertKind.REJECT_RATE_JUMP,
                    details={
                        "reject_rate": current.reject_rate,
                        "baseline": round(baseline, 4),
                        "batches": len(earlier),
                    },
                    message=f"reject rate jumped to {current.reject_rate:.0%} from a baseline of "
                    f"{baseline:.0%} over {len(earlier)} batch(es)",
                    **base,
                )
            )
    return alerts


def silence_alert(
    feed: str,
    last_batch_at: dt.datetime | None,
    *,
    max_silence: dt.timedelta,
    now: dt.datetime | None = None,
    watched_since: dt.datetime | None = None,
) -> Alert | None:
    """An alert when nothing arrived on ``feed`` for longer than ``max_silence``.

    A feed that never sent anything is judged from ``watched_since`` (when Carnet started
    watching it); without that it is not judged.
    """
    now = now or _now()
    reference = last_batch_at or watched_since
    if reference is None or now - reference <= max_silence:
        return None
    hours = (now - reference).total_seconds() / 3600
    return Alert(
        kind=AlertKind.FEED_SILENT,
        feed=feed,
        at=now,
        details={
            "last_batch_at": last_batch_at.isoformat() if last_batch_at else None,
            "max_silence_hours": max_silence.total_seconds() / 3600,
        },
        message=f"no batch for {hours:.1f} h (max {max_silence.total_seconds() / 3600:g} h)",
    )


def last_batch_time(settings: Settings, feed: str) -> dt.datetime | None:
    """When the latest batch of ``feed`` was recorded, from the metrics files."""
    found = load_metrics(settings, feed=feed)
    return found[-1].recorded_at if found else None


class BatchCheck(Frozen):
    metrics: BatchMetrics
    alerts: tuple[Alert, ...]


def check_batch(
    settings: Settings,
    feed: str,
    summary: BatchCounts | Mapping[str, Any],
    *,
    max_reject_rate: float,
    notifier: Notifier | None = None,
    stats: StatsClient | None = None,
) -> BatchCheck:
    """Raise a batch's alerts (reject rate, jump, quality flags), record its metrics with
    ``flagged`` = any alert, keep and send the alerts; return both.

    A retried task checks its batches again: the metrics first recorded stand, and the
    alerts, judged as of then, are the same ones, neither kept nor sent a second time;
    the counters and timers go to ``stats`` (Airflow's ``Stats``) the first time only."""
    fields = summary.model_dump() if isinstance(summary, BatchCounts) else dict(summary)
    counts = {k: fields[k] for k in BatchCounts.model_fields if k in fields}
    history = load_metrics(settings, producer=counts["producer"])
    recorded = next((m for m in history if m.run_id == counts["run_id"]), None)
    at = recorded.recorded_at if recorded is not None else _now()
    probe = BatchMetrics(feed=feed, recorded_at=at, **counts)
    alerts = reject_rate_alerts(probe, history, max_reject_rate=max_reject_rate)
    # The gate's own reject-rate flag is the reject_rate alert above, judged on the same
    # threshold: one alert for it, not two.
    from pipeline.quality.gate import is_reject_rate_flag

    gate_flags = [f for f in fields.get("flags") or () if not is_reject_rate_flag(f)]
    if (flagged_by_gate := quality_flag_alert(probe, gate_flags)) is not None:
        alerts.append(flagged_by_gate)
    current = record_batch_metrics(settings, feed, summary, flagged=bool(alerts), at=at)
    notify_all(alerts, notifier or default_notifier(settings), settings=settings)
    if stats is not None and recorded is None:
        emit_stats(stats, current)
    return BatchCheck(metrics=current, alerts=tuple(alerts))


def keep_alerts(settings: Settings, alerts: Sequence[Alert]) -> list[Alert]:
    """Keep alerts in the state database, each once (keyed by a digest of its JSON);
    return those not kept before."""
    from pipeline.state.engine import insert_new
    from pipeline.state.tables import alerts as t

    new: list[Alert] = []
    if not alerts:
        return new
    with _state(settings) as engine, engine.begin() as conn:
        for a in alerts:
            body = a.model_dump_json()
            if insert_new(
                conn,
                t,
                {
                    "alert_id": hashlib.sha256(body.encode()).hexdigest(),
                    "at": _stamp(a.at),
                    "kind": a.kind.value,
                    "alert": body,
                },
            ):
                new.append(a)
    return new


def load_alerts(settings: Settings, *, since: dt.datetime | None = None) -> list[Alert]:
    """Kept alerts, oldest first."""
    from sqlalchemy import select

    from pipeline.state.tables import alerts as t

    query = select(t.c.alert).order_by(t.c.at, t.c.alert_id)
    if since is not None:
        query = query.where(t.c.at >= _stamp(since))
    with _state(settings) as engine, engine.connect() as conn:
        return [Alert.model_validate_json(row) for row in conn.execute(query).scalars()]


def notify_all(alerts: Iterable[Alert], notifier: Notifier, *, settings: Settings | None = None) -> None:
    """Send each alert through the notifier; keep it for ``carnet status`` when given settings
    (then an alert kept before, already sent, is not sent again)."""
    alerts = list(alerts)
    if settings is not None:
        alerts = keep_alerts(settings, alerts)
    for a in alerts:
        notifier.notify(a)


class StatsClient(Protocol):
    """What Carnet uses of a StatsD client (Airflow's ``Stats`` has this shape)."""

    def incr(
        self, stat: str, count: int = 1, rate: float = 1, *, tags: dict[str, str] | None = None
    ) -> None: ...

    def gauge(
        self,
        stat: str,
        value: float,
        rate: float = 1,
        delta: bool = False,
        *,
        tags: dict[str, str] | None = None,
    ) -> None: ...

    def timing(self, stat: str, dt: Any, *, tags: dict[str, str] | None = None) -> None: ...


_STAT_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def emit_stats(stats: StatsClient, m: BatchMetrics) -> None:
    """Counters per producer, status and reason, OCR pages, reject rate, stage timers.

    Names carry the producer because plain StatsD has no tags; tags are sent too for
    the Datadog/InfluxDB flavours.
    """
    producer = _STAT_UNSAFE.sub("_", m.producer)
    for status, n in sorted(m.by_status.items()):
        stats.incr(
            f"carnet.documents.{producer}.{status}", n, tags={"producer": m.producer, "status": status}
        )
    for reason, n in sorted(m.rejected_by_reason.items()):
        stats.incr(f"carnet.rejected.{producer}.{reason}", n, tags={"producer": m.producer, "reason": reason})
    stats.incr(f"carnet.batches.{producer}", 1, tags={"producer": m.producer})
    if m.ocr_pages:
        stats.incr(f"carnet.ocr_pages.{producer}", m.ocr_pages, tags={"producer": m.producer})
    stats.gauge(f"carnet.reject_rate.{producer}", m.reject_rate, tags={"producer": m.producer})
    for stage, seconds in sorted(m.seconds_per_stage.items()):
        stats.timing(
            f"carnet.stage.{_STAT_UNSAFE.sub('_', stage)}",
            dt.timedelta(seconds=seconds),
            tags={"producer": m.producer, "stage": stage},
        )


def batch_failure_alert(
    *, feed: str | None, batch: str | None, error: str, task: str | None = None, try_number: int | None = None
) -> Alert:
    producer = batch.split("/", 1)[0] if batch else None
    return Alert(
        kind=AlertKind.BATCH_FAILED,
        feed=feed,
        producer=producer,
        batch=batch,
        at=_now(),
        details={"task": task, "try_number": try_number},
        message=f"batch processing failed: {error}",
    )


# -- status ----------------------------------------------------------------------------------


class ProducerStatus(Frozen):
    feed: str
    producer: str
    batches: int  # counted over the metrics kept
    documents: int
    by_status: dict[str, int]
    rejected_by_reason: dict[str, int]
    ocr_pages: int
    ocr_mean_confidence: float | None
    flagged_batches: int
    last_batches: tuple[BatchMetrics, ...]  # newest first


def producer_status(settings: Settings, *, last: int = 3) -> list[ProducerStatus]:
    """Per feed and producer (two feeds may use the same producer names): totals over the
    kept metrics and its ``last`` batches, newest first."""
    per: dict[tuple[str, str], list[BatchMetrics]] = defaultdict(list)
    for m in load_metrics(settings):
        per[(m.feed, m.producer)].append(m)
    rows = []
    for (feed, producer), ms in sorted(per.items()):
        by_status: dict[str, int] = defaultdict(int)
        reasons: dict[str, int] = defaultdict(int)
        for m in ms:
            for k, v in m.by_status.items():
                by_status[k] += v
            for k, v in m.rejected_by_reason.items():
                reasons[k] += v
        ocr = [m for m in ms if m.ocr_pages and m.ocr_mean_confidence is not None]
        pages = sum(m.ocr_pages for m in ms)
        weighted = [(m.ocr_mean_confidence or 0.0) * m.ocr_pages for m in ocr]
        conf = sum(weighted) / sum(m.ocr_pages for m in ocr) if ocr else None
        rows.append(
            ProducerStatus(
                feed=feed,
                producer=producer,
                batches=len(ms),
                documents=sum(m.total for m in ms),
                by_status=dict(by_status),
                rejected_by_reason=dict(reasons),
                ocr_pages=pages,
                ocr_mean_confidence=round(conf, 1) if conf is not None else None,
                flagged_batches=sum(1 for m in ms if m.flagged),
                last_batches=tuple(reversed(ms[-last:])),
            )
        )
    return rows


def _counts(values: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items()) if v) or "-"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]


def format_producer_status(settings: Settings, *, last: int = 3) -> str:
    """The ``carnet status`` sections: runs per feed and producer, and their last batches."""
    rows = producer_status(settings, last=last)
    if not rows:
        return "Producers: no batch recorded"
    lines = [f"Producers ({len(rows)} feed/producer pair(s), totals over the metrics kept):"]
    lines += _table(
        ["feed", "producer", "batches", "flagged", "documents", "by status", "OCR pages", "OCR conf"],
        [
            [
                r.feed,
                r.producer,
                str(r.batches),
                str(r.flagged_batches),
                str(r.documents),
                _counts(r.by_status),
                str(r.ocr_pages),
                f"{r.ocr_mean_confidence:.1f}" if r.ocr_mean_confidence is not None else "-",
            ]
            for r in rows
        ],
    )
    recent = [m for r in rows for m in r.last_batches]
    lines.append(f"Last batches ({len(recent)}, up to {last} per producer, newest first):")
    lines += _table(
        [
            "recorded (UTC)",
            "feed",
            "batch",
            "documents",
            "by status",
            "reject",
            "flagged",
            "rejected by reason",
        ],
        [
            [
                f"{m.recorded_at:%Y-%m-%d %H:%M}",
                m.feed,
                m.batch_key,
                str(m.total),
                _counts(m.by_status),
                f"{m.reject_rate:.0%}",
                "yes" if m.flagged else "no",
                _counts(m.rejected_by_reason),
            ]
            for m in recent
        ],
    )
    with_docs = [m for r in rows for m in r.last_batches if m.data_docs]
    if with_docs:
        newest = max(with_docs, key=lambda m: m.recorded_at)
        lines.append(f"Data Docs of the newest batch ({newest.batch_key}): {newest.data_docs}")
    return "\n".join(lines)


def format_alerts(settings: Settings, *, since: dt.datetime | None = None, last: int = 20) -> str:
    """The ``carnet status`` alerts section: the latest kept alerts, newest first."""
    kept = load_alerts(settings, since=since)
    if not kept:
        return "Alerts: none"
    shown = list(reversed(kept[-last:]))
    lines = [f"Alerts ({len(kept)} kept, {len(shown)} newest shown):"]
    lines += _table(
        ["at (UTC)", "kind", "feed", "batch", "message"],
        [
            [f"{a.at:%Y-%m-%d %H:%M}", a.kind.value, a.feed or "-", a.batch or a.producer or "-", a.message]
            for a in shown
        ],
    )
    return "\n".join(lines)


# -- Airflow glue (called from dags/, no Airflow import here) -------------------------------


# SourceError messages that mean the feed itself is wrong (a setting), not a passing fault.
_CONFIGURATION_MARKERS = ("feed folder does not exist", "NoSuchBucket", "AccessDenied", "InvalidAccessKeyId")


def is_configuration_error(exc: BaseException) -> bool:
    """True when retrying cannot help: a bad setting or a feed URL that leads nowhere."""
    from pipeline.errors import ConfigurationError, SourceError

    if isinstance(exc, ConfigurationError):
        return True
    return isinstance(exc, SourceError) and any(m in str(exc) for m in _CONFIGURATION_MARKERS)


def on_task_failure(context: Mapping[str, Any]) -> None:
    """Airflow ``on_failure_callback``: alert that a batch (or another task) failed."""
    ti = context.get("ti") or context.get("task_instance")
    task = context.get("task")
    params = context.get("params") or {}
    kwargs = getattr(task, "op_kwargs", None) or {}
    # An ingestion task gets one batch key or a producer's lane of them.
    batch = kwargs.get("batch_key") or kwargs.get("lane") if isinstance(kwargs, Mapping) else None
    if isinstance(batch, list | tuple):
        batch = ", ".join(map(str, batch))
    error = context.get("exception")
    # A task that fails on purpose (no retry) leaves its reason under "carnet_error".
    reason = (
        f"{type(error).__name__}: {error}"
        if error
        else str(context.get("carnet_error") or "task failed (see its log)")
    )
    alert = batch_failure_alert(
        feed=params.get("feed_id") or params.get("feed_url"),
        batch=batch if isinstance(batch, str) else None,
        error=reason,
        task=f"{getattr(ti, 'dag_id', '?')}.{getattr(ti, 'task_id', '?')}[{getattr(ti, 'map_index', -1)}]",
        try_number=getattr(ti, "try_number", None),
    )
    settings = Settings.from_env()
    notify_all([alert], default_notifier(settings), settings=settings)


def log_rejections(settings: Settings, run_id: str, *, batch_key: str) -> int:
    """Log every rejected document of a run, naming producer, batch and document."""
    from pipeline.ledger import Ledger

    ledger = Ledger(settings)
    try:
        rejected = ledger.rejections(run_id)
    finally:
        ledger.close()
    for r in rejected:
        codes = ",".join(reason.split(":", 1)[0] for reason in r.reasons)
        fields = {"producer": r.producer, "batch": batch_key, "document": r.source, "reasons": codes}
        with log_fields(**fields):
            log.warning("document rejected: %s", "; ".join(r.reasons), extra=fields)
    return len(rejected)


def check_silent_feeds(
    settings: Settings,
    feeds: Iterable[Any],
    *,
    now: dt.datetime | None = None,
    notifier: Notifier | None = None,
) -> list[Alert]:
    """A silence alert for each configured feed quiet for longer than its ``max_silence_hours``."""
    alerts = []
    for f in feeds:
        a = silence_alert(
            f.id,
            last_batch_time(settings, f.id),
            max_silence=dt.timedelta(hours=f.max_silence_hours),
            now=now,
        )
        if a is not None:
            alerts.append(a)
    notify_all(alerts, notifier or default_notifier(settings), settings=settings)
    return alerts


def listing_alerts(
    settings: Settings,
    feed: str,
    unlisted: Iterable[Any],
    stray: Sequence[str] = (),
    changed: Sequence[str] = (),
    *,
    notifier: Notifier | None = None,
    now: dt.datetime | None = None,
) -> list[Alert]:
    """An alert per producer or batch folder (``UnlistedFolder``) the feed could not list:
    its batches wait unseen until its permissions are fixed, while the others run; one
    per producer (or the feed's root) with entries outside any batch, never processed;
    one per processed batch (key) whose documents changed without its being closed again.

    Raised at every listing while the problem stands, but dated to the hour: the same alert
    within an hour is kept, and sent, once (``notify_all``), not at each asset event."""
    hour = (now or _now()).replace(minute=0, second=0, microsecond=0)
    by_producer: dict[str | None, list[str]] = defaultdict(list)
    for path in stray:
        producer, _, rest = path.rpartition("/")
        by_producer[producer or None].append(rest if producer else path)
    stray_alerts = [
        Alert(
            kind=AlertKind.STRAY_ENTRY,
            feed=feed,
            producer=producer,
            at=hour,
            details={"entries": names[:STRAY_NAMED], "count": len(names)},
            message=f"{len(names)} entr{'y' if len(names) == 1 else 'ies'} outside any batch "
            f"{'of ' + producer if producer else 'at the feed root'}, never processed (a batch is "
            f"<producer>/<batch>/): {', '.join(names[:5])}{', …' if len(names) > 5 else ''}",
        )
        for producer, names in by_producer.items()
    ]
    changed_alerts = [
        Alert(
            kind=AlertKind.BATCH_CHANGED,
            feed=feed,
            producer=key.split("/", 1)[0],
            batch=key,
            at=hour,
            message=f"batch {key} changed since it was processed but was not closed again: not "
            "processed until its _READY or _manifest.json is written again (after its last file)",
        )
        for key in changed
    ]
    alerts = (
        stray_alerts
        + changed_alerts
        + [
            Alert(
                kind=AlertKind.FOLDER_UNLISTED,
                feed=feed,
                producer=u.producer,
                batch=f"{u.producer}/{u.batch}" if u.batch is not None else None,
                at=hour,
                message=f"{'batch' if u.batch is not None else 'producer'} folder of {u.producer} "
                f"not listed, its batches wait: {u.reason}",
            )
            for u in unlisted
        ]
    )
    notify_all(alerts, notifier or default_notifier(settings), settings=settings)
    return alerts


def worker_hostname() -> str:
    """Airflow ``core.hostname_callable``: ``CARNET_WORKER_NAME`` if set, else the FQDN.

    Several Celery workers on one host then show up under their own names in task
    instances and logs, so an operator can tell which worker ran what.
    """
    import socket

    return Settings.from_env().worker_name or socket.getfqdn()
