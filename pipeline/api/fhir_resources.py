"""Carnet's records as FHIR R4 resources (built with ``fhir.resources``' R4B models).

Why R4B models for an R4 API: ``fhir.resources`` 7+ (the pydantic-2 line Carnet needs,
Airflow pins pydantic 2) ships R5, R4B and STU3, and R4 only in 6.x (pydantic 1). R4B
(4.3) is R4 with the medication-definition and evidence resources reworked;
``DocumentReference``, ``Bundle``, ``Binary``, ``OperationOutcome`` and
``CapabilityStatement`` keep R4's elements, and Carnet uses none that R4 lacks: the
resources are checked against the R4 4.0.1 definitions by the HL7 validation engine in
``tests/api/test_fhir_validator.py``.

Mapping of a ``DocumentRecord`` (one ``DocumentReference`` per filed document):

| FHIR | Carnet |
|---|---|
| ``id`` | ``{INS}-{doc_id}`` (the INS is 15 characters, so the split is unambiguous) |
| ``identifier`` | the doc id (``urn:carnet:document-id``) |
| ``status`` | ``current``, or ``superseded`` once a newer version the reader may see replaced it |
| ``relatesTo`` | ``replaces`` the versions this one superseded that the reader may see |
| ``type`` | the document type code and label: LOINC, or a national TRE_A05 type (REMB…) |
| ``category`` | the Carnet class (``urn:carnet:document-class``: biology, imaging...) |
| ``subject`` | the patient's INS (``urn:oid:1.2.250.1.213.1.4.8``), a logical reference to a Patient |
| ``author`` | the RPPS as the national PS id (``urn:oid:1.2.250.1.71.4.2.1``, ``8`` + RPPS); |
| | for an upload, the patient (INS) or the person who acted for them |
| ``securityLabel`` | the visibility flags, in the DMP's vocabulary (TRE_A07, ``1.2.250.1.213.1.1.4.13``) |
| ``content.attachment`` | media type, ``Binary/{id}`` URL, title, the document's date (``creation``), |
| | the original's ``size`` and ``hash`` (base64 SHA-1, R4's) when the store holds it |
| ``context.period`` | the document's (clinical) date: the ``period`` search parameter |
| ``date`` | when Carnet filed the document (``ingested_at``): R4's "when this document |
| | reference was created", the ``date`` search parameter |
| ``meta.lastUpdated`` | the last change of the record (superseded, visibility), else ``date`` |
| ``meta.versionId`` | a hash of the resource as served to its reader (the read's ETag) |

Until the ``date`` element was served, the ``date`` search parameter filtered the clinical
date; it now follows R4 (``DocumentReference.date``), and ``period`` is the clinical date.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence

from fhir.resources.R4B.attachment import Attachment
from fhir.resources.R4B.binary import Binary
from fhir.resources.R4B.bundle import Bundle, BundleEntry, BundleEntrySearch, BundleLink
from fhir.resources.R4B.capabilitystatement import (
    CapabilityStatement,
    CapabilityStatementImplementation,
    CapabilityStatementRest,
    CapabilityStatementRestResource,
    CapabilityStatementRestResourceInteraction,
    CapabilityStatementRestResourceSearchParam,
    CapabilityStatementRestSecurity,
    CapabilityStatementSoftware,
)
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.documentreference import (
    DocumentReference,
    DocumentReferenceContent,
    DocumentReferenceContext,
    DocumentReferenceRelatesTo,
)
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.meta import Meta
from fhir.resources.R4B.operationoutcome import OperationOutcome, OperationOutcomeIssue
from fhir.resources.R4B.period import Period
from fhir.resources.R4B.reference import Reference

from pipeline.identifiers import INS_NIR_OID, INS_OIDS, RPPS_OID
from pipeline.model import DocClass, DocumentRecord, Visibility
from pipeline.type_codes import LOINC_SYSTEM, NATIONAL_TYPE_SYSTEM, type_code_system

FHIR_JSON = "application/fhir+json"
FHIR_VERSION = "4.0.1"
INS_SYSTEM = f"urn:oid:{INS_NIR_OID}"  # INS-NIR, the national health identifier
INS_SYSTEMS = frozenset(f"urn:oid:{oid}" for oid in INS_OIDS)  # + INS-NIA and the test OIDs
PS_SYSTEM = f"urn:oid:{RPPS_OID}"  # idNatPs: "8" + RPPS for a person
LOINC = "http://loinc.org"
# The national complementary document types (TRE_A05), as the ANS terminology server names them.
NATIONAL_TYPES = (
    "https://mos.esante.gouv.fr/NOS/TRE_A05-TypeDocComplementaire/FHIR/TRE-A05-TypeDocComplementaire"
)
_TYPE_SYSTEMS = {LOINC_SYSTEM: LOINC, NATIONAL_TYPE_SYSTEM: NATIONAL_TYPES}
STATUS_SYSTEM = "http://hl7.org/fhir/document-reference-status"
DOC_ID_SYSTEM = "urn:carnet:document-id"
CLASS_SYSTEM = "urn:carnet:document-class"
# The DMP's confidentiality codes (TRE_A07 StatutVisibiliteDocument, 1.2.250.1.213.1.1.4.13),
# as the ANS terminology server names the code system; Carnet's flags are its codes.
VISIBILITY_SYSTEM = (
    "https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
)
VISIBILITY_LABELS = {
    Visibility.INVISIBLE_PATIENT: "Non visible par le patient",
    Visibility.MASQUE_PS: "Masqué aux professionnels de santé",
    Visibility.INVISIBLE_REPRESENTANTS_LEGAUX: "Non visible par représentants légaux du patient",
}
INS_LENGTH = 15

CLASS_LABELS = {
    DocClass.BIOLOGY: "Biologie",
    DocClass.IMAGING: "Imagerie",
    DocClass.PRESCRIPTION: "Ordonnance",
    DocClass.OTHER: "Autre",
}


def type_system(code: str) -> str | None:
    """The FHIR system of a document type code: LOINC, the national types', or none (a
    producer's own code has no system Carnet can name)."""
    return _TYPE_SYSTEMS.get(type_code_system(code) or "")


