"""The FHIR R4 read API under ``/fhir``, for apps acting for a patient or a professional.

``DocumentReference`` search and read, ``Binary`` read (the decrypted original), and the
``CapabilityStatement`` at ``/fhir/metadata``. Nothing here decides who sees what: every
route goes through the same guard as the search API (:func:`pipeline.api.guard.decision`,
then :func:`pipeline.access.restrict` on the index query and :func:`pipeline.access.may_see`
on each fetched record) and is audited the same way (``search``, ``read``, ``download``).
Errors are ``OperationOutcome`` resources with the HTTP status the search API would give:
400 for a search it cannot run, 401, 403 (the same whether or not the patient exists), 404
(the same for an absent document and one outside the caller's rights), 503; and 406 for a
format other than FHIR JSON, 413 for a body over the size limit, 500 for a fault.

Mounted as its own ASGI app so that its errors are FHIR's and its routes stay out of the
search API's OpenAPI document (the ``CapabilityStatement`` describes them).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fhir.resources.R4B.documentreference import DocumentReference
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException

from pipeline.access import AccessDecision, Principal, as_seen, may_see, restrict
from pipeline.api.documents import media_of
from pipeline.api.fhir_resources import (
    CLASS_SYSTEM,
    DOC_ID_SYSTEM,
    FHIR_JSON,
    INS_SYSTEM,
    INS_SYSTEMS,
    LOINC,
    NATIONAL_TYPES,
    SEARCH_PARAMS,
    STATUS_SYSTEM,
    binary,
    capability_statement,
    document_reference,
    operation_outcome,
    search_bundle,
    split_resource_id,
    type_system,
)
from pipeline.api.guard import NOT_FOUND, Caller, Services, Svc, decision, readable
from pipeline.api.schemas import DOC_ID_PATTERN, INS_PATTERN, QUERY_MAX_CHARS
from pipeline.errors import BackendUnavailable
from pipeline.model import DocClass, DocumentRecord, Format, SearchOrder, SearchQuery

log = logging.getLogger(__name__)

FHIR_PREFIX = "/fhir"  # where the search API mounts this app
DEFAULT_COUNT = 20
MAX_COUNT = 100
MAX_OFFSET = 10_000
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
# A FHIR date or dateTime (ASCII digits only: \d would take other scripts' digits), the time
# of day as FHIR writes it, though only the day counts: document dates are days.
_TIME = r"T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::(?:[0-5][0-9]|60)(?:\.[0-9]{1,9})?)?"
_ZONE = r"(?:Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00))?"
_DATE = re.compile(rf"(eq|ge|gt|le|lt)?([0-9]{{4}})(?:-([0-9]{{2}})(?:-([0-9]{{2}})({_TIME}{_ZONE})?)?)?")
_TIME_PARTS = re.compile(r"T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.([0-9]+))?)?(.*)")
_ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    413: "too-long",
    415: "not-supported",
    500: "exception",
    503: "transient",
}
# What FHIR reads as its JSON format (http.html: a generic JSON type means FHIR JSON), as a
# media type or a _format value.
_JSON_FORMATS = frozenset({FHIR_JSON, "application/json", "application/json+fhir", "text/json", "json"})
_BINARY_READ = re.compile(r"/Binary/[^/]*$")


class SearchError(Exception):
    """A search the server cannot run as asked (a 400 ``OperationOutcome``)."""


def fhir_response(
    resource: object, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body: str = resource.model_dump_json()  # type: ignore[attr-defined]
    return Response(content=body, status_code=status_code, media_type=FHIR_JSON, headers=headers)


def error_response(status_code: int, diagnostics: str, headers: dict[str, str] | None = None) -> Response:
    """An ``OperationOutcome`` with the issue code FHIR gives ``status_code``."""
    code = _ISSUE_CODES.get(status_code, "processing")
    return fhir_response(operation_outcome(code, diagnostics), status_code, headers=headers)


def _base(request: Request) -> str:
    """The FHIR base URL (``.../fhir``) as the client reached it: links and fullUrls use it."""
    return str(request.url_for("metadata")).removesuffix("/metadata")


# -- search parameters -----------------------------------------------------------------------


@dataclass
class DocumentSearch:
    """A ``DocumentReference`` search, parsed; ``applied`` is what the self link repeats."""

    patient_id: str
    type_code: str | None = None
    doc_class: DocClass | None = None
    since: dt.date | None = None  # period: the clinical date, days
    until: dt.date | None = None
    filed_from: dt.datetime | None = None  # date: the filing, instants
    filed_before: dt.datetime | None = None
    updated_from: dt.datetime | None = None  # _lastUpdated
    updated_before: dt.datetime | None = None
    text: str | None = None
    current: bool = True
    superseded: bool = False
    count_only: bool = False  # _summary=count or _count=0: the total, no entry
    doc_id: str | None = None  # _id, identifier
    order: SearchOrder | None = None  # _sort
    # relatesto: the resource id of a version; the search is held to the version that
    # replaced it, as its reader sees the chain (resolved with the access decision).
    relates_to: str | None = None
    # A type asked for in a system its code is not of, an _id not of this patient's.
    no_match: bool = False
    count: int = DEFAULT_COUNT
    offset: int = 0
    applied: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # unknown parameters, told in a warning

    @property
    def matches_nothing(self) -> bool:
        """Whether no document can match (answered without asking the index)."""
        # entered-in-error alone: Carnet serves none (withdrawn documents leave every search).
        return self.no_match or not (self.current or self.superseded)


def _one(params: QueryParams, name: str) -> str | None:
    values = params.getlist(name)
    if len(values) > 1:
        raise SearchError(f"{name} may be given once")
    if values and ("," in values[0]):
        raise SearchError(f"{name}: several values (OR) are not supported")
    return values[0] if values else None


def _token(value: str, name: str, systems: frozenset[str]) -> str:
    system, bar, code = value.rpartition("|")
    if bar and system and system not in systems:
        raise SearchError(f"{name}: unsupported system {system!r} (want {' or '.join(sorted(systems))})")
    if not code:
        raise SearchError(f"{name}: no code")
    return code


def _date_parts(value: str, name: str) -> tuple[str, int, int | None, int | None, str | None]:
    """A FHIR date comparison's prefix (eq when none), year, month, day and time of day."""
    m = _DATE.fullmatch(value)
    if not m:
        raise SearchError(f"{name}: {value!r} is not a date with an eq/ge/gt/le/lt prefix")
    month, day = (None if g is None else int(g) for g in (m.group(3), m.group(4)))
    return m.group(1) or "eq", int(m.group(2)), month, day, m.group(5)


