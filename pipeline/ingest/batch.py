"""Batches of a producer feed, the Airflow path: which complete batches are new, and one
batch processed whole: manifest checked, documents run through one ``Pipeline``, Data
Docs published, the decision recorded in the ledger, then the acknowledgement (report and
HL7 ACKs) written back to the feed. Idempotent: a processed batch is recorded."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from pipeline.errors import SourceError, UnreadableFileError, UnsafePathError
from pipeline.feeds import MANIFEST, REPORT, BatchRef, Feed, ManifestEntry, printable_name
from pipeline.feeds.base import closed_again
from pipeline.ingest.run import Pipeline
from pipeline.ingest.stages import InputFile
from pipeline.ledger import Ledger
from pipeline.model import Outcome, Problem, Reason, Status
from pipeline.monitoring import BatchCounts
from pipeline.quality import QualityGate
from pipeline.quality.gate import is_reject_rate_flag, reject_rate_flag
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.acks import Header

log = logging.getLogger(__name__)


class BatchSummary(BatchCounts):
    """What happened to one batch: small, JSON-safe, fit for XCom. Its counts are the
    recorded metrics' (``pipeline.monitoring.BatchCounts``)."""

    # Batch-level quality findings (reject rate, OCR share…) for a data engineer to look at.
    flags: tuple[str, ...] = ()


def _open_feed(settings: Settings, feed_url: str) -> Feed:
    from pipeline.feeds import open_feed

    return open_feed(feed_url, endpoint_url=settings.s3.endpoint_url, region=settings.s3.region)


def discover_batches(settings: Settings, feed_url: str) -> list[str]:
    """Keys (``producer/batch``) of the feed's complete batches not processed yet."""
    from pipeline.feeds.plan import pending_batches

    return [printable_name(b.key) for b in pending_batches(settings, _open_feed(settings, feed_url))]


def _manifest_problem(
    batch: BatchRef, manifest: dict[str, ManifestEntry], name: str, data: bytes
) -> str | None:
    if batch.manifest_error is not None:
        return batch.manifest_error
    if batch.manifest is None:
        return None
    if name not in manifest:
        return "file present in the batch but not listed in its manifest"
    from pipeline.feeds import verify_manifest

    return verify_manifest(manifest[name], data)


def _listed_batch(feed: Feed, batch_key: str) -> BatchRef | None:
    """The batch as listed now, or None (gone, or not complete)."""
    return next((b for b in feed.list_batches() if printable_name(b.key) == batch_key), None)


def _find_batch(feed: Feed, batch_key: str, listed: BatchRef | None) -> BatchRef:
    if listed is None:
        raise SourceError("no complete batch with this key in the feed", source=feed.url, batch=batch_key)
    return listed


def _write_ack(feed: Feed, batch: BatchRef, files: Mapping[str, bytes]) -> None:
    for name, content in files.items():
        feed.write(batch, name, content)


