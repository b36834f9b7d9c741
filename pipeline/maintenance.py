"""Maintenance of the index and the store: integrity check, retention purge, reindex.

- ``check_integrity``: every indexed document has its bytes in the store, and every
  document the ledger recorded as accepted (indexed or replaced) is in the index.
- ``purge_retention``: quarantine records (and their raw bytes, when nothing else uses
  them) and batch metrics older than the retention periods go. Indexed documents are
  part of the patient's record and are never purged here (erasure is ``pipeline.erasure``).
- ``rebuild_index``: Elasticsearch copies into a new index and swaps the alias;
  SQLite merges its full-text segments in place.
"""

from __future__ import annotations

import datetime as dt
import logging

from pipeline.index import DocumentIndex, open_index
from pipeline.ledger import Ledger
from pipeline.model import Frozen
from pipeline.monitoring import purge_metrics
from pipeline.settings import Settings
from pipeline.store import DocumentStore

log = logging.getLogger(__name__)


class Discrepancy(Frozen):
    kind: str  # "missing_bytes" | "missing_from_index" | "missing_from_ledger"
    patient_id: str | None
    doc_id: str
    content_sha256: str | None
    source: str | None = None
    producer: str | None = None


class IntegrityReport(Frozen):
    checked_at: dt.datetime
    indexed: int
    accepted_in_ledger: int
    discrepancies: tuple[Discrepancy, ...]

    @property
    def ok(self) -> bool:
        return not self.discrepancies


class PurgeReport(Frozen):
    quarantine_records: int
    objects: int
    metrics: int  # batch metrics records


def open_backends(settings: Settings) -> tuple[DocumentIndex, DocumentStore]:
    """The index, and the store as the pipeline sees it (decrypting, by plaintext hash)."""
    from pipeline.crypto import open_encrypted_store

    index = open_index(settings.effective_index_url, alias=settings.index.es_alias)
    return index, open_encrypted_store(settings)


def check_integrity(settings: Settings) -> IntegrityReport:
    """Compare the index, the store and the ledger; list every disagreement."""
    index, store = open_backends(settings)
    try:
        held = index.list_ids()
    finally:
        index.close()
    problems = [
        Discrepancy(kind="missing_bytes", patient_id=p, doc_id=d, content_sha256=h)
        for p, d, h in held
        if not store.exists(h)
    ]
    in_index = {d for _, d, _ in held}
    ledger = Ledger(settings)
    try:
        accepted = ledger.accepted_documents()
    finally:
        ledger.close()
    problems += [
        Discrepancy(
            kind="missing_from_index",
            patient_id=a.patient_id,
            doc_id=d,
            content_sha256=a.content_sha256,
            source=a.source,
            producer=a.producer,
        )
        for d, a in sorted(accepted.items())
        if d not in in_index
    ]
    # The reverse: a document in the index that no accepted outcome accounts for (what a
    # run killed between its index writes and its ledger record used to leave).
    problems += [
        Discrepancy(kind="missing_from_ledger", patient_id=p, doc_id=d, content_sha256=h)
        for p, d, h in held
        if d not in accepted
    ]
    report = IntegrityReport(
        checked_at=dt.datetime.now(dt.UTC),
        indexed=len(held),
        accepted_in_ledger=len(accepted),
        discrepancies=tuple(problems),
    )
    for x in problems:
        log.error(
            "integrity: %s doc=%s patient=%s sha=%s producer=%s source=%s",
            x.kind,
            x.doc_id,
            x.patient_id,
            x.content_sha256,
            x.producer,
            x.source,
        )
    log.info(
        "integrity: %d indexed, %d accepted in the ledger, %d discrepancies",
        len(held),
        len(accepted),
        len(problems),
    )
    return report


def purge_retention(
    settings: Settings,
    *,
    quarantine_days: int,
    metrics_days: int,
    now: dt.datetime | None = None,
    dry_run: bool = False,
) -> PurgeReport:
    """Drop quarantine records and metrics older than their retention (0 days: keep all)."""
    now = now or dt.datetime.now(dt.UTC)
    index, store = open_backends(settings)
    try:
        indexed_shas = {h for _, _, h in index.list_ids()}
    finally:
        index.close()
    records = list(store.list_quarantine())
    cutoff = now - dt.timedelta(days=quarantine_days)
    # A record's age is counted from its last attempt: a replay restarts the clock.
    expired = [
        q
        for q in records
        if quarantine_days > 0 and max([q.first_quarantined_at, *(a.at for a in q.attempts)]) < cutoff
    ]
    expired_ids = {q.quarantine_id for q in expired}
    still_used = indexed_shas | {q.content_sha256 for q in records if q.quarantine_id not in expired_ids}
    objects = {q.content_sha256 for q in expired} - still_used
    if not dry_run:
        for q in expired:
            store.remove_quarantine(q.quarantine_id)
        for sha in objects:
            store.delete(sha)
    old_metrics = (
        purge_metrics(settings, before=now - dt.timedelta(days=metrics_days), dry_run=dry_run)
        if metrics_days > 0
        else 0
    )
    log.info(
        "retention%s: %d quarantine record(s), %d object(s), %d batch metrics",
        " (dry run)" if dry_run else "",
        len(expired),
        len(objects),
        old_metrics,
    )
    return PurgeReport(quarantine_records=len(expired), objects=len(objects), metrics=old_metrics)


def rebuild_index(settings: Settings, *, now: dt.datetime | None = None) -> dict[str, object]:
    """Reindex into a new Elasticsearch index and swap the alias; optimise SQLite in place."""
    index = open_index(settings.effective_index_url, alias=settings.index.es_alias)
    try:
        return index.rebuild(f"{(now or dt.datetime.now(dt.UTC)):%Y%m%d%H%M%S}")
    finally:
        index.close()