def _day_range(value: str, name: str) -> tuple[dt.date | None, dt.date | None]:
    """The (since, until) days a FHIR date comparison selects, for document dates (days)."""
    prefix, year, month, day, timed = _date_parts(value, name)
    try:
        if day is not None:
            first = last = dt.date(year, month or 0, day)  # a day comes with its month (_DATE)
        elif month is not None:
            first = dt.date(year, month, 1)
            last = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
        else:
            first, last = dt.date(year, 1, 1), dt.date(year, 12, 31)
    except ValueError:
        raise SearchError(f"{name}: {value!r} is not a calendar date") from None
    # A document's date is a whole day: an instant within it has some of the day after it
    # and some before, so gt and lt with a time of day keep that day (FHIR: the ranges
    # overlap). eq with a time is read as its day.
    after = dt.timedelta(days=0 if timed else 1)
    try:  # only the bound asked for: the calendar's first and last days are days too
        if prefix == "gt":
            return last + after, None
        if prefix == "lt":
            return None, first - after
        return {"eq": (first, last), "ge": (first, None), "le": (None, last)}[prefix]
    except OverflowError:
        raise SearchError(f"{name}: {value!r} is out of range") from None


def _instant_range(value: str, name: str) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The [from, before) instants a FHIR date comparison selects, for an instant (when a
    document was filed, when its record changed): the value's precision is its range, and a
    value without a zone is UTC."""
    prefix, year, month, day, timed = _date_parts(value, name)
    try:
        if timed:
            # The time's precision (minute, second, or the fraction's digits, microseconds
            # at most) is the range's length.
            t = _TIME_PARTS.fullmatch(timed)
            assert t is not None  # _DATE matched it
            hour, minute, second, fraction, zone = t.groups()
            digits = (fraction or "")[:6]
            low = dt.datetime(
                year,
                month or 0,  # a time comes with a day and its month (_DATE)
                day or 0,
                int(hour),
                int(minute),
                min(int(second or 0), 59),  # a leap second is read as the one before
                int(digits.ljust(6, "0")) if digits else 0,
                tzinfo=dt.UTC if not zone or zone == "Z" else dt.datetime.strptime(zone, "%z").tzinfo,
            )
            if digits:
                step = dt.timedelta(microseconds=10 ** (6 - len(digits)))
            else:
                step = dt.timedelta(seconds=1 if second else 60)
            high = low + step
        else:
            low = dt.datetime(year, 1 if month is None else month, 1 if day is None else day, tzinfo=dt.UTC)
            if day is not None:
                high = low + dt.timedelta(days=1)
            elif month is not None:
                high = (low.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
            else:
                high = low.replace(year=year + 1)
    except (ValueError, OverflowError):
        raise SearchError(f"{name}: {value!r} is not a calendar date or time in range") from None
    return {"eq": (low, high), "ge": (low, None), "gt": (high, None), "le": (None, high), "lt": (None, low)}[
        prefix
    ]


def _narrowed(
    bounds: tuple[dt.datetime | None, dt.datetime | None], value: str, name: str
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``bounds`` narrowed by one more comparison (repeated parameters are ANDed)."""
    low, high = _instant_range(value, name)
    if low is not None and (bounds[0] is None or low > bounds[0]):
        bounds = (low, bounds[1])
    if high is not None and (bounds[1] is None or high < bounds[1]):
        bounds = (bounds[0], high)
    return bounds


