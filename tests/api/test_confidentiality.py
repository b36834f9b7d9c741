"""Leaks an independent evaluator found through the API: each test tried what a reader
should not get (a hidden document's existence, access past its end) and failed before
the fix it names."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from pipeline.access import Principal
from pipeline.errors import BackendUnavailable
from pipeline.model import Visibility
from tests.api.conftest import (
    BACKENDS,
    Api,
    caregiver,
    make_ins,
    patient,
    professional,
    representative,
    running_api,
)

PRO = professional()
PARENT, AIDANT = representative("parent-1"), caregiver("aidant-1")
MINOR = make_ins(31, born="1203")  # born in March 2012; the traits give the 14th
BIRTH = dt.date(2012, 3, 14)


def _utc(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("at", "allowed"),
    [
        (_utc(dt.date(2030, 3, 13), 9), True),  # the day before, everywhere in France
        (_utc(dt.date(2030, 3, 13), 11, 59), True),  # 23:59 in Wallis-et-Futuna (UTC+12)
        (_utc(dt.date(2030, 3, 13), 12), False),  # the 18th birthday has begun there
        (_utc(dt.date(2030, 3, 13), 23, 30), False),  # 00:30 on the birthday in Paris
    ],
)
def test_a_minors_representatives_and_caregivers_lose_access_when_the_18th_birthday_begins(
    api: Api, at: dt.datetime, allowed: bool
) -> None:
    """The birthday was reckoned in UTC: a parent (and a caregiver the minor delegated to)
    still read the record of a patient already 18 in Paris, from midnight to 1 or 2 a.m."""
    api.services.rules.record_birth_date(MINOR, BIRTH, api.clock())
    api.file(MINOR, "plain")
    me = patient(MINOR)
    assert api.put(me, f"/patients/{MINOR}/representatives/{PARENT.subject}", json={}).status_code == 200
    assert api.put(me, f"/patients/{MINOR}/delegations/{AIDANT.subject}", json={}).status_code == 200
    api.clock.now = at
    for who in (PARENT, AIDANT):
        r = api.get(who, f"/patients/{MINOR}/documents/plain")
        assert r.status_code == (200 if allowed else 403), (who.role, r.text)
    reps = api.get(me, f"/patients/{MINOR}/representatives").json()
    until = dt.datetime.fromisoformat(reps[0]["until"])
    assert until == _utc(dt.date(2030, 3, 13), 12)  # what the patient is told


def test_a_version_never_names_a_newer_one_its_reader_may_not_see(api: Api) -> None:
    """A result corrected by a version not released to the patient (or masked from
    professionals): reading the old version by its id gave the hidden version's id in
    ``superseded_by``, where every other route answers as if it did not exist."""
    ins = make_ins(32)
    api.file(ins, "first-result", series_id="cr-1", superseded_by="corrected-result")
    api.file(
        ins,
        "corrected-result",
        series_id="cr-1",
        visibility=(Visibility.INVISIBLE_PATIENT, Visibility.MASQUE_PS),
    )
    assert api.put(patient(ins), f"/patients/{ins}/authorisations/{PRO.subject}").status_code == 200
    for who in (patient(ins), PRO):
        assert api.get(who, f"/patients/{ins}/documents/corrected-result").status_code == 404
        r = api.get(who, f"/patients/{ins}/documents/first-result")
        assert r.status_code == 200 and r.json()["superseded_by"] is None
        assert "corrected-result" not in r.text


def test_the_history_shows_no_access_to_documents_hidden_from_its_reader(api: Api) -> None:
    """A professional's read of a minor's document hidden from the parents stayed in the
    parents' history, without its id: who read something hidden, and when (a family
    planning consultation, say) — the existence the 404s deny. Likewise for the patient
    and a result not released to them."""
    api.services.rules.record_birth_date(MINOR, BIRTH, api.clock())
    api.file(MINOR, "not-for-parents", visibility=(Visibility.INVISIBLE_REPRESENTANTS_LEGAUX,))
    api.file(MINOR, "for-patient-later", visibility=(Visibility.INVISIBLE_PATIENT,))
    me = patient(MINOR)
    assert api.put(me, f"/patients/{MINOR}/representatives/{PARENT.subject}", json={}).status_code == 200
    assert api.put(me, f"/patients/{MINOR}/authorisations/{PRO.subject}").status_code == 200
    for doc_id in ("not-for-parents", "for-patient-later"):
        assert api.get(PRO, f"/patients/{MINOR}/documents/{doc_id}").status_code == 200
        assert api.get(PRO, f"/patients/{MINOR}/documents/{doc_id}/file").status_code == 200
    for reader, hidden, seen in (
        (PARENT, "not-for-parents", "for-patient-later"),
        (me, "for-patient-later", "not-for-parents"),
    ):
        entries = api.get(reader, f"/patients/{MINOR}/history").json()
        by_pro = [(e["action"], tuple(e["doc_ids"])) for e in entries if e["actor"] == PRO.subject]
        if reader is PARENT:  # nor the result not released to the patient: parents see less
            assert by_pro == [], by_pro
        else:
            assert sorted(by_pro) == [("download", (seen,)), ("read", (seen,))], by_pro
        assert hidden not in str(entries)


def test_parents_see_an_emergency_access_to_their_child_but_not_its_reason(api: Api) -> None:
    """A break-the-glass reason is typed freely ("IVG, complication hémorragique"): it may
    say what the minor hid from their parents. The parents' history shows the emergency
    access (who, when), its reason withheld; the minor's own history shows it whole."""
    api.services.rules.record_birth_date(MINOR, BIRTH, api.clock())
    api.file(MINOR, "plain")
    me = patient(MINOR)
    assert api.put(me, f"/patients/{MINOR}/representatives/{PARENT.subject}", json={}).status_code == 200
    reason = "IVG, complication hémorragique"
    assert api.post(PRO, f"/patients/{MINOR}/break-glass", json={"reason": reason}).status_code == 200

    def emergencies(reader: Principal) -> list[tuple[str, str | None]]:
        entries = api.get(reader, f"/patients/{MINOR}/history").json()
        return [(e["actor"], e["reason"]) for e in entries if e["action"] == "break_glass"]

    assert emergencies(me) == [(PRO.subject, reason)]
    assert emergencies(PARENT) == [(PRO.subject, None)]
    assert "IVG" not in api.get(PARENT, f"/patients/{MINOR}/history").text


