"""The API over real HTTP: authentication, refusals that reveal nothing, the audit of
every access, downloads, record management and erasure."""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pipeline.access import Principal, Role
from pipeline.api import create_app
from pipeline.api.auth import issue_token
from pipeline.errors import ConfigurationError
from pipeline.model import DocClass, Format, Visibility
from pipeline.settings import ApiSettings, Settings
from tests.api.conftest import (
    TEST_JWT_KEY,
    Api,
    LiveServer,
    caregiver,
    make_ins,
    patient,
    professional,
    representative,
)

A, B = make_ins(1), make_ins(2)
PRO = professional()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _hs512(claims: dict[str, object]) -> str:
    with warnings.catch_warnings():  # PyJWT warns that the key is short for HS512: that's the point
        warnings.simplefilter("ignore")
        return jwt.encode(claims, TEST_JWT_KEY, algorithm="HS512")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not.a.jwt"},
        _bearer(issue_token("another-key-of-at-least-32-bytes-long!!", patient(A))),
        _bearer(issue_token(TEST_JWT_KEY, patient(A), ttl=dt.timedelta(minutes=-5))),
        _bearer(jwt.encode({"sub": A, "role": "patient"}, TEST_JWT_KEY, algorithm="HS256")),  # no exp
        _bearer(jwt.encode({"sub": A, "role": "admin", "exp": 4102444800}, TEST_JWT_KEY, algorithm="HS256")),
        _bearer(jwt.encode({"sub": A, "role": "patient", "exp": 4102444800}, None, algorithm="none")),
        _bearer(_hs512({"sub": A, "role": "patient", "exp": 4102444800})),
    ],
    ids=[
        "none",
        "basic",
        "empty",
        "garbage",
        "wrong-key",
        "expired",
        "no-exp",
        "bad-role",
        "alg-none",
        "hs512",
    ],
)
def test_requests_without_a_valid_token_get_401_and_no_data(api: Api, headers: dict[str, str]) -> None:
    api.file(A, "doc-a", text="Hémoglobine 13,5")
    for path in (
        f"/patients/{A}/documents",
        f"/patients/{A}/documents/doc-a",
        f"/patients/{A}/documents/doc-a/file",
        f"/patients/{A}/history",
        "/me",
    ):
        r = api.http.get(path, headers=headers)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert r.json() == {"detail": "authentication required"}
    assert api.services.audit.for_patient(A) == []


def test_rs256_tokens_from_the_portals_public_key(tmp_path: object) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    settings = Settings(data_dir=tmp_path / "carnet")  # type: ignore[operator]
    app = create_app(settings, config=ApiSettings(jwt_public_key=pem))
    import httpx

    with LiveServer(app) as server, httpx.Client(base_url=server.url) as http:
        good = issue_token(private, patient(A), algorithm="RS256")  # type: ignore[arg-type]
        assert http.get("/me", headers=_bearer(good)).json()["subject"] == A
        # An HS256 token signed with the public key as secret (key confusion) is refused.
        forged = jwt.encode({"sub": A, "role": "patient", "exp": 4102444800}, "x" * 40, algorithm="HS256")
        assert http.get("/me", headers=_bearer(forged)).status_code == 401


def test_startup_refuses_missing_or_weak_keys(tmp_path: object) -> None:
    settings = Settings(data_dir=tmp_path / "carnet")  # type: ignore[operator]
    with pytest.raises(ConfigurationError):
        create_app(settings, config=ApiSettings())
    with pytest.raises(ConfigurationError):
        create_app(settings, config=ApiSettings(jwt_key="short"))


def test_refusals_reveal_nothing(api: Api) -> None:
    api.file(A, "doc-a", text="Hémoglobine 13,5")
    api.file(B, "doc-b", text="Hémoglobine 9,1 — anémie")
    # Patient A cannot reach B's record, and B's document is not in A's record.
    denied = api.get(patient(A), f"/patients/{B}/documents", params={"q": "anémie"})
    never = api.get(patient(A), f"/patients/{make_ins(77)}/documents")  # nobody's record
    assert denied.status_code == never.status_code == 403 and denied.json() == never.json()
    for path in (f"/patients/{A}/documents/doc-b", f"/patients/{A}/documents/doc-b/file"):
        r = api.get(patient(A), path)
        assert r.status_code == 404 and "anémie" not in r.text and B not in r.text
    assert api.get(patient(A), f"/patients/{A}/documents", params={"q": "anémie"}).json()["total"] == 0
    # Managing someone else's record is refused, whatever the role.
    for who in (patient(B), PRO, caregiver(), representative()):
        assert api.put(who, f"/patients/{A}/authorisations/{PRO.subject}").status_code == 403
        assert api.get(who, f"/patients/{A}/history").status_code == 403
        assert api.delete(who, f"/patients/{A}").status_code == 403
    assert api.get(patient(A), f"/patients/{A}/documents/doc-a").status_code == 200  # still there


