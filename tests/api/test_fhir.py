"""The FHIR R4 read API as an app uses it: fhirpy (sync and async) against the live server,
paging by the Bundle's links, reads, Binary content, OperationOutcome errors, the audit.

Every response is parsed back with the model library (``fhir.resources``' R4B models);
``test_fhir_validator.py`` checks the same kinds of resources with the HL7 validation engine.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.binary import Binary
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhirpy import AsyncFHIRClient, SyncFHIRClient
from fhirpy.base.exceptions import ForbiddenError, ResourceNotFound
from fhirpy.base.searchset import Raw

from pipeline.access import Principal
from pipeline.api.fhir_resources import CLASS_SYSTEM, FHIR_JSON, INS_SYSTEM, LOINC, VISIBILITY_SYSTEM
from pipeline.model import DocClass, Format, Visibility
from tests.api.conftest import Api, caregiver, make_ins, patient, professional

A, B = make_ins(301), make_ins(302)
PRO = professional()
PDF = b"%PDF-1.4 bilan sanguin \x00\xff binaire"
PNG = b"\x89PNG\r\n\x1a\n photo d'ordonnance"


def rid(doc_id: str, ins: str = A) -> str:
    return f"{ins}-{doc_id}"


def _file_record(api: Api) -> None:
    api.file(
        A,
        "hb-2024",
        text="Hémoglobine 13,5 g/dL",
        title="Bilan sanguin",
        document_date=dt.date(2024, 3, 1),
        content=PDF,
        format=Format.PDF,
        author_rpps="10101234567",
        author_name="Dr Biologiste",
        type_label="Biologie",
        ingested_at=dt.datetime(2024, 3, 2, 8, 0, tzinfo=dt.UTC),
    )
    api.file(
        A,
        "rx-2025",
        doc_class=DocClass.PRESCRIPTION,
        title="Ordonnance",
        document_date=dt.date(2025, 1, 10),
        content=PNG,
        format=Format.IMAGE,
        ingested_at=dt.datetime(2025, 1, 11, 9, 30, 0, 250000, tzinfo=dt.UTC),
    )
    api.file(
        A, "img-2023", doc_class=DocClass.IMAGING, title="Radio du thorax", document_date=dt.date(2023, 6, 5)
    )
    api.file(A, "undated", doc_class=DocClass.OTHER, document_date=None)
    api.file(
        A,
        "masked",
        doc_class=DocClass.IMAGING,
        visibility=(Visibility.MASQUE_PS,),
        document_date=dt.date(2024, 5, 1),
    )
    api.file(A, "withheld", visibility=(Visibility.INVISIBLE_PATIENT,), document_date=dt.date(2024, 4, 1))
    api.file(A, "hb-2022-v1", series_id="s-hb", document_date=dt.date(2022, 1, 1))
    api.file(A, "hb-2022-v2", series_id="s-hb", document_date=dt.date(2022, 1, 2))
    api.index.supersede(A, "hb-2022-v1", "hb-2022-v2")
    api.file(B, "b-doc", text="autre patient")


@pytest.fixture
def record(api: Api) -> Api:
    _file_record(api)
    assert api.put(patient(A), f"/patients/{A}/authorisations/{PRO.subject}").status_code == 200
    return api


def client(api: Api, who: Principal) -> SyncFHIRClient:
    return SyncFHIRClient(f"{api.url}/fhir", authorization=f"Bearer {api.token(who)}")


def found(api: Api, who: Principal, *, limit: int | None = None, **params: Any) -> list[str]:
    """Doc ids of every page of a search, as fhirpy walks the Bundle's next links."""
    search = (
        client(api, who)
        .resources("DocumentReference")
        .search(Raw(**{"patient.identifier": f"{INS_SYSTEM}|{A}", **params}))
    )
    if limit:
        search = search.limit(limit)
    resources = search.fetch_all()
    for r in resources:
        DocumentReference.model_validate(r.serialize())
    return [r["id"].removeprefix(f"{A}-") for r in resources]


CURRENT = {"hb-2024", "rx-2025", "img-2023", "undated", "masked", "hb-2022-v2"}
PRO_SEES = CURRENT - {"masked"} | {"withheld"}  # results not yet released to the patient too


def test_an_app_searches_the_record_page_by_page_with_fhirpy(record: Api) -> None:
    assert sorted(found(record, patient(A), limit=2)) == sorted(CURRENT)
    assert sorted(found(record, PRO, limit=4)) == sorted(PRO_SEES)
    # Newest first, as the search API lists them; undated documents last.
    assert found(record, patient(A))[:3] == ["rx-2025", "masked", "hb-2024"]