def _int(params: QueryParams, name: str, default: int, low: int, high: int, *, cap: bool) -> int:
    """A whole-number parameter; with ``cap`` a larger value is served as ``high`` (a page may
    come back smaller than asked), else it is refused."""
    raw = _one(params, name)
    if raw is None:
        return default
    value = int(raw) if raw.isascii() and raw.isdigit() else -1
    if value < low or (value > high and not cap):
        raise SearchError(f"{name} must be a whole number from {low} to {high}")
    return min(value, high)


# The ways to name the patient by its INS: the subject is a logical reference (no Patient
# resource), which R4 searches with :identifier; MHD clients chain with .identifier.
_PATIENT_NAMES = ("patient.identifier", "subject.identifier", "patient:identifier", "subject:identifier")
# R4's reference parameters for the patient: ignored, they would leave the search unnamed or
# widen it to the patient.identifier given beside them, so they are refused saying why.
_UNSERVED_REFERENCES = ("patient", "subject")
# The search parameters served (the CapabilityStatement's), the paging offset, the format.
_KNOWN = (
    frozenset(name for name, _, _ in SEARCH_PARAMS)
    | set(_PATIENT_NAMES)
    | set(_UNSERVED_REFERENCES)
    | {"_offset", "_format", "_sort"}
)
# The _summary values served; any other (true, text, data) is ignored, the whole resource served.
_SUMMARIES = ("count", "false")


def _unknown_names(params: QueryParams, *, strict: bool) -> list[str]:
    """The parameters that are not served, to be ignored (FHIR's lenient default). A modifier
    on a served parameter (``type:not``, ``date:missing``) is refused, as FHIR requires:
    ignored, it would widen the results the client asked to narrow. Unknown parameters are
    refused too under ``Prefer: handling=strict``."""
    unknown = []
    for key in dict.fromkeys(params.keys()):
        if key in _KNOWN:
            continue
        name, colon, modifier = key.partition(":")
        if colon and name in _KNOWN:
            raise SearchError(f"{name}: the modifier {modifier!r} is not supported")
        if strict:
            raise SearchError(f"{key}: unknown search parameter (Prefer: handling=strict)")
        unknown.append(key)
    return unknown


