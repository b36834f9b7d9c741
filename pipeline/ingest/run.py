"""The ingestion pipeline: raw bytes → parse → identify → classify → check → keep → index.

Every document found in an input ends in exactly one ``Status`` with an ``Outcome``
(a producer's deletion request ends ``withdrawn``, naming the document it took out):
the raw bytes are stored first (nothing is lost), a failure of one document is a
rejected outcome with reason codes (and a quarantine record), never a crash of the run.

Entry points:
- ``ingest_sources``: files / folders / ``s3://`` prefixes, as ``carnet ingest`` does;
- ``discover_batches`` / ``process_batch``: complete batches of a producer feed, as the
  Airflow DAG does (idempotent: a processed batch is recorded in the ledger).

Crash consistency: every flush is one unit of commit (write-ahead record in the ledger,
idempotent index writes, outcomes recorded; see ``pipeline.ledger``), and a run starts by
finishing the flushes a killed run left unfinished. A document a killed run accepted but
never reported is reported by the rerun with the outcome that run gave it (``indexed``,
``replaced``), not as a ``duplicate`` of itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
import traceback
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from parsers.registry import ParserOptions, ParserRegistry, default_registry
from pipeline.access import AccessRules
from pipeline.classification import classify_document
from pipeline.crypto import open_encrypted_store, patient_ref, patient_ref_key
from pipeline.dates import find_document_date
from pipeline.errors import EncryptedDocumentError, ParserError, SourceError, UnsafePathError
from pipeline.faults import reach
from pipeline.feeds import BatchRef, Feed, ManifestEntry, printable_name, read_regular_file
from pipeline.identity import (
    find_finess,
    find_printed_ins,
    find_rpps,
    identify_in_record,
    identify_patient,
    named_ins,
)
from pipeline.index import DocumentIndex, IndexFailure, Supersede, open_index
from pipeline.index.base import names_any
from pipeline.ledger import Ledger, Unreported
from pipeline.model import (
    Contributor,
    DocClass,
    DocumentRecord,
    Frozen,
    Outcome,
    ParsedDocument,
    PatientDemographics,
    Problem,
    Reason,
    Status,
)
from pipeline.monitoring import BatchCounts
from pipeline.observations import extract_observations
from pipeline.quality import BatchThresholds, GateItem, QualityGate, check_document
from pipeline.settings import Settings
from pipeline.store import DocumentStore, QuarantineAttempt, QuarantineRecord, sha256_hex

log = logging.getLogger(__name__)

_UNREADABLE = frozenset({Reason.UNREADABLE_SCAN, Reason.EMPTY_DOCUMENT})
# Classes whose text may print lab results or dose indicators (a prescription's doses are not).
_RESULT_CLASSES = frozenset({DocClass.BIOLOGY, DocClass.IMAGING, DocClass.OTHER})
_CLOSED = {
    Reason.ACCOUNT_CLOSED: "the patient's account is closed: documents for this INS are refused "
                           "(it is reopened only at the patient's request)",
    Reason.OPPOSITION: "the patient opposed the creation of their record: documents for this INS "
                       "are refused",
}


def _hash_id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


@dataclass
class StageClock:
    """Seconds spent per stage, for run metrics."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0


@dataclass
class InputFile:
    """One raw input: its bytes, where it came from and who sent it."""

    data: bytes
    source: str
    producer: str
    batch: str | None = None
    # Why the file disagrees with its batch manifest (size, SHA-256, unlisted), if it does.
    manifest_problem: str | None = None
    # A patient upload: the record it is added to (the identity stage still runs, see
    # ``identify_in_record``) and who added it (recorded as the document's author).
    record_of: str | None = None
    contributor: Contributor | None = None
    # Why the file was not read (a symbolic link or special file), if it was not.
    unsafe_path: str | None = None

    def __post_init__(self) -> None:
        # Names come from the filesystem, where any byte sequence is allowed: a name that is
        # not UTF-8 is escaped once, here, so every report and record downstream can hold it.
        self.source = printable_name(self.source)
        self.producer = printable_name(self.producer)
        self.batch = printable_name(self.batch) if self.batch is not None else None


@dataclass
class _Pending:
    record: DocumentRecord
    outcome_index: int
    supersedes: str | None
    raw_sha: str  # the input file's bytes, what a replay reads back
    batch: str | None
    part: int | None
    demographics: PatientDemographics | None


class _JournalItem(Frozen):
    """One record of a journaled flush: what to write, and what to quarantine if refused."""

    record: DocumentRecord
    supersedes: str | None
    raw_sha: str
    part: int | None
    batch: str | None
    outcome_at: int  # position in the flush's outcomes


class _FlushWrites(Frozen):
    """The write-ahead record of one flush (the ``writes`` column of the ledger's journal)."""

    items: tuple[_JournalItem, ...]
    raw_shas: dict[int, str]  # position in the flush's outcomes -> the input's raw bytes

    def supersedes(self) -> list[Supersede]:
        return [Supersede(patient_id=i.record.patient_id, doc_id=i.supersedes, by_doc_id=i.record.doc_id)
                for i in self.items if i.supersedes]


def _version_key(version: int | None, date: dt.date | None) -> tuple[int, dt.date]:
    """The producer's order of two versions of one document: its version number (HL7 v2
    has none: an original is 1, a correction 2), then the document's effective date."""
    return (version if version is not None else 1, date or dt.date.min)


def _index_key(settings: Settings) -> str:
    """Which index a journaled flush was for (an Elasticsearch URL holds many aliases)."""
    url = settings.effective_index_url
    return url if url.startswith("sqlite:") else f"{url}#{settings.es_index_alias}"