def test_each_page_is_a_searchset_bundle_with_paging_links(record: Api) -> None:
    r = record.http.get(
        "/fhir/DocumentReference",
        headers=record.as_(patient(A)),
        params={"patient.identifier": A, "_count": 2, "ignored-param": "x"},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith(FHIR_JSON)
    bundle = Bundle.model_validate(r.json())
    matches = [e for e in bundle.entry if e.search.mode == "match"]
    assert bundle.type == "searchset" and bundle.total == len(CURRENT) and len(matches) == 2
    links = {link.relation: str(link.url) for link in bundle.link}
    assert set(links) == {"self", "first", "next"}
    assert "ignored-param" not in links["self"] and "_offset=2" in links["next"]
    # A larger page than served is allowed to come back smaller (at most 100).
    big = record.http.get(
        "/fhir/DocumentReference",
        headers=record.as_(patient(A)),
        params={"patient.identifier": A, "_count": "99999999999999999999"},
    )
    assert big.status_code == 200 and "_count=100" in big.json()["link"][0]["url"]
    assert all(str(e.fullUrl).endswith(f"/DocumentReference/{e.resource.id}") for e in matches)
    last = record.http.get(links["next"].replace("_offset=2", "_offset=4"), headers=record.as_(patient(A)))
    last_links = {link["relation"] for link in last.json()["link"]}
    assert last_links == {"self", "first", "previous"}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"type": f"{LOINC}|57833-6"}, {"rx-2025"}),
        ({"type": "18748-4"}, {"img-2023", "masked"}),
        ({"category": f"{CLASS_SYSTEM}|prescription"}, {"rx-2025"}),
        ({"category": "other"}, {"undated"}),
        ({"period": ["ge2024-01-01", "le2024-12-31"]}, {"hb-2024", "masked"}),
        ({"period": "2024"}, {"hb-2024", "masked"}),
        ({"period": "eq2024-03"}, {"hb-2024"}),
        ({"period": "lt2024-03-01"}, {"img-2023", "hb-2022-v2"}),
        ({"period": "gt2024-05-01"}, {"rx-2025"}),
        ({"period": "ge2025-01-10"}, {"rx-2025"}),
        ({"period": "ge2025-01-10T08:30:00.5Z"}, {"rx-2025"}),
        # date: when the document was filed (DocumentReference.date), an instant.
        ({"date": "2025"}, {"rx-2025"}),
        ({"date": "lt2024-06-01T12:00"}, {"hb-2024"}),
        ({"date": "ge2024-06-01T12:00:00Z"}, CURRENT - {"hb-2024"}),
        ({"date": "eq2025-01-11T10:30:00.25+01:00"}, {"rx-2025"}),
        ({"date": ["ge2025-01-11T09:30:00.250Z", "lt2025-01-11T09:30:00.251Z"]}, {"rx-2025"}),
        ({"date": "gt2025-01-11T09:30:00.250Z"}, set()),
        # _lastUpdated: the last change (superseded since), else the filing.
        ({"_lastUpdated": "gt2025-01-12", "status": "current,superseded"}, {"hb-2022-v1"}),
        ({"_lastUpdated": "le2024-03-02T08:00:00Z"}, {"hb-2024"}),
        # A day runs on both sides of an instant within it: gt and lt with a time keep it.
        ({"period": "gt2024-03-01T10:00:00Z"}, {"hb-2024", "masked", "rx-2025"}),
        ({"period": "lt2024-03-01T10:00"}, {"hb-2024", "img-2023", "hb-2022-v2"}),
        ({"period": "lt2024-03-01"}, {"img-2023", "hb-2022-v2"}),
        ({"status": "http://hl7.org/fhir/document-reference-status|superseded"}, {"hb-2022-v1"}),
        # One document by its resource id, held to the other parameters as any search.
        ({"_id": rid("hb-2024")}, {"hb-2024"}),
        ({"_id": rid("hb-2024"), "category": "imaging"}, set()),
        ({"_id": rid("hb-2022-v1")}, set()),  # superseded: status=current by default
        ({"_id": rid("hb-2022-v1"), "status": "superseded"}, {"hb-2022-v1"}),
        ({"_id": rid("withheld")}, set()),  # not released to the patient
        ({"_id": rid("b-doc", B)}, set()),  # another patient's id, under this patient
        ({"_id": "not-one-of-ours"}, set()),
        # identifier: Carnet's document id, held to the other parameters as _id is.
        ({"identifier": "urn:carnet:document-id|hb-2024"}, {"hb-2024"}),
        ({"identifier": "rx-2025", "_id": rid("rx-2025")}, {"rx-2025"}),
        ({"identifier": "hb-2024", "_id": rid("rx-2025")}, set()),
        ({"identifier": "withheld"}, set()),
        ({"identifier": "no such id!"}, set()),
        # relatesto: the version whose relatesTo names the one given.
        ({"relatesto": f"DocumentReference/{rid('hb-2022-v1')}"}, {"hb-2022-v2"}),
        ({"relatesto": rid("hb-2022-v1"), "category": "imaging"}, set()),
        ({"relatesto": rid("hb-2024")}, set()),
        ({"relatesto": rid("b-doc", B)}, set()),
        # The calendar's last and first days are days like any other for eq, ge and le.
        ({"period": ["9999-12-31", "ge2022-01-01"]}, set()),
        ({"period": "le9999-12-31", "category": "imaging"}, {"img-2023", "masked"}),
        ({"period": "ge0001-01-01", "category": "imaging"}, {"img-2023", "masked"}),
        # The words of the document, as the search API's q finds them.
        ({"_content": "hémoglobine"}, {"hb-2024"}),
        ({"_content": "hemoglobine", "category": "imaging"}, set()),
        ({"status": "superseded"}, {"hb-2022-v1"}),
        ({"status": "current,superseded"}, CURRENT | {"hb-2022-v1"}),
        ({"status": "entered-in-error"}, set()),
        (
            {"category": "biology", "date": "ge2022-01-01", "status": "current,superseded"},
            {"hb-2024", "hb-2022-v1", "hb-2022-v2"},
        ),
    ],
    ids=[
        "type-system",
        "type-bare",
        "category-system",
        "category-bare",
        "period-range",
        "period-year",
        "period-month",
        "period-lt",
        "period-gt",
        "period",
        "period-time",
        "date-year",
        "date-lt-minute",
        "date-ge-second",
        "date-eq-zone",
        "date-millisecond",
        "date-gt-millisecond",
        "last-updated-superseded",
        "last-updated-filed",
        "period-gt-time",
        "period-lt-time",
        "period-lt-day",
        "status-system",
        "id",
        "id-and-category",
        "id-superseded",
        "id-superseded-asked",
        "id-withheld",
        "id-other-patient",
        "id-not-ours",
        "identifier-system",
        "identifier-and-id",
        "identifier-other-than-id",
        "identifier-withheld",
        "identifier-not-an-id",
        "relatesto",
        "relatesto-and-category",
        "relatesto-current",
        "relatesto-other-patient",
        "period-last-day",
        "period-le-last-day",
        "period-ge-first-day",
        "content",
        "content-and-category",
        "superseded",
        "both-statuses",
        "entered-in-error",
        "combined",
    ],
)
def test_search_parameters(record: Api, params: dict[str, Any], expected: set[str]) -> None:
    assert set(found(record, patient(A), **params)) == expected