def test_every_access_is_audited_and_shown_in_the_patients_history(api: Api) -> None:
    api.file(A, "hb", text="Hémoglobine 13,5", format=Format.PDF)
    api.file(A, "secret", text="VIH négatif", visibility=(Visibility.INVISIBLE_PATIENT,))
    me = patient(A)
    assert api.get(me, f"/patients/{A}/documents", params={"q": "hémoglobine"}).status_code == 200
    assert api.get(me, f"/patients/{A}/documents/hb").status_code == 200
    assert api.get(me, f"/patients/{A}/documents/hb/file").status_code == 200
    assert api.put(me, f"/patients/{A}/authorisations/{PRO.subject}").status_code == 200
    assert api.get(PRO, f"/patients/{A}/documents/hb").status_code == 200
    assert api.put(me, f"/patients/{A}/documents/hb/hidden").json()["visibility"] == ["MASQUE_PS"]
    assert api.get(PRO, f"/patients/{A}/documents/hb").status_code == 404
    assert api.delete(me, f"/patients/{A}/authorisations/{PRO.subject}").json() == {"changed": True}
    assert api.get(PRO, f"/patients/{A}/documents").status_code == 403
    other = professional("10109999999")
    opened = api.post(other, f"/patients/{A}/break-glass", json={"reason": "arrêt cardiaque"})
    assert opened.status_code == 200
    assert api.get(other, f"/patients/{A}/documents/secret").status_code == 200
    assert api.post(other, f"/patients/{A}/documents/secret/release").status_code == 200

    history = api.get(me, f"/patients/{A}/history").json()
    got = [(e["actor"], e["role"], e["action"], tuple(e["doc_ids"]), e["reason"]) for e in reversed(history)]
    assert got == [
        (A, "patient", "search", ("hb",), "owner"),
        (A, "patient", "read", ("hb",), "owner"),
        (A, "patient", "download", ("hb",), "owner"),
        (A, "patient", "grant", (), f"authorise professional {PRO.subject}"),
        (PRO.subject, "professional", "read", ("hb",), "authorisation"),
        (A, "patient", "visibility", ("hb",), "hide from professionals"),
        (PRO.subject, "professional", "denied", ("hb",), "read: not found"),
        (A, "patient", "revoke", (), f"revoke professional {PRO.subject}"),
        (PRO.subject, "professional", "denied", (), "not_authorised"),
        ("10109999999", "professional", "break_glass", (), "arrêt cardiaque"),
        ("10109999999", "professional", "read", ("secret",), "break_glass"),
        ("10109999999", "professional", "visibility", ("secret",), "released to the patient"),
    ]
    assert history[0]["actor_name"] == "Dr Test"
    assert all(
        set(e.keys()) == {"at", "actor", "actor_name", "role", "action", "doc_ids", "reason"} for e in history
    )
    assert api.services.audit.verify().ok
    # Another patient's history holds none of this.
    assert api.services.audit.for_patient(B) == []


