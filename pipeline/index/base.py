"""The index protocol that every backend implements and the contract tests hold them to.

Per-patient isolation is enforced here, below every caller: each read takes the
patient id and a backend must never return another patient's document.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from pipeline.model import DocumentRecord, Frozen, SearchQuery, SearchResult, Visibility


class ExistingVersion(Frozen):
    """A document already filed that a new one may duplicate or replace."""

    doc_id: str
    series_id: str
    content_sha256: str
    superseded_by: str | None = None
    withdrawn: bool = False


class Supersede(Frozen):
    """``doc_id`` (of ``patient_id``) is replaced by ``by_doc_id``, a newer version."""

    patient_id: str
    doc_id: str
    by_doc_id: str


# Called by ``apply`` at its named steps ("after_index_write", "after_supersede"): the
# crash tests' fault points. Index backends never decide anything from it.
Checkpoint = Callable[[str], None]


class IndexFailure(Frozen):
    """A document the backend refused (becomes ``rejected`` / ``index_error``)."""

    doc_id: str
    message: str


# The last query term also matches as a prefix from this many characters (type-ahead),
# in both backends.
PREFIX_MIN_CHARS = 3


def patient_token(patient_id: str) -> str | None:
    """The one token naming a patient (SQLite's FTS column, Elasticsearch's routing check),
    or None if ``patient_id`` is not INS-shaped: such an id is never read or written."""
    if len(patient_id) == 15 and patient_id.isascii() and patient_id.isalnum():
        return "p" + patient_id.lower()
    return None


def meta_text(record: DocumentRecord) -> str:
    """The searchable metadata of a record (type, producer, author, analytes, LOINC codes):
    one definition, so both backends match the same fields."""
    parts: list[str | None] = [
        record.type_code,
        record.type_label,
        record.producer,
        record.producer_finess,
        record.author_name,
    ]
    for result in record.results:
        parts += [result.analyte, result.loinc]
    return " ".join(p for p in parts if p)


# The longest keyword value a lookup matches. Elasticsearch refuses a whole document for
# one term over 32,766 bytes, so its mapping keeps longer keywords in the record but out
# of the terms (``ignore_above``: characters, up to 4 bytes each); both backends then
# match no longer value, so that they agree. A real code or identifier is far shorter.
KEYWORD_MAX_CHARS = 8191


def idf(documents: int, holding: int) -> float:
    """BM25's weight of a word that ``holding`` of ``documents`` hold: both backends count
    them among the documents a search may return, never over the whole index."""
    return math.log(1 + (documents - holding + 0.5) / (holding + 0.5))


def matchable(value: str) -> bool:
    """Whether a keyword lookup may match ``value`` (``KEYWORD_MAX_CHARS``)."""
    return len(value) <= KEYWORD_MAX_CHARS


def names_any(record: DocumentRecord, producer: str, document_ids: Sequence[str]) -> bool:
    """True when ``producer`` identified ``record`` by one of ``document_ids`` (each one
    ``matchable``)."""
    wanted = {i for i in document_ids if matchable(i)}
    return record.producer == producer and (
        record.producer_document_id in wanted or not wanted.isdisjoint(record.document_ids)
    )


@runtime_checkable
class DocumentIndex(Protocol):
    def upsert(self, records: Sequence[DocumentRecord]) -> list[IndexFailure]:
        """Insert or overwrite ``records`` by ``doc_id``; return the ones refused."""
        ...

    def apply(
        self,
        records: Sequence[DocumentRecord],
        supersedes: Sequence[Supersede],
        *,
        checkpoint: Checkpoint | None = None,
    ) -> list[IndexFailure]:
        """One flush's writes as one unit: upsert ``records``, then mark ``supersedes``.

        SQLite applies both in one transaction; Elasticsearch sends both in one bulk
        request. Idempotent (a rerun re-applies a flush it cannot know finished), and a
        version chain never goes back: a document already superseded in the index stays
        superseded when its record is written again. A supersede whose new version is
        refused is not applied. Returns the refused records.
        """
        ...

    def get(self, patient_id: str, doc_id: str) -> DocumentRecord | None:
        """One document of this patient (superseded versions included), or None."""
        ...

    def find_versions(self, patient_id: str, *, content_sha256: str, series_id: str) -> list[ExistingVersion]:
        """This patient's documents with the same content hash or the same series."""
        ...

    def find_by_document_ids(
        self, patient_id: str, producer: str, document_ids: Sequence[str]
    ) -> list[ExistingVersion]:
        """This patient's documents from ``producer`` that it identified by any of
        ``document_ids`` (producer document id or another id it gave), withdrawn included."""
        ...

    def find_replacements(
        self, patient_id: str, producer: str, document_ids: Sequence[str]
    ) -> list[ExistingVersion]:
        """This patient's documents from ``producer`` that name any of ``document_ids`` as the
        document they replace (``refers_to``), withdrawn included: one indexed lookup."""
        ...

    def find_versions_and_replacements(
        self,
        patient_id: str,
        *,
        content_sha256: str,
        series_id: str,
        producer: str,
        document_ids: Sequence[str],
    ) -> tuple[list[ExistingVersion], list[ExistingVersion]]:
        """``find_versions`` and ``find_replacements`` at once: what a document with ids of
        its own asks before it is filed, in one round trip where the index is remote."""
        ...

    def supersede(self, patient_id: str, doc_id: str, by_doc_id: str) -> None:
        """Mark ``doc_id`` as replaced by ``by_doc_id``: it leaves default searches."""
        ...

    def withdraw(self, patient_id: str, doc_id: str, at: dt.datetime) -> bool:
        """Take ``doc_id`` out of every search (kept, with ``withdrawn_at``); False if unknown."""
        ...

    def set_visibility(self, patient_id: str, doc_id: str, visibility: Sequence[Visibility]) -> bool:
        """Replace a document's visibility flags; False when the document is unknown."""
        ...

    def delete(self, patient_id: str, doc_id: str) -> bool:
        """Remove one document; False when it was not there."""
        ...

    def delete_patient(self, patient_id: str) -> list[str]:
        """Remove every document of a patient; return the removed doc ids."""
        ...

    def search(self, query: SearchQuery) -> SearchResult:
        """Ranked search inside one patient's record, with highlighted snippets."""
        ...

    def list_ids(self) -> list[tuple[str, str, str]]:
        """Every (patient_id, doc_id, content_sha256) held — for integrity checks."""
        ...

    def patients_holding(self, content_sha256s: Sequence[str]) -> dict[str, set[str]]:
        """Each of ``content_sha256s`` that some document holds -> the patients whose records
        hold it, withdrawn and superseded versions included (erasure: bytes filed for two
        people stay the other's)."""
        ...

    def count(self) -> int: ...

    def rebuild(self, version: str) -> dict[str, object]:
        """Rebuild for search (after a bulk load or a mapping change) and say what was
        done: Elasticsearch copies every document into a new index ``<alias>-<version>``
        and moves the alias to it (pause ingestion meanwhile); SQLite optimises in place."""
        ...

    def close(self) -> None: ...


