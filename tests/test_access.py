"""Every cell of the confidentiality table in pipeline/access.py, and the audit chain, on
the state database: the embedded SQLite one and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select

from pipeline.access import AccessRules, Principal, Role
from pipeline.audit import AuditLog
from pipeline.model import DocClass, Visibility
from pipeline.state import tables

P = "284057512345672"
OTHER = "192016900100212"


def _ins(nir: str) -> str:
    return f"{nir}{97 - int(nir) % 97:02d}"


MINOR = _ins("2100675123456")  # born in June 2010
LEAP_MINOR = _ins("2120275123456")  # born in February 2012
NOW = dt.datetime(2026, 11, 29, 10, 0, tzinfo=dt.UTC)
KEY = b"audit-test-key-0123456789abcdef!"


@pytest.fixture
def rules(state_engine: Engine) -> Iterator[AccessRules]:
    r = AccessRules(state_engine)
    yield r
    r.close()


def chain_lines(engine: Engine) -> list[str]:
    """The audit chain as the JSON lines ``audit.jsonl`` held: one entry each, as MACed."""
    from pipeline.state.audit_rows import entry_fields

    with engine.connect() as conn:
        rows = conn.execute(select(tables.audit_entries).order_by(tables.audit_entries.c.seq)).all()
    return [json.dumps({**entry_fields(r._mapping), "hash": r.hash}, ensure_ascii=False) for r in rows]


def write_chain(engine: Engine, lines: list[str]) -> None:
    """What someone with write access to the state database can do: replace the chain
    (and its head) with ``lines``."""
    from pipeline.state.audit_rows import entry_row

    with engine.begin() as conn:
        conn.execute(tables.audit_entries.delete())
        conn.execute(tables.audit_head.delete())
        for line in lines:
            raw = json.loads(line)
            mac = raw.pop("hash")
            conn.execute(tables.audit_entries.insert().values(entry_row(raw, mac)))


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
    assert rules.record_birth_date(MINOR, dt.date(2010, 6, 15), NOW)
    rules.add_representative(MINOR, "parent-1", NOW)
    d = rules.decide(parent, MINOR, dt.datetime(2028, 6, 14, tzinfo=dt.UTC))
    assert d.allowed and Visibility.INVISIBLE_REPRESENTANTS_LEGAUX in d.exclude_visibility
    assert rules.decide(parent, MINOR, dt.datetime(2028, 6, 15, tzinfo=dt.UTC)).via == "patient_of_age"
    assert not rules.decide(Principal(role=Role.REPRESENTATIVE, subject="x"), MINOR, NOW).allowed


def test_the_birth_date_is_a_fact_of_the_record_never_declared(rules: AccessRules) -> None:
    from pipeline.access import BirthDateMismatch, birth_date_from_ins

    parent = Principal(role=Role.REPRESENTATIVE, subject="parent-1")
    # From the INS alone: the first of its month, in the latest century not in the future.
    assert birth_date_from_ins(MINOR, NOW.date()) == dt.date(2010, 6, 1)
    assert birth_date_from_ins(P, NOW.date()) == dt.date(1984, 5, 1)
    assert birth_date_from_ins(_ins("2273075123456"), NOW.date()) == dt.date(1927, 1, 1)  # month unknown
    for declared in (dt.date(1990, 6, 15), dt.date(2010, 7, 15)):
        with pytest.raises(BirthDateMismatch):
            rules.add_representative(MINOR, "parent-1", NOW, declared)
    rules.add_representative(MINOR, "parent-1", NOW, dt.date(2010, 6, 20))  # consistent: checked only
    assert rules.decide(parent, MINOR, dt.datetime(2028, 6, 1, tzinfo=dt.UTC)).via == "patient_of_age"
    # A trait contradicting the INS is ignored; a consistent one refines to the day.
    assert not rules.record_birth_date(MINOR, dt.date(2011, 6, 20), NOW)
    assert rules.record_birth_date(MINOR, dt.date(2010, 6, 20), NOW)
    assert rules.decide(parent, MINOR, dt.datetime(2028, 6, 19, tzinfo=dt.UTC)).allowed
    assert not rules.decide(parent, MINOR, dt.datetime(2028, 6, 20, tzinfo=dt.UTC)).allowed
    # Once the day is on record, any other declared day is a contradiction.
    with pytest.raises(BirthDateMismatch):
        rules.add_representative(MINOR, "parent-2", NOW, dt.date(2010, 6, 25))
    # Two documents disagreeing on the day: the earlier one counts (access never longer).
    assert rules.record_birth_date(MINOR, dt.date(2010, 6, 3), NOW)
    assert not rules.decide(parent, MINOR, dt.datetime(2028, 6, 3, tzinfo=dt.UTC)).allowed


def test_birth_dates_of_a_flush_are_recorded_at_once_the_earliest_kept(rules: AccessRules) -> None:
    assert rules.record_birth_date(MINOR, dt.date(2010, 6, 20), NOW)
    traits = [
        (MINOR, dt.date(2010, 6, 25)),  # later than on record: nothing changes
        (MINOR, dt.date(2011, 6, 1)),  # contradicts the INS: ignored
        (P, dt.date(1984, 5, 9)),
        (P, dt.date(1984, 5, 7)),  # two documents disagreeing: the earlier day
        (P, dt.date(1984, 5, 8)),
    ]
    assert rules.record_birth_dates(traits, NOW) == 2
    assert rules.birth_date(MINOR, NOW.date()) == dt.date(2010, 6, 20)
    assert rules.birth_date(P, NOW.date()) == dt.date(1984, 5, 7)
    assert rules.record_birth_dates([(MINOR, dt.date(2010, 6, 2))], NOW) == 1  # earlier: kept
    assert rules.birth_date(MINOR, NOW.date()) == dt.date(2010, 6, 2)
    assert rules.record_birth_dates([(MINOR, dt.date(2011, 1, 1))], NOW) == 0


def test_what_a_representative_delegates_stays_under_their_restrictions(rules: AccessRules) -> None:
    parent = Principal(role=Role.REPRESENTATIVE, subject="parent-1")
    aidant = Principal(role=Role.CAREGIVER, subject="aidant-1")
    rules.record_birth_date(MINOR, dt.date(2010, 6, 15), NOW)
    rules.add_representative(MINOR, "parent-1", NOW)
    rules.delegate(MINOR, "aidant-1", None, NOW, by=parent)
    d = rules.decide(aidant, MINOR, NOW)
    assert d.allowed and set(d.exclude_visibility) == {
        Visibility.INVISIBLE_REPRESENTANTS_LEGAUX,
        Visibility.INVISIBLE_PATIENT,
    }
    assert not rules.decide(aidant, MINOR, dt.datetime(2028, 6, 15, tzinfo=dt.UTC)).allowed
    rules.remove_representative(MINOR, "parent-1")
    assert rules.decide(aidant, MINOR, NOW).via == "delegating_representative_gone"
    # The minor's own delegation also ends at 18; an adult's does not end by itself.
    rules.delegate(MINOR, "aidant-1", None, NOW)
    assert rules.decide(aidant, MINOR, dt.datetime(2028, 6, 14, tzinfo=dt.UTC)).allowed
    assert rules.decide(aidant, MINOR, dt.datetime(2028, 6, 15, tzinfo=dt.UTC)).via == "patient_of_age"
    rules.delegate(P, "aidant-1", None, NOW)
    assert rules.decide(aidant, P, NOW + dt.timedelta(days=365 * 30)).allowed


def test_a_professional_a_representative_authorised_never_sees_what_is_hidden_from_them(
    rules: AccessRules,
) -> None:
    """A parent who is also a professional (or one they choose) authorised by the parent
    would otherwise read the documents the minor hid from their parents: an authorisation a
    representative grants stays under the representatives' restrictions, and lasts as long
    as their representation; the minor's own authorisation does not."""
    parent = Principal(role=Role.REPRESENTATIVE, subject="parent-1")
    doc = Principal(role=Role.PROFESSIONAL, subject="10101234567")
    rules.record_birth_date(MINOR, dt.date(2010, 6, 15), NOW)
    rules.add_representative(MINOR, "parent-1", NOW)
    rules.authorise(MINOR, "10101234567", NOW, by=parent)
    d = rules.decide(doc, MINOR, NOW)
    assert d.allowed
    assert set(d.exclude_visibility) == {Visibility.MASQUE_PS, Visibility.INVISIBLE_REPRESENTANTS_LEGAUX}
    of_age = dt.datetime(2028, 6, 15, tzinfo=dt.UTC)
    assert rules.decide(doc, MINOR, of_age).via == "authorising_representative_gone"
    rules.remove_representative(MINOR, "parent-1")
    assert rules.decide(doc, MINOR, NOW).via == "authorising_representative_gone"
    # The minor's own authorisation (the latest word) sees all but MASQUE_PS, past 18 too.
    rules.authorise(MINOR, "10101234567", NOW)
    d = rules.decide(doc, MINOR, NOW)
    assert d.allowed and d.exclude_visibility == (Visibility.MASQUE_PS,)
    assert rules.decide(doc, MINOR, of_age).allowed


