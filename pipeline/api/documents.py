"""Routes over a patient's documents: search, upload, read, download, hide/unhide, release."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Path, Query, UploadFile
from fastapi.responses import Response

from pipeline.access import AccessDecision, Role, as_seen, may_see, restrict, visible_ids
from pipeline.acks import BatchReport, upload_report
from pipeline.api.guard import (
    FORBIDDEN,
    NOT_FOUND,
    Caller,
    Services,
    Svc,
    decision,
    managing,
    readable,
    uploading,
)
from pipeline.api.schemas import (
    DOC_ID_PATTERN,
    ERRORS,
    INS_PATTERN,
    QUERY_MAX_CHARS,
    DocumentView,
    ErrorDetail,
    SearchPage,
    VisibilityView,
)
from pipeline.feeds.config import producer_name
from pipeline.index.base import set_series_flag
from pipeline.ingest.sources import UPLOAD_PRODUCER, ingest_upload
from pipeline.model import Contributor, DocClass, DocumentRecord, Format, SearchQuery, Status, Visibility

router = APIRouter(prefix="/patients/{ins}/documents", tags=["documents"], responses=ERRORS)

Ins = Annotated[str, Path(pattern=INS_PATTERN, description="The patient's INS")]
DocId = Annotated[str, Path(pattern=DOC_ID_PATTERN)]

_MEDIA = {
    Format.CDA: ("application/xml", "xml"),
    Format.HL7V2: ("text/plain; charset=utf-8", "hl7"),
    Format.PDF: ("application/pdf", "pdf"),
}
_IMAGES = (
    (b"\x89PNG", "image/png", "png"),
    (b"\xff\xd8", "image/jpeg", "jpg"),
    (b"II*\x00", "image/tiff", "tif"),
    (b"MM\x00*", "image/tiff", "tif"),
)
_WEBP = ("image/webp", "webp")
# Photo types declared for HEIF files (an iPhone's), refused saying what to send instead.
_HEIF_TYPES = frozenset(
    {"image/heic", "image/heif", "image/heic-sequence", "image/heif-sequence", "image/avif"}
)

# What a patient may upload: a PDF, or a photo or scan (OCR'd).
UPLOAD_MAX_BYTES = 20 * 1024 * 1024
UPLOAD_TYPES = ("application/pdf", "image/jpeg", "image/png", "image/tiff", "image/webp")
_UPLOAD_NAME = re.compile(r"[^A-Za-z0-9._ -]+")
# A PDF may have whitespace before its header, as the PDF parser allows (scored first).
_PDF_HEADER_WINDOW = 1024


def uploaded_media(data: bytes) -> str | None:
    """The upload type ``data`` is by its bytes (PDF header, image magic), or None.

    The declared type alone is not enough: a CDA or an HL7 message sent as a PDF would be
    parsed as what it is, with the visibility flags and identifiers it declares itself.
    """
    if data[:_PDF_HEADER_WINDOW].lstrip().startswith(b"%PDF-"):
        return "application/pdf"
    image = _image_type(data)
    return image[0] if image else None


def _image_type(data: bytes) -> tuple[str, str] | None:
    """(media type, file extension) of an image Carnet reads, by its bytes."""
    from parsers.image import is_webp

    if is_webp(data):
        return _WEBP
    return next(((media, ext) for magic, media, ext in _IMAGES if data.startswith(magic)), None)


def _unsupported(detail: str) -> HTTPException:
    return HTTPException(status_code=415, detail=f"{detail}: send one of {', '.join(UPLOAD_TYPES)}")


@router.get("", response_model=SearchPage, summary="Search the patient's documents")
def search_documents(
    ins: Ins,
    who: Caller,
    svc: Svc,
    q: Annotated[str | None, Query(max_length=QUERY_MAX_CHARS, description="Words to find")] = None,
    doc_class: Annotated[DocClass | None, Query(alias="class")] = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=10_000)] = 0,
) -> SearchPage:
    d = decision(svc, who, ins)
    query = restrict(
        SearchQuery(
            patient_id=ins, text=q, doc_class=doc_class, since=since, until=until, limit=limit, offset=offset
        ),
        d,
    )
    result = svc.index.search(query)
    svc.record(who, "search", ins, doc_ids=[h.doc_id for h in result.hits], reason=d.via)
    return SearchPage(total=result.total, offset=offset, limit=limit, hits=result.hits)


@router.post(
    "",
    response_model=BatchReport,
    summary="Add a document to the record (a PDF, a photo or a scan)",
    description=f"The patient, a minor's legal representative, or a caregiver whose delegation "
    f"includes uploads. One file (multipart field `file`) of at most {UPLOAD_MAX_BYTES} bytes "
    f"({UPLOAD_MAX_BYTES // 2**20} MiB), of type {', '.join(UPLOAD_TYPES)}. It goes through the "
    f"same pipeline as every producer's document (kept encrypted, parsed with OCR for photos "
    f"and scans, classified, checked, indexed) and the answer is the acknowledgement a "
    f"producer gets: indexed, duplicate (of a document the sender may see: one hidden from "
    f"them is not there for them, and the upload is filed) or rejected with reason codes. "
    f"A document printing "
    f"another person's INS is rejected (identity_conflict); one printing none is filed in "
    f"this record, as declared by its owner.",
    responses={
        413: {"model": ErrorDetail, "description": f"Larger than {UPLOAD_MAX_BYTES} bytes"},
        415: {"model": ErrorDetail, "description": f"Not one of {', '.join(UPLOAD_TYPES)}"},
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {"encoding": {"file": {"contentType": ", ".join(UPLOAD_TYPES)}}}
            }
        }
    },
)
def upload_document(
    ins: Ins,
    who: Caller,
    svc: Svc,
    file: Annotated[
        UploadFile, File(description=f"PDF, JPEG, PNG, TIFF or WebP, ≤ {UPLOAD_MAX_BYTES} bytes")
    ],
) -> BatchReport:
    d = uploading(svc, who, ins)
    from parsers.image import unread_photo_format

    media = (file.content_type or "").split(";")[0].strip().lower()
    if media not in UPLOAD_TYPES and media not in _HEIF_TYPES:
        raise _unsupported("unsupported type")
    data = file.file.read(UPLOAD_MAX_BYTES + 1)
    if len(data) > UPLOAD_MAX_BYTES:
        raise HTTPException(status_code=413, detail=f"larger than {UPLOAD_MAX_BYTES} bytes")
    if uploaded_media(data) is None:
        # An iPhone's HEIC photo, declared as such or as a JPEG: say what it is.
        raise _unsupported(unread_photo_format(data) or "the file is not what it says")
    name = _UPLOAD_NAME.sub("_", (file.filename or "").replace("\\", "/").rsplit("/", 1)[-1])[:100]
    name = name.strip(" .") or "document"
    summary = ingest_upload(
        data,
        svc.settings,
        filename=name,
        patient_id=ins,
        contributor=Contributor(role=who.role.value, subject=who.subject, name=who.name),
        index=svc.index,
        store=svc.store,
        sees=lambda patient_id, doc_id: bool(visible_ids(svc.index, d, patient_id, [doc_id])),
    )
    statuses = ",".join(o.status.value for o in summary.outcomes)
    svc.record(
        who,
        "upload",
        ins,
        reason=f"{d.via}: {statuses}",
        doc_ids=[o.doc_id for o in summary.outcomes if o.doc_id and o.status is not Status.REJECTED],
    )
    # A document the sender may not see is never a duplicate (``sees``); their own upload,
    # filed, may still be one they may not see (a class outside a caregiver's delegation):
    # its id is not shown, as the search and the history never show it.
    shown = visible_ids(svc.index, d, ins, [o.doc_id for o in summary.outcomes if o.doc_id])
    outcomes = [o if o.doc_id in shown else o.model_copy(update={"doc_id": None}) for o in summary.outcomes]
    return upload_report(outcomes, producer=UPLOAD_PRODUCER, batch=summary.run_id, file=name)


@router.get("/{doc_id}", response_model=DocumentView, summary="A document's metadata and text")
def read_document(ins: Ins, doc_id: DocId, who: Caller, svc: Svc) -> DocumentView:
    d = decision(svc, who, ins)
    record = readable(svc, who, d, ins, doc_id, "read")
    svc.record(who, "read", ins, doc_ids=[doc_id], reason=d.via)
    record = as_seen(svc.index, d, record)  # no newer version the caller may not see
    return DocumentView.of(record, producer_name=producer_name(svc.settings, record.producer))


def media_of(record: DocumentRecord, data: bytes) -> tuple[str, str]:
    """(media type, file extension) of a stored document: images are told by their bytes."""
    if record.format is Format.IMAGE:
        return _image_type(data) or ("application/octet-stream", "bin")
    return _MEDIA[record.format]


@router.get(
    "/{doc_id}/file",
    summary="The document as the producer sent it (decrypted)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The file"}},
)
def download_document(ins: Ins, doc_id: DocId, who: Caller, svc: Svc) -> Response:
    d = decision(svc, who, ins)
    record = readable(svc, who, d, ins, doc_id, "download")
    try:
        data = svc.store.get(record.content_sha256)
    except KeyError:
        svc.record(who, "denied", ins, doc_ids=[doc_id], reason="download: no stored file")
        raise NOT_FOUND from None
    svc.record(who, "download", ins, doc_ids=[doc_id], reason=d.via)
    media, ext = media_of(record, data)
    return Response(
        content=data,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{record.doc_id}.{ext}"'},
    )


def _set_flag(
    svc: Services, d: AccessDecision, record: DocumentRecord, flag: Visibility, on: bool
) -> VisibilityView:
    """``flag`` set or cleared on the versions of ``record`` that ``d``'s holder may see: a
    version hidden from them (the minor's, from their parents; one masked from a
    professional) is not theirs to show or hide. A result not yet released to the patient
    is: it follows the choice the patient (or their representative) made on the document."""
    hidden = tuple(f for f in d.exclude_visibility if f is not Visibility.INVISIBLE_PATIENT)
    sight = d.model_copy(update={"exclude_visibility": hidden})
    flags = set_series_flag(svc.index, record, flag, on, reaches=lambda version: may_see(version, sight))
    if flags is None:
        raise NOT_FOUND
    return VisibilityView(doc_id=record.doc_id, visibility=flags)


@router.put(
    "/{doc_id}/hidden",
    response_model=VisibilityView,
    summary="Hide a document from professionals (MASQUE_PS)",
)
def hide_document(ins: Ins, doc_id: DocId, who: Caller, svc: Svc) -> VisibilityView:
    d = managing(svc, who, ins)
    view = _set_flag(svc, d, readable(svc, who, d, ins, doc_id, "hide"), Visibility.MASQUE_PS, True)
    svc.record(who, "visibility", ins, doc_ids=[doc_id], reason="hide from professionals")
    return view


@router.delete(
    "/{doc_id}/hidden",
    response_model=VisibilityView,
    summary="Show a hidden document to authorised professionals again",
)
def unhide_document(ins: Ins, doc_id: DocId, who: Caller, svc: Svc) -> VisibilityView:
    d = managing(svc, who, ins)
    view = _set_flag(svc, d, readable(svc, who, d, ins, doc_id, "unhide"), Visibility.MASQUE_PS, False)
    svc.record(who, "visibility", ins, doc_ids=[doc_id], reason="unhide")
    return view


@router.post(
    "/{doc_id}/release",
    response_model=VisibilityView,
    summary="Release a result to the patient (clears INVISIBLE_PATIENT)",
)
def release_document(ins: Ins, doc_id: DocId, who: Caller, svc: Svc) -> VisibilityView:
    d = decision(svc, who, ins)
    if who.role is not Role.PROFESSIONAL:
        # No doc id: an id the caller made up must not enter the patient's history.
        svc.record(who, "denied", ins, reason="release_needs_professional")
        raise FORBIDDEN
    view = _set_flag(
        svc, d, readable(svc, who, d, ins, doc_id, "release"), Visibility.INVISIBLE_PATIENT, False
    )
    svc.record(who, "visibility", ins, doc_ids=[doc_id], reason="released to the patient")
    return view
