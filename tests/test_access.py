"""Every cell of the confidentiality table in pipeline/access.py."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from pipeline.access import AccessRules, Principal, Role
from pipeline.audit import AuditLog
from pipeline.model import DocClass, Visibility

P = "284057512345672"
OTHER = "192016900100212"
NOW = dt.datetime(2026, 11, 29, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def rules(tmp_path: Path) -> AccessRules:
    r = AccessRules(tmp_path / "access.db")
    yield r
    r.close()


def test_patient_sees_own_record_except_invisible_patient(rules: AccessRules) -> None:
    d = rules.decide(Principal(role=Role.PATIENT, subject=P), P, NOW)
    assert d.allowed and d.exclude_visibility == (Visibility.INVISIBLE_PATIENT,)
    assert not rules.decide(Principal(role=Role.PATIENT, subject=OTHER), P, NOW).allowed


def test_professional_needs_authorisation_and_never_sees_masked(rules: AccessRules) -> None:
    doc = Principal(role=Role.PROFESSIONAL, subject="10101234567")
    assert rules.decide(doc, P, NOW).via == "not_authorised"
    rules.authorise(P, "10101234567", NOW)
    d = rules.decide(doc, P, NOW)
    assert d.allowed and d.exclude_visibility == (Visibility.MASQUE_PS,)
    assert rules.revoke_authorisation(P, "10101234567", NOW)
    assert not rules.decide(doc, P, NOW).allowed


def test_blocked_professional_never_has_access_even_in_emergency(rules: AccessRules) -> None:
    doc = Principal(role=Role.PROFESSIONAL, subject="10101234567")
    rules.authorise(P, "10101234567", NOW)
    rules.block(P, "10101234567", NOW)
    assert rules.decide(doc, P, NOW).via == "blocked"
    rules.open_break_glass(P, "10101234567", "patient inconscient aux urgences", NOW)
    assert rules.decide(doc, P, NOW).via == "blocked"


def test_break_the_glass_is_time_limited_and_needs_a_reason(rules: AccessRules) -> None:
    doc = Principal(role=Role.PROFESSIONAL, subject="10109999999")
    with pytest.raises(ValueError):
        rules.open_break_glass(P, "10109999999", "  ", NOW)
    expires = rules.open_break_glass(P, "10109999999", "urgence vitale", NOW)
    d = rules.decide(doc, P, NOW + dt.timedelta(hours=1))
    assert d.allowed and d.via == "break_glass" and Visibility.MASQUE_PS in d.exclude_visibility
    assert not rules.decide(doc, P, expires + dt.timedelta(seconds=1)).allowed


def test_caregiver_sees_delegated_classes_until_revoked(rules: AccessRules) -> None:
    aidant = Principal(role=Role.CAREGIVER, subject="aidant-42")
    assert not rules.decide(aidant, P, NOW).allowed
    rules.delegate(P, "aidant-42", (DocClass.PRESCRIPTION,), NOW)
    d = rules.decide(aidant, P, NOW)
    assert d.allowed and d.allowed_classes == (DocClass.PRESCRIPTION,)
    rules.delegate(P, "aidant-42", None, NOW)
    assert rules.decide(aidant, P, NOW).allowed_classes is None
    rules.revoke_delegation(P, "aidant-42", NOW)
    assert not rules.decide(aidant, P, NOW).allowed


def test_representatives_of_a_minor_until_majority(rules: AccessRules) -> None:
    parent = Principal(role=Role.REPRESENTATIVE, subject="parent-1")
    birth = dt.date(2010, 6, 15)
    rules.add_representative(P, "parent-1", birth)
    d = rules.decide(parent, P, dt.datetime(2028, 6, 14, tzinfo=dt.UTC))
    assert d.allowed and Visibility.INVISIBLE_REPRESENTANTS_LEGAUX in d.exclude_visibility
    assert rules.decide(parent, P, dt.datetime(2028, 6, 15, tzinfo=dt.UTC)).via == "patient_of_age"
    assert not rules.decide(Principal(role=Role.REPRESENTATIVE, subject="x"), P, NOW).allowed


def test_audit_chain_detects_modified_and_removed_entries(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(5):
        log.append(actor=f"actor{i}", role="patient", action="search", patient_id=P, reason=None)
    assert log.verify().ok and log.verify().entries == 5
    assert len(log.for_patient(P)) == 5 and log.for_patient(OTHER) == []

    lines = log.path.read_text().splitlines()
    tampered = json.loads(lines[2])
    tampered["actor"] = "someone-else"
    log.path.write_text("\n".join(lines[:2] + [json.dumps(tampered)] + lines[3:]) + "\n")
    v = log.verify()
    assert not v.ok and v.first_bad_seq == 3 and v.problem == "entry modified"

    log.path.write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    v = log.verify()
    assert not v.ok and v.first_bad_seq == 3


def test_restrict_and_may_see_carry_the_decision_into_the_index_layer(rules: AccessRules) -> None:
    from pipeline.access import may_see, restrict
    from pipeline.model import SearchQuery
    from tests.index.conftest import make_record

    rules.delegate(P, "aidant-42", (DocClass.PRESCRIPTION, DocClass.IMAGING), NOW)
    d = rules.decide(Principal(role=Role.CAREGIVER, subject="aidant-42"), P, NOW)
    q = restrict(SearchQuery(patient_id=P, allowed_classes=(DocClass.IMAGING, DocClass.BIOLOGY)), d)
    assert q.allowed_classes == (DocClass.IMAGING,)  # never wider than the delegation
    assert q.exclude_visibility == (Visibility.INVISIBLE_PATIENT,)
    rx = make_record("rx", patient_id=P, doc_class=DocClass.PRESCRIPTION)
    assert may_see(rx, d)
    assert not may_see(rx.model_copy(update={"visibility": (Visibility.INVISIBLE_PATIENT,)}), d)
    assert not may_see(make_record("bio", patient_id=P, doc_class=DocClass.BIOLOGY), d)
    denied = rules.decide(Principal(role=Role.CAREGIVER, subject="nobody"), P, NOW)
    assert not may_see(rx, denied)
    with pytest.raises(ValueError):
        restrict(SearchQuery(patient_id=P), denied)


def test_listings_and_forget_patient(rules: AccessRules) -> None:
    rules.authorise(P, "10101234567", NOW)
    rules.block(P, "10109999999", NOW)
    rules.delegate(P, "aidant-42", None, NOW)
    rules.add_representative(P, "parent-1", dt.date(2012, 2, 29))
    rules.authorise(OTHER, "10101234567", NOW)
    assert [(g.kind, g.subject) for g in rules.authorisations(P)] == [
        ("authorisation", "10101234567"), ("block", "10109999999")]
    assert rules.delegations(P)[0].classes is None
    # Born on 29 February: of age on 1 March of the 18th year, in the listing and the decision.
    rep = rules.representatives(P)[0]
    assert rep.until is not None and rep.until.date() == dt.date(2030, 3, 1)
    parent = Principal(role=Role.REPRESENTATIVE, subject="parent-1")
    assert rules.decide(parent, P, dt.datetime(2030, 2, 28, 23, tzinfo=dt.UTC)).allowed
    assert not rules.decide(parent, P, dt.datetime(2030, 3, 1, tzinfo=dt.UTC)).allowed
    assert rules.forget_patient(P) == 4
    assert rules.authorisations(P) == [] and rules.delegations(P) == [] and rules.representatives(P) == []
    assert rules.authorisations(OTHER) != []


def test_audit_keeps_verifying_with_names_and_long_entries(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append(actor="a", role="patient", action="search", patient_id=P)  # no name: hashed as before
    log.append(actor="10101234567", actor_name="Dr Test", role="professional", action="read",
               patient_id=P, doc_ids=["d1"])
    many = [f"doc-{n:06d}-{'x' * 40}" for n in range(3000)]  # an erasure entry longer than 64 KiB
    log.append(actor="a", role="patient", action="erase", patient_id=P, doc_ids=many)
    after = log.append(actor="a", role="patient", action="search", patient_id=P)
    assert after.seq == 4 and log.verify().ok
    assert [e.actor_name for e in log.for_patient(P)] == [None, "Dr Test", None, None]
    assert "actor_name" not in log.path.read_text().splitlines()[0]
