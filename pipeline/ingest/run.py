"""The ``Pipeline``: the opened backends and the per-run state of one ingestion.

Every document found in an input ends in exactly one ``Status`` with an ``Outcome``
(a producer's deletion request ends ``withdrawn``, naming the document it took out):
the raw bytes are stored first (nothing is lost), a failure of one document is a
rejected outcome with reason codes (and a quarantine record), never a crash of the run.
The stages themselves are ``pipeline.ingest.stages``; duplicates and versions
``pipeline.ingest.dedup``; quarantine ``pipeline.ingest.quarantine``.

Crash consistency: every flush is one unit of commit (write-ahead record in the ledger,
idempotent index writes, outcomes recorded; see ``pipeline.ledger``), and a run starts by
finishing the flushes a killed run left unfinished. A document a killed run accepted but
never reported is reported by the rerun with the outcome that run gave it (``indexed``,
``replaced``), not as a ``duplicate`` of itself.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from parsers.base import streaming
from parsers.registry import ParserOptions, ParserRegistry, default_registry
from pipeline.access import AccessRules
from pipeline.crypto import open_encrypted_store, patient_ref, patient_ref_key
from pipeline.faults import reach
from pipeline.heap import freeze_long_lived
from pipeline.identity import find_printed_ins, identify_patient, named_ins
from pipeline.index import DocumentIndex, IndexFailure, Supersede, open_index
from pipeline.index.base import names_any
from pipeline.ingest.dedup import Versions, version_key
from pipeline.ingest.parsing import ParsePool, RegistryRecipe
from pipeline.ingest.quarantine import Quarantine
from pipeline.ingest.stages import (
    InputFile,
    Parsed,
    ParseFailure,
    Rejection,
    StageClock,
    build_record,
    cap_text,
    closed_account,
    document_ids,
    examine,
    hash_id,
    iter_parsed,
    outcome_fields,
    own_ids,
    parse_input,
)
from pipeline.ledger import Ledger, Unreported
from pipeline.model import (
    PATIENT_SERIES_CHOICES,
    Contributor,
    DocumentRecord,
    Frozen,
    Outcome,
    ParsedDocument,
    PatientDemographics,
    Problem,
    Reason,
    Status,
    Visibility,
    count_rejects,
)
from pipeline.processes import can_start_processes
from pipeline.quality import GateItem, QualityGate
from pipeline.settings import Settings
from pipeline.state.locks import HeldLock
from pipeline.store import KeyedStore, sha256_hex

log = logging.getLogger(__name__)

# Inputs parsed in threads before ``parse_ahead`` starts worker processes: a run of a
# handful of files (an upload, a small batch) never pays their start-up (~0.5 s of CPU for
# the forkserver's imports, then a fork per worker), and a large one has them ready, started
# in the background, after its first inputs. Beyond ~2 ms of pure-Python parsing per text
# document, the processes pay back their start-up within the first few hundred inputs.
_PROCESSES_AFTER = 16

# A file of documents parsed a document at a time (HL7) this small is read by ``process``
# itself, never sent ahead to a thread or a worker: its messages parse in ~0.1 ms a KB,
# less than the trip costs (the input pickled there, its documents pickled back and
# rebuilt here: ~0.15 ms of CPU a message over the two processes, besides the executor's
# bookkeeping for each input). Sent ahead, 1,468 lab messages in 722 files cost 0.4 ms of
# CPU a message more in all, and the main process no less.
_READ_HERE_BELOW = 16 * 1024

# Characters of text the pending records may hold before a flush comes early, whatever
# their count: a flush of ``CARNET_FLUSH_EVERY`` long reports would otherwise hold each
# one's text (up to ``CARNET_MAX_TEXT_CHARS``) until then.
_PENDING_TEXT_CHARS = 32 * 1024 * 1024

# Bytes of inputs held for the next flush's ``put_many`` before they are stored earlier.
_UNSTORED_BYTES = 32 * 1024 * 1024

# Closed accounts read in one query once per flush while there are at most this many (see
# ``Pipeline._closure``); beyond, each patient's account is asked about on its own.
_CLOSED_READ_AT_ONCE = 2000


@dataclass(frozen=True)
class Backends:
    """What an ingestion reads and writes, opened together by ``open_backends``."""

    index: DocumentIndex
    # Raw documents are encrypted at rest: per-object keys until the patient is known,
    # then the patient's data key (so erasure can destroy it).
    store: KeyedStore
    ledger: Ledger
    # Identity traits (birth dates) and closed accounts live with the access rules.
    rules: AccessRules
    registry: ParserRegistry
    # How parse worker processes build the same registry (None: the caller's registry,
    # parsed in threads of this process only).
    recipe: RegistryRecipe | None = None
    # How to close what ``open_backends`` opened (what the caller gave stays the caller's).
    closers: tuple[Callable[[], None], ...] = field(default=(), repr=False)

    def close(self) -> None:
        for close in self.closers:
            close()


def open_backends(
    settings: Settings,
    *,
    index: DocumentIndex | None = None,
    store: KeyedStore | None = None,
    registry: ParserRegistry | None = None,
    recipe: RegistryRecipe | None = None,
) -> Backends:
    """The configured backends; ``index``, ``store`` and ``registry``, when given, are
    used instead (an index given by the caller stays the caller's to close). ``recipe``:
    how the parsers are built, in this process and in parse workers (the default
    registry when neither is given)."""
    opened_index = (
        open_index(settings.effective_index_url, alias=settings.index.es_alias) if index is None else None
    )
    ledger = Ledger(settings)
    rules = AccessRules(settings)
    if registry is None and recipe is None:
        recipe = RegistryRecipe(
            default_registry,
            ParserOptions(
                ocr_lang=settings.ocr.lang,
                ocr_timeout_s=settings.ocr.timeout_s,
                min_text_chars_per_page=settings.ocr.min_text_chars_per_page,
                ocr_workers=settings.ocr.workers,
                ocr_max_pages=settings.ocr.max_pages,
                max_text_chars=settings.ingestion.max_text_chars,
            ),
        )
    return Backends(
        index=index or opened_index,  # type: ignore[arg-type]
        # Its own store commits keyring rows once per flush (``sync``), not per document.
        store=store or open_encrypted_store(settings, commit_on_sync=True),
        ledger=ledger,
        rules=rules,
        registry=registry or recipe.registry(),  # type: ignore[union-attr]
        recipe=None if registry is not None else recipe,
        closers=(*([opened_index.close] if opened_index is not None else []), ledger.close, rules.close),
    )


@dataclass
class _Pending:
    record: DocumentRecord
    outcome_index: int
    supersedes: str | None
    raw_sha: str  # the input file's bytes, what a replay reads back
    batch: str | None
    part: int | None
    demographics: PatientDemographics | None
    replaced: bool = False  # a version of its series names it as the one it replaces
    parent_series: str | None = None  # the series of the parent it names, when not its own


class _JournalItem(Frozen):
    """One record of a journaled flush: what to write, and what to quarantine if refused."""

    record: DocumentRecord
    supersedes: str | None
    raw_sha: str
    part: int | None
    batch: str | None
    outcome_at: int  # position in the flush's outcomes


class _Withdrawal(Frozen):
    """One version a producer's deletion takes out of every search."""

    patient_id: str
    doc_id: str
    at: dt.datetime


class _FlushWrites(Frozen):
    """The write-ahead record of one flush (the ``writes`` column of the ledger's journal)."""

    items: tuple[_JournalItem, ...]
    raw_shas: dict[int, str]  # position in the flush's outcomes -> the input's raw bytes
    withdrawals: tuple[_Withdrawal, ...] = ()

    def withdraw(self, index: DocumentIndex) -> None:
        for w in self.withdrawals:
            index.withdraw(w.patient_id, w.doc_id, w.at)  # idempotent: the same date again

    def supersedes(self) -> list[Supersede]:
        return [
            Supersede(patient_id=i.record.patient_id, doc_id=i.supersedes, by_doc_id=i.record.doc_id)
            for i in self.items
            if i.supersedes
        ]


def _index_key(settings: Settings) -> str:
    """Which index a journaled flush was for (an Elasticsearch URL holds many aliases)."""
    url = settings.effective_index_url
    return url if url.startswith("sqlite:") else f"{url}#{settings.index.es_alias}"


class Pipeline:
    """The opened backends and the per-run state of one ingestion."""

    def __init__(
        self,
        settings: Settings,
        backends: Backends | None = None,
        *,
        gate: QualityGate | None = None,
        batch_label: str = "adhoc",
        sees: Callable[[str, str], bool] | None = None,
    ) -> None:
        """``backends``: closed with the pipeline (``open_backends(settings)`` when None);
        ``sees``: which filed documents the sender may see (an upload: ``Versions``)."""
        self.settings = settings
        self.gate = gate if gate is not None else QualityGate(settings)
        self.batch_label = batch_label
        self.batch_flags: list[Problem] = []
        self.data_docs_index: str | None = None
        self.backends = backends if backends is not None else open_backends(settings)
        self.index = self.backends.index
        self.store = self.backends.store
        self.registry = self.backends.registry
        self.ledger = self.backends.ledger
        self.rules = self.backends.rules
        self._ref_key = patient_ref_key(settings)
        self._refs: dict[str, str] = {}  # patient id -> patient_ref (a keyed hash: fixed)
        self._open_accounts: set[str] = set()  # refs found open since the last flush
        # Every closed account, read once since the last flush (None: too many to read).
        self._closed_accounts: dict[str, Reason] | None = None
        self._closed_read = False
        self.quarantine = Quarantine(self.store, self.ledger, self._ref_key)
        self.versions = Versions(self.index, sees=sees)
        self.clock = StageClock()
        self.outcomes: list[Outcome] = []
        self._pending: list[_Pending] = []
        self._pending_chars = 0  # characters of text the pending records hold
        # Documents reported ``duplicate`` of a record still pending, by its doc id:
        # (outcome position, batch, part). Refused at the flush, it takes them along.
        self._copies: dict[str, list[tuple[int, str | None, int | None]]] = {}
        # Inputs and contents not stored yet, by hash: [bytes, owner or None] (see
        # ``process``); kept together at the next ``sync`` or past ``_UNSTORED_BYTES``.
        self._unstored: dict[str, list[Any]] = {}
        self._unstored_bytes = 0
        # (input, patient) links not handed to the store yet, and the patients the input
        # being processed named (see ``_hold_raw``).
        self._links: set[tuple[str, str]] = set()
        self._raw_patients: set[str] = set()
        # Every INS the input's rejected documents name (identified or not): an input that
        # names more than one person is kept under a key of its own (``_settle_raw``).
        self._raw_names: set[str] = set()
        # The input being processed, whose key is not decided before all of it is read.
        self._raw_open: str | None = None
        # Inputs of several patients waiting to be stored: one found stored under a
        # patient's key (filed before) is then put under a key of its own (``share``).
        self._shared: set[str] = set()
        # Inputs being parsed ahead of ``process`` (see ``parse_ahead``), by id of the input.
        self._parsing: dict[int, Future[Parsed]] = {}
        self._parse_pool: ParsePool | None = None  # while ``parse_ahead`` uses processes
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
        reach(self.settings.ingestion.fault_point, point)

    def close(self) -> None:
        self.flush()
        self._release()

    def sync(self) -> None:
        """Make what this run stored durable (objects, their directory entries, keyring
        rows): before a flush is recorded and before a report or acknowledgement announces
        it, so neither ever names a document a power cut could take back."""
        self._store_unstored()
        with self.clock.stage("store"):
            self.store.sync()

    def _release(self, *, failed: bool = False) -> None:
        if failed:
            # Nothing more is written; no recorded flush names what is not stored yet, and
            # those inputs stay in their feed until a rerun acknowledges them.
            self._unstored.clear()
        self.sync()
        self.backends.close()
        self._held.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            # The run failed (a backend died…): write nothing more, release what is open.
            self._release(failed=True)
            return
        self.close()

    # -- one input -------------------------------------------------------------------------

    def process(self, item: InputFile) -> list[Outcome]:
        """Run one raw input through every stage; return the outcome of each document in it."""
        self._raw_patients, self._raw_names = set(), set()
        unread = item.unread()
        if unread is not None:
            start = len(self.outcomes)
            self._reject(item, self.store.put(b""), None, [unread])
            return self.outcomes[start:]
        # Parsed and identified before its bytes are kept, so that they are written once,
        # under the right key (the patient's; their own when rejected, owner unknown or
        # several patients: see ``_settle_raw``). Nothing is lost by the wait: the input
        # stays in its feed until the batch is acknowledged, and ``sync`` keeps it before
        # any flush or report names it.
        raw_sha = sha256_hex(item.data)
        if raw_sha not in self._unstored:
            self._unstored[raw_sha] = [item.data, None]
            self._unstored_bytes += len(item.data)
        start = len(self.outcomes)
        self._raw_open = raw_sha

        if item.manifest_problem:
            self._reject(
                item, raw_sha, None, [Problem(code=Reason.MANIFEST_MISMATCH, message=item.manifest_problem)]
            )
        else:
            for parsed in self._parsed(item):
                if isinstance(parsed, ParseFailure):
                    # The input is rejected (and quarantined) whole; messages of it read before a
                    # parser crashed keep their own outcomes, as a rerun of the input would give.
                    self._reject(item, raw_sha, None, [parsed.problem], exception=parsed.exception)
                    continue
                if item.parts is not None and parsed.part not in item.parts:
                    continue  # a replay of other messages of this file
                self._process_document(item, raw_sha, parsed)
                if (
                    len(self._pending) >= self.settings.ingestion.flush_every
                    or self._pending_chars >= _PENDING_TEXT_CHARS
                ):
                    # A file of many documents (an HL7 batch) is flushed as it goes, as
                    # ``_flush_if_pending`` may do: its records are never all held at once.
                    self.flush()
        self._settle_raw(raw_sha)
        # Every owner in the input is known now; its bytes are kept with the flush's
        # (one batch of keyring reads: ``store.put_many``), or now if many bytes wait.
        if self._unstored_bytes > _UNSTORED_BYTES:
            self._store_unstored()
        return self.outcomes[start:]

    def parse_ahead(self, items: Iterable[InputFile]) -> Iterator[InputFile]:
        """``items`` as they come, each already being parsed a few inputs ahead.

        Parsing runs beside ``process``, which takes the earlier inputs through the other
        stages: in ``ocr.workers`` threads for the first inputs (enough for OCR, where
        tesseract runs outside the GIL), then in as many worker processes (``ParsePool``:
        pypdf and the other parsers are pure Python). Only parsing moves: storing,
        identifying, indexing and outcomes stay in input order, in this thread. At most
        twice ``ocr.workers`` inputs are held ahead. A file of more documents than a flush
        holds is not parsed ahead: ``process`` reads it one document at a time; nor is a small
        one, cheaper to read here than to send to a worker (``_read_here``).
        The quality gate's GX is started in its own process at the first input
        (``QualityGate.start``): its seconds of import then overlap the start-up and the
        first parses instead of holding the first flush.
        """
        workers = self.settings.ocr.workers
        if workers <= 1:
            yield from items
            return
        window: deque[InputFile] = deque()
        threads: ThreadPoolExecutor | None = ThreadPoolExecutor(workers, thread_name_prefix="parse")
        try:
            for seen, item in enumerate(items):
                if seen == 0:
                    self.gate.start()
                # Else rejected unparsed, or read by ``process`` one document at a time.
                if not item.manifest_problem and item.unread() is None and not self._read_here(item):
                    if (
                        seen >= _PROCESSES_AFTER
                        and self._parse_pool is None
                        and self.backends.recipe is not None
                        and can_start_processes()
                    ):
                        # At the first input sent ahead past the first few: a feed of small
                        # HL7 files, all read here, starts no process.
                        self._parse_pool = ParsePool(self.backends.recipe, workers)
                    if threads is not None and self._parse_pool is not None and self._parse_pool.ready():
                        # The threads' parses end first: this process's tesseracts and the
                        # workers' would otherwise run together, past ``workers``.
                        threads.shutdown(wait=True)
                        threads = None
                    if threads is not None:
                        self._parsing[id(item)] = threads.submit(self._parse, item)
                    else:
                        assert self._parse_pool is not None
                        self._parsing[id(item)] = self._parse_pool.submit(item)
                window.append(item)
                if len(window) > 2 * workers:
                    yield window.popleft()
            while window:
                yield window.popleft()
        finally:
            for future in self._parsing.values():
                future.cancel()
            self._parsing.clear()
            if threads is not None:
                threads.shutdown(wait=False, cancel_futures=True)
            if self._parse_pool is not None:
                self._parse_pool.close()
                self._parse_pool = None

    def _parse(self, item: InputFile) -> Parsed:
        return parse_input(self.registry, item)

    def _read_here(self, item: InputFile) -> bool:
        """Whether ``item`` is left to ``process`` to read one document at a time instead of
        being parsed ahead: a file of more documents than a flush holds (an HL7 batch), or
        of fewer than ``_READ_HERE_BELOW`` bytes. Parsed ahead, all the documents of a big
        one (~15 KB each for a lab result) would be held at once, in the worker and again
        here; read here, a flush's worth at most."""
        batch = streaming(self.registry.choose(item.data) if item.data else None)
        return batch is not None and (
            len(item.data) < _READ_HERE_BELOW
            or batch.count_documents(item.data) > self.settings.ingestion.flush_every
        )

    def _parsed(self, item: InputFile) -> Iterator[ParsedDocument | ParseFailure]:
        """``item``'s documents: what ``parse_ahead`` parsed for it, else read here, each
        when asked for (``iter_parsed``); the time spent reading counts as "parse"."""
        ahead = self._parsing.pop(id(item), None)
        if ahead is None:
            documents = iter_parsed(self.registry, item)
            while True:
                with self.clock.stage("parse"):
                    parsed = next(documents, None)
                if parsed is None:
                    return
                yield parsed
        with self.clock.stage("parse"):
            # A future of the threads, or the pool's: the pool also parses again, alone,
            # an input whose worker died.
            read, problem, exc_text = (
                ahead.result() if self._parse_pool is None else self._parse_pool.result(item, ahead)
            )
        yield from read
        if problem is not None:
            yield ParseFailure(problem, exc_text)

    def _process_document(self, item: InputFile, raw_sha: str, doc: ParsedDocument) -> None:
        if doc.withdraw and not any(w.blocking for w in doc.warnings):
            self._withdraw(item, raw_sha, doc)
            return
        doc = cap_text(doc, self.settings.ingestion.max_text_chars)
        examined = examine(doc, record_of=item.record_of, clock=self.clock)
        if isinstance(examined, Rejection):
            self._reject(item, raw_sha, doc, list(examined.problems))
            return
        doc, patient = examined.doc, examined.patient_id
        closure = self._closure(patient)
        if closure is not None:
            self._reject(item, raw_sha, doc, list(closed_account(closure).problems))
            return
        if examined.blocking:
            self._reject(item, raw_sha, doc, list(examined.blocking), patient_id=patient)
            return

        content = doc.content or item.data
        if content is item.data:
            content_sha = raw_sha
            self._assign(raw_sha, patient)
        else:
            content_sha = self._keep(content, patient)
            if content_sha != raw_sha:  # the input holds more than this document's bytes
                self._hold_raw(raw_sha, patient)
        series_id, doc_id = document_ids(item.producer, patient, doc, content_sha)
        if self.versions.sees is not None and item.contributor is not None:
            series_id, doc_id = self._sender_ids(patient, item.contributor, series_id, doc_id)
        parent_series = None
        if doc.producer_document_id and doc.refers_to:
            # A replacement naming its parent joins the parent's series.
            self._flush_if_pending(item.producer, doc.refers_to)
            parent_series = self.versions.parent_series(patient, item.producer, doc.refers_to)
            series_id = parent_series or series_id
        replaced = False
        if ids := own_ids(doc):
            # A replacement that came first (in an earlier run, or earlier in this one) names
            # this document: it joins the replacement's series as an older version, already
            # superseded, as a late version is ("indexed"), whatever their version numbers.
            with self.clock.stage("dedup"):
                later = self.versions.replacement_series(
                    patient, item.producer, ids, content_sha=content_sha, series_id=series_id
                )
            if later is not None:
                series_id, replaced = later, True
        parent_series = parent_series if replaced and parent_series != series_id else None

        outcome_base = outcome_fields(item, examined, content_sha)
        version = version_key(doc.version, examined.document_date)
        with self.clock.stage("dedup"):
            duplicate_of, supersedes, newer = self.versions.existing(
                patient,
                content_sha,
                series_id,
                version,
                doc_id,
                replaced=replaced,
                parent_series=parent_series,
            )
        if duplicate_of:
            self._copies.setdefault(duplicate_of, []).append((len(self.outcomes), item.batch, doc.part))
            self._raw_sha_of[len(self.outcomes)] = raw_sha
            self.outcomes.append(self._duplicate(doc.source_ref, duplicate_of, outcome_base))
            return

        record = build_record(
            item,
            examined,
            doc_id=doc_id,
            series_id=series_id,
            content_sha=content_sha,
            content=content,
            superseded_by=newer,
        )
        status = Status.REPLACED if supersedes else Status.INDEXED
        self.outcomes.append(
            Outcome(status=status, doc_id=doc_id, reasons=tuple(p for p in record.warnings), **outcome_base)
        )
        self._raw_sha_of[len(self.outcomes) - 1] = raw_sha
        self._pending.append(
            _Pending(
                record,
                len(self.outcomes) - 1,
                supersedes,
                raw_sha,
                item.batch,
                doc.part,
                doc.demographics,
                replaced,
                parent_series,
            )
        )
        self._pending_chars += len(record.text)
        self.versions.remember(record)

    def _sender_ids(self, patient: str, sender: Contributor, series_id: str, doc_id: str) -> tuple[str, str]:
        """(series id, doc id) of an upload: its own, unless a filed document its sender may
        not see has that id (a producer's PDF of the same bytes). Then the sender's copy gets
        one of its own (one per sender, so that sending it again finds it), rather than
        overwriting that document or being told it is there."""
        filed = self.index.get(patient, doc_id)
        if filed is None or self.versions.sees is None or self.versions.sees(patient, doc_id):
            return series_id, doc_id
        copy = hash_id("copy", doc_id, sender.role, sender.subject)
        return (copy if series_id == doc_id else series_id), copy

    def _patient_ref(self, patient_id: str) -> str:
        ref = self._refs.get(patient_id)
        if ref is None:
            ref = self._refs[patient_id] = patient_ref(self._ref_key, patient_id)
        return ref

    def _closure(self, patient_id: str) -> Reason | None:
        """Why the patient's account refuses documents, or None.

        An account found open is taken as open until the next flush, without asking
        again: ``flush`` asks once more for all its records (``_refuse_closed``), so a
        closure made meanwhile still refuses them, and nothing the cache answers reaches
        the index unchecked. A closed account is asked about every time (rare), so a
        reopening counts at once.

        While closed accounts are few, they are all read in one query the first time after
        a flush, and an account not among them is found open without a query of its own
        (a lab feed names a new patient in almost every message); it is taken as open
        until the next flush, on the same terms."""
        ref = self._patient_ref(patient_id)
        if ref in self._open_accounts:
            return None
        if not self._closed_read:
            self._closed_accounts = self.rules.closed_accounts(at_most=_CLOSED_READ_AT_ONCE)
            self._closed_read = True
        if self._closed_accounts is not None and ref not in self._closed_accounts:
            self._open_accounts.add(ref)
            return None
        closure = self.rules.closure(ref)
        if closure is None:
            self._open_accounts.add(ref)
        return closure

    def _refuse_closed(self, pending: list[_Pending]) -> list[_Pending]:
        """The flush's records whose account is still open, asked in one query: an account
        closed since a record was examined (erasure, opposition) refuses it now, as
        ``_process_document`` would have; its bytes are not kept under the patient's key."""
        self._open_accounts.clear()  # decided afresh from here on (see ``_closure``)
        self._closed_read = False
        if not pending:
            return pending
        closed = self.rules.closures(self._patient_ref(p.record.patient_id) for p in pending)
        if not closed:
            return pending
        kept = []
        for p in pending:
            closure = closed.get(self._patient_ref(p.record.patient_id))
            if closure is None:
                kept.append(p)
                continue
            for unstored in self._unstored.values():
                if unstored[1] == p.record.patient_id:
                    unstored[1] = None
            self._links = {link for link in self._links if link[1] != p.record.patient_id}
            self._raw_patients.discard(p.record.patient_id)
            if p.raw_sha == self._raw_open:  # still held in its input: not under another's key
                self._raw_names.add(p.record.patient_id)
            # Its INS is not written in the outcome nor the quarantine record (closed_account).
            self._reject_pending(p, list(closed_account(closure).problems), name_patient=False)
        return kept

    def _duplicate(self, source: str, doc_id: str, base: Mapping[str, Any]) -> Outcome:
        """A document the index already holds: ``duplicate`` — unless a killed run put it
        there and never reported it, in which case this run reports that run's outcome."""
        unreported = self._unreported.pop((source, doc_id), None)
        if unreported is None:
            return Outcome(status=Status.DUPLICATE, doc_id=doc_id, **base)  # type: ignore[arg-type]
        self.took_over.add(unreported.run_id)
        return Outcome(status=unreported.status, doc_id=doc_id, reasons=unreported.problems(), **base)  # type: ignore[arg-type]

    def _flush_if_pending(self, producer: str, document_ids: Sequence[str]) -> None:
        """Write pending records first when one of them is the document named: it may
        have arrived earlier in this very run (flushing only then keeps batches whole)."""
        if any(names_any(p.record, producer, document_ids) for p in self._pending):
            self.flush()

    def _keep(self, data: bytes, owner: str) -> str:
        """Keep ``data`` under ``owner``'s data key, with the other unstored bytes."""
        sha = sha256_hex(data)
        if sha not in self._unstored:
            self._unstored[sha] = [data, None]
            self._unstored_bytes += len(data)
        self._assign(sha, owner)
        return sha

    def _store_unstored(self) -> None:
        """Store every input and content not stored yet, each once, under its owner's key
        (or its own key when its owner is unknown): their owners are known by now."""
        if self._raw_open in self._unstored:
            # An input kept before all of it is read (a flush in its middle) is under a key of
            # its own until ``_settle_raw``: linked now, its erasure finds it if the run dies.
            self._links.update((self._raw_open, p) for p in self._raw_patients)
        if self._links:  # written with the objects' keyring rows, at the next sync
            self.store.link(self._links)
            self._links = set()
        if self._unstored:
            with self.clock.stage("store"):  # idempotent: a failed call is made again whole
                self.store.put_many([(data, owner) for data, owner in self._unstored.values()])
                for sha in sorted(self._shared):  # a no-op for those written just now
                    self.store.share(sha)
        self._unstored, self._unstored_bytes, self._shared = {}, 0, set()

    def _assign(self, sha: str, patient_id: str) -> None:
        """The input ``sha`` belongs to ``patient_id``: kept under their key when stored (the
        first owner named wins, as ``assign`` keeps it); re-keyed if already stored."""
        unstored = self._unstored.get(sha)
        if unstored is None:
            with self.clock.stage("store"):
                self.store.assign(sha, patient_id)
        elif unstored[1] is None:
            unstored[1] = patient_id

    def _hold_raw(self, raw_sha: str, patient_id: str) -> None:
        """The input ``raw_sha`` holds data of ``patient_id`` without being their document's
        own bytes (an HL7 message's file, a batch of messages, a rejected or withdrawing
        message): its key is decided once all of it is read (``_settle_raw``). An input of
        several patients is linked to each of them (only then: a row per HL7 file otherwise)."""
        self._raw_patients.add(patient_id)
        if len(self._raw_patients) > 1:  # the first one named included
            self._links.update((raw_sha, p) for p in self._raw_patients)

    def _settle_raw(self, raw_sha: str) -> None:
        """The input is read: kept under its one patient's key, or, when it holds data of
        several people, under a key of its own, which the erasure of any patient linked to
        it destroys: under one patient's key, a backup copy of it would stay readable after
        another one's erasure. Each message's own bytes are kept apart under its patient's
        key, so the others' documents stay whole."""
        patients, self._raw_open = self._raw_patients, None
        if len(patients | self._raw_names) <= 1:
            if patients:
                self._assign(raw_sha, next(iter(patients)))
            return
        unstored = self._unstored.get(raw_sha)
        if unstored is not None:
            unstored[1] = None
            self._shared.add(raw_sha)
        else:  # stored by a flush in its middle (under a key of its own, or a patient's before)
            with self.clock.stage("store"):
                self.store.share(raw_sha)

    def _withdraw(self, item: InputFile, raw_sha: str, doc: ParsedDocument) -> None:
        """A producer's deletion request: every version of the document it names leaves
        every search (kept, with ``withdrawn_at``); an unknown document is a rejection."""
        with self.clock.stage("identify"):
            identity = identify_patient(doc)
        patient = identity.patient_id
        if patient is None:
            self._reject(item, raw_sha, doc, list(identity.problems))
            return
        self._hold_raw(raw_sha, patient)
        names = tuple(
            dict.fromkeys(i for i in (doc.producer_document_id, *doc.document_ids, *doc.refers_to) if i)
        )
        # A withdrawal is a unit of commit of its own, decided under the flush lock: what
        # came before it is committed first, and a new version another worker is committing
        # is either withdrawn with its series or, committed after, decided against it.
        self.flush()
        self.sync()
        with self.clock.stage("index"), self.ledger.flush_lock() as lock:
            named, versions = self.versions.withdrawal(patient, item.producer, names)
            if versions:
                at = dt.datetime.now(dt.UTC)
                current = next((v for v in named if v.superseded_by is None), named[0])
                record = self.index.get(patient, current.doc_id)
                self.outcomes.append(Outcome(
                    source=doc.source_ref, status=Status.WITHDRAWN, doc_id=current.doc_id,
                    patient_id=patient, doc_class=record.doc_class if record else None,
                    type_code=record.type_code if record else doc.type_code, content_sha256=raw_sha,
                    producer=item.producer, format=doc.format, message_control_id=doc.message_control_id,
                ))  # fmt: skip
                self._commit_withdrawal(
                    lock,
                    _FlushWrites(
                        items=(),
                        raw_shas={0: raw_sha},
                        withdrawals=tuple(
                            _Withdrawal(patient_id=patient, doc_id=v.doc_id, at=at)
                            for v in versions.values()
                            if not v.withdrawn
                        ),
                    ),
                )
                log.info(
                    "withdrew %d version(s) of %s for producer %s at its request (%s)",
                    len(versions),
                    current.doc_id,
                    item.producer,
                    doc.source_ref,
                )
                return
        self._reject(
            item,
            raw_sha,
            doc,
            [
                Problem(
                    code=Reason.UNKNOWN_DOCUMENT,
                    message=f"deletion requested for a document this producer never filed for this "
                    f"patient (identified as {', '.join(names) or 'nothing'})",
                )
            ],
            patient_id=patient,
        )

    def _commit_withdrawal(self, lock: HeldLock, writes: _FlushWrites) -> None:
        """Under the flush lock, the withdrawal's outcome (the last one) and its index writes,
        journaled like a flush; other workers' flushes then decide again (its generation)."""
        if self.run_id is None:  # a bare pipeline: index writes only
            writes.withdraw(self.index)
            return
        start, end = self._recorded, len(self.outcomes)
        if not writes.withdrawals:  # every version was withdrawn already: nothing to write
            lock.verify()
            self.ledger.record_outcomes(self.run_id, self.batch_name, self.outcomes[start:end])
        else:
            flush_id = self.ledger.journal_flush(
                self.run_id,
                _index_key(self.settings),
                self.batch_name,
                writes.model_dump_json(),
                self.outcomes[start:end],
            )
            self.checkpoint("after_journal")
            writes.withdraw(self.index)
            self.checkpoint("before_ledger_record")
            lock.verify()
            self.ledger.complete_flush(flush_id, self.run_id, self.batch_name, self.outcomes[start:end])
        self._recorded = end
        self._generation = self.ledger.flush_generation(_index_key(self.settings))
        self.quarantine.release(self.outcomes[start:end], writes.raw_shas)

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
        if patient_id is not None:  # identified: its bytes are that patient's to erase
            self._hold_raw(raw_sha, patient_id)
        self.outcomes.append(
            Outcome(
                source=source_ref,
                status=Status.REJECTED,
                patient_id=patient_id,
                reasons=tuple(problems),
                content_sha256=raw_sha,
                producer=item.producer,
                format=doc.format if doc else None,
                ocr_pages=doc.ocr_pages if doc else 0,
                ocr_confidence=doc.ocr_confidence if doc else None,
                message_control_id=doc.message_control_id if doc else None,
            )
        )
        named = (
            [*named_ins(doc), *([patient_id] if patient_id else [])]
            if doc
            else [patient_id]
            if patient_id
            else []
        )
        self._raw_names.update(named)
        self.quarantine.keep(
            item.producer,
            item.batch,
            source_ref,
            raw_sha,
            doc.part if doc else None,
            problems,
            exception=exception,
            patient_id=patient_id,
            named=named,
        )

    def flush(self) -> None:
        """Gate the pending records, then commit them as one unit: write-ahead record, index
        (new versions with the supersede of the old ones), outcomes in the ledger.

        Gate-blocked and refused records become rejects, and so do the copies of them
        met since (first reported ``duplicate``). Without a run (a bare pipeline) only the
        index is written.
        """
        try:
            self._flush()
        finally:
            self._copies.clear()  # past the flush, their originals are committed or refused
        # By the end of a first flush, the parsers and the gate a run needs are imported and
        # the pending records dropped: what is alive now lives as long as the process.
        freeze_long_lived()

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        self._pending_chars = 0
        self.versions.flushed()
        queued = len(pending)
        pending = self._refuse_closed(pending)
        if pending:
            with self.clock.stage("quality_setup"):  # GX's import, once per process: not "quality"
                self.gate.prepare()
            with self.clock.stage("quality"):
                pending = self._apply_gate(pending)
        if self.run_id is None:
            self.sync()
            self._carry_patient_choices(pending)
            with self.clock.stage("index"):
                self._refuse(
                    pending, self.index.apply([p.record for p in pending], self._supersedes(pending))
                )
            self._record_birth_dates(pending)
            return
        end = len(self.outcomes)
        if end == self._recorded:
            return
        self.sync()  # once per flush, before the ledger or the index refers to what was stored
        with self.clock.stage("index"), self.ledger.flush_lock() as lock:
            start = self._recorded
            flush_id = None
            pending = self._decide_again(pending, start, refused=len(pending) < queued)
            self._carry_patient_choices(pending)
            if pending:
                self.checkpoint("before_journal")
                writes = _FlushWrites(
                    items=tuple(
                        _JournalItem(
                            record=p.record,
                            supersedes=p.supersedes,
                            raw_sha=p.raw_sha,
                            part=p.part,
                            batch=p.batch,
                            outcome_at=p.outcome_index - start,
                        )
                        for p in pending
                    ),
                    raw_shas={i - start: sha for i, sha in self._raw_sha_of.items() if i >= start},
                )
                flush_id = self.ledger.journal_flush(
                    self.run_id,
                    _index_key(self.settings),
                    self.batch_name,
                    writes.model_dump_json(),
                    self.outcomes[start:end],
                )
                self.checkpoint("after_journal")
                self._refuse(
                    pending,
                    self.index.apply(
                        [p.record for p in pending], self._supersedes(pending), checkpoint=self.checkpoint
                    ),
                )
                self._record_birth_dates(pending)
            self.checkpoint("before_ledger_record")
            lock.verify()  # lost: a rerun finishes the journaled flush under a lock it holds
            if flush_id is None:
                self.ledger.record_outcomes(self.run_id, self.batch_name, self.outcomes[start:end])
            else:
                self.ledger.complete_flush(flush_id, self.run_id, self.batch_name, self.outcomes[start:end])
            self._recorded = end
            self._generation = self.ledger.flush_generation(_index_key(self.settings))
            self.checkpoint("after_ledger_record")
            self.quarantine.release(
                self.outcomes[start:end],
                {i - start: sha for i, sha in self._raw_sha_of.items() if i >= start},
            )

    def _decide_again(self, pending: list[_Pending], start: int, *, refused: bool) -> list[_Pending]:
        """Under the flush lock: when another process committed a flush since this run last
        looked (``Ledger.flush_generation``), decide every pending record again against the
        index as it is now. Two workers never both index one content nor leave two live
        versions of a series: the later to commit gets ``duplicate``, or its place in the
        version chain corrected (it replaces the other's version, or arrives superseded).

        Likewise when this flush ``refused`` some of its records (gate, closed account): a
        version was decided against them, and must neither replace one never filed nor
        arrive superseded by it (hidden from every default search with no live version)."""
        if not refused and self.ledger.flush_generation(_index_key(self.settings)) == self._generation:
            return pending
        kept: list[_Pending] = []
        moved: dict[str, str] = {}  # a pending doc id -> the committed one it duplicates
        for p in pending:
            r = p.record
            duplicate_of, supersedes, newer = self.versions.existing(
                r.patient_id,
                r.content_sha256,
                r.series_id,
                version_key(r.version, r.document_date),
                r.doc_id,
                replaced=p.replaced,
                parent_series=p.parent_series,
            )
            old = self.outcomes[p.outcome_index]
            if duplicate_of:
                log.info(
                    "%s: committed meanwhile by another worker as %s (duplicate)", r.source, duplicate_of
                )
                moved[r.doc_id] = duplicate_of
                self.outcomes[p.outcome_index] = old.model_copy(
                    update={"status": Status.DUPLICATE, "doc_id": duplicate_of, "reasons": ()}
                )
                continue
            if (supersedes, newer) != (p.supersedes, r.superseded_by):
                p.supersedes = supersedes
                p.record = r.model_copy(update={"superseded_by": newer})
                self.outcomes[p.outcome_index] = old.model_copy(
                    update={"status": Status.REPLACED if supersedes else Status.INDEXED}
                )
            kept.append(p)
            self.versions.remember(p.record)
        self.versions.flushed()
        for i in range(start, len(self.outcomes)):  # duplicates of a record that went
            o = self.outcomes[i]
            if o.status is Status.DUPLICATE and o.doc_id in moved:
                self.outcomes[i] = o.model_copy(update={"doc_id": moved[o.doc_id]})
        return kept

    def _carry_patient_choices(self, pending: Sequence[_Pending]) -> None:
        """A new version joins its series with the choices the patient made on it (hidden
        from professionals): the choice is about the document, not one version of it, so a
        correction must not show what the patient hid. Decided under the flush lock, from
        the neighbouring version as committed (or as pending earlier in this flush)."""
        chosen: dict[str, tuple[Visibility, ...]] = {}
        for p in pending:
            r = p.record
            flags: set[Visibility] = set()
            for other in (p.supersedes, r.superseded_by):
                if other is None:
                    continue
                if other not in chosen:
                    found = self.index.get(r.patient_id, other)
                    chosen[other] = found.visibility if found is not None else ()
                flags.update(f for f in chosen[other] if f in PATIENT_SERIES_CHOICES)
            missing = tuple(sorted(flags - set(r.visibility)))
            if missing:
                p.record = r.model_copy(update={"visibility": r.visibility + missing})
            chosen[r.doc_id] = p.record.visibility

    def _record_birth_dates(self, pending: Sequence[_Pending]) -> None:
        """The birth dates the flush's accepted documents give: they refine the one the
        INS gives (a minor's majority day). One transaction for the flush."""
        self.rules.record_birth_dates(
            (
                (p.record.patient_id, p.demographics.birth_date)
                for p in pending
                if self.outcomes[p.outcome_index].status is not Status.REJECTED
                and p.demographics is not None
                and p.demographics.birth_date is not None
            ),
            dt.datetime.now(dt.UTC),
        )

    @staticmethod
    def _supersedes(pending: Sequence[_Pending]) -> list[Supersede]:
        return [
            Supersede(patient_id=p.record.patient_id, doc_id=p.supersedes, by_doc_id=p.record.doc_id)
            for p in pending
            if p.supersedes
        ]

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
                log.warning(
                    "finishing flush %s of run %s (%d records) left unfinished by a killed run",
                    journaled.flush_id,
                    journaled.run_id,
                    len(writes.items),
                )
                failures = {
                    f.doc_id: f.message
                    for f in self.index.apply([i.record for i in writes.items], writes.supersedes())
                }
                writes.withdraw(self.index)
                outcomes = list(journaled.outcomes)
                for i in writes.items:
                    if i.record.doc_id in failures:
                        problems = [Problem(code=Reason.INDEX_ERROR, message=failures[i.record.doc_id])]
                        outcomes[i.outcome_at] = outcomes[i.outcome_at].model_copy(
                            update={"status": Status.REJECTED, "doc_id": None, "reasons": tuple(problems)}
                        )
                        self.quarantine.keep(
                            i.record.producer,
                            i.batch,
                            i.record.source,
                            i.raw_sha,
                            i.part,
                            problems,
                            patient_id=i.record.patient_id,
                        )
                lock.verify()
                if self.ledger.complete_flush(
                    journaled.flush_id, journaled.run_id, journaled.batch, outcomes
                ):
                    self.quarantine.release(outcomes, writes.raw_shas)
        return len(unfinished)

    def _apply_gate(self, pending: list[_Pending]) -> list[_Pending]:
        """Run the batch quality gate; return the records that may be indexed."""
        counts = Counter(o.status.value for o in self.outcomes)
        result = self.gate.validate(
            [GateItem(record=p.record, demographics=p.demographics) for p in pending],
            batch_label=self.batch_label,
            outcome_counts=counts,
        )
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

    def _reject_pending(self, p: _Pending, problems: list[Problem], *, name_patient: bool = True) -> None:
        """A pending record refused; ``name_patient=False``: its patient is named by keyed
        hashes only (a closed account), not in the outcome nor the quarantine record."""
        patient_id = p.record.patient_id if name_patient else None
        refused: dict[str, Any] = {"status": Status.REJECTED, "doc_id": None, "reasons": tuple(problems)}
        if not name_patient:
            refused["patient_id"] = None
        named = [p.record.patient_id, *find_printed_ins(p.record.text)]
        # The same content met again since was reported a duplicate of this record, which
        # is not filed: each copy is refused with it, its own input kept in quarantine.
        copies = [(p.outcome_index, p.batch, p.raw_sha, p.part)] + [
            (at, batch, self._raw_sha_of[at], part)
            for at, batch, part in self._copies.pop(p.record.doc_id, ())
        ]
        for at, batch, raw_sha, part in copies:
            outcome = self.outcomes[at]
            self.outcomes[at] = outcome.model_copy(update=refused)
            self.quarantine.keep(
                outcome.producer or p.record.producer, batch, outcome.source, raw_sha, part, problems,
                patient_id=patient_id, named=named,
            )  # fmt: skip

    def metrics(self, outcomes: Sequence[Outcome] | None = None) -> dict[str, object]:
        """Counts per status, class, producer and reason, OCR figures and stage times."""
        outs = self.outcomes if outcomes is None else outcomes
        ocr = [o for o in outs if o.ocr_pages]
        confs = [o.ocr_confidence for o in ocr if o.ocr_confidence is not None]
        return {
            "documents": len(outs),
            "by_status": dict(Counter(o.status.value for o in outs)),
            "by_class": dict(
                Counter(
                    o.doc_class.value
                    for o in outs
                    if o.doc_class and o.status not in (Status.REJECTED, Status.WITHDRAWN)
                )
            ),
            "by_producer": {
                p: dict(Counter(o.status.value for o in outs if o.producer == p))
                for p in sorted({o.producer or "" for o in outs})
            },
            "rejected_by_reason": count_rejects(
                (r.code for r in o.reasons if r.blocking) for o in outs if o.status is Status.REJECTED
            ),
            "ocr_pages": sum(o.ocr_pages for o in ocr),
            "ocr_mean_confidence": round(sum(confs) / len(confs), 1) if confs else None,
            "seconds_per_stage": {k: round(v, 3) for k, v in self.clock.seconds.items()},
        }