def test_audit_chain_detects_modified_and_removed_entries(state_engine: Engine) -> None:
    log = AuditLog(state_engine, key=KEY)
    for i in range(5):
        log.append(actor=f"actor{i}", role="patient", action="search", patient_id=P, reason=None)
    assert log.verify().ok and log.verify().entries == 5
    assert len(log.for_patient(P)) == 5 and log.for_patient(OTHER) == []

    lines = chain_lines(state_engine)
    with state_engine.begin() as conn:
        conn.execute(
            tables.audit_entries.update().where(tables.audit_entries.c.seq == 3).values(actor="someone-else")
        )
    v = log.verify()
    assert not v.ok and v.first_bad_seq == 3 and v.problem.startswith("entry modified")

    write_chain(state_engine, lines[:2] + lines[3:])
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
    rules.add_representative(LEAP_MINOR, "parent-1", NOW)
    rules.record_birth_date(LEAP_MINOR, dt.date(2012, 2, 29), NOW)
    rules.authorise(OTHER, "10101234567", NOW)
    assert [(g.kind, g.subject) for g in rules.authorisations(P)] == [
        ("authorisation", "10101234567"),
        ("block", "10109999999"),
    ]
    assert rules.delegations(P)[0].classes is None
    # Born on 29 February: of age on 1 March of the 18th year, in the listing and the decision.
    rep = rules.representatives(LEAP_MINOR, NOW)[0]
    assert rep.until is not None and rep.until.date() == dt.date(2030, 3, 1)
    parent = Principal(role=Role.REPRESENTATIVE, subject="parent-1")
    # From when 1 March has begun anywhere in France (UTC+12): noon UTC the day before.
    assert rules.decide(parent, LEAP_MINOR, dt.datetime(2030, 2, 28, 11, 59, tzinfo=dt.UTC)).allowed
    assert not rules.decide(parent, LEAP_MINOR, dt.datetime(2030, 2, 28, 12, tzinfo=dt.UTC)).allowed
    assert rules.forget_patient(P) == 3 and rules.forget_patient(LEAP_MINOR) == 2
    assert rules.authorisations(P) == [] and rules.delegations(P) == []
    assert rules.representatives(LEAP_MINOR) == []
    assert rules.authorisations(OTHER) != []


