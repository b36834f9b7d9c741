"""What the API reads and returns (the shapes in its OpenAPI document)."""

from __future__ import annotations

import datetime as dt

from pydantic import Field, field_validator

from pipeline.access import MIN_REASON_LETTERS, MIN_REASON_VISIBLE_CHARS, meaningful_reason
from pipeline.audit import AuditEntry
from pipeline.model import DocClass, DocumentRecord, Format, Frozen, LabResult, SearchHit, Visibility

# Path parameter shapes: anything else is a 422 before any lookup happens.
INS_PATTERN = r"^[0-9]{6}[0-9AB][0-9]{8}$"
RPPS_PATTERN = r"^[0-9]{11}$"
PERSON_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# The longest text query (the search API's q, FHIR's _content).
QUERY_MAX_CHARS = 200
DOC_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class ErrorDetail(Frozen):
    detail: str


ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorDetail, "description": "The request body cannot be parsed"},
    401: {"model": ErrorDetail, "description": "No valid bearer token"},
    403: {"model": ErrorDetail, "description": "Not allowed (says nothing about what exists)"},
    404: {"model": ErrorDetail, "description": "No such document within what the caller may see"},
}


class Me(Frozen):
    role: str
    subject: str
    name: str | None = None


class SearchPage(Frozen):
    total: int
    offset: int
    limit: int
    hits: tuple[SearchHit, ...]


class DocumentView(Frozen):
    """A document's metadata and text, as shown to whoever may see it."""

    doc_id: str
    doc_class: DocClass
    type_code: str | None
    type_label: str | None
    title: str
    document_date: dt.date | None
    producer: str
    producer_name: str | None = None  # the sender's name from the feeds file, if listed there
    producer_finess: str | None
    author_rpps: str | None
    author_name: str | None
    format: Format
    text: str
    results: tuple[LabResult, ...]
    visibility: tuple[Visibility, ...]
    page_count: int
    superseded_by: str | None
    ingested_at: dt.datetime

    @classmethod
    def of(cls, record: DocumentRecord, *, producer_name: str | None = None) -> DocumentView:
        return cls(
            producer_name=producer_name,
            **{name: getattr(record, name) for name in cls.model_fields if name != "producer_name"},
        )


class VisibilityView(Frozen):
    doc_id: str
    visibility: tuple[Visibility, ...]


class HistoryEntry(Frozen):
    """One line of a patient's access history: who did what, when, why. Documents the
    reader may not see are left out of ``doc_ids`` (the entry stays, without them)."""

    at: dt.datetime
    actor: str
    actor_name: str | None
    role: str
    action: str
    doc_ids: tuple[str, ...]
    reason: str | None

    @classmethod
    def of(cls, entry: AuditEntry, shown: frozenset[str], *, reason: str | None) -> HistoryEntry:
        """``entry`` as its reader may see it: ``shown`` documents only, ``reason`` as given."""
        return cls(
            at=entry.at,
            actor=entry.actor,
            actor_name=entry.actor_name,
            role=entry.role,
            action=entry.action,
            doc_ids=tuple(i for i in entry.doc_ids if i in shown),
            reason=reason,
        )


class DelegationRequest(Frozen):
    classes: tuple[DocClass, ...] | None = Field(
        default=None, description="Delegated classes; null for every class"
    )
    upload: bool = Field(default=False, description="The caregiver may also add documents to the record")


class RepresentativeRequest(Frozen):
    patient_birth_date: dt.date | None = Field(
        default=None,
        description="Optional, checked only: the record's birth date (INS, identity "
        "traits) decides when access ends; a contradicting date is refused",
    )


class BreakGlassRequest(Frozen):
    reason: str = Field(
        min_length=MIN_REASON_VISIBLE_CHARS,
        max_length=500,
        description=f"Why (kept verbatim): at least {MIN_REASON_VISIBLE_CHARS} visible "
        f"characters, {MIN_REASON_LETTERS} of them letters",
    )

    @field_validator("reason")
    @classmethod
    def _readable(cls, value: str) -> str:
        if not meaningful_reason(value):
            raise ValueError(
                f"a reason needs at least {MIN_REASON_VISIBLE_CHARS} visible characters, "
                f"{MIN_REASON_LETTERS} of them letters, and no control characters or direction overrides"
            )
        return value


class BreakGlassOpened(Frozen):
    patient_id: str
    expires_at: dt.datetime


class Done(Frozen):
    """A change that was made (or was already in place)."""

    changed: bool
