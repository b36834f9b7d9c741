"""The one document model that flows through Carnet's stages.

parse -> ``ParsedDocument`` (what a parser read, nothing decided yet)
identify + classify + check -> ``DocumentRecord`` (what is filed in a patient's record)
every input -> ``Outcome`` (its final state, written to the run report)

All values are frozen pydantic models so that they round-trip through JSON
(run reports, quarantine records, the Elasticsearch source) without hand-written
dict plumbing.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Format(StrEnum):
    """Input formats Carnet knows how to read."""

    PDF = "pdf"
    IMAGE = "image"
    HL7V2 = "hl7v2"
    CDA = "cda"


class DocClass(StrEnum):
    BIOLOGY = "biology"
    IMAGING = "imaging"
    PRESCRIPTION = "prescription"
    OTHER = "other"


class Status(StrEnum):
    """The final state of every document found in an input: exactly one of these."""

    INDEXED = "indexed"
    DUPLICATE = "duplicate"
    REPLACED = "replaced"
    # A producer's deletion request (HL7 OBX-11 D, MDM^T11) took a document out of every
    # search; it stays stored with its history. The Outcome's doc_id is that document's.
    WITHDRAWN = "withdrawn"
    REJECTED = "rejected"


class Reason(StrEnum):
    """Machine-readable reason codes carried by rejected documents and warnings."""

    UNSUPPORTED_FORMAT = "unsupported_format"
    UNSUPPORTED_MESSAGE = "unsupported_message"  # an HL7 message that carries no document
    PARSE_ERROR = "parse_error"
    ENCRYPTED_DOCUMENT = "encrypted_document"
    EMPTY_DOCUMENT = "empty_document"
    MISSING_INS = "missing_ins"
    INVALID_INS_KEY = "invalid_ins_key"
    IDENTITY_CONFLICT = "identity_conflict"
    IDENTITY_MISMATCH = "identity_mismatch"
    UNREADABLE_SCAN = "unreadable_scan"
    MISSING_DATE = "missing_date"
    IMPLAUSIBLE_DATE = "implausible_date"
    IMPLAUSIBLE_UNIT = "implausible_unit"
    IMPLAUSIBLE_VALUE = "implausible_value"
    NEGATIVE_VALUE = "negative_value"
    INVALID_RESULT = "invalid_result"
    UNKNOWN_PRODUCER = "unknown_producer"
    MANIFEST_MISMATCH = "manifest_mismatch"
    INDEX_ERROR = "index_error"
    LOW_OCR_CONFIDENCE = "low_ocr_confidence"
    SHORT_TEXT = "short_text"
    UNKNOWN_DOCUMENT_TYPE = "unknown_document_type"
    MALFORMED_IDENTIFIER = "malformed_identifier"
    BATCH_THRESHOLD = "batch_threshold"
    UNKNOWN_DOCUMENT = "unknown_document"  # a deletion names a document Carnet does not hold
    ACCOUNT_CLOSED = "account_closed"
    OPPOSITION = "opposition"
    UNSAFE_PATH = "unsafe_path"
    # A file of the drop Carnet may not read (its permissions) or removed since it was listed.
    UNREADABLE_FILE = "unreadable_file"
    # Text past ``Settings.ingestion.max_text_chars`` is not indexed (the bytes are kept whole).
    TEXT_TRUNCATED = "text_truncated"


class IdentitySource(StrEnum):
    """What decided the patient a document is filed under (the INS is the only key)."""

    STRUCTURED = "structured"  # HL7 PID-3, CDA recordTarget
    PRINTED = "printed"  # an INS printed in the text after its label
    # The patient (or who acts for them) filed it into their own record, which printed no INS:
    # a declaration by the record's owner, not a guess.
    DECLARED_BY_PATIENT = "declared_by_patient"


class Contributor(Frozen):
    """Who added a document through the API (a patient upload), as their token said."""

    role: str  # patient, representative, caregiver
    subject: str  # INS for the patient, the person id otherwise
    name: str | None = None


class Visibility(StrEnum):
    """Confidentiality flags set by producers or by the patient (DMP vocabulary)."""

    INVISIBLE_PATIENT = "INVISIBLE_PATIENT"
    MASQUE_PS = "MASQUE_PS"
    INVISIBLE_REPRESENTANTS_LEGAUX = "INVISIBLE_REPRESENTANTS_LEGAUX"


# The flags a patient sets on a whole series (every version, later ones included).
PATIENT_SERIES_CHOICES = frozenset({Visibility.MASQUE_PS})


# The longest message a problem keeps: messages quote what a producer sent (a unit, an
# analyte's name, a library's error on its bytes), and they go into every report,
# acknowledgement and ledger row, whatever length the producer chose.
PROBLEM_MESSAGE_MAX = 500


class Problem(Frozen):
    """A reason code with a human message; ``blocking`` problems reject the document."""

    code: Reason
    message: str
    blocking: bool = True

    @field_validator("message")
    @classmethod
    def _bounded(cls, message: str) -> str:
        if len(message) <= PROBLEM_MESSAGE_MAX:
            return message
        return message[: PROBLEM_MESSAGE_MAX - 1] + "…"

    def render(self) -> str:
        return f"{self.code.value}: {self.message}"


class PatientIdentifier(Frozen):
    """An identifier as the source gave it (before any validation)."""

    value: str
    authority: str | None = None  # assigning authority OID or name
    kind: str | None = None  # e.g. "INS", "IPP", "NIR"


class PatientDemographics(Frozen):
    family_name: str | None = None
    given_name: str | None = None
    birth_date: dt.date | None = None
    sex: str | None = None  # "M", "F", "U" as given by the source


class LabResult(Frozen):
    """One structured lab result (HL7 OBX, CDA entry or recognised in text)."""

    analyte: str
    loinc: str | None = None
    value: str | None = None
    numeric_value: float | None = None
    value_type: str | None = None  # HL7 OBX-2: NM, ST, TX, ED…
    unit: str | None = None  # UCUM as given
    reference_range: str | None = None
    abnormal_flag: str | None = None  # HL7 OBX-8: H, L, N, HH, LL…
    observed_at: dt.datetime | None = None


class ParsedDocument(Frozen):
    """What one parser read from one document, before Carnet decides anything about it.

    A file holds one document, except HL7 files which may hold several messages:
    each message is its own ``ParsedDocument`` with ``part`` set (1-based).
    """

    source: str
    part: int | None = None
    format: Format
    text: str = ""
    title: str | None = None
    content: bytes = Field(default=b"", repr=False)  # raw bytes of this document
    # A hash of what the document says without what changes when it is sent again (HL7:
    # MSH-7, MSH-10, batch headers, framing): its identity for duplicates, in place of the
    # hash of ``content``. None: the bytes decide.
    content_fingerprint: str | None = None
    patient_ids: tuple[PatientIdentifier, ...] = ()
    demographics: PatientDemographics | None = None
    message_type: str | None = None  # HL7 MSH-9, e.g. "ORU^R01"
    message_control_id: str | None = None  # HL7 MSH-10 (for ACKs)
    type_code: str | None = None  # LOINC type code given by the source (CDA code)
    type_code_system: str | None = None
    # The name the producer gives its type code (CDA displayName, HL7 CE.2): LOINC's
    # radiology report names say their modality (see ``pipeline/type_codes.py``).
    type_code_display: str | None = None
    document_date: dt.date | None = None
    author_rpps: str | None = None
    author_name: str | None = None
    producer_finess: str | None = None
    producer_name: str | None = None
    producer_document_id: str | None = None
    version: int | None = None
    # Other identifiers the producer gives this version (HL7 TXA-12 unique document number,
    # OBR-3…): a later replacement or deletion may name the document by any of them.
    document_ids: tuple[str, ...] = ()
    # Identifiers of the document this one replaces (HL7 TXA-13 parent document) or, for a
    # deletion request, of the document to withdraw.
    refers_to: tuple[str, ...] = ()
    # The producer asks to withdraw a document (HL7 OBX-11 D, MDM^T11): nothing to file.
    withdraw: bool = False
    results: tuple[LabResult, ...] = ()
    visibility: tuple[Visibility, ...] = ()
    page_count: int = 0
    ocr_pages: int = 0
    ocr_confidence: float | None = None  # mean word confidence 0-100 over OCR'd pages
    warnings: tuple[Problem, ...] = ()

    @property
    def source_ref(self) -> str:
        """The source as written in reports: ``path`` or ``path#n`` for the n-th message."""
        return self.source if self.part is None else f"{self.source}#{self.part}"