def test_refused_single_document_reads_are_audited_and_look_like_missing(api: Api) -> None:
    me, aidant = patient(A), caregiver("aidant-1")
    api.file(A, "masked", visibility=(Visibility.MASQUE_PS,))
    api.file(A, "secret", visibility=(Visibility.INVISIBLE_PATIENT,))
    api.file(A, "bio", doc_class=DocClass.BIOLOGY)
    api.put(me, f"/patients/{A}/authorisations/{PRO.subject}")
    api.put(me, f"/patients/{A}/delegations/aidant-1", json={"classes": ["prescription"]})
    attempts = [
        (PRO, "masked", ""),
        (PRO, "masked", "/file"),
        (me, "secret", ""),
        (me, "secret", "/file"),
        (aidant, "bio", ""),
        (aidant, "bio", "/file"),
        (aidant, "made-up", ""),
    ]
    before = len(api.services.audit.for_patient(A))
    absent = api.get(me, f"/patients/{A}/documents/absent-doc")
    for who, doc_id, suffix in attempts:
        r = api.get(who, f"/patients/{A}/documents/{doc_id}{suffix}")
        assert (r.status_code, r.json()) == (absent.status_code, absent.json())
    assert absent.status_code == 404 and absent.json() == {"detail": "not found"}
    denied = [(e.actor, e.action, e.doc_ids) for e in api.services.audit.for_patient(A)[before:]]
    assert denied == [
        (A, "denied", ()),  # the absent document: audited, no made-up id recorded
        (PRO.subject, "denied", ("masked",)),
        (PRO.subject, "denied", ("masked",)),
        (A, "denied", ("secret",)),
        (A, "denied", ("secret",)),
        ("aidant-1", "denied", ("bio",)),
        ("aidant-1", "denied", ("bio",)),
        ("aidant-1", "denied", ()),
    ]


def test_history_never_shows_ids_of_documents_hidden_from_its_reader(api: Api) -> None:
    minor = make_ins(4, born="1203")
    parent = representative("parent-1")
    api.services.rules.record_birth_date(minor, dt.date(2012, 3, 14), api.clock())
    api.file(minor, "for-patient-later", visibility=(Visibility.INVISIBLE_PATIENT,))
    api.file(minor, "not-for-parents", visibility=(Visibility.INVISIBLE_REPRESENTANTS_LEGAUX,))
    api.file(minor, "plain")
    assert api.put(patient(minor), f"/patients/{minor}/representatives/parent-1", json={}).status_code == 200
    assert api.put(patient(minor), f"/patients/{minor}/authorisations/{PRO.subject}").status_code == 200
    for doc_id in ("for-patient-later", "not-for-parents", "plain"):
        assert api.get(PRO, f"/patients/{minor}/documents/{doc_id}").status_code == 200
    assert api.get(PRO, f"/patients/{minor}/documents").status_code == 200
    for reader, hidden in ((patient(minor), "for-patient-later"), (parent, "not-for-parents")):
        r = api.get(reader, f"/patients/{minor}/history")
        assert r.status_code == 200 and hidden not in r.text
        reads = [e for e in r.json() if e["actor"] == PRO.subject and e["action"] == "read"]
        # A read of a document hidden from the reader is left out whole: kept without its
        # id, it still told that a hidden document was read (test_confidentiality).
        # (Representatives never see a result not released to the patient either.)
        assert len(reads) == (2 if reader.role is Role.PATIENT else 1) and all(e["doc_ids"] for e in reads)
        assert "plain" in r.text
    # Released to the patient: from then on its id is in the patient's history.
    assert api.post(PRO, f"/patients/{minor}/documents/for-patient-later/release").status_code == 200
    assert "for-patient-later" in api.get(patient(minor), f"/patients/{minor}/history").text
    assert "not-for-parents" not in api.get(parent, f"/patients/{minor}/history").text


def test_the_history_does_not_tell_a_hidden_document_from_a_made_up_id(api: Api) -> None:
    """A refused read of a document hidden from the history's reader and one of an id nobody
    filed must read the same there, or the history undoes the identical 404s."""
    minor = make_ins(5, born="1203")
    parent = representative("parent-1")
    api.services.rules.record_birth_date(minor, dt.date(2012, 3, 14), api.clock())
    api.file(minor, "for-patient-later", visibility=(Visibility.INVISIBLE_PATIENT,))
    api.file(minor, "not-for-parents", visibility=(Visibility.INVISIBLE_REPRESENTANTS_LEGAUX,))
    assert api.put(patient(minor), f"/patients/{minor}/representatives/parent-1", json={}).status_code == 200
    for reader, hidden in ((patient(minor), "for-patient-later"), (parent, "not-for-parents")):
        for doc_id in (hidden, "made-up-id"):
            for suffix in ("", "/file"):
                r = api.get(reader, f"/patients/{minor}/documents/{doc_id}{suffix}")
                assert r.status_code == 404
        entries = api.get(reader, f"/patients/{minor}/history", params={"limit": 4}).json()
        shown = [{k: v for k, v in e.items() if k != "at"} for e in entries]
        assert shown[:2] == shown[2:], shown