def test_audit_keeps_verifying_with_names_and_long_entries(state_engine: Engine) -> None:
    log = AuditLog(state_engine, key=KEY)
    log.append(actor="a", role="patient", action="search", patient_id=P)
    log.append(
        actor="10101234567",
        actor_name="Dr Test",
        role="professional",
        action="read",
        patient_id=P,
        doc_ids=["d1"],
    )
    many = [f"doc-{n:06d}-{'x' * 40}" for n in range(3000)]  # an erasure entry longer than 64 KiB
    log.append(actor="a", role="patient", action="erase", patient_id=P, doc_ids=many)
    after = log.append(actor="a", role="patient", action="search", patient_id=P)
    assert after.seq == 4 and log.verify().ok
    assert [e.actor_name for e in log.for_patient(P)] == [None, "Dr Test", None, None]
    assert "actor_name" not in chain_lines(state_engine)[0]


class _Anchors:
    """An anchor store in memory (the object store's ``put_anchor``/``latest_anchor``)."""

    def __init__(self) -> None:
        self.kept: dict[int, bytes] = {}

    def put_anchor(self, kind: str, seq: int, data: bytes) -> None:
        self.kept.setdefault(seq, data)

    def latest_anchor(self, kind: str) -> bytes | None:
        return self.kept[max(self.kept)] if self.kept else None