def _ids(resource_id: str) -> tuple[str, str] | None:
    """(INS, doc id) of one of Carnet's resource ids, or None."""
    parts = split_resource_id(resource_id) if _FHIR_ID.fullmatch(resource_id) else None
    if parts is None or not re.fullmatch(INS_PATTERN, parts[0]) or not re.fullmatch(DOC_ID_PATTERN, parts[1]):
        return None
    return parts


def _one_document(search: DocumentSearch, doc_id: str | None) -> None:
    """Hold ``search`` to one document (``_id``, ``identifier``, ``relatesto``): two that
    name different documents match nothing, and None (not one of Carnet's) matches nothing."""
    if doc_id is None or (search.doc_id is not None and search.doc_id != doc_id):
        search.no_match = True
    else:
        search.doc_id = doc_id


def _patient_search(params: QueryParams, named: list[str], ignored: list[str]) -> DocumentSearch:
    """A search of the patient the parameters name by INS, under one of its spellings."""
    if not named:
        raise SearchError("patient.identifier is required (the patient's INS)")
    if len(named) > 1:
        raise SearchError(f"the patient is named once ({' and '.join(named)} given)")
    patient_param = named[0]
    patient = _one(params, patient_param) or ""
    ins = _token(patient, patient_param, INS_SYSTEMS)
    if not re.fullmatch(INS_PATTERN, ins):
        raise SearchError(f"{patient_param}: not an INS (15 characters)")
    return DocumentSearch(patient_id=ins, applied=[(patient_param, patient)], ignored=ignored)


