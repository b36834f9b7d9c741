"""Which batches of a feed to run next, and in which pool: the ingestion DAG's plan."""

from __future__ import annotations

import logging

from pipeline.feeds import BatchRef, Feed, open_feed, printable_name
from pipeline.feeds.base import closed_again
from pipeline.feeds.config import is_scan_heavy
from pipeline.ledger import Ledger
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def pending_batches(settings: Settings, feed: Feed) -> list[BatchRef]:
    """The feed's complete batches not processed yet: new ones, and processed ones the
    producer closed again (its marker or manifest written again: another delivery under
    the same name, whether its documents changed or not). Alerts: for each folder the
    feed could not list or entry outside any batch, and for each processed batch whose
    documents changed without its being closed again (not processed: maybe an upload
    still under way)."""
    batches = feed.list_batches()
    pending, changed = [], []
    ledger = Ledger(settings)
    try:
        done = ledger.processed_deliveries(feed.url)
        for b in batches:
            key = printable_name(b.key)  # as process_batch names the batch in the ledger
            decided = done.get(key, "")
            if key not in done:
                pending.append(b)
            elif decided is None:
                ledger.adopt_delivery(feed.url, key, b.delivery)  # decided before 0009
            elif closed_again(decided, b.delivery):
                log.info("batch %s of %s closed again: to be processed as a new delivery", key, feed.url)
                pending.append(b)
            elif decided != b.delivery:
                changed.append(key)
    finally:
        ledger.close()
    if feed.unlisted or feed.stray or changed:
        from pipeline.monitoring import listing_alerts

        listing_alerts(settings, feed.url, feed.unlisted, feed.stray, changed)
    return pending


def plan_batches(settings: Settings, feed_url: str, *, scans: bool = False) -> dict[str, list[list[str]]]:
    """The feed's complete, unprocessed batches as per-producer lanes, split by pool.

    A lane is one producer's batch keys in arrival order (batch names sort by date): they
    must be processed one after the other, since a later batch may repeat or replace a
    document of an earlier one. A lane holding a scan-heavy batch goes to ``ocr``, the
    others to ``text``; this is judged from the feed listing alone (no file is read).
    """
    feed = open_feed(feed_url, endpoint_url=settings.s3.endpoint_url, region=settings.s3.region)
    lanes: dict[str, list[str]] = {}
    heavy: set[str] = set()
    for b in sorted(pending_batches(settings, feed), key=lambda b: (b.producer, b.batch)):
        lanes.setdefault(b.producer, []).append(printable_name(b.key))
        if is_scan_heavy(b.files, scans=scans):
            heavy.add(b.producer)
    return {
        "text": [keys for p, keys in lanes.items() if p not in heavy],
        "ocr": [keys for p, keys in lanes.items() if p in heavy],
    }