def test_a_document_reference_says_what_the_document_is(record: Api) -> None:
    doc = client(record, patient(A)).reference("DocumentReference", rid("hb-2024")).to_resource()
    ref = DocumentReference.model_validate(doc.serialize())
    assert ref.status == "current" and ref.docStatus == "final"
    assert ref.subject.identifier.system == INS_SYSTEM and ref.subject.identifier.value == A
    assert [(c.system, c.code) for c in ref.type.coding] == [(LOINC, "11502-2")]
    assert [(c.system, c.code) for c in ref.category[0].coding] == [(CLASS_SYSTEM, "biology")]
    assert ref.author[0].identifier.value == "810101234567" and ref.author[0].display == "Dr Biologiste"
    attachment = ref.content[0].attachment
    assert attachment.contentType == "application/pdf" and attachment.title == "Bilan sanguin"
    assert str(attachment.url) == f"{record.url}/fhir/Binary/{rid('hb-2024')}"
    assert ref.context.period.start.isoformat() == "2024-03-01"
    # date: when the reference was made (filed), not the clinical date (context.period).
    assert ref.date == ref.meta.lastUpdated == dt.datetime(2024, 3, 2, 8, 0, tzinfo=dt.UTC)
    # The original's size and SHA-1 (base64, R4's hash), as an app checks what it downloads.
    assert attachment.size == len(PDF)
    assert doc["content"][0]["attachment"]["hash"] == base64.b64encode(hashlib.sha1(PDF).digest()).decode()
    old = client(record, patient(A)).reference("DocumentReference", rid("hb-2022-v1")).to_resource()
    assert old["status"] == "superseded"
    # Superseded since it was filed: its last update is that change.
    assert dt.datetime.fromisoformat(old["meta"]["lastUpdated"]) > dt.datetime.fromisoformat(old["date"])
    masked = client(record, patient(A)).reference("DocumentReference", rid("masked")).to_resource()
    assert masked["securityLabel"][0]["coding"][0]["code"] == "MASQUE_PS"


def test_binary_is_the_decrypted_original_or_a_binary_resource(record: Api) -> None:
    headers = record.as_(patient(A))
    raw = record.http.get(f"/fhir/Binary/{rid('hb-2024')}", headers=headers)
    assert raw.status_code == 200 and raw.content == PDF
    assert raw.headers["content-type"] == "application/pdf"
    photo = record.http.get(f"/fhir/Binary/{rid('rx-2025')}", headers=headers)
    assert photo.content == PNG and photo.headers["content-type"] == "image/png"
    as_fhir = record.http.get(f"/fhir/Binary/{rid('hb-2024')}", headers={**headers, "Accept": FHIR_JSON})
    resource = Binary.model_validate(as_fhir.json())
    assert resource.contentType == "application/pdf"
    assert base64.b64decode(as_fhir.json()["data"]) == PDF
    # The attachment URL an app got from the search is the one it fetches.
    ref = client(record, patient(A)).reference("DocumentReference", rid("rx-2025")).to_resource()
    assert ref["content"][0]["attachment"]["contentType"] == "image/png"
    assert record.http.get(ref["content"][0]["attachment"]["url"], headers=headers).content == PNG


def test_the_async_client_reads_the_same_record(record: Api) -> None:
    async def run() -> tuple[list[str], dict[str, Any]]:
        fhir = AsyncFHIRClient(f"{record.url}/fhir", authorization=f"Bearer {record.token(PRO)}")
        search = fhir.resources("DocumentReference").search(Raw(**{"patient.identifier": A}))
        resources = await search.limit(3).fetch_all()
        doc = await fhir.reference("DocumentReference", rid("img-2023")).to_resource()
        return [r["id"] for r in resources], doc.serialize()

    ids, doc = asyncio.run(run())
    assert sorted(ids) == sorted(rid(d) for d in PRO_SEES)
    assert doc["description"] == "Radio du thorax"


def _outcome(r: httpx.Response, status: int, code: str) -> OperationOutcome:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(FHIR_JSON)
    outcome = OperationOutcome.model_validate(r.json())
    assert outcome.issue[0].severity == "error" and outcome.issue[0].code == code
    return outcome