class Pipeline:
    """The opened backends and the per-run state of one ingestion."""

    def __init__(
        self,
        settings: Settings,
        *,
        index: DocumentIndex | None = None,
        store: DocumentStore | None = None,
        registry: ParserRegistry | None = None,
        gate: QualityGate | None = None,
        batch_label: str = "adhoc",
    ) -> None:
        self.settings = settings
        self.gate = gate if gate is not None else QualityGate(settings)
        self.batch_label = batch_label
        self.batch_flags: list[Problem] = []
        self.data_docs_index: str | None = None
        # An index given by the caller stays the caller's to close.
        self._owns_index = index is None
        self.index = index or open_index(settings.effective_index_url, alias=settings.es_index_alias)
        # Raw documents are encrypted at rest: per-object keys until the patient is known,
        # then the patient's data key (so erasure can destroy it).
        # Its own store commits keyring rows once per flush (``sync``), not per document.
        self.store = store or open_encrypted_store(settings, commit_on_sync=True)
        self.registry = registry or default_registry(ParserOptions(
            ocr_lang=settings.ocr_lang, ocr_timeout_s=settings.ocr_timeout_s,
            min_text_chars_per_page=settings.min_text_chars_per_page, ocr_workers=settings.ocr_workers))
        self.ledger = Ledger(settings)
        # Identity traits (birth dates) and closed accounts live with the access rules.
        self.rules = AccessRules(settings)
        self._ref_key = patient_ref_key(settings)
        self.clock = StageClock()
        self.outcomes: list[Outcome] = []
        self._pending: list[_Pending] = []
        # Documents of this run not yet flushed, so duplicates inside one batch are seen.
        self._pending_by_sha: dict[tuple[str, str], str] = {}
        self._pending_by_series: dict[tuple[str, str], str] = {}
        self._pending_versions: dict[str, tuple[int, dt.date]] = {}
        # Inputs being parsed ahead of ``process`` (see ``parse_ahead``), by id of the input.
        self._parsing: dict[int, Future[tuple[list[ParsedDocument], Problem | None, str | None]]] = {}
        # The run in the ledger (None: a bare pipeline, index writes only, nothing recorded).
        self.run_id: str | None = None
        self.batch_name: str | None = None
        self._recorded = 0  # outcomes before this position are in the ledger
        self._raw_sha_of: dict[int, str] = {}  # outcome position -> the input's raw bytes
        self._unreported: dict[tuple[str, str], Unreported] = {}
        self.took_over: set[str] = set()  # killed runs whose documents this run reports
        self._held = ExitStack()
        self._generation = -1  # flushes done in the index when this run last looked

    def start_run(self, kind: str, detail: str, *, exclusive: bool | None) -> str:
        """Take the data directory (refusing if an exclusive run holds it; ``None``: no
        lease, for single documents), finish what a killed run left unfinished, and record
        this run in the ledger."""
        if exclusive is not None:
            self._held.enter_context(self.ledger.run_lease(kind, exclusive=exclusive))
        self.finish_unfinished_flushes()
        # Decisions from here on see every flush counted so far (see ``_decide_again``).
        self._generation = self.ledger.flush_generation(_index_key(self.settings))
        self.run_id = self.ledger.start_run(kind, detail)
        self._unreported = self.ledger.unreported_accepted(self.run_id)
        return self.run_id

    def checkpoint(self, point: str) -> None:
        """A commit point: where the crash tests' fault hook may kill the run (pipeline.faults)."""
        reach(self.settings.fault_point, point)

    def close(self) -> None:
        self.flush()
        self._release()

    def sync(self) -> None:
        """Make what this run stored durable (objects, their directory entries, keyring
        rows): before a flush is recorded and before a report or acknowledgement announces
        it, so neither ever names a document a power cut could take back."""
        with self.clock.stage("store"):
            self.store.sync()

    def _release(self) -> None:
        self.sync()
        if self._owns_index:
            self.index.close()
        self.ledger.close()
        self.rules.close()
        self._held.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            # The run failed (a backend died…): write nothing more, release what is open.
            self._release()
            return
        self.close()

    # -- one input -------------------------------------------------------------------------

    def process(self, item: InputFile) -> list[Outcome]:
        """Run one raw input through every stage; return the outcome of each document in it."""
        if item.unsafe_path is not None:
            start = len(self.outcomes)
            self._reject(item, self.store.put(b""), None,
                         [Problem(code=Reason.UNSAFE_PATH, message=item.unsafe_path)])
            return self.outcomes[start:]
        with self.clock.stage("store"):
            raw_sha = self.store.put(item.data)
        start = len(self.outcomes)

        if item.manifest_problem:
            self._reject(item, raw_sha, None, [Problem(code=Reason.MANIFEST_MISMATCH,
                                                       message=item.manifest_problem)])
            return self.outcomes[start:]

        with self.clock.stage("parse"):
            ahead = self._parsing.pop(id(item), None)
            parsed, problem, exc_text = ahead.result() if ahead is not None else self._parse(item)
        if problem is None and not parsed:
            # A file a parser accepted but found nothing in is still accounted for.
            problem = Problem(code=Reason.EMPTY_DOCUMENT, message="no document found in the file")
        if problem is not None:
            self._reject(item, raw_sha, None, [problem], exception=exc_text)
        for doc in parsed:
            self._process_document(item, raw_sha, doc)
        if len(self._pending) >= self.settings.flush_every:
            self.flush()
        return self.outcomes[start:]

    def parse_ahead(self, items: Iterable[InputFile]) -> Iterator[InputFile]:
        """``items`` as they come, each already being parsed a few inputs ahead.

        Parsing (OCR above all: one tesseract process per page, ``ocr_workers`` at once)
        runs in ``ocr_workers`` threads while ``process`` takes the earlier inputs through
        the other stages, so single-page scans keep every core busy too. Only parsing
        moves: storing, identifying, indexing and outcomes stay in input order, in this
        thread. At most twice ``ocr_workers`` inputs are held ahead.
        """
        workers = self.settings.ocr_workers
        if workers <= 1:
            yield from items
            return
        window: deque[InputFile] = deque()
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="parse")
        try:
            for item in items:
                if not item.manifest_problem and item.unsafe_path is None:  # else rejected unparsed
                    self._parsing[id(item)] = pool.submit(self._parse, item)
                window.append(item)
                if len(window) > 2 * workers:
                    yield window.popleft()
            while window:
                yield window.popleft()
        finally:
            for future in self._parsing.values():
                future.cancel()
            self._parsing.clear()
            pool.shutdown(wait=False, cancel_futures=True)

    def _parse(self, item: InputFile) -> tuple[list[ParsedDocument], Problem | None, str | None]:
        parser = self.registry.choose(item.data) if item.data else None
        if parser is None:
            what = "empty file" if not item.data else "content not recognised as PDF, image, HL7 v2 or CDA"
            return [], Problem(code=Reason.UNSUPPORTED_FORMAT, message=what), None
        try:
            return parser.parse(item.data, source=item.source), None, None
        except EncryptedDocumentError as exc:
            return [], Problem(code=Reason.ENCRYPTED_DOCUMENT, message=exc.message), None
        except ParserError as exc:
            return [], Problem(code=Reason.PARSE_ERROR, message=exc.message), None
        except Exception as exc:  # noqa: BLE001 — the parser boundary: one bad file never stops the batch
            log.exception("parser %s crashed on %s (producer %s)", parser.name, item.source,
                          item.producer)
            return [], Problem(code=Reason.PARSE_ERROR,
                               message=f"{parser.name} parser failed: {type(exc).__name__}: {exc}"), \
                traceback.format_exc()

    def _process_document(self, item: InputFile, raw_sha: str, doc: ParsedDocument) -> None:
        blocking = [w for w in doc.warnings if w.blocking]
        if blocking:
            self._reject(item, raw_sha, doc, blocking)
            return
        if doc.withdraw:
            self._withdraw(item, raw_sha, doc)
            return
        with self.clock.stage("classify"):
            classification = classify_document(doc)
            document_date = doc.document_date or find_document_date(doc.text)
            if not doc.results and classification.doc_class in _RESULT_CLASSES:
                # Results printed in text are checked like structured ones (one observation model).
                doc = doc.model_copy(update={"results": extract_observations(doc.text)})
        with self.clock.stage("quality"):
            problems = check_document(doc, classification, document_date)
        # An unreadable document is reported as such, not as one "without INS".
        unreadable = [p for p in problems if p.blocking and p.code in _UNREADABLE]
        if unreadable:
            self._reject(item, raw_sha, doc, unreadable)
            return
        with self.clock.stage("identify"):
            identity = (identify_in_record(doc, item.record_of) if item.record_of
                        else identify_patient(doc))
        if identity.patient_id is None:
            self._reject(item, raw_sha, doc, list(identity.problems))
            return
        closure = self.rules.closure(patient_ref(self._ref_key, identity.patient_id))
        if closure is not None:
            # A closed account (or an opposition) refuses new documents; its INS is not
            # written in the report or the quarantine record, only its keyed hash.
            self._reject(item, raw_sha, doc, [Problem(code=closure, message=_CLOSED[closure])])
            return
        if any(p.blocking for p in problems):
            self._reject(item, raw_sha, doc, [p for p in problems if p.blocking],
                         patient_id=identity.patient_id)
            return

        content = doc.content or item.data
        content_sha = raw_sha if content is item.data else sha256_hex(content)
        if content is not item.data:
            self.store.put(content)
        patient = identity.patient_id
        self._assign(content_sha, patient)
        if doc.producer_document_id:
            series_id = _hash_id("series", item.producer, doc.producer_document_id)
            if doc.refers_to:  # a replacement naming its parent joins the parent's series
                series_id = self._parent_series(patient, item.producer, doc.refers_to) or series_id
            doc_id = _hash_id("doc", item.producer, doc.producer_document_id, content_sha)
        else:
            series_id = doc_id = _hash_id("doc", patient, content_sha)

        outcome_base = dict(
            source=doc.source_ref, patient_id=patient, doc_class=classification.doc_class,
            type_code=classification.type_code, content_sha256=content_sha,
            producer=item.producer, format=doc.format, ocr_pages=doc.ocr_pages,
            ocr_confidence=doc.ocr_confidence, message_control_id=doc.message_control_id,
        )
        version_key = _version_key(doc.version, document_date)
        with self.clock.stage("dedup"):
            duplicate_of, supersedes, newer = self._existing(patient, content_sha, series_id, version_key)
        if duplicate_of:
            self._raw_sha_of[len(self.outcomes)] = raw_sha
            self.outcomes.append(self._duplicate(doc.source_ref, duplicate_of, outcome_base))
            return

        record = DocumentRecord(
            doc_id=doc_id, series_id=series_id, patient_id=patient,
            doc_class=classification.doc_class, type_code=classification.type_code,
            type_label=classification.type_label, classification_rule=classification.rule,
            classification_confidence=classification.confidence,
            title=doc.title or classification.type_label or "Document",
            document_date=document_date, producer=item.producer,
            producer_finess=doc.producer_finess or find_finess(doc.text),
            producer_document_id=doc.producer_document_id, version=doc.version,
            document_ids=doc.document_ids, superseded_by=newer,
            author_rpps=None if item.contributor else doc.author_rpps or find_rpps(doc.text),
            author_name=item.contributor.name if item.contributor else doc.author_name,
            contributed_by=item.contributor, identity_source=identity.evidence,
            source=doc.source_ref, format=doc.format, content_sha256=content_sha,
            text=doc.text, results=doc.results, visibility=doc.visibility,
            page_count=doc.page_count, ocr_pages=doc.ocr_pages,
            ocr_confidence=doc.ocr_confidence,
            warnings=tuple(doc.warnings) + tuple(p for p in problems if not p.blocking),
            ingested_at=dt.datetime.now(dt.UTC),
        )
        status = Status.REPLACED if supersedes else Status.INDEXED
        self.outcomes.append(Outcome(status=status, doc_id=doc_id,
                                     reasons=tuple(p for p in record.warnings),
                                     **outcome_base))  # type: ignore[arg-type]
        self._raw_sha_of[len(self.outcomes) - 1] = raw_sha
        self._pending.append(_Pending(record, len(self.outcomes) - 1, supersedes, raw_sha, item.batch,
                                      doc.part, doc.demographics))
        self._remember(record)

    def _remember(self, record: DocumentRecord) -> None:
        """A record about to be written: later documents of this run are decided against it."""
        self._pending_by_sha[(record.patient_id, record.content_sha256)] = record.doc_id
        if record.superseded_by is None:
            self._pending_by_series[(record.patient_id, record.series_id)] = record.doc_id
            self._pending_versions[record.doc_id] = _version_key(record.version, record.document_date)

    def _duplicate(self, source: str, doc_id: str, base: Mapping[str, Any]) -> Outcome:
        """A document the index already holds: ``duplicate`` — unless a killed run put it
        there and never reported it, in which case this run reports that run's outcome."""
        unreported = self._unreported.pop((source, doc_id), None)
        if unreported is None:
            return Outcome(status=Status.DUPLICATE, doc_id=doc_id, **base)  # type: ignore[arg-type]
        self.took_over.add(unreported.run_id)
        return Outcome(status=unreported.status, doc_id=doc_id, reasons=unreported.problems(),
                       **base)  # type: ignore[arg-type]

    def _assign(self, sha: str, patient_id: str) -> None:
        """Put a stored object under its patient's data key (encrypted stores only)."""
        assign = getattr(self.store, "assign", None)
        if assign is not None:
            assign(sha, patient_id)

    def _existing(
        self, patient: str, content_sha: str, series_id: str, version: tuple[int, dt.date]
    ) -> tuple[str | None, str | None, str | None]:
        """(doc id this duplicates, doc id this replaces, newer doc id that supersedes this one).

        The version chain follows the producer's order (``_version_key``), not the order of
        arrival: a version older than the current one (a late delivery, a replay after a
        fix) arrives already superseded and never hides the live one. Equal keys replace
        each other in arrival order.
        """
        if (patient, content_sha) in self._pending_by_sha:
            return self._pending_by_sha[(patient, content_sha)], None, None
        current = self._pending_by_series.get((patient, series_id))
        current_version = self._pending_versions.get(current) if current else None
        for v in self.index.find_versions(patient, content_sha256=content_sha, series_id=series_id):
            if v.withdrawn:
                continue  # sent again after a deletion: filed anew, not a duplicate
            if v.content_sha256 == content_sha:
                return v.doc_id, None, None
            if v.series_id == series_id and v.superseded_by is None and current is None:
                current = v.doc_id
                existing = self.index.get(patient, v.doc_id)
                current_version = (_version_key(existing.version, existing.document_date)
                                   if existing else None)
        if current and current_version is not None and version < current_version:
            return None, None, current
        return None, current, None

    def _parent_series(self, patient: str, producer: str, parent_ids: Sequence[str]) -> str | None:
        """The series of the document a replacement names as its parent, if Carnet holds it."""
        self._flush_if_pending(producer, parent_ids)
        found = self.index.find_by_document_ids(patient, producer, parent_ids)
        current = [v for v in found if v.superseded_by is None and not v.withdrawn]
        return (current or found)[0].series_id if found else None

    def _flush_if_pending(self, producer: str, document_ids: Sequence[str]) -> None:
        """Write pending records first when one of them is the document named: it may
        have arrived earlier in this very run (flushing only then keeps batches whole)."""
        if any(names_any(p.record, producer, document_ids) for p in self._pending):
            self.flush()

    def _withdraw(self, item: InputFile, raw_sha: str, doc: ParsedDocument) -> None:
        """A producer's deletion request: every version of the document it names leaves
        every search (kept, with ``withdrawn_at``); an unknown document is a rejection."""
        with self.clock.stage("identify"):
            identity = identify_patient(doc)
        patient = identity.patient_id
        if patient is None:
            self._reject(item, raw_sha, doc, list(identity.problems))
            return
        self._assign(raw_sha, patient)
        names = tuple(dict.fromkeys(
            i for i in (doc.producer_document_id, *doc.document_ids, *doc.refers_to) if i))
        with self.clock.stage("index"):
            self._flush_if_pending(item.producer, names)
            named = self.index.find_by_document_ids(patient, item.producer, names)
            series = {v.series_id for v in named}
            versions = {v.doc_id: v for s in series
                        for v in self.index.find_versions(patient, content_sha256="", series_id=s)}
            versions.update({v.doc_id: v for v in named})
            at = dt.datetime.now(dt.UTC)
            for v in versions.values():
                if not v.withdrawn:
                    self.index.withdraw(patient, v.doc_id, at)
        if not versions:
            self._reject(item, raw_sha, doc, [Problem(
                code=Reason.UNKNOWN_DOCUMENT,
                message=f"deletion requested for a document this producer never filed for this "
                        f"patient (identified as {', '.join(names) or 'nothing'})")],
                patient_id=patient)
            return
        current = next((v for v in named if v.superseded_by is None), named[0])
        record = self.index.get(patient, current.doc_id)
        log.info("withdrew %d version(s) of %s for producer %s at its request (%s)",
                 len(versions), current.doc_id, item.producer, doc.source_ref)
        self.outcomes.append(Outcome(
            source=doc.source_ref, status=Status.WITHDRAWN, doc_id=current.doc_id,
            patient_id=patient, doc_class=record.doc_class if record else None,
            type_code=record.type_code if record else doc.type_code, content_sha256=raw_sha,
            producer=item.producer, format=doc.format, message_control_id=doc.message_control_id,
        ))  # fmt: skip

    def _reject(
        self,
        item: InputFile,
        raw_sha: str,
        doc: ParsedDocument | None,
        problems: list[Problem],
        *,
        exception: str | None = None,
        patient_id: str | None = None,
    ) -> None:
        source_ref = doc.source_ref if doc else item.source
        self.outcomes.append(Outcome(
            source=source_ref, status=Status.REJECTED, patient_id=patient_id,
            reasons=tuple(problems), content_sha256=raw_sha, producer=item.producer,
            format=doc.format if doc else None,
            ocr_pages=doc.ocr_pages if doc else 0,
            ocr_confidence=doc.ocr_confidence if doc else None,
            message_control_id=doc.message_control_id if doc else None,
        ))
        named = ([*named_ins(doc), *([patient_id] if patient_id else [])] if doc
                 else [patient_id] if patient_id else [])
        self.quarantine(item.producer, item.batch, source_ref, raw_sha, doc.part if doc else None,
                        problems, exception=exception, patient_id=patient_id, named=named)

    def quarantine(
        self, producer: str, batch: str | None, source_ref: str, raw_sha: str,
        part: int | None, problems: Sequence[Problem], *, exception: str | None = None,
        patient_id: str | None = None, named: Sequence[str] = (),
    ) -> None:
        """Keep a rejected document's reasons beside its stored bytes, history included.

        ``named``: every INS the document names; kept as keyed hashes, so erasure finds the
        record by any of them without the record holding them in clear.
        """
        qid = QuarantineRecord.make_id(producer, source_ref, raw_sha)
        now = dt.datetime.now(dt.UTC)
        attempt = QuarantineAttempt(at=now, reasons=tuple(problems), exception=exception)
        previous = self.store.get_quarantine(qid)
        record = QuarantineRecord(
            quarantine_id=qid, source=source_ref, producer=producer, batch=batch,
            content_sha256=raw_sha, part=part, patient_id=patient_id,
            patient_refs=tuple(sorted({patient_ref(self._ref_key, n) for n in named})),
            reasons=tuple(problems),
            exception=exception,
            first_quarantined_at=previous.first_quarantined_at if previous else now,
            attempts=(previous.attempts if previous else ()) + (attempt,),
        )
        self.store.put_quarantine(record)

    # -- writing ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Gate the pending records, then commit them as one unit: write-ahead record, index
        (new versions with the supersede of the old ones), outcomes in the ledger.

        Gate-blocked and refused records become rejects. Without a run (a bare pipeline)
        only the index is written.
        """
        pending, self._pending = self._pending, []
        self._pending_by_sha.clear()
        self._pending_by_series.clear()
        self._pending_versions.clear()
        if pending:
            with self.clock.stage("quality_setup"):  # GX's import, once per process: not "quality"
                self.gate.prepare()
            with self.clock.stage("quality"):
                pending = self._apply_gate(pending)
        if self.run_id is None:
            self.sync()
            with self.clock.stage("index"):
                self._refuse(pending, self.index.apply(
                    [p.record for p in pending], self._supersedes(pending)))
            self._record_birth_dates(pending)
            return
        end = len(self.outcomes)
        if end == self._recorded:
            return
        self.sync()  # once per flush, before the ledger or the index refers to what was stored
        with self.clock.stage("index"), self.ledger.flush_lock() as lock:
            start = self._recorded
            flush_id = None
            pending = self._decide_again(pending, start)
            if pending:
                self.checkpoint("before_journal")
                writes = _FlushWrites(
                    items=tuple(_JournalItem(record=p.record, supersedes=p.supersedes,
                                             raw_sha=p.raw_sha, part=p.part, batch=p.batch,
                                             outcome_at=p.outcome_index - start) for p in pending),
                    raw_shas={i - start: sha for i, sha in self._raw_sha_of.items() if i >= start})
                flush_id = self.ledger.journal_flush(self.run_id, _index_key(self.settings),
                                                     self.batch_name, writes.model_dump_json(),
                                                     self.outcomes[start:end])
                self.checkpoint("after_journal")
                self._refuse(pending, self.index.apply([p.record for p in pending],
                                                       self._supersedes(pending),
                                                       checkpoint=self.checkpoint))
                self._record_birth_dates(pending)
            self.checkpoint("before_ledger_record")
            lock.verify()  # lost: a rerun finishes the journaled flush under a lock it holds
            if flush_id is None:
                self.ledger.record_outcomes(self.run_id, self.batch_name, self.outcomes[start:end])
            else:
                self.ledger.complete_flush(flush_id, self.run_id, self.batch_name,
                                           self.outcomes[start:end])
            self._recorded = end
            self._generation = self.ledger.flush_generation(_index_key(self.settings))
            self.checkpoint("after_ledger_record")
            self._release_quarantine(self.outcomes[start:end],
                                     {i - start: sha for i, sha in self._raw_sha_of.items() if i >= start})

    def _decide_again(self, pending: list[_Pending], start: int) -> list[_Pending]:
        """Under the flush lock: when another process committed a flush since this run last
        looked (``Ledger.flush_generation``), decide every pending record again against the
        index as it is now. Two workers never both index one content nor leave two live
        versions of a series: the later to commit gets ``duplicate``, or its place in the
        version chain corrected (it replaces the other's version, or arrives superseded)."""
        if self.ledger.flush_generation(_index_key(self.settings)) == self._generation:
            return pending
        kept: list[_Pending] = []
        moved: dict[str, str] = {}  # a pending doc id -> the committed one it duplicates
        for p in pending:
            r = p.record
            duplicate_of, supersedes, newer = self._existing(
                r.patient_id, r.content_sha256, r.series_id, _version_key(r.version, r.document_date))
            old = self.outcomes[p.outcome_index]
            if duplicate_of:
                log.info("%s: committed meanwhile by another worker as %s (duplicate)", r.source,
                         duplicate_of)
                moved[r.doc_id] = duplicate_of
                self.outcomes[p.outcome_index] = old.model_copy(update={
                    "status": Status.DUPLICATE, "doc_id": duplicate_of, "reasons": ()})
                continue
            if (supersedes, newer) != (p.supersedes, r.superseded_by):
                p.supersedes = supersedes
                p.record = r.model_copy(update={"superseded_by": newer})
                self.outcomes[p.outcome_index] = old.model_copy(update={
                    "status": Status.REPLACED if supersedes else Status.INDEXED})
            kept.append(p)
            self._remember(p.record)
        self._pending_by_sha.clear()
        self._pending_by_series.clear()
        self._pending_versions.clear()
        for i in range(start, len(self.outcomes)):  # duplicates of a record that went
            o = self.outcomes[i]
            if o.status is Status.DUPLICATE and o.doc_id in moved:
                self.outcomes[i] = o.model_copy(update={"doc_id": moved[o.doc_id]})
        return kept

    def _record_birth_dates(self, pending: Sequence[_Pending]) -> None:
        for p in pending:
            if (self.outcomes[p.outcome_index].status is not Status.REJECTED
                    and p.demographics is not None and p.demographics.birth_date is not None):
                # Refines the birth date the INS gives (a minor's majority day).
                self.rules.record_birth_date(p.record.patient_id, p.demographics.birth_date,
                                             p.record.ingested_at)

    @staticmethod
    def _supersedes(pending: Sequence[_Pending]) -> list[Supersede]:
        return [Supersede(patient_id=p.record.patient_id, doc_id=p.supersedes, by_doc_id=p.record.doc_id)
                for p in pending if p.supersedes]

    def _refuse(self, pending: Sequence[_Pending], failures: Sequence[IndexFailure]) -> None:
        refused = {f.doc_id: f.message for f in failures}
        for p in pending:
            if p.record.doc_id in refused:
                self._reject_pending(p, [Problem(code=Reason.INDEX_ERROR, message=refused[p.record.doc_id])])

    def finish_unfinished_flushes(self) -> int:
        """Finish every flush a killed run left ``intended``: apply its writes to the index
        again (idempotent), then record its outcomes under that run. Returns how many."""
        with self.ledger.flush_lock() as lock:
            unfinished = self.ledger.unfinished_flushes(_index_key(self.settings))
            for journaled in unfinished:
                writes = _FlushWrites.model_validate_json(journaled.writes)
                log.warning("finishing flush %s of run %s (%d records) left unfinished by a "
                            "killed run", journaled.flush_id, journaled.run_id, len(writes.items))
                failures = {f.doc_id: f.message for f in self.index.apply(
                    [i.record for i in writes.items], writes.supersedes())}
                outcomes = list(journaled.outcomes)
                for i in writes.items:
                    if i.record.doc_id in failures:
                        problems = [Problem(code=Reason.INDEX_ERROR, message=failures[i.record.doc_id])]
                        outcomes[i.outcome_at] = outcomes[i.outcome_at].model_copy(update={
                            "status": Status.REJECTED, "doc_id": None, "reasons": tuple(problems)})
                        self.quarantine(i.record.producer, i.batch, i.record.source, i.raw_sha, i.part,
                                        problems, patient_id=i.record.patient_id)
                lock.verify()
                if self.ledger.complete_flush(journaled.flush_id, journaled.run_id, journaled.batch,
                                              outcomes):
                    self._release_quarantine(outcomes, writes.raw_shas)
        return len(unfinished)

    def _release_quarantine(self, outcomes: Sequence[Outcome], raw_shas: dict[int, str]) -> None:
        """Take out of quarantine every document these outcomes accept (a replay, or a
        resend after a fix): an input ends in one state, not accepted and quarantined."""
        accepted: list[tuple[str, str, str]] = []  # (producer, source, raw sha)
        for i, o in enumerate(outcomes):
            if o.status is Status.REJECTED or i not in raw_shas or not o.producer:
                continue
            accepted.append((o.producer, o.source, raw_shas[i]))
            file_source, sep, part = o.source.rpartition("#")
            if sep and part.isdigit():
                # An HL7 file once rejected whole (nothing parsed) now yields messages: its
                # file-level record goes, each message having its own outcome now.
                accepted.append((o.producer, file_source, raw_shas[i]))
        if not accepted:
            return
        was_rejected = self.ledger.was_rejected(source for _, source, _ in accepted)
        for producer, source, raw_sha in dict.fromkeys(accepted):
            if source in was_rejected:
                self.store.remove_quarantine(QuarantineRecord.make_id(producer, source, raw_sha))

    def _apply_gate(self, pending: list[_Pending]) -> list[_Pending]:
        """Run the batch quality gate; return the records that may be indexed."""
        counts = Counter(o.status.value for o in self.outcomes)
        result = self.gate.validate([GateItem(record=p.record, demographics=p.demographics)
                                     for p in pending], batch_label=self.batch_label,
                                    outcome_counts=counts)
        self.batch_flags.extend(result.batch_flags)
        self.data_docs_index = result.data_docs_index or self.data_docs_index
        kept = []
        for p in pending:
            problems = result.problems.get(p.record.doc_id, ())
            blocking = [x for x in problems if x.blocking]
            if blocking:
                self._reject_pending(p, blocking)
                continue
            if problems:
                warnings = p.record.warnings + problems
                p.record = p.record.model_copy(update={"warnings": warnings})
                old = self.outcomes[p.outcome_index]
                self.outcomes[p.outcome_index] = old.model_copy(update={"reasons": warnings})
            kept.append(p)
        return kept

    def _reject_pending(self, p: _Pending, problems: list[Problem]) -> None:
        old = self.outcomes[p.outcome_index]
        self.outcomes[p.outcome_index] = old.model_copy(update={
            "status": Status.REJECTED, "doc_id": None, "reasons": tuple(problems)})
        self.quarantine(p.record.producer, p.batch, p.record.source, p.raw_sha, p.part, problems,
                        patient_id=p.record.patient_id,
                        named=[p.record.patient_id, *find_printed_ins(p.record.text)])

    def metrics(self, outcomes: Sequence[Outcome] | None = None) -> dict[str, object]:
        """Counts per status, class, producer and reason, OCR figures and stage times."""
        outs = self.outcomes if outcomes is None else outcomes
        ocr = [o for o in outs if o.ocr_pages]
        confs = [o.ocr_confidence for o in ocr if o.ocr_confidence is not None]
        return {
            "documents": len(outs),
            "by_status": dict(Counter(o.status.value for o in outs)),
            "by_class": dict(Counter(o.doc_class.value for o in outs if o.doc_class
                                     and o.status not in (Status.REJECTED, Status.WITHDRAWN))),
            "by_producer": {p: dict(Counter(o.status.value for o in outs if o.producer == p))
                            for p in sorted({o.producer or "" for o in outs})},
            "rejected_by_reason": dict(Counter(r.code.value for o in outs
                                               if o.status is Status.REJECTED for r in o.reasons)),
            "ocr_pages": sum(o.ocr_pages for o in ocr),
            "ocr_mean_confidence": round(sum(confs) / len(confs), 1) if confs else None,
            "seconds_per_stage": {k: round(v, 3) for k, v in self.clock.seconds.items()},
        }


# -- sources ---------------------------------------------------------------------------------


def _folder_inputs(root: Path, producer: str | None) -> Iterator[tuple[Path, str, str | None]]:
    """(file, producer, batch) for a folder: a feed layout gives producer/batch from paths."""
    from pipeline.feeds import iter_folder_files

    for path in iter_folder_files(root):
        rel = path.relative_to(root).parts
        if producer:
            yield path, producer, rel[0] if len(rel) > 1 else None
        elif len(rel) >= 3:
            yield path, rel[0], rel[1]
        elif len(rel) == 2:
            yield path, rel[0], None
        else:
            yield path, root.name or "local", None


def _local_input(root: Path, path: Path, *, producer: str, batch: str | None = None) -> InputFile:
    """A local file as an input; a link or special file is not read (``unsafe_path``)."""
    try:
        data = read_regular_file(root, path)
    except UnsafePathError as exc:
        return InputFile(data=b"", source=str(path), producer=producer, batch=batch, unsafe_path=exc.message)
    return InputFile(data=data, source=str(path), producer=producer, batch=batch)


def iter_source_inputs(sources: Sequence[str], *, producer: str | None, settings: Settings
                       ) -> Iterator[InputFile]:
    """Every raw input named by ``sources`` (files, folders recursively, s3:// prefixes)."""
    for source in sources:
        if source.startswith("s3://"):
            from pipeline.feeds.s3 import iter_s3_prefix

            for uri, data in iter_s3_prefix(source, endpoint_url=settings.s3_endpoint_url,
                                            region=settings.s3_region):
                key_parts = uri.removeprefix(source.rstrip("/") + "/").split("/")
                prod = producer or (key_parts[0] if len(key_parts) > 1 else "s3")
                yield InputFile(data=data, source=uri, producer=prod)
            continue
        path = Path(source)
        if path.is_symlink() or path.is_file():
            yield _local_input(path.parent, path, producer=producer or path.parent.name or "local")
        elif path.is_dir():
            for file, prod, batch in _folder_inputs(path, producer):
                yield _local_input(path, file, producer=prod, batch=batch)
        else:
            raise SourceError("no such file or folder", source=source)


def count_source_files(sources: Sequence[str]) -> int | None:
    """How many files the local sources hold (for a progress bar); None for S3."""
    from pipeline.feeds import iter_folder_files

    total = 0
    for source in sources:
        if source.startswith("s3://"):
            return None
        path = Path(source)
        total += 1 if path.is_file() else sum(1 for _ in iter_folder_files(path)) if path.is_dir() else 0
    return total


class RunSummary(Frozen):
    run_id: str
    outcomes: tuple[Outcome, ...]
    metrics: dict[str, object]


def write_report(path: Path, outcomes: Iterable[Outcome]) -> None:
    """The run report: JSON Lines, one object per document (the command-line contract)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for o in outcomes:
            fh.write(json.dumps(o.report_line(), ensure_ascii=False) + "\n")


def ingest_sources(
    sources: Sequence[str],
    settings: Settings,
    *,
    producer: str | None = None,
    report_path: Path | None = None,
    progress: bool = False,
) -> RunSummary:
    """Ingest files, folders and S3 prefixes; write the JSONL report; return the summary."""
    for s in sources:
        if not s.startswith("s3://") and not Path(s).exists() and not Path(s).is_symlink():
            raise SourceError("no such file or folder", source=s)
    with Pipeline(settings) as pipe:
        run_id = pipe.start_run("ingest", " ".join(sources), exclusive=True)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=count_source_files(sources), unit="file", desc="ingest")
        for item in pipe.parse_ahead(iter_source_inputs(sources, producer=producer, settings=settings)):
            pipe.process(item)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        pipe.flush()
        metrics = pipe.metrics()
        pipe.ledger.finish_run(run_id, metrics, reported=report_path is None, took_over=pipe.took_over)
        outcomes = tuple(pipe.outcomes)
        if report_path is not None:
            pipe.sync()
            pipe.checkpoint("before_ack")
            write_report(report_path, outcomes)
            pipe.checkpoint("after_ack")
            pipe.ledger.mark_reported(run_id)
    return RunSummary(run_id=run_id, outcomes=outcomes, metrics=metrics)


UPLOAD_PRODUCER = "patient"  # the producer id of documents patients add themselves


def ingest_upload(
    data: bytes,
    settings: Settings,
    *,
    filename: str,
    patient_id: str,
    contributor: Contributor,
    index: DocumentIndex | None = None,
    store: DocumentStore | None = None,
) -> RunSummary:
    """A file a patient (or whoever acts for them) adds to their record: a batch of one
    through the same ``Pipeline`` as every feed (kept, encrypted, parsed with OCR, checked,
    classified, identified by ``identify_in_record``, indexed), recorded in the ledger.

    ``index``/``store`` are the caller's (the API's, shared by its requests) and stay open.
    """
    source = f"upload/{contributor.role}/{filename}"
    # Batch-level shares say nothing about a batch of one (a photo is 100 % OCR).
    gate = QualityGate(settings, thresholds={UPLOAD_PRODUCER: BatchThresholds(
        max_reject_rate=1.0, max_ocr_share=None, max_duplicate_share=None)})
    with Pipeline(settings, index=index, store=store, batch_label="upload", gate=gate) as pipe:
        # No lease: one document, committed under the flush lock like any flush, and an
        # upload is not refused because a `carnet ingest` is running.
        run_id = pipe.start_run("upload", source, exclusive=None)
        pipe.batch_name = run_id
        pipe.process(InputFile(data=data, source=source, producer=UPLOAD_PRODUCER, batch=run_id,
                               record_of=patient_id, contributor=contributor))
        pipe.flush()
        metrics = pipe.metrics()
        pipe.ledger.finish_run(run_id, metrics, reported=True)  # the API answers with it
        outcomes = tuple(pipe.outcomes)
    return RunSummary(run_id=run_id, outcomes=outcomes, metrics=metrics)


# -- batches of a producer feed (the Airflow path) -------------------------------------------


class BatchSummary(BatchCounts):
    """What happened to one batch: small, JSON-safe, fit for XCom. Its counts are the
    recorded metrics' (``pipeline.monitoring.BatchCounts``)."""

    # Batch-level quality findings (reject rate, OCR share…) for a data engineer to look at.
    flags: tuple[str, ...] = ()