class Classification(Frozen):
    doc_class: DocClass
    type_code: str | None
    type_label: str | None
    rule: str  # which rule decided, e.g. "cda.code", "hl7.message_type", "text.keywords"
    confidence: float


class DocumentRecord(Frozen):
    """A document filed in one patient's record: what the index and the API hold."""

    doc_id: str
    series_id: str  # same for every version of a producer's document
    patient_id: str  # the 15-character INS, the only patient key
    doc_class: DocClass
    type_code: str | None = None
    type_label: str | None = None
    classification_rule: str
    classification_confidence: float
    title: str
    document_date: dt.date | None = None
    producer: str  # feed / producer id
    producer_finess: str | None = None
    producer_document_id: str | None = None
    version: int | None = None  # the producer's version number within the series, if given
    # Every other identifier the producer gave this version (HL7 TXA-12, OBR-3…), so that a
    # later replacement or deletion naming any of them finds it.
    document_ids: tuple[str, ...] = ()
    # The identifiers of the document this version replaces, as the producer named it
    # (CDA relatedDocument RPLC, HL7 TXA-13), its own ones left out: a parent that comes
    # after its replacement finds it by them (``DocumentIndex.find_replacements``).
    refers_to: tuple[str, ...] = ()
    author_rpps: str | None = None
    author_name: str | None = None
    source: str
    format: Format
    content_sha256: str
    # The filed bytes' size and SHA-1 (hex), kept at filing for FHIR's Attachment.size and
    # .hash, which would otherwise need the original decrypted (None: filed before they were).
    content_size: int | None = None
    content_sha1: str | None = None
    text: str = ""
    results: tuple[LabResult, ...] = ()
    visibility: tuple[Visibility, ...] = ()
    page_count: int = 0
    ocr_pages: int = 0
    ocr_confidence: float | None = None
    warnings: tuple[Problem, ...] = ()
    superseded_by: str | None = None
    # Set when the producer asked to delete the document: it leaves every search.
    withdrawn_at: dt.datetime | None = None
    ingested_at: dt.datetime
    # When the index last changed the filed record (superseded, visibility flags, withdrawn);
    # None while it is as filed. FHIR's meta.lastUpdated is this, else ``ingested_at``.
    updated_at: dt.datetime | None = None
    identity_source: IdentitySource | None = None
    # Set for documents added through the API by the patient or someone acting for them.
    contributed_by: Contributor | None = None


