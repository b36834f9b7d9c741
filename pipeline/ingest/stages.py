"""The per-document stages, pure: raw bytes → parsed documents, and a parsed document →
examined (classified, checked, identified) or rejected, then → the record to keep.

Nothing here opens or queries a backend: what needs the index, the store or the access
rules (duplicates, versions, closed accounts, quarantine) is the ``Pipeline``'s
(``pipeline.ingest.run``), which calls these stages in order.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
import traceback
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from parsers.base import streaming
from parsers.registry import ParserRegistry
from pipeline.classification import classify_document
from pipeline.dates import find_document_date
from pipeline.errors import EncryptedDocumentError, ParserError, UnreadableFileError, UnsafePathError
from pipeline.feeds import printable_name
from pipeline.identity import IdentityResult, find_finess, find_rpps, identify_in_record, identify_patient
from pipeline.model import (
    Classification,
    Contributor,
    DocClass,
    DocumentRecord,
    ParsedDocument,
    Problem,
    Reason,
)
from pipeline.observations import extract_observations
from pipeline.quality import check_document

log = logging.getLogger(__name__)

_UNREADABLE = frozenset({Reason.UNREADABLE_SCAN, Reason.EMPTY_DOCUMENT})
# Classes whose text may print lab results or dose indicators (a prescription's doses are not).
_RESULT_CLASSES = frozenset({DocClass.BIOLOGY, DocClass.IMAGING, DocClass.OTHER})
_CLOSED = {
    Reason.ACCOUNT_CLOSED: "the patient's account is closed: documents for this INS are refused "
    "(it is reopened only at the patient's request)",
    Reason.OPPOSITION: "the patient opposed the creation of their record: documents for this INS are refused",
}

# What parsing one input gives: its documents, and the problem that stopped the parse
# after them, if one did (and the traceback of a parser that crashed).
Parsed = tuple[list[ParsedDocument], Problem | None, str | None]


def hash_id(*parts: str) -> str:
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
    # Why the file could not be read (its permissions, removed since listed), if so.
    unreadable: str | None = None
    # A replay of some messages of a file: only these (1-based) are decided again, the
    # file's others left as they stand (None: every document of the input).
    parts: frozenset[int] | None = None

    @classmethod
    def never_read(
        cls, error: UnsafePathError | UnreadableFileError, *, source: str, producer: str, batch: str | None
    ) -> InputFile:
        """An input whose file was not read, rejected for why (``unread``)."""
        unsafe = isinstance(error, UnsafePathError)
        return cls(
            data=b"",
            source=source,
            producer=producer,
            batch=batch,
            unsafe_path=error.message if unsafe else None,
            unreadable=None if unsafe else error.message,
        )

    def unread(self) -> Problem | None:
        """Why the file's bytes were never read (it is rejected for that), or None."""
        if self.unsafe_path is not None:
            return Problem(code=Reason.UNSAFE_PATH, message=self.unsafe_path)
        if self.unreadable is not None:
            return Problem(code=Reason.UNREADABLE_FILE, message=self.unreadable)
        return None

    def __post_init__(self) -> None:
        # Names come from the filesystem, where any byte sequence is allowed: a name that is
        # not UTF-8 is escaped once, here, so every report and record downstream can hold it.
        self.source = printable_name(self.source)
        self.producer = printable_name(self.producer)
        self.batch = printable_name(self.batch) if self.batch is not None else None


@dataclass(frozen=True)
class Rejection:
    """Why a document is refused (and whose it is, when that was found)."""

    problems: tuple[Problem, ...]
    patient_id: str | None = None


@dataclass(frozen=True)
class Examined:
    """A document that went through classification, the per-document checks and
    identification: filed under ``identity.patient_id`` unless ``blocking`` says no."""

    doc: ParsedDocument  # with the results its text prints, when it had none structured
    classification: Classification
    document_date: dt.date | None
    identity: IdentityResult
    problems: tuple[Problem, ...]

    @property
    def patient_id(self) -> str:
        assert self.identity.patient_id is not None  # examine() rejects a document without one
        return self.identity.patient_id

    @property
    def blocking(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.blocking)


@dataclass(frozen=True)
class ParseFailure:
    """Why the parse of an input stopped (and the traceback of a parser that crashed)."""

    problem: Problem
    exception: str | None = None


