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