def test_refusals_are_operation_outcomes_that_reveal_nothing(record: Api) -> None:
    # No token: 401 with the bearer challenge, nothing audited.
    before = len(record.services.audit.for_patient(A))
    for path in (
        "/fhir/DocumentReference",
        f"/fhir/DocumentReference/{rid('hb-2024')}",
        f"/fhir/Binary/{rid('hb-2024')}",
    ):
        r = record.http.get(path, params={"patient.identifier": A})
        _outcome(r, 401, "login")
        assert r.headers["WWW-Authenticate"] == "Bearer"
    assert len(record.services.audit.for_patient(A)) == before
    # Another patient's record: the same 403 whether or not it exists.
    nobody = make_ins(399)
    for ins in (B, nobody):
        r = record.http.get(
            "/fhir/DocumentReference",
            headers=record.as_(patient(A)),
            params={"patient.identifier": f"{INS_SYSTEM}|{ins}"},
        )
        assert _outcome(r, 403, "forbidden").issue[0].diagnostics == "access denied"
        assert ins not in r.text
        read = record.http.get(f"/fhir/DocumentReference/{rid('b-doc', ins)}", headers=record.as_(patient(A)))
        _outcome(read, 403, "forbidden")
    with pytest.raises(ForbiddenError):
        client(record, caregiver()).resources("DocumentReference").search(
            Raw(**{"patient.identifier": A})
        ).fetch()
    # A document outside the decision is exactly like one that does not exist.
    bodies = []
    for doc in ("masked", "absent"):
        for kind in ("DocumentReference", "Binary"):
            r = record.http.get(f"/fhir/{kind}/{rid(doc)}", headers=record.as_(PRO))
            _outcome(r, 404, "not-found")
            bodies.append(r.json())
    assert all(b == bodies[0] for b in bodies)
    with pytest.raises(ResourceNotFound):
        client(record, PRO).reference("DocumentReference", rid("masked")).to_resource()


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"patient.identifier": "123"},
        {"patient.identifier": f"http://example.org/mrn|{A}"},
        {"patient.identifier": [A, B]},
        {"patient.identifier": f"{A},{B}"},
        {"patient.identifier": A, "type": "http://snomed.info/sct|123"},
        {"patient.identifier": A, "type": "11502-2,18748-4"},
        {"patient.identifier": A, "category": "letters"},
        {"patient.identifier": A, "date": "yesterday"},
        {"patient.identifier": A, "date": "sa2024-01-01"},
        {"patient.identifier": A, "date": "2024-02-30"},
        {"patient.identifier": A, "identifier": "http://example.org|hb-2024"},
        # R4's reference parameters: no Patient resource to refer to, refused rather than
        # ignored (which would answer the whole record of the patient.identifier beside them).
        {"patient.identifier": A, "patient": f"Patient/{B}"},
        {"subject": f"Patient/{A}"},
        {"patient.identifier": A, "period": "lt0001-01-01"},  # days before the first
        {"patient.identifier": A, "date": "gt9999"},  # the instant after 9999
        {"patient.identifier": A, "date": "ge\u0662\u0660\u0662\u0664"},  # Arabic-Indic digits
        {"patient.identifier": A, "date": "ge2024-01-01T99:99"},
        {"patient.identifier": A, "date": "ge2024-01-01Tnoon"},
        {"patient.identifier": A, "status": "draft"},
        {"patient.identifier": A, "_count": "-5"},
        {"patient.identifier": A, "_count": "１０"},  # full-width digits
        {"patient.identifier": A, "_offset": "x"},
        {"patient.identifier": A, "_offset": "10001"},
        # Modifiers it does not serve: ignored, they would widen what the client narrowed.
        {"patient.identifier": A, "type:not": f"{LOINC}|11502-2"},
        {"patient.identifier": A, "category:not": "biology"},
        {"patient.identifier": A, "date:missing": "true"},
        {"patient.identifier": A, "status:not": "current"},
        {"patient.identifier": A, "type:text": "bilan"},
        {"patient.identifier": f"{A}\n"},  # an INS with a line break after it
        {"patient.identifier": A, "_content": "x" * 201},  # the search API's q takes 200
        {"patient.identifier": A, "_content": ["bilan", "sanguin"]},
        {"patient.identifier": A, "_id": f"{rid('hb-2024')},{rid('rx-2025')}"},
        {"_id": "not-one-of-ours"},  # no patient to decide on
    ],
    ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()) or "none",
)
def test_a_search_it_cannot_run_is_a_400_operation_outcome(record: Api, params: dict[str, Any]) -> None:
    r = record.http.get("/fhir/DocumentReference", headers=record.as_(patient(A)), params=params)
    _outcome(r, 400, "invalid")