def iter_parsed(registry: ParserRegistry, item: InputFile) -> Iterator[ParsedDocument | ParseFailure]:
    """The documents of one raw input, by the parser its content calls for, each read only
    when asked for if the parser can (``StreamingParser``: an HL7 batch); then, if the
    parse stopped or found nothing, a ``ParseFailure``, last."""
    if not item.data:
        # A failed upload or export, not a format: the producer is told to send it whole.
        yield ParseFailure(Problem(code=Reason.EMPTY_DOCUMENT, message="empty file (0 bytes)"))
        return
    parser = registry.choose(item.data)
    if parser is None:
        from parsers.image import unread_photo_format  # Pillow, imported with the first such file

        what = unread_photo_format(item.data) or "content not recognised as PDF, image, HL7 v2 or CDA"
        yield ParseFailure(Problem(code=Reason.UNSUPPORTED_FORMAT, message=what))
        return
    found = 0
    try:
        batch = streaming(parser)
        if batch is not None:
            documents: Iterable[ParsedDocument] = batch.iter_documents(item.data, source=item.source)
        else:
            documents = parser.parse(item.data, source=item.source)
        for doc in documents:
            found += 1
            yield doc
    except EncryptedDocumentError as exc:
        yield ParseFailure(Problem(code=Reason.ENCRYPTED_DOCUMENT, message=exc.message))
    except ParserError as exc:
        yield ParseFailure(Problem(code=Reason.PARSE_ERROR, message=exc.message))
    except Exception as exc:  # noqa: BLE001 — the parser boundary: one bad file never stops the batch
        log.exception("parser %s crashed on %s (producer %s)", parser.name, item.source, item.producer)
        message = f"{parser.name} parser failed: {type(exc).__name__}: {exc}"
        yield ParseFailure(Problem(code=Reason.PARSE_ERROR, message=message), traceback.format_exc())
    else:
        if not found:  # a file a parser accepted but found nothing in is still accounted for
            yield ParseFailure(Problem(code=Reason.EMPTY_DOCUMENT, message="no document found in the file"))


def parse_input(registry: ParserRegistry, item: InputFile) -> Parsed:
    """``iter_parsed``, every document read before the result is returned."""
    documents: list[ParsedDocument] = []
    for parsed in iter_parsed(registry, item):
        if isinstance(parsed, ParseFailure):
            return documents, parsed.problem, parsed.exception
        documents.append(parsed)
    return documents, None, None


def cap_text(doc: ParsedDocument, max_chars: int) -> ParsedDocument:
    """``doc`` with at most ``max_chars`` of text (0: no limit), cut after a whole line or
    word when one ends near the limit, and a ``text_truncated`` warning saying so. Only
    the text is cut: the bytes (``content``) and structured results stay whole."""
    if not max_chars or len(doc.text) <= max_chars:
        return doc
    kept = doc.text[:max_chars]
    for blank in ("\n", " "):
        at = kept.rfind(blank, max_chars - 1000)
        if at > 0:
            kept = kept[:at]
            break
    warning = Problem(
        code=Reason.TEXT_TRUNCATED,
        blocking=False,
        message=f"text of {len(doc.text):,} characters: the first {len(kept):,} are indexed "
        f"(CARNET_MAX_TEXT_CHARS {max_chars:,}); the document is kept whole",
    )
    return doc.model_copy(update={"text": kept, "warnings": (*doc.warnings, warning)})


def examine(doc: ParsedDocument, *, record_of: str | None, clock: StageClock) -> Examined | Rejection:
    """Classify, check and identify one parsed document (a withdrawal is not examined).

    Rejected here: a parser's blocking warning, an unreadable document (reported as such,
    not as one "without INS"), a document no patient is found for. Other blocking
    problems are left in ``Examined.blocking``: a closed account is reported before them.
    """
    blocking = [w for w in doc.warnings if w.blocking]
    if blocking:
        return Rejection(tuple(blocking))
    with clock.stage("classify"):
        classification = classify_document(doc)
        document_date = doc.document_date or find_document_date(doc.text)
        structured = bool(doc.results)
        if not structured and classification.doc_class in _RESULT_CLASSES:
            # Results printed in text are checked like structured ones (one observation model).
            doc = doc.model_copy(update={"results": extract_observations(doc.text)})
    with clock.stage("quality"):
        problems = check_document(doc, classification, document_date, structured_results=structured)
    unreadable = [p for p in problems if p.blocking and p.code in _UNREADABLE]
    if unreadable:
        return Rejection(tuple(unreadable))
    with clock.stage("identify"):
        identity = identify_in_record(doc, record_of) if record_of else identify_patient(doc)
    if identity.patient_id is None:
        return Rejection(identity.problems)
    return Examined(
        doc=doc,
        classification=classification,
        document_date=document_date,
        identity=identity,
        problems=tuple(problems),
    )