def process_batch(settings: Settings, feed_url: str, batch_key: str) -> BatchSummary:
    """Ingest one complete batch; write its acknowledgement; record it as processed.

    Idempotent: a batch already recorded in the ledger is not processed again (its stored
    summary is returned) unless the producer closed it again (``closed_again``: its marker
    or manifest written again): a new delivery under the same name, processed again, its
    documents sent again reported duplicates, and its new report written over the old.
    """
    feed = _open_feed(settings, feed_url)
    ledger = Ledger(settings)
    try:
        stored = ledger.batch_summary(feed.url, batch_key)
        decided = ledger.batch_delivery(feed.url, batch_key)
        unwritten = ledger.pending_ack(feed.url, batch_key) if stored is not None else None
        listed = _listed_batch(feed, batch_key)
        if unwritten is not None:
            # Decided by a run killed before its acknowledgement was written: write that
            # decision (never a new one, which would call its documents duplicates).
            _write_ack(feed, _find_batch(feed, batch_key, listed), unwritten)
            ledger.mark_acknowledged(feed.url, batch_key)
    finally:
        ledger.close()
    # A processed batch the producer has cleared away since is still answered by its summary.
    new_delivery = listed is not None and decided is not None and closed_again(decided, listed.delivery)
    if stored is not None and not new_delivery:
        log.info("batch %s of %s already processed; skipping", batch_key, feed.url)
        return BatchSummary.model_validate_json(stored)
    if stored is not None:
        log.info("batch %s of %s dropped again: processed as a new delivery", batch_key, feed.url)
    batch = _find_batch(feed, batch_key, listed)
    manifest = {e.name: e for e in batch.manifest or ()}
    with (
        QualityGate(settings, build_data_docs=settings.ingestion.data_docs) as gate,
        Pipeline(settings, batch_label=batch_key, gate=gate) as pipe,
    ):
        # Lanes of different producers run side by side (shared); a `carnet ingest` waits.
        run_id = pipe.start_run("batch", f"{feed.url} {batch_key}", exclusive=False)
        pipe.batch_name = printable_name(batch.batch)
        names = list(batch.files)
        # A manifest entry whose file is missing is a lost document: report it. So is a
        # manifest that cannot be read in a batch of nothing else: the drop is answered.
        absent = "listed in the manifest but absent from the batch"
        unanswered = {m: absent for m in set(manifest) - set(names)}
        if batch.manifest_error is not None and not names:
            unanswered[MANIFEST] = batch.manifest_error
        for missing, problem in sorted(unanswered.items()):
            src = printable_name(feed.source_uri(batch, missing))
            pipe.outcomes.append(
                Outcome(
                    source=src,
                    status=Status.REJECTED,
                    producer=printable_name(batch.producer),
                    reasons=(Problem(code=Reason.MANIFEST_MISMATCH, message=problem),),
                )
            )

        def inputs() -> Iterator[InputFile]:
            for name in names:
                source = feed.source_uri(batch, name)
                try:
                    data = feed.read(batch, name)
                except (UnsafePathError, UnreadableFileError) as exc:
                    # The producer's to fix: rejected, the batch goes on (any other read error
                    # fails the batch, retried: the feed itself is at fault).
                    yield InputFile.never_read(exc, source=source, producer=batch.producer, batch=batch.batch)
                    continue
                yield InputFile(
                    data=data,
                    source=source,
                    producer=batch.producer,
                    batch=batch.batch,
                    manifest_problem=_manifest_problem(batch, manifest, name, data),
                )

        for item in pipe.parse_ahead(inputs()):
            pipe.process(item)
        pipe.flush()
        if pipe.data_docs_index and gate.data_docs_site is not None:
            from pipeline.quality import publish_data_docs

            # Rendered in the gate's temporary folder: the store is where everyone sees it.
            pipe.data_docs_index = publish_data_docs(settings, gate.data_docs_site, run_id)
        m = pipe.metrics()
        by_status: dict[str, int] = m["by_status"]  # type: ignore[assignment]
        total = len(pipe.outcomes)
        rejected = by_status.get(Status.REJECTED.value, 0)
        rate = rejected / total if total else 0.0
        # The gate judged the reject rate at each flush, on the documents seen so far: the
        # batch's is judged here, on all of them, against the same threshold.
        flags = [f.message for f in pipe.batch_flags if not is_reject_rate_flag(f.message)]
        if rate > settings.ingestion.max_reject_rate:
            flags.insert(0, reject_rate_flag(batch_key, rejected, total, settings.ingestion.max_reject_rate))
        summary = BatchSummary(
            batch_key=batch_key,
            producer=printable_name(batch.producer),
            run_id=run_id,
            total=total,
            by_status=by_status,
            rejected_by_reason=m["rejected_by_reason"],  # type: ignore[arg-type]
            reject_rate=round(rate, 4),
            flagged=bool(flags),
            flags=tuple(dict.fromkeys(flags)),
            data_docs=pipe.data_docs_index,
            ocr_pages=m["ocr_pages"],  # type: ignore[arg-type]
            ocr_mean_confidence=m["ocr_mean_confidence"],  # type: ignore[arg-type]
            seconds_per_stage=m["seconds_per_stage"],  # type: ignore[arg-type]
        )
        from pipeline.acks import build_acknowledgements

        # _report.json, and one ACK (MSA AA/AE/AR) per HL7 message under _ack/. The decision
        # is recorded first, then the files written: a run killed in between leaves the
        # decision, which the rerun writes (see the top of this function).
        _, ack = build_acknowledgements(feed, batch, pipe.outcomes, lang=settings.ingestion.report_language)
        pipe.sync()  # the acknowledgement must announce only what a power cut cannot take back
        pipe.ledger.record_batch(
            feed.url,
            batch_key,
            run_id,
            summary.model_dump_json(),
            ack,
            m,
            took_over=pipe.took_over,
            delivery=batch.delivery,
        )
        pipe.checkpoint("before_ack")
        _write_ack(feed, batch, ack)
        pipe.checkpoint("after_ack")
        pipe.ledger.mark_acknowledged(feed.url, batch_key)
    if summary.flagged:
        # What flagged it: the reject rate, or the gate's findings (duplicates, scans…).
        why = "; ".join(summary.flags)
        log.warning("batch %s of producer %s flagged: %s", batch_key, batch.producer, why)
    return summary