def test_unknown_parameters_are_refused_when_the_client_asks_for_strict_handling(record: Api) -> None:
    params = {"patient.identifier": A, "_tag": "x|y", "_format": "json"}
    lenient = record.http.get("/fhir/DocumentReference", headers=record.as_(patient(A)), params=params)
    assert lenient.status_code == 200 and "_tag" not in lenient.json()["link"][0]["url"]
    for prefer in ("handling=strict", "return=minimal, handling=strict"):
        headers = {**record.as_(patient(A)), "Prefer": prefer}
        r = record.http.get("/fhir/DocumentReference", headers=headers, params=params)
        assert "_tag" in _outcome(r, 400, "invalid").issue[0].diagnostics
    del params["_tag"]
    r = record.http.get("/fhir/DocumentReference", headers=headers, params=params)
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/fhir/Patient", 404),
        ("GET", "/fhir/DocumentReference/not-an-id", 404),
        ("GET", "/fhir/DocumentReference/" + "x" * 300, 404),
        ("GET", f"/fhir/DocumentReference/{A}-bad%20id", 404),
        ("GET", f"/fhir/Binary/{A}-", 404),
        ("POST", "/fhir/DocumentReference", 405),
        ("DELETE", f"/fhir/DocumentReference/{A}-hb-2024", 405),
    ],
)
def test_anything_else_is_a_4xx_operation_outcome(record: Api, method: str, path: str, status: int) -> None:
    r = record.http.request(method, path, headers=record.as_(patient(A)))
    assert 400 <= r.status_code < 500
    _outcome(r, status, "not-found" if status == 404 else "not-supported")


def test_every_fhir_access_is_audited_like_the_search_api(record: Api) -> None:
    found(record, PRO, category="biology")
    client(record, PRO).reference("DocumentReference", rid("hb-2024")).to_resource()
    record.http.get(f"/fhir/Binary/{rid('hb-2024')}", headers=record.as_(PRO))
    record.http.get(
        "/fhir/DocumentReference", headers=record.as_(caregiver()), params={"patient.identifier": A}
    )
    entries = [e for e in record.services.audit.for_patient(A) if e.role != "patient"]
    assert [(e.actor, e.action, e.reason) for e in entries] == [
        (PRO.subject, "search", "authorisation"),
        (PRO.subject, "read", "authorisation"),
        (PRO.subject, "download", "authorisation"),
        ("aidant-1", "denied", "no_delegation"),
    ]
    assert set(entries[0].doc_ids) == {"hb-2024", "hb-2022-v2", "withheld"}
    assert entries[1].doc_ids == entries[2].doc_ids == ("hb-2024",)


def test_a_binary_whose_stored_file_is_gone_is_audited_like_the_search_api(api: Api) -> None:
    from tests.index.conftest import make_record

    lost = make_record("lost", patient_id=A).model_copy(update={"content_sha256": "0" * 64})
    assert api.index.upsert([lost]) == []
    for path in (f"/fhir/Binary/{rid('lost')}", f"/patients/{A}/documents/lost/file"):
        assert api.http.get(path, headers=api.as_(patient(A))).status_code == 404
    denied = [(e.action, e.doc_ids, e.reason) for e in api.services.audit.for_patient(A)]
    assert denied == [("denied", ("lost",), "download: no stored file")] * 2


def test_the_attachment_size_and_hash_kept_at_filing_need_no_read_of_the_original(api: Api) -> None:
    """A page of search results decrypted each original for its size and hash: a record
    keeps them since it is filed, and the original is read only for one filed before."""
    kept = api.file(A, "kept", content=PDF, content_size=len(PDF), content_sha1=hashlib.sha1(PDF).hexdigest())
    api.file(A, "older", content=PDF + b"v0")
    reads: list[str] = []
    get = api.store.get

    def counted(sha256: str) -> bytes:
        reads.append(sha256)
        return get(sha256)

    api.store.get = counted  # type: ignore[method-assign]
    bundle = api.get(patient(A), "/fhir/DocumentReference", params={"patient.identifier": A}).json()
    attachments = {e["resource"]["id"]: e["resource"]["content"][0]["attachment"] for e in bundle["entry"]}
    assert attachments[rid("kept")]["size"] == len(PDF)
    assert attachments[rid("kept")]["hash"] == base64.b64encode(hashlib.sha1(PDF).digest()).decode()
    assert attachments[rid("older")]["size"] == len(PDF) + 2
    assert reads == [api.index.get(A, "older").content_sha256] != [kept.content_sha256]  # type: ignore[union-attr]


def test_the_capability_statement_needs_no_token(api: Api) -> None:
    r = api.http.get("/fhir/metadata")
    assert r.status_code == 200 and r.headers["content-type"].startswith(FHIR_JSON)
    cs = CapabilityStatement.model_validate(r.json())
    assert cs.fhirVersion == "4.0.1" and cs.kind == "instance"
    resources = {res.type: res for res in cs.rest[0].resource}
    assert set(resources) == {"DocumentReference", "Binary"}
    params = {p.name for p in resources["DocumentReference"].searchParam}
    assert {"patient.identifier", "type", "category", "date", "status", "_count"} <= params
    assert resources["DocumentReference"].conditionalRead == "full-support"
    assert resources["Binary"].conditionalRead == "not-match"
    # The rest of the API still wants its token; the FHIR routes stay out of its OpenAPI.
    assert api.http.get("/me").status_code == 401
    assert not [p for p in api.http.get("/openapi.json").json()["paths"] if p.startswith("/fhir")]