def parse_search(params: QueryParams, *, strict: bool = False) -> DocumentSearch:
    """The parameters of a ``DocumentReference`` search; unknown ones are ignored (FHIR's
    lenient default), left out of the self link and named in ``ignored``, or refused when
    ``strict``. ``_id`` alone names its patient (the resource id holds the INS)."""
    ignored = _unknown_names(params, strict=strict)
    for name in _UNSERVED_REFERENCES:
        if name in params:
            raise SearchError(
                f"{name}: Carnet serves no Patient resource to refer to; name the patient by its INS "
                f"({name}.identifier={INS_SYSTEM}|INS)"
            )
    named = [name for name in _PATIENT_NAMES if name in params]
    resource = _one(params, "_id")
    by_id = _ids(resource) if resource is not None else None
    if not named and by_id is not None:  # the resource id names its patient
        search = DocumentSearch(patient_id=by_id[0], ignored=ignored)
    else:
        search = _patient_search(params, named, ignored)
    if resource is not None:
        search.applied.append(("_id", resource))
        _one_document(search, by_id[1] if by_id is not None and by_id[0] == search.patient_id else None)
    if (value := _one(params, "identifier")) is not None:
        # DocumentReference.identifier: Carnet's document id (urn:carnet:document-id).
        code = _token(value, "identifier", frozenset({DOC_ID_SYSTEM}))
        _one_document(search, code if re.fullmatch(DOC_ID_PATTERN, code) else None)
        search.applied.append(("identifier", value))
    if (value := _one(params, "relatesto")) is not None:
        # A reference: DocumentReference/{id}, its absolute URL, or the bare id.
        target = _ids(value.rpartition("DocumentReference/")[2])
        if target is None or target[0] != search.patient_id:
            search.no_match = True
        else:
            search.relates_to = target[1]
        search.applied.append(("relatesto", value))
    if (value := _one(params, "type")) is not None:
        search.type_code = _token(value, "type", frozenset({LOINC, NATIONAL_TYPES}))
        # system|code matches that system's codings only (|code: a code with no system).
        system, bar, _ = value.rpartition("|")
        search.no_match |= bool(bar) and type_system(search.type_code) != (system or None)
        search.applied.append(("type", value))
    if (value := _one(params, "_content")) is not None:
        if not value.strip() or len(value) > QUERY_MAX_CHARS:
            raise SearchError(f"_content: 1 to {QUERY_MAX_CHARS} characters of words to find")
        search.text = value
        search.applied.append(("_content", value))
    if (value := _one(params, "category")) is not None:
        code = _token(value, "category", frozenset({CLASS_SYSTEM}))
        if code not in {c.value for c in DocClass}:
            raise SearchError(f"category: unknown class {code!r}")
        search.doc_class = DocClass(code)
        search.applied.append(("category", value))
    for value in params.getlist("period"):
        since, until = _day_range(value, "period")
        if since and (search.since is None or since > search.since):
            search.since = since
        if until and (search.until is None or until < search.until):
            search.until = until
        search.applied.append(("period", value))
    for value in params.getlist("date"):
        filed = _narrowed((search.filed_from, search.filed_before), value, "date")
        search.filed_from, search.filed_before = filed
        search.applied.append(("date", value))
    for value in params.getlist("_lastUpdated"):
        search.updated_from, search.updated_before = _narrowed(
            (search.updated_from, search.updated_before), value, "_lastUpdated"
        )
        search.applied.append(("_lastUpdated", value))
    if (value := params.get("status")) is not None:
        if len(params.getlist("status")) > 1:
            raise SearchError("status may be given once")
        wanted = {_token(s.strip(), "status", frozenset({STATUS_SYSTEM})) for s in value.split(",")}
        unknown = wanted - {"current", "superseded", "entered-in-error"}
        if unknown:
            raise SearchError(f"status: unknown value {sorted(unknown)[0]!r}")
        # Withdrawn documents leave every search and read: none is served as entered-in-error.
        search.current, search.superseded = "current" in wanted, "superseded" in wanted
        search.applied.append(("status", value))
    if (value := params.get("_sort")) is not None:
        if len(params.getlist("_sort")) > 1 or "," in value:
            raise SearchError("_sort: one sort key is served")
        if value in {o.value for o in SearchOrder}:
            search.order = SearchOrder(value)
            search.applied.append(("_sort", value))
        elif strict:
            raise SearchError(f"_sort={value} is not served (Prefer: handling=strict)")
        else:  # the default order stands, as the warning and the self link say
            search.ignored.append(f"_sort={value}")
    if (value := _one(params, "_summary")) in _SUMMARIES:
        search.count_only = value == "count"
    elif value is not None and strict:
        raise SearchError(f"_summary={value} is not supported (Prefer: handling=strict)")
    elif value is not None:
        search.ignored.append(f"_summary={value}")
    search.count = _int(params, "_count", DEFAULT_COUNT, 0, MAX_COUNT, cap=True)
    search.offset = _int(params, "_offset", 0, 0, MAX_OFFSET, cap=False)
    if search.count == 0:  # FHIR: the same as _summary=count
        search.count_only, search.count = True, DEFAULT_COUNT
    return search


def _query(search: DocumentSearch, d: AccessDecision) -> SearchQuery:
    return restrict(
        SearchQuery(
            patient_id=search.patient_id,
            text=search.text,
            type_code=search.type_code,
            doc_class=search.doc_class,
            since=search.since,
            until=search.until,
            filed_from=search.filed_from,
            filed_before=search.filed_before,
            updated_from=search.updated_from,
            updated_before=search.updated_before,
            limit=search.count,
            offset=search.offset,
            doc_id=search.doc_id,
            order=search.order,
            include_superseded=search.superseded,
            superseded_only=search.superseded and not search.current,
        ),
        d,
    )