def _open_feed(settings: Settings, feed_url: str) -> Feed:
    from pipeline.feeds import open_feed

    return open_feed(feed_url, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)


def discover_batches(settings: Settings, feed_url: str) -> list[str]:
    """Keys (``producer/batch``) of the feed's complete batches not processed yet."""
    feed = _open_feed(settings, feed_url)
    ledger = Ledger(settings)
    try:
        done = ledger.processed_batches(feed.url)
    finally:
        ledger.close()
    keys = (printable_name(b.key) for b in feed.list_batches())
    return [k for k in keys if k not in done]


def _manifest_problem(batch: BatchRef, manifest: dict[str, ManifestEntry], name: str,
                      data: bytes) -> str | None:
    if batch.manifest is None:
        return None
    if name not in manifest:
        return "file present in the batch but not listed in its manifest"
    from pipeline.feeds import verify_manifest

    return verify_manifest(manifest[name], data)


def _find_batch(feed: Feed, batch_key: str) -> BatchRef:
    batch = next((b for b in feed.list_batches() if printable_name(b.key) == batch_key), None)
    if batch is None:
        raise SourceError("no complete batch with this key in the feed", source=feed.url,
                          batch=batch_key)
    return batch


def _write_ack(feed: Feed, batch: BatchRef, files: Mapping[str, bytes]) -> None:
    for name, content in files.items():
        feed.write(batch, name, content)