def test_sort_lists_by_clinical_date_or_filing_and_pages_in_that_order(record: Api) -> None:
    # Filed: hb-2024 (2024-03-02), then the others (2024-06-01, by id), then rx-2025 (2025).
    by_filing = found(record, patient(A), limit=2, _sort="date")
    assert by_filing[0] == "hb-2024" and by_filing[-1] == "rx-2025" and len(by_filing) == len(CURRENT)
    assert found(record, patient(A), _sort="-date") == [by_filing[-1], *by_filing[1:-1], by_filing[0]]
    assert found(record, patient(A), limit=4, _sort="period") == [
        "hb-2022-v2",
        "img-2023",
        "hb-2024",
        "masked",
        "rx-2025",
        "undated",
    ]
    # Words found, in the order asked for rather than best first; the self link says it.
    r = record.http.get(
        "/fhir/DocumentReference",
        headers=record.as_(patient(A)),
        params={"patient.identifier": A, "_sort": "-period", "_content": "hémoglobine"},
    )
    assert "_sort=-period" in r.json()["link"][0]["url"]
    for params in ({"_sort": "date,-period"}, {"_sort": ["date", "period"]}):
        bad = record.http.get(
            "/fhir/DocumentReference",
            headers=record.as_(patient(A)),
            params={"patient.identifier": A, **params},
        )
        _outcome(bad, 400, "invalid")
    strict = {**record.as_(patient(A)), "Prefer": "handling=strict"}
    bad = record.http.get(
        "/fhir/DocumentReference", headers=strict, params={"patient.identifier": A, "_sort": "title"}
    )
    _outcome(bad, 400, "invalid")


def test_a_search_by_post_keeps_the_ins_out_of_the_url(record: Api) -> None:
    form = {"patient.identifier": f"{INS_SYSTEM}|{A}", "category": "biology", "status": "current,superseded"}
    by_get = record.http.get("/fhir/DocumentReference", headers=record.as_(patient(A)), params=form).json()
    r = record.http.post("/fhir/DocumentReference/_search", headers=record.as_(patient(A)), data=form)
    assert r.status_code == 200 and r.headers["content-type"].startswith(FHIR_JSON)
    assert A not in str(r.request.url)
    ids = [e["resource"]["id"] for e in r.json()["entry"]]
    assert ids == [e["resource"]["id"] for e in by_get["entry"]] and len(ids) == 3
    # URL parameters join the form's; the same decision and audit as a GET.
    counted = record.http.post(
        "/fhir/DocumentReference/_search?_summary=count", headers=record.as_(patient(A)), data=form
    )
    assert counted.json()["total"] == 3 and "entry" not in counted.json()
    other = {"patient.identifier": B}
    _outcome(
        record.http.post("/fhir/DocumentReference/_search", headers=record.as_(patient(A)), data=other),
        403,
        "forbidden",
    )
    _outcome(record.http.post("/fhir/DocumentReference/_search", data=form), 401, "login")
    as_json = record.http.post("/fhir/DocumentReference/_search", headers=record.as_(patient(A)), json=form)
    _outcome(as_json, 415, "not-supported")
    assert [e.action for e in record.services.audit.for_patient(A)][-3:] == ["search", "search", "search"]


# A value of each search parameter the CapabilityStatement lists.
LISTED_PARAMS = {
    "patient.identifier": A,
    "subject.identifier": A,
    "_id": rid("hb-2024"),
    "identifier": "hb-2024",
    "relatesto": f"DocumentReference/{rid('hb-2022-v1')}",
    "type": "11502-2",
    "category": "biology",
    "date": "ge2020",
    "period": "ge2020",
    "_lastUpdated": "ge2020",
    "status": "current",
    "_content": "hémoglobine",
    "_count": "5",
    "_summary": "count",
}


@pytest.mark.parametrize("name", sorted(LISTED_PARAMS))
def test_every_search_parameter_the_capability_statement_lists_is_served(record: Api, name: str) -> None:
    cs = record.http.get("/fhir/metadata").json()
    listed = {p["name"] for r in cs["rest"][0]["resource"] for p in r.get("searchParam", [])}
    assert listed == set(LISTED_PARAMS)
    params = {name: LISTED_PARAMS[name]} | ({} if name.endswith(".identifier") else {"patient.identifier": A})
    r = record.http.get("/fhir/DocumentReference", headers=record.as_(patient(A)), params=params)
    assert r.status_code == 200, r.text
    assert not [e for e in r.json().get("entry", []) if e["search"]["mode"] == "outcome"], r.text
    assert f"{name}=" in r.json()["link"][0]["url"]