def resource_id(record: DocumentRecord) -> str:
    return f"{record.patient_id}-{record.doc_id}"


def split_resource_id(resource_id: str) -> tuple[str, str] | None:
    """(INS, doc id) of a ``DocumentReference``/``Binary`` id, or None if it is not one of ours."""
    if len(resource_id) <= INS_LENGTH + 1 or resource_id[INS_LENGTH] != "-":
        return None
    return resource_id[:INS_LENGTH], resource_id[INS_LENGTH + 1 :]


def _sha1(data: bytes) -> bytes:
    # R4's Attachment.hash: an integrity check the spec names, not a security use.
    return hashlib.sha1(data, usedforsecurity=False).digest()


def last_updated(record: DocumentRecord) -> dt.datetime:
    """``meta.lastUpdated``: the record's last change, else its filing."""
    return record.updated_at or record.ingested_at


def document_reference(
    record: DocumentRecord,
    *,
    base_url: str,
    media_type: str,
    replaces: Sequence[str] = (),
    data: bytes | None = None,
) -> DocumentReference:
    """The ``DocumentReference`` of one record, its content served at ``{base_url}/Binary/{id}``;
    ``replaces``: the doc ids of the versions it superseded, to be named (``relatesTo``);
    ``data``: the original, whose size and hash the attachment gives when the record has
    none kept (None: not read, or not stored)."""
    rid = resource_id(record)
    # A national type (REMB, PRESC-KINE…) is not a LOINC code.
    doc_type = CodeableConcept(
        coding=[
            Coding(
                system=type_system(record.type_code),
                code=record.type_code,
                display=record.type_label,
            )
        ]
        if record.type_code
        else None,
        text=record.type_label or record.title,
    )
    author = None
    if record.contributed_by:  # added by the patient, or by who acts for them
        who = record.contributed_by
        author = [
            Reference(
                identifier=Identifier(system=INS_SYSTEM, value=who.subject)
                if who.role == "patient"
                else None,
                display=who.name or f"{who.role} {who.subject}",
            )
        ]
    elif record.author_rpps or record.author_name:
        author = [
            Reference(
                identifier=Identifier(system=PS_SYSTEM, value=f"8{record.author_rpps}")
                if record.author_rpps
                else None,
                display=record.author_name,
            )
        ]
    # Kept at filing; a record filed before they were has them from its bytes, if given.
    size, digest = record.content_size, bytes.fromhex(record.content_sha1) if record.content_sha1 else None
    if data is not None:
        size = len(data) if size is None else size
        digest = _sha1(data) if digest is None else digest
    period = None
    if record.document_date:
        # A day, not an instant: the models type dateTime as datetime, so validate the text.
        day = record.document_date.isoformat()
        period = DocumentReferenceContext(period=Period.model_validate({"start": day, "end": day}))
    resource = DocumentReference(
        id=rid,
        identifier=[Identifier(system=DOC_ID_SYSTEM, value=record.doc_id)],
        status="superseded" if record.superseded_by else "current",
        relatesTo=[
            DocumentReferenceRelatesTo(
                code="replaces",
                target=Reference(reference=f"DocumentReference/{record.patient_id}-{old}"),
            )
            for old in replaces
        ]
        or None,
        docStatus="final",
        type=doc_type,
        category=[
            CodeableConcept(
                coding=[
                    Coding(
                        system=CLASS_SYSTEM,
                        code=record.doc_class.value,
                        display=CLASS_LABELS[record.doc_class],
                    )
                ]
            )
        ],
        subject=Reference(type="Patient", identifier=Identifier(system=INS_SYSTEM, value=record.patient_id)),
        date=record.ingested_at,
        author=author,
        description=record.title,
        securityLabel=[
            CodeableConcept(
                coding=[Coding(system=VISIBILITY_SYSTEM, code=v.value, display=VISIBILITY_LABELS[v])]
            )
            for v in record.visibility
        ]
        or None,
        content=[
            DocumentReferenceContent(
                attachment=Attachment.model_validate(
                    {
                        "contentType": media_type,
                        "url": f"{base_url}/Binary/{rid}",
                        "title": record.title,
                        "creation": record.document_date.isoformat() if record.document_date else None,
                        "size": size,
                        # base64Binary, held as the base64 text's bytes (as Binary.data).
                        "hash": None if digest is None else base64.b64encode(digest),
                    }
                )
            )
        ],
        context=period,
    )
    # versionId: the resource as served, hashed (status and relatesTo as this reader sees
    # them), so that it changes whenever what the reader gets changes; the ETag is it.
    version = hashlib.sha256(resource.model_dump_json().encode()).hexdigest()[:16]
    resource.meta = Meta(versionId=version, lastUpdated=last_updated(record))
    return resource