def acknowledge_replay(
    settings: Settings,
    ledger: Ledger,
    producer: str,
    batch_name: str,
    outcomes: Sequence[Outcome],
    headers: Mapping[str, Header],
) -> None:
    """Tell the producer of a feed batch what a replay released of it: its ``_report.json``
    and the ACKs of the documents now filed rewritten (``amend_acknowledgements``; the
    others' stand). The caller has made the replay's outcomes durable: the amendment is
    recorded in the ledger, then written, so a run killed in between leaves it pending, written
    by the batch's next ``process_batch``. ``outcomes`` and ``headers`` are by source."""
    from pipeline.acks import amend_acknowledgements

    batch_key = printable_name(f"{producer}/{batch_name}")
    for feed_url, files in ledger.batch_acks(batch_key).items():
        if REPORT not in files:
            continue
        feed = _open_feed(settings, feed_url)
        ref = BatchRef(feed_url=feed.url, producer=producer, batch=batch_name, files=())
        prefix = printable_name(feed.source_uri(ref, "-"))[:-1]  # the batch's own folder
        released = {o.source[len(prefix) :]: o for o in outcomes if o.source.startswith(prefix)}
        changed = amend_acknowledgements(
            files,
            released,
            {s[len(prefix) :]: h for s, h in headers.items() if s.startswith(prefix)},
            batch_key=batch_key,
        )
        if not changed:
            continue
        ledger.amend_ack(feed_url, batch_key, changed)
        listed = _listed_batch(feed, batch_key)
        if listed is None:
            # Cleared away by the producer: nothing to write into; written if it comes back.
            log.warning("batch %s of %s gone: the replay's report of it is not written", batch_key, feed.url)
            continue
        _write_ack(feed, listed, changed)
        ledger.mark_acknowledged(feed_url, batch_key)
        log.info("batch %s of %s: report rewritten after a replay", batch_key, feed.url)


def summarize_batches(summaries: Sequence[BatchSummary]) -> dict[str, object]:
    """Totals over batches: per status, per producer, per reason (JSON-safe)."""
    by_status: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    by_producer: dict[str, Counter[str]] = defaultdict(Counter)
    for s in summaries:
        by_status.update(s.by_status)
        by_reason.update(s.rejected_by_reason)
        by_producer[s.producer].update(s.by_status)
    return {
        "batches": len(summaries),
        "documents": sum(s.total for s in summaries),
        "by_status": dict(by_status),
        "rejected_by_reason": dict(by_reason),
        "by_producer": {p: dict(c) for p, c in sorted(by_producer.items())},
        "flagged_batches": [s.batch_key for s in summaries if s.flagged],
    }
