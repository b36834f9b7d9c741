"""Duplicates and versions: whether an accepted document is already held, replaces the
current version of its series, or arrives already superseded; and withdrawals.

The index answers for what earlier runs and flushes wrote; ``Versions`` also remembers
the documents of this run not flushed yet, so duplicates inside one batch are seen.

A replacement names its parent (``refers_to``): it joins the parent's series when the
parent is filed (``parent_series``), and a parent that comes after its replacement joins
the replacement's series, already superseded (``replacement_series``), whichever came first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from pipeline.index import DocumentIndex
from pipeline.index.base import ExistingVersion
from pipeline.model import DocumentRecord


def version_key(version: int | None, date: dt.date | None) -> tuple[int, dt.date]:
    """The producer's order of two versions of one document: its version number (HL7 v2
    has none: an original is 1, a correction 2), then the document's effective date."""
    return (version if version is not None else 1, date or dt.date.min)


class Versions:
    """The version chains of one run: the index, and the accepted documents not flushed yet."""

    def __init__(self, index: DocumentIndex, *, sees: Callable[[str, str], bool] | None = None) -> None:
        """``sees(patient, doc_id)``: whether the sender of this run's documents may see a
        filed one (an upload, ``ingest_upload``): one they may not see is not there for them,
        so nothing duplicates or replaces it (None: every filed document counts)."""
        self.index = index
        self.sees = sees
        self._pending_by_sha: dict[tuple[str, str], str] = {}
        self._pending_ids: set[tuple[str, str]] = set()
        self._pending_by_series: dict[tuple[str, str], str] = {}
        self._pending_versions: dict[str, tuple[int, dt.date]] = {}
        # (patient, producer, a parent's id) -> the series of the pending record replacing it.
        self._pending_parents: dict[tuple[str, str, str], str] = {}
        # The versions ``replacement_series`` read with its lookup, for the ``existing`` call
        # that follows it: (patient, content sha, series id) -> what the index answered.
        self._read_ahead: tuple[tuple[str, str, str], list[ExistingVersion]] | None = None

    def remember(self, record: DocumentRecord) -> None:
        """A record about to be written: later documents of this run are decided against it."""
        self._pending_by_sha[(record.patient_id, record.content_sha256)] = record.doc_id
        self._pending_ids.add((record.patient_id, record.doc_id))
        for parent in record.refers_to:
            self._pending_parents[(record.patient_id, record.producer, parent)] = record.series_id
        if record.superseded_by is None:
            self._pending_by_series[(record.patient_id, record.series_id)] = record.doc_id
            self._pending_versions[record.doc_id] = version_key(record.version, record.document_date)

    def flushed(self) -> None:
        """The pending documents are written (or refused): the index answers for them now."""
        self._pending_by_sha.clear()
        self._pending_ids.clear()
        self._pending_by_series.clear()
        self._pending_versions.clear()
        self._pending_parents.clear()
        self._read_ahead = None

    def existing(
        self,
        patient: str,
        content_sha: str,
        series_id: str,
        version: tuple[int, dt.date],
        doc_id: str,
        *,
        replaced: bool = False,
        parent_series: str | None = None,
    ) -> tuple[str | None, str | None, str | None]:
        """(doc id this duplicates, doc id this replaces, newer doc id that supersedes this one).

        A duplicate has the same bytes (``content_sha``) or the same ``doc_id``: doc ids
        derive from the content's fingerprint when the parser gives one (``document_ids``),
        so an HL7 message sent again with a new MSH-7 and MSH-10 is a duplicate too.

        The version chain follows the producer's order (``version_key``), not the order of
        arrival: a version older than the current one (a late delivery, a replay after a
        fix) arrives already superseded and never hides the live one. Equal keys replace
        each other in arrival order. ``replaced``: a version of the series names this
        document as the one it replaces (``replacement_series``), so it is older than the
        current one, whatever their keys say; ``parent_series``: the series of the parent
        this document names in turn (``parent_series``), whose current version it replaces
        as well (a middle version coming last: both chains leave default searches).
        """
        if (patient, content_sha) in self._pending_by_sha:
            return self._pending_by_sha[(patient, content_sha)], None, None
        if (patient, doc_id) in self._pending_ids:
            return doc_id, None, None
        current = self._pending_by_series.get((patient, series_id))
        current_version = self._pending_versions.get(current) if current else None
        for v in self._versions(patient, content_sha, series_id):
            if v.withdrawn:
                continue  # sent again after a deletion: filed anew, not a duplicate
            if self.sees is not None and not self.sees(patient, v.doc_id):
                continue  # "duplicate" would tell the sender that a document hidden from them exists
            if v.content_sha256 == content_sha or v.doc_id == doc_id:
                return v.doc_id, None, None
            if v.series_id == series_id and v.superseded_by is None and current is None:
                current = v.doc_id
                existing = self.index.get(patient, v.doc_id)
                current_version = version_key(existing.version, existing.document_date) if existing else None
        if current and (replaced or (current_version is not None and version < current_version)):
            if parent_series is not None and parent_series != series_id:
                _, older, _ = self.existing(patient, content_sha, parent_series, version, doc_id)
                return None, older, current
            return None, None, current
        return None, current, None

    def parent_series(self, patient: str, producer: str, parent_ids: Sequence[str]) -> str | None:
        """The series of the document a replacement names as its parent, if Carnet holds it
        (the caller flushes first when the parent is still pending)."""
        found = self.index.find_by_document_ids(patient, producer, parent_ids)
        current = [v for v in found if v.superseded_by is None and not v.withdrawn]
        return (current or found)[0].series_id if found else None

    def replacement_series(
        self, patient: str, producer: str, own_ids: Sequence[str], *, content_sha: str, series_id: str
    ) -> str | None:
        """The series of a document, filed or pending, that names one of ``own_ids`` (this
        document's) as the one it replaces and is not withdrawn: a replacement that came
        before its parent. One indexed lookup, which also reads the versions of
        ``content_sha`` and ``series_id`` for the ``existing`` call that follows
        (``DocumentIndex.find_versions_and_replacements``: one round trip to a cluster)."""
        for own in own_ids:
            pending = self._pending_parents.get((patient, producer, own))
            if pending is not None:
                return pending
        versions, found = self.index.find_versions_and_replacements(
            patient, content_sha256=content_sha, series_id=series_id, producer=producer, document_ids=own_ids
        )
        self._read_ahead = ((patient, content_sha, series_id), versions)
        return next((v.series_id for v in found if not v.withdrawn), None)

    def _versions(self, patient: str, content_sha: str, series_id: str) -> list[ExistingVersion]:
        """The index's versions of ``content_sha`` and ``series_id``: read ahead by the
        ``replacement_series`` call just made for the same document, else asked now."""
        read_ahead, self._read_ahead = self._read_ahead, None
        if read_ahead is not None and read_ahead[0] == (patient, content_sha, series_id):
            return read_ahead[1]
        return self.index.find_versions(patient, content_sha256=content_sha, series_id=series_id)

    def withdrawal(
        self, patient: str, producer: str, names: Sequence[str]
    ) -> tuple[list[ExistingVersion], dict[str, ExistingVersion]]:
        """What a deletion naming ``names`` takes out of every search: (the versions named,
        every version of their series). The caller writes it, under the flush lock."""
        named = self.index.find_by_document_ids(patient, producer, names)
        series = {v.series_id for v in named}
        versions = {
            v.doc_id: v
            for s in series
            for v in self.index.find_versions(patient, content_sha256="", series_id=s)
        }
        versions.update({v.doc_id: v for v in named})
        return list(named), versions
