"""Which batches of a feed to run next, and in which pool: the ingestion DAG's plan."""

from __future__ import annotations

from pipeline.feeds import open_feed, printable_name
from pipeline.feeds.config import is_scan_heavy
from pipeline.ledger import Ledger
from pipeline.settings import Settings


def plan_batches(settings: Settings, feed_url: str, *, scans: bool = False) -> dict[str, list[list[str]]]:
    """The feed's complete, unprocessed batches as per-producer lanes, split by pool.

    A lane is one producer's batch keys in arrival order (batch names sort by date): they
    must be processed one after the other, since a later batch may repeat or replace a
    document of an earlier one. A lane holding a scan-heavy batch goes to ``ocr``, the
    others to ``text``; this is judged from the feed listing alone (no file is read).
    """
    feed = open_feed(feed_url, endpoint_url=settings.s3.endpoint_url, region=settings.s3.region)
    ledger = Ledger(settings)
    try:
        done = ledger.processed_batches(feed.url)
    finally:
        ledger.close()
    lanes: dict[str, list[str]] = {}
    heavy: set[str] = set()
    for b in sorted(feed.list_batches(), key=lambda b: (b.producer, b.batch)):
        key = printable_name(b.key)  # as discover_batches and process_batch name it
        if key in done:
            continue
        lanes.setdefault(b.producer, []).append(key)
        if is_scan_heavy(b.files, scans=scans):
            heavy.add(b.producer)
    return {
        "text": [keys for p, keys in lanes.items() if p not in heavy],
        "ocr": [keys for p, keys in lanes.items() if p in heavy],
    }