def test_a_visibility_choice_applies_to_every_version(api: Api) -> None:
    me = patient(A)
    api.file(A, "v1", series_id="cr-1", text="version 1")
    api.file(A, "v2", series_id="cr-1", text="version 2")
    api.index.supersede(A, "v1", "v2")
    api.put(me, f"/patients/{A}/authorisations/{PRO.subject}")
    assert api.put(me, f"/patients/{A}/documents/v2/hidden").status_code == 200
    for doc_id in ("v1", "v2"):
        for suffix in ("", "/file"):
            assert api.get(PRO, f"/patients/{A}/documents/{doc_id}{suffix}").status_code == 404
    assert api.delete(me, f"/patients/{A}/documents/v1/hidden").status_code == 200  # from either version
    assert api.get(PRO, f"/patients/{A}/documents/v2").status_code == 200
    assert api.get(PRO, f"/patients/{A}/documents/v1/file").status_code == 200


def test_download_is_the_decrypted_original_and_never_cached(api: Api) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    api.file(A, "scan", content=png, format=Format.IMAGE, doc_class=DocClass.IMAGING)
    r = api.get(patient(A), f"/patients/{A}/documents/scan/file")
    assert r.status_code == 200 and r.content == png
    assert r.headers["content-type"] == "image/png"
    assert r.headers["content-disposition"] == 'attachment; filename="scan.png"'
    assert r.headers["cache-control"] == "no-store" and r.headers["x-content-type-options"] == "nosniff"
    stored = list((api.settings.data_dir / "store" / "objects").rglob("*"))
    assert all(png not in p.read_bytes() for p in stored if p.is_file())


def test_document_view_and_search_pagination(api: Api) -> None:
    for n in range(5):
        api.file(A, f"d{n}", text=f"Glycémie contrôle {n}", document_date=dt.date(2024, 1, n + 1))
    page = api.get(
        patient(A), f"/patients/{A}/documents", params={"q": "glycémie", "limit": 2, "offset": 2}
    ).json()
    assert page["total"] == 5 and page["limit"] == 2 and page["offset"] == 2 and len(page["hits"]) == 2
    dated = api.get(
        patient(A), f"/patients/{A}/documents", params={"since": "2024-01-02", "until": "2024-01-03"}
    ).json()
    assert sorted(h["doc_id"] for h in dated["hits"]) == ["d1", "d2"]
    view = api.get(patient(A), f"/patients/{A}/documents/d0").json()
    assert view["text"] == "Glycémie contrôle 0" and view["document_date"] == "2024-01-01"
    assert "content_sha256" not in view and "source" not in view
    assert api.get(patient(A), f"/patients/{A}/documents", params={"limit": 0}).status_code == 422
    assert api.get(patient(A), f"/patients/{A}/documents", params={"class": "x"}).status_code == 422
    assert api.get(patient(A), "/patients/not-an-ins/documents").status_code == 422


def test_management_routes(api: Api) -> None:
    me = patient(A)
    assert api.put(me, f"/patients/{A}/authorisations/{PRO.subject}").status_code == 200
    assert api.put(me, f"/patients/{A}/blocks/10109999999").status_code == 200
    grants = api.get(me, f"/patients/{A}/authorisations").json()
    assert [(g["kind"], g["subject"]) for g in grants] == [
        ("authorisation", PRO.subject),
        ("block", "10109999999"),
    ]
    assert api.delete(me, f"/patients/{A}/blocks/10109999999").json() == {"changed": True}
    assert api.delete(me, f"/patients/{A}/blocks/10109999999").json() == {"changed": False}
    assert (
        api.put(me, f"/patients/{A}/delegations/aidant-1", json={"classes": ["prescription"]}).status_code
        == 200
    )
    assert api.get(me, f"/patients/{A}/delegations").json()[0]["classes"] == ["prescription"]
    assert (
        api.put(
            me, f"/patients/{A}/representatives/parent-1", json={"patient_birth_date": "2015-06-01"}
        ).status_code
        == 422
    )  # A was born in 1985
    minor = make_ins(3, born="1506")
    assert (
        api.put(
            patient(minor),
            f"/patients/{minor}/representatives/parent-1",
            json={"patient_birth_date": "2015-06-01"},
        ).status_code
        == 200
    )
    reps = api.get(patient(minor), f"/patients/{minor}/representatives").json()
    assert reps[0]["subject"] == "parent-1" and reps[0]["until"].startswith("2033-06-01")
    # The representative manages the minor's record too (history, grants), not a caregiver.
    parent = representative("parent-1")
    assert api.get(parent, f"/patients/{minor}/history").status_code == 200
    assert api.put(parent, f"/patients/{minor}/authorisations/10100000001").status_code == 200
    assert api.get(caregiver("aidant-1"), f"/patients/{A}/history").status_code == 403
    removed = api.delete(patient(minor), f"/patients/{minor}/representatives/parent-1")
    assert removed.json() == {"changed": True}
    assert api.get(parent, f"/patients/{minor}/history").status_code == 403
    # Break-the-glass: professionals only, with a reason; releasing is for professionals.
    assert api.post(me, f"/patients/{A}/break-glass", json={"reason": "urgence, test"}).status_code == 403
    for junk in ("   ", "test", "\u200b\u200b\u200b", "\u200b" * 20, "..........", "urgence\x00vitale!"):
        r = api.post(PRO, f"/patients/{A}/break-glass", json={"reason": junk})
        assert r.status_code == 422, junk
    opened = api.post(PRO, f"/patients/{A}/break-glass", json={"reason": "  Urgence vitale !  "})
    assert opened.status_code == 200
    assert [e.reason for e in api.services.audit.for_patient(A) if e.action == "break_glass"] == [
        "  Urgence vitale !  "
    ]  # verbatim
    api.file(A, "res", visibility=(Visibility.INVISIBLE_PATIENT,))
    assert api.post(me, f"/patients/{A}/documents/res/release").status_code in (403, 404)