def test_a_revoked_professional_loses_an_emergency_access_opened_before(api: Api) -> None:
    """The table says a revoked professional sees nothing: one who had opened a
    break-the-glass kept reading the record until it expired (up to 4 hours)."""
    ins = make_ins(33)
    api.file(ins, "plain")
    me = patient(ins)
    assert api.put(me, f"/patients/{ins}/authorisations/{PRO.subject}").status_code == 200
    reason = {"reason": "urgence vitale, patient inconscient"}
    assert api.post(PRO, f"/patients/{ins}/break-glass", json=reason).status_code == 200
    api.clock.now += dt.timedelta(minutes=30)
    assert api.delete(me, f"/patients/{ins}/authorisations/{PRO.subject}").status_code == 200
    assert api.get(PRO, f"/patients/{ins}/documents/plain").status_code == 403
    assert api.get(PRO, f"/patients/{ins}/documents").status_code == 403
    # A new emergency is a new opening, audited as such.
    assert api.post(PRO, f"/patients/{ins}/break-glass", json=reason).status_code == 200
    assert api.get(PRO, f"/patients/{ins}/documents/plain").status_code == 200


def test_no_break_the_glass_is_opened_that_the_audit_log_does_not_hold(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The opening was written before its audit entry: with the audit log failing, the
    professional got a 503 and yet an emergency access running for 4 hours, its reason
    nowhere (each read audited, the why of them all lost)."""
    ins = make_ins(34)
    api.file(ins, "plain")
    audit = api.services.audit
    append = audit.append

    def failing(**entry: Any) -> Any:
        if entry["action"] == "break_glass":
            raise BackendUnavailable("the audit log cannot be written")
        return append(**entry)

    monkeypatch.setattr(audit, "append", failing)
    r = api.post(PRO, f"/patients/{ins}/break-glass", json={"reason": "urgence vitale, patient inconscient"})
    assert r.status_code == 503
    assert api.get(PRO, f"/patients/{ins}/documents/plain").status_code == 403


def test_an_erasure_that_fails_midway_leaves_the_record_closed_not_readable(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The account was closed last: an erasure that failed after the stored files went but
    before the index was emptied (Elasticsearch down, say) left the record open, its
    documents' texts searchable and readable by the patient and every professional they
    had authorised, though the patient had asked for it all to go."""
    ins = make_ins(35)
    api.file(ins, "plain", text="hémoglobine glyquée")
    me = patient(ins)
    assert api.put(me, f"/patients/{ins}/authorisations/{PRO.subject}").status_code == 200

    def down(patient_id: str) -> Any:
        raise BackendUnavailable("the index is unreachable")

    with monkeypatch.context() as m:
        m.setattr(api.services.index, "delete_patient", down)
        assert api.delete(me, f"/patients/{ins}").status_code == 503
    for who in (me, PRO):
        assert api.get(who, f"/patients/{ins}/documents", params={"q": "hémoglobine"}).status_code == 403
        assert api.get(who, f"/patients/{ins}/documents/plain").status_code == 403
    # The patient asks again: the erasure completes.
    r = api.delete(me, f"/patients/{ins}")
    assert r.status_code == 200 and r.json()["doc_ids"] == ["plain"]


def test_a_search_score_says_nothing_of_other_patients_documents(api: Api) -> None:
    """The relevance score weighs each word by how many documents in the whole index hold
    it (every patient's, hidden ones too): a patient searching a rare word of one of their
    own documents read, in the score, whether someone else's record holds that word too
    (a surname, a diagnosis). The API now shows only the hits' order."""
    a, b = make_ins(36), make_ins(37)
    api.file(a, "mine", text="compte rendu ZYGOMORPHESQUE hémoglobine")
    api.file(a, "other-of-mine", text="compte rendu hémoglobine ferritine ZYGOMORPHESQUE ZYGOMORPHESQUE")

    def scores() -> list[tuple[str, float]]:
        # The embedded index cached its whole-index statistics for 10 minutes: read afresh.
        api.index._df_expires = 0.0  # type: ignore[attr-defined]
        r = api.get(patient(a), f"/patients/{a}/documents", params={"q": "zygomorphesque hémoglobine"})
        assert r.status_code == 200
        return [(h["doc_id"], h["score"]) for h in r.json()["hits"]]

    before = scores()
    for n in range(5):
        api.file(b, f"theirs-{n}", text="ZYGOMORPHESQUE", visibility=(Visibility.INVISIBLE_PATIENT,))
    assert scores() == before
    assert [s for _, s in before] == sorted((s for _, s in before), reverse=True)  # still best first


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_version_replaced_by_one_hidden_from_its_reader_is_current_for_them(
    tmp_path: Path, backend: str
) -> None:
    """A result corrected by a version not released to the patient (or masked from
    professionals) left the patient's default listing, read ``superseded`` in FHIR and was
    found by ``status=superseded``: the record told them a newer version they may not see
    exists. For them the old version is the current one, on both index backends."""
    ins = make_ins(38)
    with running_api(tmp_path / "carnet", backend) as api:
        marked = dt.datetime(2025, 2, 1, 9, 0, tzinfo=dt.UTC)  # when "corrected" superseded it
        api.file(
            ins, "first", series_id="s", text="hémoglobine 12", superseded_by="corrected", updated_at=marked
        )
        hidden = (Visibility.INVISIBLE_PATIENT, Visibility.MASQUE_PS)
        api.file(ins, "corrected", series_id="s", text="hémoglobine 13", visibility=hidden)
        api.file(ins, "other", text="ferritine")
        me = patient(ins)
        assert api.put(me, f"/patients/{ins}/authorisations/{PRO.subject}").status_code == 200
        rid = f"{ins}-first"
        for who in (me, PRO):
            listing = api.get(who, f"/patients/{ins}/documents").json()
            assert (listing["total"], sorted(h["doc_id"] for h in listing["hits"])) == (2, ["first", "other"])
            found = api.get(who, f"/patients/{ins}/documents", params={"q": "hémoglobine"}).json()
            assert [h["doc_id"] for h in found["hits"]] == ["first"]
            read = api.get(who, f"/fhir/DocumentReference/{rid}").json()
            assert read["status"] == "current", read
            # Nor does its last update tell when the hidden version came.
            assert read["meta"]["lastUpdated"] == read["date"]
            fhir = api.get(who, "/fhir/DocumentReference", params={"patient.identifier": ins}).json()
            entries = {e["resource"]["id"]: e["resource"]["status"] for e in fhir["entry"]}
            assert (fhir["total"], entries[rid]) == (2, "current")
            old = {"patient.identifier": ins, "status": "superseded"}
            assert api.get(who, "/fhir/DocumentReference", params=old).json()["total"] == 0
        # Released to the patient, the correction shows to them, the old version superseded.
        assert api.post(PRO, f"/patients/{ins}/documents/corrected/release").status_code == 404
        api.index.set_visibility(ins, "corrected", [Visibility.MASQUE_PS])
        listing = api.get(me, f"/patients/{ins}/documents").json()
        assert sorted(h["doc_id"] for h in listing["hits"]) == ["corrected", "other"]
        seen = api.get(me, f"/fhir/DocumentReference/{rid}").json()
        assert seen["status"] == "superseded"
        assert dt.datetime.fromisoformat(seen["meta"]["lastUpdated"]) == marked
        assert api.get(PRO, f"/fhir/DocumentReference/{rid}").json()["status"] == "current"


def test_past_a_hidden_middle_version_the_reader_sees_the_chain_they_may_see(api: Api) -> None:
    """v1, then v2 not released to the patient, then v3 released: for the patient v3
    replaces v1, as the listings (v3 current, v1 superseded) say; v2 is named nowhere."""
    ins = make_ins(39)
    api.file(ins, "v1", series_id="s", superseded_by="v2")
    api.file(ins, "v2", series_id="s", superseded_by="v3", visibility=(Visibility.INVISIBLE_PATIENT,))
    api.file(ins, "v3", series_id="s")
    me = patient(ins)
    assert [h["doc_id"] for h in api.get(me, f"/patients/{ins}/documents").json()["hits"]] == ["v3"]
    assert api.get(me, f"/patients/{ins}/documents/v1").json()["superseded_by"] == "v3"
    new = api.get(me, f"/fhir/DocumentReference/{ins}-v3").json()
    assert new["relatesTo"] == [{"code": "replaces", "target": {"reference": f"DocumentReference/{ins}-v1"}}]
    old = api.get(me, f"/fhir/DocumentReference/{ins}-v1").json()
    assert old["status"] == "superseded" and "v2" not in str(old) + str(new)
    # relatesto finds what relatesTo says: v3 replaces v1; v2, hidden, relates to nothing.
    for target, expected in (("v1", [f"{ins}-v3"]), ("v2", [])):
        params = {"patient.identifier": ins, "relatesto": f"DocumentReference/{ins}-{target}"}
        bundle = api.get(me, "/fhir/DocumentReference", params=params).json()
        assert [e["resource"]["id"] for e in bundle.get("entry", [])] == expected


def test_a_professional_cannot_tell_an_erased_account_from_an_ins_never_seen(api: Api) -> None:
    """A break-the-glass on an erased account was refused (403) where one on any INS Carnet
    never held opened (200, then an empty record): any professional learnt who had had
    their account erased. Both now answer alike, and the erased INS stays out of the state
    database (the opening is kept under the account's keyed reference)."""
    import sqlite3

    erased, never = make_ins(40), make_ins(41)
    api.file(erased, "a1", text="hémoglobine")
    assert api.delete(patient(erased), f"/patients/{erased}").status_code == 200
    reason = {"reason": "Arrêt cardiaque aux urgences"}

    def answers(ins: str) -> list[tuple[int, object]]:
        out: list[tuple[int, object]] = []
        for method, path in (
            ("GET", f"/patients/{ins}/documents"),
            ("POST", f"/patients/{ins}/break-glass"),
            ("GET", f"/patients/{ins}/documents"),
            ("GET", f"/patients/{ins}/documents/a1"),
            ("GET", f"/fhir/DocumentReference?patient.identifier={ins}"),
            ("GET", f"/patients/{ins}/history"),
        ):
            r = api.http.request(
                method, path, headers=api.as_(PRO), json=reason if method == "POST" else None
            )
            body = r.json()
            if isinstance(body, dict):  # what names the patient, or the instant of the answer
                body = {
                    k: v
                    for k, v in body.items()
                    if k not in ("patient_id", "id", "meta", "link", "timestamp")
                }
            out.append((r.status_code, body))
        return out

    assert answers(erased) == answers(never)
    assert answers(erased)[1][0] == 200
    with sqlite3.connect(api.settings.data_dir / "state.db") as conn:
        rows = conn.execute("SELECT patient_id, reason FROM break_glass").fetchall()
    assert erased not in str(rows) and len(rows) == 3  # 2 for the erased account's ref, 1 for the other
    # Nor does the audit log keep the reason typed for an erased account (it may name them).
    opened = [e.reason for e in api.services.audit.for_patient(erased) if e.action == "break_glass"]
    assert opened == ["account_closed", "account_closed"]


def test_a_visibility_choice_leaves_alone_the_versions_hidden_from_who_makes_it(api: Api) -> None:
    """A choice about a document reached every version of its series, those hidden from
    who made it too: a parent unhiding the version they see showed professionals the
    correction the minor had hidden from them and from their parents; a professional's
    release reached a version masked from them. The patient's own unreleased results still
    follow the patient's choice."""
    api.services.rules.record_birth_date(MINOR, BIRTH, api.clock())
    masked, secret = Visibility.MASQUE_PS, Visibility.INVISIBLE_REPRESENTANTS_LEGAUX
    api.file(MINOR, "v1", series_id="s", superseded_by="v2", visibility=(masked,))
    api.file(MINOR, "v2", series_id="s", visibility=(secret, masked))
    me = patient(MINOR)
    assert api.put(me, f"/patients/{MINOR}/representatives/{PARENT.subject}", json={}).status_code == 200
    assert api.put(me, f"/patients/{MINOR}/authorisations/{PRO.subject}").status_code == 200
    assert api.delete(PARENT, f"/patients/{MINOR}/documents/v1/hidden").json()["visibility"] == []
    assert api.get(PRO, f"/patients/{MINOR}/documents/v2").status_code == 404
    assert api.index.get(MINOR, "v2").visibility == (secret, masked)  # type: ignore[union-attr]
    # A professional's release reaches no version masked from them.
    api.file(MINOR, "r1", series_id="r", superseded_by="r2", visibility=(Visibility.INVISIBLE_PATIENT,))
    api.file(MINOR, "r2", series_id="r", visibility=(Visibility.INVISIBLE_PATIENT, masked))
    assert api.post(PRO, f"/patients/{MINOR}/documents/r1/release").status_code == 200
    assert api.index.get(MINOR, "r2").visibility == (Visibility.INVISIBLE_PATIENT, masked)  # type: ignore[union-attr]
    # The patient hiding a result: its correction not yet released to them is hidden too.
    api.file(MINOR, "p1", series_id="p", superseded_by="p2")
    api.file(MINOR, "p2", series_id="p", visibility=(Visibility.INVISIBLE_PATIENT,))
    assert api.put(me, f"/patients/{MINOR}/documents/p1/hidden").status_code == 200
    assert masked in api.index.get(MINOR, "p2").visibility  # type: ignore[union-attr]


def test_an_erasure_leaves_another_patient_the_file_they_hold_too(api: Api) -> None:
    """The same bytes filed for two patients (a patient uploading the report their lab also
    sent, one leaflet for a family) are one object, under the first one's key: erasing that
    first patient shredded the other's file, whose download then answered 404, telling them
    that someone holding the same bytes had erased their account. It is theirs now."""
    first, other = make_ins(42), make_ins(43)
    data = b"%PDF-1.4 the same report, filed for two people"
    api.file(first, "theirs", content=data)
    api.file(other, "mine", content=data)
    assert api.delete(patient(first), f"/patients/{first}").status_code == 200
    r = api.get(patient(other), f"/patients/{other}/documents/mine/file")
    assert (r.status_code, r.content) == (200, data)
    assert api.store.owner_of(api.index.get(other, "mine").content_sha256) == other  # type: ignore[union-attr]
    # Erased in turn, nothing of it is left.
    assert api.delete(patient(other), f"/patients/{other}").json()["objects"] == 1