def _links(base: str, search: DocumentSearch, total: int) -> list[tuple[str, str]]:
    if search.count_only:  # one page of no entry: nothing to page through
        query = urlencode([*search.applied, ("_summary", "count")], safe=":")
        return [("self", f"{base}/DocumentReference?{query}")]

    def url(offset: int) -> str:
        return f"{base}/DocumentReference?" + urlencode(
            [*search.applied, ("_count", str(search.count)), ("_offset", str(offset))],
            safe=":",  # a query may hold colons: subject:identifier stays readable
        )

    links = [("self", url(search.offset)), ("first", url(0))]
    if search.offset > 0:
        links.append(("previous", url(max(0, search.offset - search.count))))
    if search.offset + search.count < total and search.offset + search.count <= MAX_OFFSET:
        links.append(("next", url(search.offset + search.count)))
    return links


# -- the app ---------------------------------------------------------------------------------


def _stored(svc: Services, record: DocumentRecord) -> bytes | None:
    """The decrypted original, or None when the store no longer holds it."""
    try:
        return svc.store.get(record.content_sha256)
    except KeyError:
        return None


def _document_reference(
    svc: Services, d: AccessDecision, record: DocumentRecord, base_url: str
) -> DocumentReference:
    """The resource of a record as ``d``'s holder may know it (``as_seen``): superseded only
    by a version they may see, and naming the versions it replaced that they may see, past
    any they may not (one they may not does not exist for them)."""
    record = as_seen(svc.index, d, record)
    versions = svc.index.find_versions(
        record.patient_id, content_sha256=record.content_sha256, series_id=record.series_id
    )
    replaces = []
    for v in versions:
        if v.superseded_by is None or v.withdrawn or v.doc_id == record.doc_id:
            continue
        older = svc.index.get(record.patient_id, v.doc_id)
        if older is None or not may_see(older, d):
            continue
        if as_seen(svc.index, d, older).superseded_by == record.doc_id:
            replaces.append(v.doc_id)
    # The original's bytes tell images apart, and give the attachment's size and hash to a
    # record filed before they were kept: only then is it read and decrypted.
    needed = record.format is Format.IMAGE or record.content_sha1 is None or record.content_size is None
    data = _stored(svc, record) if needed else None
    return document_reference(
        record,
        base_url=base_url,
        media_type=media_of(record, data or b"")[0],
        replaces=sorted(replaces),
        data=data,
    )


def _replacing(svc: Services, d: AccessDecision, patient_id: str, doc_id: str) -> str | None:
    """The version that replaced ``doc_id`` as ``d``'s holder sees the chain (the one whose
    ``relatesTo`` names it), or None: none they may see, or ``doc_id`` not theirs to see."""
    record = svc.index.get(patient_id, doc_id)
    if record is None or not may_see(record, d):
        return None
    return as_seen(svc.index, d, record).superseded_by


def _visible_record(
    svc: Services, who: Caller, resource_id: str, action: str
) -> tuple[DocumentRecord, AccessDecision]:
    """The record behind a resource id, if the caller may see it: 403 for the record, 404 for
    the document (refusals audited), exactly as ``GET /patients/{ins}/documents/{doc_id}``."""
    parts = _ids(resource_id)
    if parts is None:
        raise NOT_FOUND
    ins, doc_id = parts
    d = decision(svc, who, ins)
    return readable(svc, who, d, ins, doc_id, action), d


def _strict(request: Request) -> bool:
    """``Prefer: handling=strict``: the client wants unknown parameters refused."""
    prefer = request.headers.get("prefer", "")
    return any(p.strip().replace(" ", "") == "handling=strict" for p in prefer.lower().split(","))


def _accepted(accept: str) -> list[str]:
    """The media ranges of an ``Accept`` header, lower-case and without parameters, less
    those the client refuses (``q=0``)."""
    ranges = []
    for part in accept.split(","):
        media, *params = (p.strip().lower() for p in part.split(";"))
        refused = False
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    refused = float(value) <= 0
                except ValueError:
                    refused = False
        if media and not refused:
            ranges.append(media)
    return ranges


def _format(request: Request) -> str | None:
    """``_format``'s media type, without parameters (``fhirVersion``), or None (an empty
    ``_format`` is none)."""
    fmt = request.query_params.get("_format", "").split(";")[0].strip().lower()
    return fmt or None