def test_erasure_through_the_api(api: Api, tmp_path: Path) -> None:
    import sqlite3

    from pipeline.ingest import ingest_sources
    from tests.test_erasure import _oru

    # One document through ingestion, so the ledger has outcome rows naming A.
    source = tmp_path / "feed" / "labo" / "a0.hl7"
    source.parent.mkdir(parents=True)
    source.write_bytes(_oru(A, "A0", surname="DURAND", words="ferritine"))
    ingested = ingest_sources([str(source)], api.settings).outcomes
    assert [o.status.value for o in ingested] == ["indexed"]
    api.file(A, "a1", text="Hémoglobine", content=b"%PDF a1")
    api.file(A, "a2", text="Radio thorax", content=b"%PDF a2", doc_class=DocClass.IMAGING)
    api.file(B, "b1", text="Hémoglobine", content=b"%PDF b1")
    api.put(patient(A), f"/patients/{A}/authorisations/{PRO.subject}")
    assert api.delete(PRO, f"/patients/{A}").status_code == 403

    r = api.delete(patient(A), f"/patients/{A}")
    assert r.status_code == 200, r.text
    receipt = r.json()
    assert receipt["doc_ids"] == sorted(["a1", "a2", str(ingested[0].doc_id)])
    assert receipt["objects"] == 4  # a1, a2, the message, and the file it came in
    assert receipt["ledger_outcomes"] == 1 and receipt["account_closed"]
    with sqlite3.connect(api.settings.data_dir / "state.db") as conn:
        rows = conn.execute("SELECT source, doc_id, patient_id, line FROM outcomes").fetchall()
    assert len(rows) == 1 and rows[0][:3] == ("[erased]", None, None)
    assert A not in rows[0][3] and str(ingested[0].doc_id) not in rows[0][3] and "a0.hl7" not in rows[0][3]
    # The grant, and the birth date the ingested document gave.
    assert receipt["key_destroyed"] and receipt["access_rules"] == 2 and receipt["actor"] == A
    assert "key" not in {k for k in receipt if k != "key_destroyed"}
    # The account is closed: nobody, its patient included, reads it any more.
    assert api.get(patient(A), f"/patients/{A}/documents").status_code == 403
    assert api.get(patient(A), f"/patients/{A}/documents/a1/file").status_code == 403
    assert api.get(PRO, f"/patients/{A}/documents").status_code == 403  # the grant went too
    assert api.get(patient(B), f"/patients/{B}/documents/b1/file").content == b"%PDF b1"
    assert api.services.audit.verify().ok
    erased = [e for e in api.services.audit.for_patient(A) if e.action == "erase"]
    assert [(e.actor, e.doc_ids) for e in erased] == [(A, tuple(receipt["doc_ids"]))]