def _rechain_with_sha256(lines: list[str]) -> list[str]:
    """What someone with write access to the log but without the key can do: drop entries
    and recompute a plain SHA-256 chain (the old format) or a keyed-looking one."""
    import hashlib

    out, prev = [], "0" * 64
    for n, line in enumerate(lines, start=1):
        raw = json.loads(line)
        raw.pop("hash")
        raw.pop("v", None)
        raw.update(seq=n, prev_hash=prev)
        digest = hashlib.sha256(
            json.dumps(raw, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
        ).hexdigest()
        out.append(json.dumps({**raw, "hash": digest}, ensure_ascii=False))
        prev = digest
    return out


def test_a_rewritten_or_truncated_audit_chain_is_detected(state_engine: Engine) -> None:
    anchors = _Anchors()
    log = AuditLog(state_engine, key=KEY, anchors=anchors)
    log.append(actor="10101234567", role="professional", action="read", patient_id=P, doc_ids=["d1"])
    log.append(
        actor="10109999999",
        role="professional",
        action="break_glass",
        patient_id=P,
        reason="urgence vitale, patient inconscient",
    )
    log.append(actor="10109999999", role="professional", action="read", patient_id=P, doc_ids=["d2"])
    head = log.anchor()
    log.append(actor=P, role="patient", action="search", patient_id=P)
    assert head is not None and head.seq == 3 and log.verify().ok and log.verify().anchored_seq == 3
    lines = chain_lines(state_engine)

    # The break-the-glass and its read removed, the chain recomputed with plain SHA-256.
    write_chain(state_engine, _rechain_with_sha256([lines[0], lines[3]]))
    assert not log.verify().ok
    assert not AuditLog(state_engine, key=KEY).verify().ok  # even with the anchor store lost
    # Nor can keyed-looking entries be forged without the key.
    forged = [json.loads(x) for x in lines[:1] + lines[3:]]
    forged[1].update(seq=2, prev_hash=forged[0]["hash"])
    write_chain(state_engine, [json.dumps(x) for x in forged])
    assert not AuditLog(state_engine, key=KEY).verify().ok
    assert AuditLog(state_engine, key=b"another-key-0123456789abcdef!!!!").verify().ok is False

    # Truncation of the newest entries, down to before the anchored head.
    write_chain(state_engine, lines[:2])
    v = log.verify()
    assert not v.ok and "anchored head (entry 3) missing" in (v.problem or "")
    assert AuditLog(state_engine, key=KEY).verify().ok  # without the anchor it would go unnoticed
    write_chain(state_engine, [])  # the whole log replaced
    assert not log.verify().ok
    write_chain(state_engine, lines)
    assert log.verify().ok
    # The chain goes on from the restored entries.
    assert log.append(actor=P, role="patient", action="search", patient_id=P).seq == 5
    assert log.verify().ok


def test_legacy_unkeyed_entries_verify_only_before_keyed_ones(state_engine: Engine) -> None:
    old = {
        "seq": 1,
        "at": NOW.isoformat(),
        "actor": "a",
        "role": "patient",
        "action": "search",
        "patient_id": P,
        "doc_ids": [],
        "reason": None,
        "prev_hash": "",
        "hash": "",
    }
    legacy = _rechain_with_sha256([json.dumps(old)])
    write_chain(state_engine, legacy)
    log = AuditLog(state_engine, key=KEY)
    log.append(actor="b", role="patient", action="search", patient_id=P)
    assert not log.verify().ok  # anyone can write unkeyed entries: refused unless asked
    v = log.verify(accept_legacy=True)
    assert v.ok and v.entries == 2 and v.legacy_entries == 1
    # An unkeyed entry after a keyed one is a rewrite.
    from pipeline.audit import _legacy_digest

    lines = chain_lines(state_engine)
    plain = {k: v for k, v in json.loads(lines[1]).items() if k not in ("v", "hash")}
    plain.update(seq=3, prev_hash=json.loads(lines[1])["hash"])
    write_chain(state_engine, lines + [json.dumps({**plain, "hash": _legacy_digest(plain)})])
    assert not log.verify(accept_legacy=True).ok


def test_audit_never_fails_on_text_that_is_not_unicode(state_engine: Engine) -> None:
    log = AuditLog(state_engine, key=KEY)
    entry = log.append(
        actor="x\ud800",
        actor_name="\udfff",
        role="patient",
        action="denied",
        patient_id=P,
        reason="bad \ud800 claim",
        doc_ids=["d\x00"],
    )
    assert entry.actor == "x\\ud800" and log.verify().ok
    # PostgreSQL text holds no NUL: escaped like a lone surrogate.
    assert entry.doc_ids == ("d\\x00",) and log.for_patient(P)[0].doc_ids == ("d\\x00",)


def test_break_the_glass_reasons_must_be_readable_and_are_kept_verbatim(rules: AccessRules) -> None:
    for junk in (
        "\u200b\u200b\u200b",
        "\u200b" * 40,
        "abc",
        "..........",
        "\x00\x00 urgence vitale",
        "a\u200bb\u200bc\u200bd",
        " " * 20,
        # Direction overrides and isolates: shown, the reason would read as something else.
        "Urgence vitale \u202eecnegru'd sap",
        "\u2067Arrêt cardiaque\u2069 aux urgences",
        "\u202aPatient inconscient\u202c",
    ):
        with pytest.raises(ValueError):
            rules.open_break_glass(P, "10109999999", junk, NOW)
    reason = "  Urgence : patient inconscient\u00a0!  "
    rules.open_break_glass(P, "10109999999", reason, NOW)
    assert rules._rows(select(tables.break_glass.c.reason)) == [(reason,)]


def test_closed_accounts_and_oppositions_are_kept_as_keyed_hashes(rules: AccessRules) -> None:
    from pipeline.crypto import patient_ref
    from pipeline.model import Reason

    ref = patient_ref(KEY, P)
    assert rules.closure(ref) is None
    rules.close_account(ref, Reason.ACCOUNT_CLOSED, NOW)
    assert rules.closure(ref) is Reason.ACCOUNT_CLOSED and rules.closure(patient_ref(KEY, OTHER)) is None
    rules.forget_patient(P)  # erasure of the rules never reopens the account
    assert rules.closure(ref) is Reason.ACCOUNT_CLOSED
    assert rules._rows(select(tables.closures.c.patient_ref)) == [(ref,)]
    assert rules.reopen_account(ref) and not rules.reopen_account(ref)
    rules.close_account(ref, Reason.OPPOSITION, NOW)
    assert rules.closure(ref) is Reason.OPPOSITION
    with pytest.raises(ValueError):
        rules.close_account(ref, Reason.MISSING_INS, NOW)


def test_closed_accounts_are_read_at_once_while_they_are_few(rules: AccessRules) -> None:
    from pipeline.crypto import patient_ref
    from pipeline.model import Reason

    assert rules.closed_accounts(at_most=1) == {}
    a, b = patient_ref(KEY, P), patient_ref(KEY, OTHER)
    rules.close_account(a, Reason.ACCOUNT_CLOSED, NOW)
    rules.close_account(b, Reason.OPPOSITION, NOW)
    assert rules.closed_accounts(at_most=2) == {a: Reason.ACCOUNT_CLOSED, b: Reason.OPPOSITION}
    assert rules.closed_accounts(at_most=1) is None  # too many: asked about one by one


def test_the_chain_is_read_page_by_page_and_still_verified_whole(
    state_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pipeline.audit

    monkeypatch.setattr(pipeline.audit, "_PAGE", 2)  # five entries: three pages
    log = AuditLog(state_engine, key=KEY)
    for i in range(5):
        log.append(actor=f"actor{i}", role="patient", action="search", patient_id=P if i % 2 else OTHER)
    assert [e.seq for e in log.entries()] == [1, 2, 3, 4, 5] and log.verify().entries == 5
    assert [e.seq for e in log.for_patient(P)] == [2, 4] and len(log.for_patient(OTHER)) == 3
    with state_engine.begin() as conn:  # an entry removed in the middle page
        conn.execute(tables.audit_entries.delete().where(tables.audit_entries.c.seq == 3))
    v = log.verify()
    assert not v.ok and v.first_bad_seq == 3