def binary(record: DocumentRecord, data: bytes, media_type: str) -> Binary:
    # The model holds base64Binary as the base64 text's bytes (raw bytes would be mangled).
    # securityContext: access to the bytes is access to the DocumentReference, as served.
    rid = resource_id(record)
    return Binary(
        id=rid,
        contentType=media_type,
        securityContext=Reference(reference=f"DocumentReference/{rid}"),
        data=base64.b64encode(data),
    )


def search_bundle(
    resources: Sequence[DocumentReference],
    *,
    total: int,
    base_url: str,
    links: Sequence[tuple[str, str]],
    outcome: OperationOutcome | None = None,
) -> Bundle:
    """A searchset page; ``outcome`` (what the search ignored) goes last, as an ``outcome``
    entry that ``total`` does not count."""
    entries = [
        BundleEntry(
            fullUrl=f"{base_url}/DocumentReference/{r.id}",
            resource=r,
            search=BundleEntrySearch(mode="match"),
        )
        for r in resources
    ]
    if outcome is not None:
        entries.append(
            BundleEntry(
                fullUrl=f"urn:uuid:{uuid.uuid4()}",
                resource=outcome,
                search=BundleEntrySearch(mode="outcome"),
            )
        )
    return Bundle(
        type="searchset",
        total=total,
        link=[BundleLink(relation=rel, url=url) for rel, url in links],
        entry=entries or None,
    )


def operation_outcome(code: str, diagnostics: str, *, severity: str = "error") -> OperationOutcome:
    """One issue; ``code`` from the FHIR IssueType value set (invalid, forbidden, not-found...)."""
    return OperationOutcome(
        issue=[OperationOutcomeIssue(severity=severity, code=code, diagnostics=diagnostics)]
    )