def process_batch(settings: Settings, feed_url: str, batch_key: str) -> BatchSummary:
    """Ingest one complete batch; write its acknowledgement; record it as processed.

    Idempotent: a batch already recorded in the ledger is not processed again (its stored
    summary is returned), and re-ingesting the same documents yields duplicates only.
    """
    feed = _open_feed(settings, feed_url)
    ledger = Ledger(settings)
    try:
        stored = ledger.batch_summary(feed.url, batch_key)
        unwritten = ledger.pending_ack(feed.url, batch_key) if stored is not None else None
        if unwritten is not None:
            # Decided by a run killed before its acknowledgement was written: write that
            # decision (never a new one, which would call its documents duplicates).
            _write_ack(feed, _find_batch(feed, batch_key), unwritten)
            ledger.mark_acknowledged(feed.url, batch_key)
    finally:
        ledger.close()
    if stored is not None:
        log.info("batch %s of %s already processed; skipping", batch_key, feed.url)
        return BatchSummary.model_validate_json(stored)
    batch = _find_batch(feed, batch_key)
    manifest = {e.name: e for e in batch.manifest or ()}
    with (QualityGate(settings, build_data_docs=settings.data_docs) as gate,
          Pipeline(settings, batch_label=batch_key, gate=gate) as pipe):
        # Lanes of different producers run side by side (shared); a `carnet ingest` waits.
        run_id = pipe.start_run("batch", f"{feed.url} {batch_key}", exclusive=False)
        pipe.batch_name = printable_name(batch.batch)
        names = list(batch.files)
        # A manifest entry whose file is missing is a lost document: report it.
        for missing in sorted(set(manifest) - set(names)):
            src = printable_name(feed.source_uri(batch, missing))
            pipe.outcomes.append(Outcome(source=src, status=Status.REJECTED,
                producer=printable_name(batch.producer), reasons=(Problem(code=Reason.MANIFEST_MISMATCH,
                message="listed in the manifest but absent from the batch"),)))

        def inputs() -> Iterator[InputFile]:
            for name in names:
                source = feed.source_uri(batch, name)
                try:
                    data = feed.read(batch, name)
                except UnsafePathError as exc:
                    yield InputFile(data=b"", source=source, producer=batch.producer, batch=batch.batch,
                                    unsafe_path=exc.message)
                    continue
                yield InputFile(data=data, source=source, producer=batch.producer, batch=batch.batch,
                                manifest_problem=_manifest_problem(batch, manifest, name, data))

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
        summary = BatchSummary(
            batch_key=batch_key, producer=printable_name(batch.producer), run_id=run_id, total=total,
            by_status=by_status, rejected_by_reason=m["rejected_by_reason"],  # type: ignore[arg-type]
            reject_rate=round(rate, 4),
            flagged=rate > settings.max_reject_rate or bool(pipe.batch_flags),
            flags=tuple(dict.fromkeys(f.message for f in pipe.batch_flags)),
            data_docs=pipe.data_docs_index,
            ocr_pages=m["ocr_pages"],  # type: ignore[arg-type]
            ocr_mean_confidence=m["ocr_mean_confidence"],  # type: ignore[arg-type]
            seconds_per_stage=m["seconds_per_stage"],  # type: ignore[arg-type]
        )
        from pipeline.acks import build_acknowledgements

        # _report.json, and one ACK (MSA AA/AE/AR) per HL7 message under _ack/. The decision
        # is recorded first, then the files written: a run killed in between leaves the
        # decision, which the rerun writes (see the top of this function).
        _, ack = build_acknowledgements(feed, batch, pipe.outcomes, lang=settings.report_language)
        pipe.sync()  # the acknowledgement must announce only what a power cut cannot take back
        pipe.ledger.record_batch(feed.url, batch_key, run_id, summary.model_dump_json(), ack, m,
                                 took_over=pipe.took_over)
        pipe.checkpoint("before_ack")
        _write_ack(feed, batch, ack)
        pipe.checkpoint("after_ack")
        pipe.ledger.mark_acknowledged(feed.url, batch_key)
    if summary.flagged:
        log.warning("batch %s of producer %s flagged: reject rate %.0f%% > %.0f%%",
                    batch_key, batch.producer, rate * 100, settings.max_reject_rate * 100)
    return summary


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