def _unservable_format(request: Request) -> str | None:
    """Why the format asked for cannot be served (only FHIR JSON is), or None. ``_format``
    overrides ``Accept``; a ``Binary`` read answers other types with the document itself."""
    fmt = _format(request)
    if fmt is not None:
        return None if fmt in _JSON_FORMATS else f"_format {fmt[:40]!r}: only FHIR JSON is served"
    accept = request.headers.get("accept", "").strip()
    if not accept or _BINARY_READ.search(request.url.path):
        return None
    if any(m in _JSON_FORMATS or m in ("*/*", "application/*") for m in _accepted(accept)):
        return None
    return f"only {FHIR_JSON} is served"


def _accepts(accept: str, media: str) -> bool:
    """Whether an ``Accept`` header takes ``media`` (no header takes anything)."""
    if not accept.strip():
        return True
    kind = media.partition("/")[0]
    return any(m in ("*/*", f"{kind}/*", media) for m in _accepted(accept))


def _not_modified(request: Request, etag: str, last_modified: dt.datetime | None) -> bool:
    """Whether a conditional read's validators say the client's copy is current:
    ``If-None-Match`` (weak comparison, ``*`` for any) wins over ``If-Modified-Since``."""
    if (tags := request.headers.get("if-none-match")) is not None:
        given = {t.strip().removeprefix("W/") for t in tags.split(",")}
        return "*" in given or etag.removeprefix("W/") in given
    since = request.headers.get("if-modified-since")
    if since is None or last_modified is None:
        return False
    try:
        when = email.utils.parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False  # a date it cannot read validates nothing (RFC 9110: ignored)
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    # HTTP dates have whole seconds: a change within the second named is not after it.
    return last_modified.replace(microsecond=0) <= when


def _wants_fhir_json(request: Request) -> bool:
    """A ``Binary`` read answered as a resource rather than as the document's own bytes."""
    fmt = _format(request)
    if fmt is not None:
        return fmt in _JSON_FORMATS
    return any(m in _JSON_FORMATS for m in _accepted(request.headers.get("accept", "")))


def _run_search(svc: Services, who: Principal, request: Request, params: QueryParams) -> Response:
    """A ``DocumentReference`` search (GET or POST), decided, audited and paged."""
    try:
        search = parse_search(params, strict=_strict(request))
    except SearchError as exc:
        return fhir_response(operation_outcome("invalid", str(exc)), 400)
    d = decision(svc, who, search.patient_id)
    if search.relates_to is not None:
        _one_document(search, _replacing(svc, d, search.patient_id, search.relates_to))
    if search.matches_nothing:
        result_total, records = 0, []
    else:
        result = svc.index.search(_query(search, d))
        hits = () if search.count_only else result.hits
        fetched = [svc.index.get(search.patient_id, h.doc_id) for h in hits]
        # The query already carried the decision's filters; each record is checked again
        # as every single-document read is.
        records = [r for r in fetched if r is not None and may_see(r, d)]
        result_total = result.total
    svc.record(who, "search", search.patient_id, doc_ids=[r.doc_id for r in records], reason=d.via)
    base = _base(request)
    resources = [_document_reference(svc, d, r, base) for r in records]
    warning = None
    if search.ignored:
        warning = operation_outcome(
            "not-supported",
            f"ignored (not supported): {', '.join(search.ignored)}",
            severity="warning",
        )
    return fhir_response(
        search_bundle(
            resources,
            total=result_total,
            base_url=base,
            links=_links(base, search, result_total),
            outcome=warning,
        )
    )


