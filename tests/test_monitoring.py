"""Batch metrics and alerts kept in the state database, on SQLite and PostgreSQL: a retried
task keeps the first record, an alert is kept once, the retention purge, and two workers
with their own data folders on one PostgreSQL database seeing each other's batches."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pipeline.monitoring import (
    Alert,
    AlertKind,
    BatchCounts,
    format_alerts,
    format_producer_status,
    keep_alerts,
    load_alerts,
    load_metrics,
    purge_metrics,
    record_batch_metrics,
)
from pipeline.settings import Settings


def _upgrade(settings: Settings) -> None:
    from pipeline.state import open_engine, upgrade

    engine = open_engine(settings)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def _counts(run_id: str, producer: str = "labo-x", rejected: int = 0) -> BatchCounts:
    return BatchCounts(
        run_id=run_id,
        producer=producer,
        batch_key=f"{producer}/{run_id}",
        total=10,
        by_status={"indexed": 10 - rejected, "rejected": rejected},
        rejected_by_reason={"missing_ins": rejected} if rejected else {},
        reject_rate=rejected / 10,
        flagged=False,
        data_docs=f"s3://carnet/data-docs/index-{run_id}.html",
    )


def test_metrics_are_kept_once_per_batch_and_read_back_in_order(state_settings: Settings) -> None:
    first = record_batch_metrics(state_settings, "feed-a", _counts("r1"), flagged=False)
    # A retried task records the same run again: the first record stands, time included.
    again = record_batch_metrics(state_settings, "feed-a", _counts("r1", rejected=5), flagged=True)
    assert again == first
    record_batch_metrics(state_settings, "feed-b", _counts("r2", producer="radio-y", rejected=2))
    kept = load_metrics(state_settings)
    assert [(m.run_id, m.feed, m.by_status["rejected"]) for m in kept] == [
        ("r1", "feed-a", 0),
        ("r2", "feed-b", 2),
    ]
    assert [m.run_id for m in load_metrics(state_settings, producer="radio-y")] == ["r2"]
    assert [m.run_id for m in load_metrics(state_settings, feed="feed-a")] == ["r1"]
    assert load_metrics(state_settings, since=kept[1].recorded_at) == [kept[1]]
    status = format_producer_status(state_settings)
    assert "radio-y/r2" in status and "index-r2.html" in status


def test_alerts_are_kept_once_and_shown_newest_first(state_settings: Settings) -> None:
    at = dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC)
    early = Alert(kind=AlertKind.REJECT_RATE, message="reject rate 60%", feed="f", at=at)
    late = Alert(
        kind=AlertKind.FEED_SILENT, message="no batch for 30 h", feed="f", at=at + dt.timedelta(hours=1)
    )
    keep_alerts(state_settings, [late, early])
    keep_alerts(state_settings, [early])  # the same alert again: kept once
    assert load_alerts(state_settings) == [early, late]
    assert load_alerts(state_settings, since=late.at) == [late]
    shown = format_alerts(state_settings)
    assert shown.index("no batch for 30 h") < shown.index("reject rate 60%")


def test_retention_purges_the_old_metrics_only(state_settings: Settings) -> None:
    record_batch_metrics(state_settings, "f", _counts("r1"))
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    assert purge_metrics(state_settings, before=later - dt.timedelta(days=2)) == 0
    assert purge_metrics(state_settings, before=later, dry_run=True) == 1
    assert len(load_metrics(state_settings)) == 1
    assert purge_metrics(state_settings, before=later) == 1
    assert load_metrics(state_settings) == []


def test_workers_with_their_own_folders_share_metrics_and_alerts(pg_state_url: str, tmp_path: Path) -> None:
    one = Settings(data_dir=tmp_path / "worker1", state_url=pg_state_url)
    two = one.model_copy(update={"data_dir": tmp_path / "worker2"})
    _upgrade(one)
    record_batch_metrics(one, "f", _counts("r1"))
    keep_alerts(two, [Alert(kind=AlertKind.BATCH_FAILED, message="boom", at=dt.datetime.now(dt.UTC))])
    assert [m.run_id for m in load_metrics(two)] == ["r1"]
    assert [a.message for a in load_alerts(one)] == ["boom"]
    # Nothing of it on either worker's disk.
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


@pytest.mark.parametrize("kind", list(AlertKind))
def test_every_alert_kind_round_trips(settings: Settings, kind: AlertKind) -> None:
    alert = Alert(kind=kind, message="m", at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), details={"n": 1})
    keep_alerts(settings, [alert])
    assert load_alerts(settings) == [alert]


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[Alert] = []

    def notify(self, alert: Alert) -> None:
        self.sent.append(alert)


def test_a_retried_task_raises_a_batch_s_alerts_once(settings: Settings) -> None:
    """A lane's task retried after a later batch failed checks its processed batches again
    (``process_batch`` returns their stored summary): the data engineer must not be paged
    again, nor see the alerts twice in ``carnet status``, even once the producer has newer
    batches recorded."""
    from pipeline.monitoring import check_batch

    record_batch_metrics(settings, "f", _counts("r0"))
    summary = _counts("r1", rejected=8).model_dump() | {"flags": ["labo-x/r1: duplicate share 60% above 50%"]}
    notifier = _Recorder()
    first = check_batch(settings, "f", summary, max_reject_rate=0.2, notifier=notifier)
    assert sorted(a.kind for a in first.alerts) == [
        AlertKind.QUALITY_FLAGS,
        AlertKind.REJECT_RATE,
        AlertKind.REJECT_RATE_JUMP,
    ]
    record_batch_metrics(settings, "f", _counts("r2"))  # the lane's next batch, then a failure
    again = check_batch(settings, "f", summary, max_reject_rate=0.2, notifier=notifier)
    assert again.alerts == first.alerts and again.metrics == first.metrics
    assert len(notifier.sent) == 3
    assert len(load_alerts(settings)) == 3


class _Stats:
    def __init__(self) -> None:
        self.counted: dict[str, int] = {}

    def incr(self, stat: str, count: int = 1, rate: float = 1, *, tags: dict[str, str] | None = None) -> None:
        self.counted[stat] = self.counted.get(stat, 0) + count

    def gauge(self, stat: str, value: float, rate: float = 1, delta: bool = False, **_: object) -> None:
        pass

    def timing(self, stat: str, dt: object, *, tags: dict[str, str] | None = None) -> None:
        pass


def test_a_retried_task_counts_a_batch_s_documents_in_statsd_once(settings: Settings) -> None:
    """StatsD counters add up: a batch checked again by a retried task was counted twice
    (``carnet.documents.<producer>.<status>``, ``carnet.batches.<producer>``…)."""
    from pipeline.monitoring import check_batch

    stats = _Stats()
    for _ in range(2):
        check_batch(settings, "f", _counts("r1", rejected=2), max_reject_rate=0.5, stats=stats)
    assert stats.counted["carnet.batches.labo-x"] == 1
    assert stats.counted["carnet.documents.labo-x.indexed"] == 8
    assert stats.counted["carnet.rejected.labo-x.missing_ins"] == 2


def test_a_standing_feed_listing_problem_is_sent_once_an_hour(tmp_path: Path) -> None:
    """A stray file, an unlisted folder or a changed batch is alerted at every listing
    (each schedule and asset event): each was kept and sent every time, paging the
    operator every few minutes. Dated to the hour, one is sent once an hour."""
    from pipeline.feeds import UnlistedFolder
    from pipeline.monitoring import listing_alerts

    settings = Settings(data_dir=tmp_path / "carnet")
    sent: list[Alert] = []

    class Collect:
        def notify(self, alert: Alert) -> None:
            sent.append(alert)

    def listing(at: dt.datetime) -> None:
        unlisted = [UnlistedFolder(producer="labo", reason="folder cannot be listed: Permission denied")]
        listing_alerts(settings, "feed", unlisted, ["labo/x.pdf"], ["radio/r1"], notifier=Collect(), now=at)

    start = dt.datetime(2026, 1, 15, 9, 5, tzinfo=dt.UTC)
    listing(start)
    listing(start + dt.timedelta(minutes=50))
    assert len(sent) == 3
    listing(start + dt.timedelta(hours=1))
    assert len(sent) == 6


def test_a_stray_entry_alert_stays_small_however_many_entries(tmp_path: Path) -> None:
    """It named every entry: 100,000 files dropped beside the batches (or a feed whose root
    holds the store) made one alert of megabytes, kept every hour."""
    from pipeline.monitoring import STRAY_NAMED, listing_alerts

    settings = Settings(data_dir=tmp_path / "carnet")
    names = [f"labo/f{i:06}.pdf" for i in range(5000)]

    class Mute:
        def notify(self, alert: Alert) -> None:
            pass

    (alert,) = listing_alerts(settings, "feed", [], names, notifier=Mute())
    assert alert.details["count"] == 5000 and len(alert.details["entries"]) == STRAY_NAMED
    assert alert.message.startswith("5000 entries outside any batch of labo")