def changed(record: DocumentRecord, changes: dict[str, Any]) -> DocumentRecord:
    """``record`` with ``changes``, its ``updated_at`` stamped now when they change it (a
    rerun that changes nothing leaves it as it was): what FHIR's ``meta.lastUpdated`` says."""
    new = record.model_copy(update=changes)
    if new == record:
        return record
    return new.model_copy(update={"updated_at": dt.datetime.now(dt.UTC)})


def set_series_flag(
    index: DocumentIndex,
    record: DocumentRecord,
    flag: Visibility,
    on: bool,
    *,
    reaches: Callable[[DocumentRecord], bool] | None = None,
) -> tuple[Visibility, ...] | None:
    """Set or clear ``flag`` on every version of ``record``'s series (a visibility choice
    is about the document, not one version of it) that ``reaches`` allows (the versions
    its maker may see; None: all); return ``record``'s new flags, or None when it is gone."""
    versions = [
        v.doc_id
        for v in index.find_versions(
            record.patient_id, content_sha256=record.content_sha256, series_id=record.series_id
        )
        if v.series_id == record.series_id
    ]
    result: tuple[Visibility, ...] | None = None
    for doc_id in dict.fromkeys([record.doc_id, *versions]):
        version = index.get(record.patient_id, doc_id)
        if version is None or (doc_id != record.doc_id and reaches is not None and not reaches(version)):
            continue
        flags = tuple(v for v in version.visibility if v is not flag) + ((flag,) if on else ())
        if flags != version.visibility and not index.set_visibility(record.patient_id, doc_id, flags):
            continue
        if doc_id == record.doc_id:
            result = flags
    return result


def reader_versions(query: SearchQuery) -> bool:
    """Whether ``query`` tells current from superseded versions, or selects by last update,
    for a reader who may not see every document (a decision's filters): a version replaced
    only by versions hidden from them is current for them, and as filed (its supersede's
    time, ``updated_at``, would date the hidden version): ``unseen_successors``."""
    restricted = bool(query.exclude_visibility) or query.allowed_classes is not None
    by_update = query.updated_from is not None or query.updated_before is not None
    return restricted and (query.superseded_only or not query.include_superseded or by_update)


def unseen_successors(hidden: Mapping[str, str | None]) -> frozenset[str]:
    """Of the newer versions hidden from a reader (doc id -> the version that replaced it in
    turn), those whose chain reaches no version the reader may see. A document they
    replaced is current for that reader: shown superseded, it told them that a version
    they may not see exists (every route answers for that version as for none)."""
    unseen = set()
    for start in hidden:
        chain: set[str] = set()
        current: str | None = start
        while current is not None and current in hidden and current not in chain:
            chain.add(current)
            current = hidden[current]
        if current is None or current in chain:
            unseen.add(start)
    return frozenset(unseen)


def snippet_fields(text: str, tokens: Sequence[str], prefix: str | None, title: str | None) -> dict[str, Any]:
    """A hit's ``snippet`` and ``highlights``, the same for every backend."""
    from pipeline.analysis import excerpt

    snippet, spans = excerpt(text, tokens, prefix, title=title)
    return {"snippet": snippet, "highlights": spans}