def test_a_closed_account_is_closed_to_every_route(api: Api) -> None:
    """After erasure no grant, delegation, representative, block, break-the-glass or upload
    may write the INS back into the state database, and nothing is read through any route."""
    import sqlite3

    from pipeline.crypto import patient_ref, patient_ref_key

    api.file(A, "a1", text="Hémoglobine")
    assert api.delete(patient(A), f"/patients/{A}").status_code == 200
    other_pro = professional("10100000001")
    attempts = [
        (patient(A), "PUT", f"/patients/{A}/authorisations/{PRO.subject}", None),
        (patient(A), "PUT", f"/patients/{A}/blocks/10109999999", None),
        (patient(A), "PUT", f"/patients/{A}/delegations/aidant-1", {"classes": None, "upload": True}),
        (patient(A), "PUT", f"/patients/{A}/representatives/parent-1", {}),
        (patient(A), "GET", f"/patients/{A}/history", None),
        (patient(A), "GET", f"/patients/{A}/documents", None),
        (patient(A), "GET", f"/fhir/DocumentReference?patient.identifier={A}", None),
        (other_pro, "GET", f"/patients/{A}/documents", None),
    ]
    for who, method, path, body in attempts:
        r = api.http.request(method, path, headers=api.as_(who), json=body)
        assert r.status_code == 403, (method, path, r.status_code)
    # A break-the-glass opens as on an INS Carnet never held, on an empty record (refused,
    # it told any professional who had erased their account), kept under the keyed reference.
    r = api.post(other_pro, f"/patients/{A}/break-glass", json={"reason": "Arrêt cardiaque aux urgences"})
    assert r.status_code == 200
    assert api.get(other_pro, f"/patients/{A}/documents").json()["total"] == 0
    assert api.get(other_pro, f"/patients/{A}/documents/a1").status_code == 404
    with sqlite3.connect(api.settings.data_dir / "state.db") as conn:
        for table in ("authorisations", "blocks", "delegations", "representatives"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table
        opened = conn.execute("SELECT patient_id, reason FROM break_glass").fetchall()
    assert opened == [(patient_ref(patient_ref_key(api.settings), A), "")]
    denied = [e.reason for e in api.services.audit.for_patient(A) if e.action == "denied"]
    assert denied.count("account_closed") == len(attempts)
    # Reopened at the patient's request: theirs again.
    assert api.services.rules.reopen_account(patient_ref(patient_ref_key(api.settings), A))
    assert api.get(patient(A), f"/patients/{A}/documents").json()["total"] == 0


def test_a_body_larger_than_its_route_takes_is_refused_before_it_is_read(api: Api) -> None:
    """FastAPI reads a body whole before the token check: an anonymous 200 MB JSON body took
    `carnet serve` from 105 to 719 MB peak RSS only to be answered 401."""
    from pipeline.api.app import JSON_MAX_BYTES

    path = f"/patients/{A}/delegations/aidant-1"
    big = b'{"classes": null, "pad": "' + b"a" * JSON_MAX_BYTES + b'"}'

    def streamed() -> Iterator[bytes]:
        for _ in range(64):
            yield b" " * 4096  # no Content-Length: counted as it arrives
        yield b"{}"

    json_type = {"Content-Type": "application/json"}
    for headers in ({}, api.as_(patient(A))):
        for body in (big, streamed()):
            r = api.http.put(path, content=body, headers={**headers, **json_type})
            assert r.status_code == 413 and r.json() == {"detail": f"larger than {JSON_MAX_BYTES} bytes"}
            assert r.headers["cache-control"] == "no-store"
    assert api.services.rules.delegations(A) == []
    assert api.put(patient(A), path, json={"classes": None, "upload": True}).json() == {"changed": True}


def test_the_page_is_served_with_a_strict_policy(api: Api) -> None:
    r = api.http.get("/")
    assert r.status_code == 200 and "<title>Carnet" in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert api.http.get("/static/app.js").status_code == 200


def test_me(api: Api) -> None:
    who = Principal(role=Role.PROFESSIONAL, subject="10101234567", name="Dr Test")
    assert api.get(who, "/me").json() == {"role": "professional", "subject": "10101234567", "name": "Dr Test"}


def test_a_document_its_producer_withdrew_is_neither_found_nor_read(api: Api) -> None:
    api.file(A, "gone", text="Hémoglobine 13,5")
    me = patient(A)
    assert api.get(me, f"/patients/{A}/documents/gone").status_code == 200
    assert api.index.withdraw(A, "gone", dt.datetime(2024, 7, 1, tzinfo=dt.UTC))
    assert api.get(me, f"/patients/{A}/documents", params={"q": "hémoglobine"}).json()["total"] == 0
    assert api.get(me, f"/patients/{A}/documents/gone").status_code == 404
    assert api.get(me, f"/patients/{A}/documents/gone/file").status_code == 404


def _signed(claims: dict[str, object]) -> dict[str, str]:
    return _bearer(jwt.encode(claims, TEST_JWT_KEY, algorithm="HS256"))


def test_a_token_subject_must_be_an_id_of_its_role(api: Api) -> None:
    """A professional named by another spelling of an RPPS could open a break-the-glass that the
    patient could never block (the block's path takes an RPPS); such tokens are refused."""
    import time

    now = int(time.time())
    reason = {"reason": "Arrêt cardiaque aux urgences"}
    for role, subject in (
        ("professional", "１０１０１２３４５６７"),  # full-width digits
        ("professional", "10101234567a"),
        ("professional", "Dr House"),
        ("caregiver", "аidant-1"),  # a Cyrillic а
        ("representative", "parent 1"),
        ("patient", A.replace("0", "٠")),  # Arabic-Indic zeros
    ):
        headers = _signed({"sub": subject, "role": role, "iat": now, "exp": now + 60})
        r = api.http.post(f"/patients/{A}/break-glass", headers=headers, json=reason)
        assert r.status_code == 401, (role, subject, r.status_code)
    refusals = [e for e in api.services.audit.for_patient(A) if e.action == "denied"]
    assert len(refusals) == 6 and all(e.reason.startswith("invalid_token_claims") for e in refusals)
    assert api.services.rules.decide(professional("10101234567"), A, api.clock()).allowed is False
    ok = _signed({"sub": " 10101234567 ", "role": "professional", "iat": now, "exp": now + 60})
    assert api.http.post(f"/patients/{A}/break-glass", headers=ok, json=reason).status_code == 200


def test_bad_input_is_a_4xx_never_a_500_and_signed_refusals_are_audited(api: Api) -> None:
    import time

    now = int(time.time())
    api.file(A, "doc-a", text="Hémoglobine")
    for claims in (
        {"sub": "\ud800", "role": "patient"},
        {"sub": A, "role": "patient", "name": "x\udfff"},
        {"sub": A, "role": ["patient"]},
        {"sub": A + "\x00", "role": "patient"},
    ):
        r = api.http.get(f"/patients/{A}/documents", headers=_signed({**claims, "iat": now, "exp": now + 60}))
        assert r.status_code == 401 and r.json() == {"detail": "authentication required"}
    refusals = [e for e in api.services.audit.for_patient(A) if e.action == "denied"]
    assert len(refusals) == 4 and all(e.reason.startswith("invalid_token_claims") for e in refusals)
    assert refusals[0].actor == "\\ud800" and api.services.audit.verify().ok
    me = api.as_(patient(A))
    for path in ("/static/%00", "/static/app.js%00.map", "/static/app%00.js"):
        assert api.http.get(path).status_code == 404
    for body in (b'{"classes": Infinity}', b'{"classes": [1e999]}', b'{"classes": NaN}'):
        r = api.http.put(
            f"/patients/{A}/delegations/aidant-1",
            content=body,
            headers={**me, "Content-Type": "application/json"},
        )
        assert r.status_code == 422 and "Infinity" not in r.text, r.text
    r = api.http.post(
        f"/patients/{A}/break-glass",
        content=b'{"reason": -Infinity}',
        headers={**api.as_(PRO), "Content-Type": "application/json"},
    )
    assert r.status_code == 422


def test_token_lifetime_and_clock_leeway(api: Api) -> None:
    import time

    now = int(time.time())
    claims = {"sub": A, "role": "patient"}
    ok = _signed({**claims, "iat": now - 3600, "exp": now - 20})  # expired 20 s ago: within the leeway
    assert api.http.get("/me", headers=ok).status_code == 200
    for bad in (
        {**claims, "iat": now - 3600, "exp": now - 40},  # beyond the 30 s leeway
        {**claims, "exp": now + 60},  # no iat
        {**claims, "iat": now, "exp": now + 13 * 3600},  # lives longer than 12 hours
        {**claims, "iat": now + 600, "exp": now + 900},
    ):  # issued in the future
        assert api.http.get("/me", headers=_signed(bad)).status_code == 401, bad