def create_fhir_app(svc: Services, *, version: str) -> FastAPI:
    """The ``/fhir`` sub-application over the search API's backends and guard."""
    app = FastAPI(title="Carnet FHIR R4", version=version, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.services = svc

    @app.middleware("http")
    async def negotiate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Before anything else: JSON sent to a client that asked for XML would be misread.
        if (why := _unservable_format(request)) is not None:
            return error_response(406, why)
        return await call_next(request)

    @app.get("/metadata")
    def metadata(request: Request) -> Response:
        return fhir_response(capability_statement(_base(request), software_version=version, now=svc.clock()))

    @app.get("/DocumentReference")
    def search_documents(request: Request, who: Caller, svc: Svc) -> Response:
        return _run_search(svc, who, request, request.query_params)

    @app.post("/DocumentReference/_search")
    async def search_documents_by_post(request: Request, who: Caller, svc: Svc) -> Response:
        # R4's other search form: the parameters in a form body keep the patient's INS out of
        # URLs (proxies' and servers' access logs), those of the URL added to them.
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/x-www-form-urlencoded":
            return error_response(415, "a POST search is a form: application/x-www-form-urlencoded")
        try:
            form = parse_qsl((await request.body()).decode(), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            return error_response(400, "the form is not UTF-8")
        params = QueryParams([*request.query_params.multi_items(), *form])
        return await run_in_threadpool(_run_search, svc, who, request, params)

    @app.get("/DocumentReference/{resource_id}")
    def read_document(resource_id: str, request: Request, who: Caller, svc: Svc) -> Response:
        record, d = _visible_record(svc, who, resource_id, "read")
        # A conditional read is a read: what it confirms unchanged is in the access history.
        svc.record(who, "read", record.patient_id, doc_ids=[record.doc_id], reason=d.via)
        resource = _document_reference(svc, d, record, _base(request))
        meta = resource.meta
        assert meta is not None and meta.lastUpdated is not None  # document_reference sets both
        headers = {
            "ETag": f'W/"{meta.versionId}"',
            "Last-Modified": email.utils.format_datetime(meta.lastUpdated.astimezone(dt.UTC), usegmt=True),
        }
        if _not_modified(request, headers["ETag"], meta.lastUpdated):
            return Response(status_code=304, headers=headers)
        return fhir_response(resource, headers=headers)

    @app.get("/Binary/{resource_id}")
    def read_binary(resource_id: str, request: Request, who: Caller, svc: Svc) -> Response:
        record, d = _visible_record(svc, who, resource_id, "download")
        try:
            data = svc.store.get(record.content_sha256)
        except KeyError:  # audited as the search API's download audits it
            svc.record(
                who, "denied", record.patient_id, doc_ids=[record.doc_id], reason="download: no stored file"
            )
            raise NOT_FOUND from None
        media = media_of(record, data)[0]
        as_resource = _wants_fhir_json(request)
        if not as_resource and not _accepts(request.headers.get("accept", ""), media):
            # Nothing is delivered, so no download is recorded.
            return error_response(406, f"the document is {media}; or ask for {FHIR_JSON}")
        svc.record(who, "download", record.patient_id, doc_ids=[record.doc_id], reason=d.via)
        # One ETag for both forms (the original's content), which the Accept chooses.
        headers = {"ETag": f'W/"{record.content_sha256[:32]}"', "Vary": "Accept"}
        if _not_modified(request, headers["ETag"], None):
            return Response(status_code=304, headers=headers)
        if as_resource:
            return fhir_response(binary(record, data, media), headers=headers)
        return Response(content=data, media_type=media, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        return error_response(
            exc.status_code, str(exc.detail), headers=dict(exc.headers) if exc.headers else None
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return fhir_response(operation_outcome("invalid", "the request cannot be parsed"), 400)

    @app.exception_handler(BackendUnavailable)
    async def unavailable(request: Request, exc: BackendUnavailable) -> Response:
        return fhir_response(operation_outcome("transient", "service unavailable"), 503)

    @app.exception_handler(Exception)
    async def fault(request: Request, exc: Exception) -> Response:
        # A fault still answers in FHIR, and says nothing of it: the message may quote data.
        log.error("FHIR %s failed: %s", request.url.path, type(exc).__name__)
        return error_response(500, "internal error")

    return app