# The search parameters served, with what they match (stated in the CapabilityStatement).
SEARCH_PARAMS: tuple[tuple[str, str, str], ...] = (
    (
        "patient.identifier",
        "token",
        f"Required (unless _id is given), or one of its spellings subject.identifier, patient:identifier, "
        f"subject:identifier. The patient's INS: {INS_SYSTEM}|INS (or the bare INS).",
    ),
    ("subject.identifier", "token", "The same as patient.identifier."),
    (
        "_id",
        "token",
        "One document by its resource id ({INS}-{doc id}), held to the other parameters; "
        "alone, it names the patient.",
    ),
    (
        "type",
        "token",
        f"The document type: {LOINC}|code, {NATIONAL_TYPES}|code, or the bare code; "
        "with a system, codes of that system only.",
    ),
    (
        "identifier",
        "token",
        f"The document's identifier: {DOC_ID_SYSTEM}|doc id, or the bare doc id; held to the other "
        "parameters, as _id.",
    ),
    (
        "relatesto",
        "reference",
        "DocumentReference/{id}: the version that replaces it (whose relatesTo names it), as the "
        "reader sees the versions; held to the other parameters (status=current by default).",
    ),
    ("category", "token", f"The Carnet class: {CLASS_SYSTEM}|biology, imaging, prescription, other."),
    (
        "date",
        "date",
        "When Carnet filed the document (DocumentReference.date), with eq/ge/gt/le/lt prefixes, "
        "to the millisecond; a date or time without a zone is UTC. Before DocumentReference.date "
        "was served this filtered the clinical date: that is period.",
    ),
    (
        "period",
        "date",
        "The document's clinical date (context.period, a day), with eq/ge/gt/le/lt prefixes; "
        "documents without a date never match.",
    ),
    (
        "_lastUpdated",
        "date",
        "meta.lastUpdated: the last change of the record (superseded, visibility), else its filing; as date.",
    ),
    (
        "status",
        "token",
        f"current (default) or superseded ({STATUS_SYSTEM}); comma-separated for both.",
    ),
    (
        "_content",
        "string",
        "Words of the document's text, as the search API's q finds them (at most 200 characters).",
    ),
    ("_count", "number", "Page size, 1 to 100 (default 20); 0 for the total alone."),
    ("_summary", "token", "count: the total alone, no entry. Other values are ignored."),
    # Unknown parameters are ignored and named in a warning entry of the Bundle (search mode
    # outcome); with Prefer: handling=strict they are a 400.
)


_UNSERVED_SEARCH = (
    "Search by GET, or by POST to DocumentReference/_search with the parameters as a form "
    "(application/x-www-form-urlencoded), which keeps the patient's INS out of URLs. "
    "Reads answer an ETag (W/ + meta.versionId) and 304 to If-None-Match or If-Modified-Since. "
    "Searches list best first for _content's words, else newest first by the clinical date, "
    "then by id (a stable order for paging); _sort takes one key of -period, period (the "
    "clinical date, undated last), -date, date (the filing), any other is ignored. _include, "
    "_revinclude, _elements and _total are not served: ignored and named in a "
    "warning entry of the Bundle (search mode outcome), or a 400 with Prefer: handling=strict."
)


def capability_statement(base_url: str, *, software_version: str, now: dt.datetime) -> CapabilityStatement:
    """What ``/fhir`` serves: read and search of ``DocumentReference``, read of ``Binary``."""
    return CapabilityStatement(
        status="active",
        date=now.replace(microsecond=0),
        kind="instance",
        publisher="Carnet",
        software=CapabilityStatementSoftware(name="Carnet", version=software_version),
        implementation=CapabilityStatementImplementation(
            description="Carnet FHIR R4 read API over the patient record", url=base_url
        ),
        fhirVersion=FHIR_VERSION,
        format=["json"],
        rest=[
            CapabilityStatementRest(
                mode="server",
                documentation="Every call but this one needs the portal's bearer token; the access "
                "rules of the search API apply unchanged and every access is audited.",
                security=CapabilityStatementRestSecurity(
                    cors=False, description="Authorization: Bearer, a JWT signed by the portal"
                ),
                resource=[
                    CapabilityStatementRestResource(
                        type="DocumentReference",
                        versioning="versioned",
                        readHistory=False,
                        conditionalRead="full-support",
                        documentation=_UNSERVED_SEARCH,
                        interaction=[
                            CapabilityStatementRestResourceInteraction(code="read"),
                            CapabilityStatementRestResourceInteraction(code="search-type"),
                        ],
                        searchParam=[
                            CapabilityStatementRestResourceSearchParam(
                                name=name, type=kind, documentation=doc
                            )
                            for name, kind, doc in SEARCH_PARAMS
                        ],
                    ),
                    CapabilityStatementRestResource(
                        type="Binary",
                        conditionalRead="not-match",
                        interaction=[CapabilityStatementRestResourceInteraction(code="read")],
                        documentation="The decrypted original in its own media type (an Accept that "
                        "names neither it, nor a wildcard, nor FHIR JSON is a 406); as a Binary resource "
                        "with Accept: application/fhir+json. Its ETag is the original's; If-None-Match "
                        "answers 304.",
                    ),
                ],
            )
        ],
    )