def closed_account(closure: Reason) -> Rejection:
    """A closed account (or an opposition) refuses new documents; its INS is not written
    in the report or the quarantine record, only its keyed hash."""
    return Rejection((Problem(code=closure, message=_CLOSED[closure]),))


def document_ids(producer: str, patient_id: str, doc: ParsedDocument, content_sha: str) -> tuple[str, str]:
    """(series id, doc id): deterministic, from the producer's document id when it gives
    one (a replacement naming its parent may join the parent's series instead), and from
    the content's fingerprint when the parser gives one, else its bytes' hash: the same
    document sent again gets the same doc id, which makes it a duplicate."""
    content = doc.content_fingerprint or content_sha
    if doc.producer_document_id:
        return (
            hash_id("series", producer, doc.producer_document_id),
            hash_id("doc", producer, doc.producer_document_id, content),
        )
    doc_id = hash_id("doc", patient_id, content)
    return doc_id, doc_id


def own_ids(doc: ParsedDocument) -> tuple[str, ...]:
    """The identifiers the producer gave this document (setId or id, TXA-12, OBR-3…)."""
    return tuple(dict.fromkeys(i for i in (doc.producer_document_id, *doc.document_ids) if i))


def outcome_fields(item: InputFile, examined: Examined, content_sha: str) -> dict[str, Any]:
    """What every outcome of an identified document says, whatever its status."""
    doc, classification = examined.doc, examined.classification
    return dict(
        source=doc.source_ref,
        patient_id=examined.patient_id,
        doc_class=classification.doc_class,
        type_code=classification.type_code,
        content_sha256=content_sha,
        producer=item.producer,
        format=doc.format,
        ocr_pages=doc.ocr_pages,
        ocr_confidence=doc.ocr_confidence,
        message_control_id=doc.message_control_id,
    )


def build_record(
    item: InputFile,
    examined: Examined,
    *,
    doc_id: str,
    series_id: str,
    content_sha: str,
    content: bytes,
    superseded_by: str | None,
) -> DocumentRecord:
    """The record an accepted document is indexed as (``content``: its filed bytes)."""
    doc, classification = examined.doc, examined.classification
    return DocumentRecord(
        doc_id=doc_id,
        series_id=series_id,
        patient_id=examined.patient_id,
        doc_class=classification.doc_class,
        type_code=classification.type_code,
        type_label=classification.type_label,
        classification_rule=classification.rule,
        classification_confidence=classification.confidence,
        title=doc.title or classification.type_label or "Document",
        document_date=examined.document_date,
        producer=item.producer,
        producer_finess=doc.producer_finess or find_finess(doc.text),
        producer_document_id=doc.producer_document_id,
        version=doc.version,
        document_ids=doc.document_ids,
        refers_to=tuple(i for i in doc.refers_to if i not in own_ids(doc)),
        superseded_by=superseded_by,
        author_rpps=None if item.contributor else doc.author_rpps or find_rpps(doc.text),
        author_name=item.contributor.name if item.contributor else doc.author_name,
        contributed_by=item.contributor,
        identity_source=examined.identity.evidence,
        source=doc.source_ref,
        format=doc.format,
        content_sha256=content_sha,
        content_size=len(content),
        # FHIR's Attachment.hash, an integrity check R4 defines as SHA-1, not a security use.
        content_sha1=hashlib.sha1(content, usedforsecurity=False).hexdigest(),
        text=doc.text,
        results=doc.results,
        visibility=doc.visibility,
        page_count=doc.page_count,
        ocr_pages=doc.ocr_pages,
        ocr_confidence=doc.ocr_confidence,
        warnings=tuple(doc.warnings) + tuple(p for p in examined.problems if not p.blocking),
        ingested_at=dt.datetime.now(dt.UTC),
    )