def test_a_conditional_read_answers_304_until_the_document_changes(record: Api) -> None:
    headers = record.as_(patient(A))
    url = f"/fhir/DocumentReference/{rid('hb-2024')}"
    first = record.http.get(url, headers=headers)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert etag == f'W/"{first.json()["meta"]["versionId"]}"'
    for validator in (
        {"If-None-Match": etag},
        {"If-None-Match": f'"x", {etag}'},
        {"If-Modified-Since": modified},
    ):
        again = record.http.get(url, headers={**headers, **validator})
        assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    for validator in ({"If-None-Match": '"other"'}, {"If-Modified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"}):
        assert record.http.get(url, headers={**headers, **validator}).status_code == 200
    # A change to what the reader gets is a new version: the old ETag no longer validates.
    assert record.index.set_visibility(A, "hb-2024", [Visibility.INVISIBLE_REPRESENTANTS_LEGAUX])
    changed = record.http.get(url, headers={**headers, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert changed.json()["meta"]["lastUpdated"] > first.json()["meta"]["lastUpdated"]


def test_binary_answers_its_own_type_fhir_json_or_406(record: Api) -> None:
    headers = record.as_(patient(A))
    url = f"/fhir/Binary/{rid('hb-2024')}"
    for accept in ("application/pdf", "application/*", "text/html, */*;q=0.8", ""):
        r = record.http.get(url, headers={**headers, "Accept": accept})
        assert (r.status_code, r.content) == (200, PDF), accept
    for accept in ("image/png", "application/xml", "application/pdf;q=0, text/plain"):
        r = record.http.get(url, headers={**headers, "Accept": accept})
        _outcome(r, 406, "not-supported")
    etag = record.http.get(url, headers=headers).headers["etag"]
    assert record.http.get(url, headers={**headers, "If-None-Match": etag}).status_code == 304
    # No download is recorded for a 406: nothing was delivered.
    downloads = [e for e in record.services.audit.for_patient(A) if e.action == "download"]
    assert len(downloads) == 4 + 2  # the four served, the ETag's read and the 304


def test_a_body_too_large_is_an_operation_outcome(record: Api) -> None:
    # The size limit answers before the FHIR app is reached: its answer must still be FHIR's.
    r = record.http.post("/fhir/DocumentReference", headers=record.as_(patient(A)), content=b"x" * 70_000)
    assert _outcome(r, 413, "too-long").issue[0].diagnostics == "larger than 65536 bytes"
    # The search API's own answer keeps its shape.
    plain = record.http.post("/me", headers=record.as_(patient(A)), content=b"x" * 70_000)
    assert plain.status_code == 413 and plain.json() == {"detail": "larger than 65536 bytes"}


def test_an_unexpected_failure_is_a_500_operation_outcome(
    record: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(query: object) -> None:
        raise RuntimeError("index bug with a patient's words in it")

    monkeypatch.setattr(record.services.index, "search", broken)
    r = record.http.get(
        "/fhir/DocumentReference", headers=record.as_(patient(A)), params={"patient.identifier": A}
    )
    outcome = _outcome(r, 500, "exception")
    assert "patient's words" not in r.text and outcome.issue[0].diagnostics == "internal error"


@pytest.mark.parametrize(
    ("path", "headers", "params"),
    [
        ("/fhir/metadata", {"Accept": "application/fhir+xml"}, {}),
        ("/fhir/metadata", {}, {"_format": "xml"}),
        ("/fhir/metadata", {"Accept": FHIR_JSON}, {"_format": "application/fhir+xml"}),  # _format wins
        ("/fhir/DocumentReference", {"Accept": "application/xml, text/xml"}, {"patient.identifier": A}),
        ("/fhir/DocumentReference", {"Accept": f"{FHIR_JSON};q=0, application/fhir+xml"}, {}),
        (f"/fhir/DocumentReference/{rid('hb-2024')}", {}, {"_format": "ttl"}),
        (f"/fhir/Binary/{rid('hb-2024')}", {}, {"_format": "xml"}),
    ],
)
def test_a_format_it_cannot_serve_is_a_406(
    record: Api, path: str, headers: dict[str, str], params: dict[str, str]
) -> None:
    # FHIR JSON only: answering JSON to a client that asked for XML would be parsed as XML.
    r = record.http.get(path, headers={**record.as_(patient(A)), **headers}, params=params)
    _outcome(r, 406, "not-supported")


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"Accept": "application/json"}, {}),
        ({"Accept": "application/fhir+json; fhirVersion=4.0"}, {}),
        ({"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}, {}),
        ({"Accept": "application/fhir+xml"}, {"_format": "json"}),
        ({}, {"_format": "application/fhir+json"}),
        ({}, {"_format": ""}),  # an empty parameter is no parameter
    ],
)
def test_json_in_any_of_its_spellings_is_served(
    record: Api, headers: dict[str, str], params: dict[str, str]
) -> None:
    headers = {**record.as_(patient(A)), **headers}
    r = record.http.get(f"/fhir/DocumentReference/{rid('hb-2024')}", headers=headers, params=params)
    assert r.status_code == 200 and r.headers["content-type"].startswith(FHIR_JSON)


def test_binary_as_a_resource_for_json_in_any_of_its_spellings(record: Api) -> None:
    headers = record.as_(patient(A))
    for accept in ("application/json", "application/fhir+json;fhirVersion=4.0"):
        r = record.http.get(f"/fhir/Binary/{rid('hb-2024')}", headers={**headers, "Accept": accept})
        assert r.headers["content-type"].startswith(FHIR_JSON) and r.json()["resourceType"] == "Binary"
    # Any other type, the document's own included, is the document itself.
    for accept in ("application/pdf", "*/*", "application/fhir+json;q=0, */*"):
        r = record.http.get(f"/fhir/Binary/{rid('hb-2024')}", headers={**headers, "Accept": accept})
        assert r.status_code == 200 and r.content == PDF


@pytest.mark.parametrize(
    "name", ["patient.identifier", "subject.identifier", "patient:identifier", "subject:identifier"]
)
def test_the_patient_is_named_by_its_ins_through_patient_or_subject(record: Api, name: str) -> None:
    # The subject is a logical reference (an INS, no Patient resource): R4's :identifier
    # modifier searches it; MHD's chained patient.identifier is taken the same way.
    r = record.http.get(
        "/fhir/DocumentReference",
        headers=record.as_(patient(A)),
        params={name: f"{INS_SYSTEM}|{A}", "category": "prescription"},
    )
    assert r.status_code == 200, r.text
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [rid("rx-2025")]
    assert f"{name}=" in r.json()["link"][0]["url"]
    both = record.http.get(
        "/fhir/DocumentReference",
        headers=record.as_(patient(A)),
        params={name: A, "subject.identifier" if name != "subject.identifier" else "patient.identifier": A},
    )
    _outcome(both, 400, "invalid")


def test_ignored_parameters_are_named_in_a_warning_of_the_bundle(record: Api) -> None:
    r = record.http.get(
        "/fhir/DocumentReference",
        headers=record.as_(patient(A)),
        params={"patient.identifier": A, "_sort": "-_lastUpdated", "author.given": "x", "_count": 2},
    )
    bundle = Bundle.model_validate(r.json())
    matches = [e for e in bundle.entry if e.search.mode == "match"]
    outcomes = [e for e in bundle.entry if e.search.mode == "outcome"]
    assert len(matches) == 2 and bundle.total == len(CURRENT) and len(outcomes) == 1
    issue = outcomes[0].resource.issue[0]
    assert issue.severity == "warning" and issue.code == "not-supported"
    assert "_sort" in issue.diagnostics and "author.given" in issue.diagnostics
    # Nothing ignored, nothing to say; _format is honoured, not ignored.
    clean = record.http.get(
        "/fhir/DocumentReference",
        headers=record.as_(patient(A)),
        params={"patient.identifier": A, "_format": "json"},
    )
    assert {e["search"]["mode"] for e in clean.json()["entry"]} == {"match"}


def test_references_and_labels_use_the_national_vocabularies(record: Api) -> None:
    headers = record.as_(patient(A))
    ref = record.http.get(f"/fhir/DocumentReference/{rid('masked')}", headers=headers).json()
    # The DMP's confidentiality codes are those of TRE_A07 (StatutVisibiliteDocument).
    assert ref["securityLabel"] == [
        {
            "coding": [
                {
                    "system": VISIBILITY_SYSTEM,
                    "code": "MASQUE_PS",
                    "display": "Masqué aux professionnels de santé",
                }
            ]
        }
    ]
    assert VISIBILITY_SYSTEM.startswith("https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/")
    assert ref["subject"]["type"] == "Patient"
    # A Binary says which DocumentReference rules access to it.
    binary = record.http.get(f"/fhir/Binary/{rid('masked')}", headers={**headers, "Accept": FHIR_JSON}).json()
    assert binary["securityContext"] == {"reference": f"DocumentReference/{rid('masked')}"}


@pytest.mark.parametrize("params", [{"_summary": "count"}, {"_count": "0"}], ids=["summary", "count-0"])
def test_a_count_only_search_gives_the_total_and_no_entry(record: Api, params: dict[str, str]) -> None:
    r = record.http.get(
        "/fhir/DocumentReference",
        headers=record.as_(PRO),
        params={"patient.identifier": A, "category": "biology", **params},
    )
    bundle = Bundle.model_validate(r.json())
    assert r.status_code == 200 and bundle.total == 3 and not bundle.entry
    self_link = str(bundle.link[0].url)
    assert bundle.link[0].relation == "self" and "_summary=count" in self_link
    assert "_offset" not in self_link and len(bundle.link) == 1
    # Counted is not read: the audit names no document.
    assert record.services.audit.for_patient(A)[-1].doc_ids == ()


def test_an_id_alone_names_its_patient_and_is_decided_like_any_search(record: Api) -> None:
    def by_id(resource_id: str) -> httpx.Response:
        return record.get(PRO, "/fhir/DocumentReference", params={"_id": resource_id})

    assert [e["resource"]["id"] for e in by_id(rid("hb-2024")).json()["entry"]] == [rid("hb-2024")]
    masked = by_id(rid("masked"))  # masked from professionals: not found, as its read says
    assert masked.status_code == 200 and masked.json()["total"] == 0
    _outcome(by_id(rid("b-doc", B)), 403, "forbidden")


def test_a_newer_version_says_which_one_it_replaces_if_the_reader_may_see_it(record: Api) -> None:
    new = record.http.get(f"/fhir/DocumentReference/{rid('hb-2022-v2')}", headers=record.as_(patient(A)))
    assert new.json()["relatesTo"] == [
        {"code": "replaces", "target": {"reference": f"DocumentReference/{rid('hb-2022-v1')}"}}
    ]
    params = {"patient.identifier": A, "_count": 100}
    search = record.get(patient(A), "/fhir/DocumentReference", params=params)
    by_id = {e["resource"]["id"]: e["resource"] for e in search.json()["entry"]}
    assert by_id[rid("hb-2022-v2")]["relatesTo"] == new.json()["relatesTo"]
    assert "relatesTo" not in by_id[rid("hb-2024")]
    # A version masked from professionals is not named to one: it does not exist for them.
    record.file(A, "cr-v1", series_id="s-cr", visibility=(Visibility.MASQUE_PS,))
    record.file(A, "cr-v2", series_id="s-cr")
    record.index.supersede(A, "cr-v1", "cr-v2")
    seen_by_pro = record.get(PRO, f"/fhir/DocumentReference/{rid('cr-v2')}").json()
    assert "relatesTo" not in seen_by_pro and "cr-v1" not in str(seen_by_pro)
    seen_by_patient = record.get(patient(A), f"/fhir/DocumentReference/{rid('cr-v2')}").json()
    assert seen_by_patient["relatesTo"][0]["target"]["reference"].endswith(rid("cr-v1"))