class Outcome(Frozen):
    """The final state of one document found in the input: one line of the run report."""

    source: str
    status: Status
    doc_id: str | None = None
    patient_id: str | None = None
    doc_class: DocClass | None = None
    type_code: str | None = None
    reasons: tuple[Problem, ...] = ()
    content_sha256: str | None = None
    producer: str | None = None
    format: Format | None = None
    ocr_pages: int = 0
    ocr_confidence: float | None = None
    message_control_id: str | None = None

    def report_line(self) -> dict[str, object]:
        """The object written to ``--report`` (the command-line contract's fields first)."""
        return {
            "source": self.source,
            "status": self.status.value,
            "doc_id": self.doc_id,
            "patient_id": self.patient_id,
            "doc_class": self.doc_class.value if self.doc_class else None,
            "type_code": self.type_code,
            "reasons": [p.render() for p in self.reasons],
            "producer": self.producer,
            "format": self.format.value if self.format else None,
            "content_sha256": self.content_sha256,
            "ocr_pages": self.ocr_pages,
            "ocr_confidence": self.ocr_confidence,
        }


def count_rejects(blocking_codes: Iterable[Iterable[Reason]]) -> dict[str, int]:
    """Rejected documents per reason code, sorted by code, from each rejected document's
    blocking codes: a document is counted once per code it was refused for, however many
    problems of that code it had. The count reports, metrics and alerts share."""
    counts = Counter(code.value for codes in blocking_codes for code in set(codes))
    return dict(sorted(counts.items()))


class SearchOrder(StrEnum):
    """How a search lists its hits, named as FHIR's ``_sort`` (``-`` for descending): by the
    clinical date (undated last either way) or by when the document was filed; ties by doc
    id. None: best first when there are words to find, else newest clinical date first."""

    PERIOD_DESC = "-period"
    PERIOD_ASC = "period"
    FILED_DESC = "-date"
    FILED_ASC = "date"

    @property
    def descending(self) -> bool:
        return self.value.startswith("-")

    @property
    def by_filing(self) -> bool:
        return self.value.lstrip("-") == "date"


class SearchQuery(Frozen):
    patient_id: str
    text: str | None = None
    doc_class: DocClass | None = None
    type_code: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None
    limit: int = 20
    offset: int = 0
    include_superseded: bool = False
    # Only the versions a newer one replaced (FHIR ``status=superseded``); implies the above.
    superseded_only: bool = False
    # Withdrawn documents are in no search but this one (account erasure must find them).
    include_withdrawn: bool = False
    # Visibility flags whose documents must be left out (set by the access layer).
    exclude_visibility: tuple[Visibility, ...] = ()
    # When set, only these classes (caregiver delegations).
    allowed_classes: tuple[DocClass, ...] | None = None
    # When set, only this document (FHIR ``_id``), held to every other filter.
    doc_id: str | None = None
    # Instants, from inclusive and before exclusive: when the document was filed
    # (``ingested_at``, FHIR ``date``) and when its record last changed (``updated_at``,
    # else ``ingested_at``: FHIR ``_lastUpdated``). Both backends compare to the millisecond.
    order: SearchOrder | None = None
    filed_from: dt.datetime | None = None
    filed_before: dt.datetime | None = None
    updated_from: dt.datetime | None = None
    updated_before: dt.datetime | None = None


class SearchHit(Frozen):
    doc_id: str
    doc_class: DocClass
    type_code: str | None
    title: str
    date: dt.date | None
    score: float
    snippet: str  # plain text: any mark in it is the document's own
    # (start, end) offsets in ``snippet`` of the words that matched the query.
    highlights: tuple[tuple[int, int], ...] = ()


class SearchResult(Frozen):
    total: int
    hits: tuple[SearchHit, ...]
