"""Who may see which of a patient's documents: the confidentiality rules, enforced below
the API (the decision becomes filters of the index query itself).

| asker                    | may see                              | never sees                    |
|--------------------------|--------------------------------------|-------------------------------|
| the patient              | all their documents                  | INVISIBLE_PATIENT (until      |
|                          |                                      | released)                     |
| professional, authorised | the patient's documents              | MASQUE_PS; nothing if blocked |
| professional, emergency  | the same, time-limited, audited      | MASQUE_PS; nothing if blocked |
| (break-the-glass)        |                                      |                               |
| professional, otherwise  | nothing                              |                               |
| caregiver (aidant)       | delegated classes (or all) until     | INVISIBLE_PATIENT             |
|                          | revoked                              |                               |
| legal representative     | a minor's documents until 18         | INVISIBLE_REPRESENTANTS_      |
|                          |                                      | LEGAUX, INVISIBLE_PATIENT     |

Adding documents (``AccessDecision.may_upload``): the patient, a minor's representative,
and a caregiver whose delegation includes uploads (``delegate(..., upload=True)``).

What flows from a representative stays under the representatives' restrictions: a
caregiver a representative delegated to never sees ``INVISIBLE_REPRESENTANTS_LEGAUX``
documents, and loses access when that representative does. Delegations and
representations of a minor end at the minor's 18th birthday.

The minor's birth date is a fact of the record, never a value a caller declares: the year
and month the INS carries, refined to the day by the identity traits received with the
patient's documents (``record_birth_date``, consistent with the INS only). Until a trait
gives the day, the first day of the INS's month counts: access never lasts longer than the
INS allows. A declared date that contradicts the INS (or the recorded date) is refused.

Grants, blocks, delegations, representatives, break-the-glass openings and the patients'
birth dates are kept in a small SQLite database; every change and every access is
written to the audit log.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import unicodedata
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.model import DocClass, DocumentRecord, Frozen, Reason, SearchQuery, Visibility

if TYPE_CHECKING:
    from pipeline.index import DocumentIndex

BREAK_GLASS_DURATION = dt.timedelta(hours=4)
MAJORITY_AGE = 18
MIN_REASON_VISIBLE_CHARS = 10
MIN_REASON_LETTERS = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS authorisations (
    patient_id TEXT NOT NULL, rpps TEXT NOT NULL, granted_at TEXT NOT NULL, revoked_at TEXT,
    PRIMARY KEY (patient_id, rpps));
CREATE TABLE IF NOT EXISTS blocks (
    patient_id TEXT NOT NULL, rpps TEXT NOT NULL, blocked_at TEXT NOT NULL,
    PRIMARY KEY (patient_id, rpps));
CREATE TABLE IF NOT EXISTS delegations (
    patient_id TEXT NOT NULL, caregiver_id TEXT NOT NULL, classes TEXT,
    granted_at TEXT NOT NULL, revoked_at TEXT, PRIMARY KEY (patient_id, caregiver_id));
CREATE TABLE IF NOT EXISTS representatives (
    patient_id TEXT NOT NULL, person_id TEXT NOT NULL, patient_birth_date TEXT NOT NULL,
    PRIMARY KEY (patient_id, person_id));
CREATE TABLE IF NOT EXISTS break_glass (
    patient_id TEXT NOT NULL, rpps TEXT NOT NULL, reason TEXT NOT NULL,
    opened_at TEXT NOT NULL, expires_at TEXT NOT NULL);
-- Closed accounts and oppositions: a keyed hash of the INS (never the INS) and the reason
-- code new documents for it are refused with (account_closed, opposition).
CREATE TABLE IF NOT EXISTS closures (
    patient_ref TEXT PRIMARY KEY, reason TEXT NOT NULL, closed_at TEXT NOT NULL);
-- The birth date identity traits gave (consistent with the INS), for majority.
CREATE TABLE IF NOT EXISTS patient_birth_dates (
    patient_id TEXT PRIMARY KEY, birth_date TEXT NOT NULL, recorded_at TEXT NOT NULL);
"""
# Columns added after the first release: (table, column, definition).
_ADDED_COLUMNS = (
    ("delegations", "granted_by", "TEXT"),
    ("delegations", "granted_by_role", "TEXT"),
    ("delegations", "upload", "INTEGER NOT NULL DEFAULT 0"),
)


_REPRESENTATIVES_HIDDEN = (Visibility.INVISIBLE_REPRESENTANTS_LEGAUX, Visibility.INVISIBLE_PATIENT)


class Role(StrEnum):
    PATIENT = "patient"
    PROFESSIONAL = "professional"
    CAREGIVER = "caregiver"
    REPRESENTATIVE = "representative"


class Principal(Frozen):
    """Who is asking, as the portal's signed token says."""

    role: Role
    subject: str  # INS for a patient, RPPS for a professional, person id otherwise
    name: str | None = None


class AccessDecision(Frozen):
    allowed: bool
    via: str  # owner, authorisation, break_glass, delegation, representative, or why not
    exclude_visibility: tuple[Visibility, ...] = ()
    allowed_classes: tuple[DocClass, ...] | None = None
    # May add documents to the record (POST /patients/{ins}/documents): the patient, a
    # minor's representative, a caregiver whose delegation includes uploads.
    may_upload: bool = False


def restrict(query: SearchQuery, decision: AccessDecision) -> SearchQuery:
    """``query`` narrowed to what ``decision`` allows: the filters the index itself applies."""
    if not decision.allowed:
        raise ValueError("a denied decision has no query")
    excluded = tuple(dict.fromkeys(query.exclude_visibility + decision.exclude_visibility))
    classes = decision.allowed_classes
    if query.allowed_classes is not None:
        classes = query.allowed_classes if classes is None else tuple(
            c for c in query.allowed_classes if c in classes)
    return query.model_copy(update={"exclude_visibility": excluded, "allowed_classes": classes})


def may_see(record: DocumentRecord, decision: AccessDecision) -> bool:
    """Whether one fetched document is within ``decision`` (the check behind every ``get``)."""
    if not decision.allowed:
        return False
    if any(flag in decision.exclude_visibility for flag in record.visibility):
        return False
    return decision.allowed_classes is None or record.doc_class in decision.allowed_classes


def visible_ids(index: DocumentIndex, decision: AccessDecision, patient_id: str,
                doc_ids: Iterable[str]) -> frozenset[str]:
    """The ids among ``doc_ids`` of documents ``decision`` lets its holder see (history,
    listings of past accesses: an id of a hidden or vanished document is never shown)."""
    shown = set()
    for doc_id in set(doc_ids):
        record = index.get(patient_id, doc_id)
        if record is not None and may_see(record, decision):
            shown.add(doc_id)
    return frozenset(shown)


class Grant(Frozen):
    """One entry of what a patient manages: an authorisation, block, delegation or representative."""

    kind: str
    subject: str  # RPPS, caregiver id or representative's person id
    classes: tuple[DocClass, ...] | None = None  # delegations: None means every class
    upload: bool | None = None  # delegations: may the caregiver also add documents
    since: dt.datetime | None = None
    until: dt.datetime | None = None  # representatives: the minor's 18th birthday


def access_db_path(data_dir: Path) -> Path:
    """Where an install keeps its access rules."""
    return data_dir / "access.db"


def _majority(birth: dt.date) -> dt.date:
    try:
        return birth.replace(year=birth.year + MAJORITY_AGE)
    except ValueError:  # born on 29 February: of age on 1 March
        return dt.date(birth.year + MAJORITY_AGE, 3, 1)


def _age_on(birth: dt.date, day: dt.date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


class BirthDateMismatch(ValueError):
    """A declared birth date that contradicts the INS or the recorded birth date."""


def _ins_year_month(ins: str) -> tuple[int, int | None]:
    """The two-digit birth year and, when the INS gives a real one, the birth month."""
    yy, mm = int(ins[1:3]), int(ins[3:5])
    # Months 20-42 and 50+ stand for an unknown month (INSEE conventions).
    return yy, mm if 1 <= mm <= 12 else None


def consistent_with_ins(ins: str, birth: dt.date) -> bool:
    """Whether ``birth`` has the year (mod 100) and month the INS carries."""
    yy, mm = _ins_year_month(ins)
    return birth.year % 100 == yy and (mm is None or birth.month == mm)


def birth_date_from_ins(ins: str, today: dt.date) -> dt.date:
    """The earliest birth date the INS allows, in the latest century not in the future.

    The earliest day of the month (or year, when the month is unknown) ends a minor's
    representatives' access first: without a trait giving the day, nobody gains days.
    """
    yy, mm = _ins_year_month(ins)
    month = mm or 1
    year = 2000 + yy
    if (year, month) > (today.year, today.month):
        year -= 100
    return dt.date(year, month, 1)


def meaningful_reason(reason: str) -> bool:
    """A break-the-glass reason someone can read: enough visible characters, some letters.

    Invisible characters (zero-width spaces, joiners, controls) do not count.
    """
    visible = [c for c in reason if unicodedata.category(c)[0] in "LNPS"]
    letters = sum(1 for c in visible if unicodedata.category(c)[0] == "L")
    controls = any(unicodedata.category(c) == "Cc" and c not in "\t\n" for c in reason)
    return len(visible) >= MIN_REASON_VISIBLE_CHARS and letters >= MIN_REASON_LETTERS and not controls


class AccessRules:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._lock = threading.RLock()
        with self._lock:
            self._conn.executescript(_SCHEMA)
            for table, column, definition in _ADDED_COLUMNS:
                names = {r[1] for r in self._conn.execute(f"PRAGMA table_info({table})")}
                if column not in names:
                    self._conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            self._conn.commit()

    def close(self) -> None:
        self._conn.close()

    def _write(self, sql: str, args: tuple[object, ...]) -> int:
        with self._lock, self._conn:
            return self._conn.execute(sql, args).rowcount

    # -- what the patient manages ------------------------------------------------------------

    def authorise(self, patient_id: str, rpps: str, now: dt.datetime) -> None:
        self._write("INSERT OR REPLACE INTO authorisations VALUES (?,?,?,NULL)",
                    (patient_id, rpps, now.isoformat()))

    def revoke_authorisation(self, patient_id: str, rpps: str, now: dt.datetime) -> bool:
        return self._write("UPDATE authorisations SET revoked_at=? WHERE patient_id=? AND rpps=? "
                           "AND revoked_at IS NULL", (now.isoformat(), patient_id, rpps)) > 0

    def block(self, patient_id: str, rpps: str, now: dt.datetime) -> None:
        self._write("INSERT OR REPLACE INTO blocks VALUES (?,?,?)", (patient_id, rpps, now.isoformat()))

    def unblock(self, patient_id: str, rpps: str) -> bool:
        return self._write("DELETE FROM blocks WHERE patient_id=? AND rpps=?", (patient_id, rpps)) > 0

    def delegate(self, patient_id: str, caregiver_id: str, classes: tuple[DocClass, ...] | None,
                 now: dt.datetime, *, by: Principal | None = None, upload: bool = False) -> None:
        """Delegate to a caregiver; ``by`` is who grants it (the patient when None);
        ``upload`` lets the caregiver add documents to the record too.

        A representative's delegation carries the representatives' restrictions and lasts
        only as long as their own representation.
        """
        by_rep = by is not None and by.role is Role.REPRESENTATIVE
        self._write("INSERT OR REPLACE INTO delegations (patient_id, caregiver_id, classes, granted_at, "
                    "revoked_at, granted_by, granted_by_role, upload) VALUES (?,?,?,?,NULL,?,?,?)",
                    (patient_id, caregiver_id,
                     json.dumps([c.value for c in classes]) if classes is not None else None,
                     now.isoformat(), by.subject if by_rep and by else None,
                     Role.REPRESENTATIVE.value if by_rep else None, int(upload)))

    def revoke_delegation(self, patient_id: str, caregiver_id: str, now: dt.datetime) -> bool:
        return self._write("UPDATE delegations SET revoked_at=? WHERE patient_id=? AND caregiver_id=? "
                           "AND revoked_at IS NULL", (now.isoformat(), patient_id, caregiver_id)) > 0

    def add_representative(self, patient_id: str, person_id: str, now: dt.datetime,
                           declared_birth_date: dt.date | None = None) -> dt.date:
        """Register a minor's legal representative; return the birth date that counts.

        ``declared_birth_date`` is only checked, never used: one that contradicts the INS or
        the recorded birth date raises ``BirthDateMismatch``.
        """
        birth = self.birth_date(patient_id, now.date())
        if declared_birth_date is not None and (
                not consistent_with_ins(patient_id, declared_birth_date)
                or (self._recorded_birth_date(patient_id) not in (None, declared_birth_date))):
            raise BirthDateMismatch("the declared birth date contradicts the patient's INS "
                                    "or the birth date on record")
        # The column keeps the date known at registration; decisions read the current fact.
        self._write("INSERT OR REPLACE INTO representatives VALUES (?,?,?)",
                    (patient_id, person_id, birth.isoformat()))
        return birth

    def record_birth_date(self, patient_id: str, birth: dt.date, now: dt.datetime) -> bool:
        """Keep the birth date identity traits gave for a patient; False when it contradicts
        the INS (ignored). Of two different consistent dates, the earlier one is kept."""
        if not consistent_with_ins(patient_id, birth):
            return False
        self._write("INSERT INTO patient_birth_dates VALUES (?,?,?) ON CONFLICT (patient_id) DO UPDATE "
                    "SET birth_date=min(birth_date, excluded.birth_date), recorded_at=excluded.recorded_at",
                    (patient_id, birth.isoformat(), now.isoformat()))
        return True

    def _recorded_birth_date(self, patient_id: str) -> dt.date | None:
        row = self._one("SELECT birth_date FROM patient_birth_dates WHERE patient_id=?", (patient_id,))
        return None if row is None else dt.date.fromisoformat(str(row[0]))

    def birth_date(self, patient_id: str, today: dt.date) -> dt.date:
        """The patient's birth date as the record knows it (trait, else the INS's month)."""
        return self._recorded_birth_date(patient_id) or birth_date_from_ins(patient_id, today)

    def open_break_glass(self, patient_id: str, rpps: str, reason: str, now: dt.datetime) -> dt.datetime:
        """Record an emergency access; returns when it expires. The reason is mandatory,
        must be readable (see ``meaningful_reason``) and is kept verbatim."""
        if not meaningful_reason(reason):
            raise ValueError(f"break-the-glass needs a reason of at least {MIN_REASON_VISIBLE_CHARS} "
                             "visible characters")
        expires = now + BREAK_GLASS_DURATION
        self._write("INSERT INTO break_glass VALUES (?,?,?,?,?)",
                    (patient_id, rpps, reason, now.isoformat(), expires.isoformat()))
        return expires

    def remove_representative(self, patient_id: str, person_id: str) -> bool:
        return self._write("DELETE FROM representatives WHERE patient_id=? AND person_id=?",
                           (patient_id, person_id)) > 0

    def forget_patient(self, patient_id: str) -> int:
        """Erasure: drop every grant, block, delegation and representative of a patient;
        return how many rows went."""
        removed = 0
        with self._lock, self._conn:
            for table in ("authorisations", "blocks", "delegations", "representatives", "break_glass",
                          "patient_birth_dates"):
                removed += self._conn.execute(f"DELETE FROM {table} WHERE patient_id=?",  # noqa: S608
                                              (patient_id,)).rowcount
        return removed

    # -- closed accounts and oppositions (keyed by ``pipeline.crypto.patient_ref``) --------------

    def close_account(self, patient_ref: str, reason: Reason, now: dt.datetime) -> None:
        """Refuse new documents for the INS behind ``patient_ref`` (erasure, opposition)."""
        if reason not in (Reason.ACCOUNT_CLOSED, Reason.OPPOSITION):
            raise ValueError(f"not a closure reason: {reason}")
        self._write("INSERT OR REPLACE INTO closures VALUES (?,?,?)",
                    (patient_ref, reason.value, now.isoformat()))

    def reopen_account(self, patient_ref: str) -> bool:
        """Accept documents again (the patient asked); False when it was not closed."""
        return self._write("DELETE FROM closures WHERE patient_ref=?", (patient_ref,)) > 0

    def closure(self, patient_ref: str) -> Reason | None:
        """Why documents for this INS are refused, or None when they are accepted."""
        row = self._one("SELECT reason FROM closures WHERE patient_ref=?", (patient_ref,))
        return None if row is None else Reason(str(row[0]))

    # -- what the patient (or their representative) reads back ---------------------------------

    def _rows(self, sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        with self._lock:
            return [tuple(r) for r in self._conn.execute(sql, args)]

    def authorisations(self, patient_id: str) -> list[Grant]:
        """Professionals currently authorised, and the ones blocked."""
        rows = self._rows("SELECT rpps, granted_at FROM authorisations WHERE patient_id=? "
                          "AND revoked_at IS NULL ORDER BY rpps", (patient_id,))
        blocked = self._rows("SELECT rpps, blocked_at FROM blocks WHERE patient_id=? ORDER BY rpps",
                             (patient_id,))
        return ([Grant(kind="authorisation", subject=str(r), since=dt.datetime.fromisoformat(str(t)))
                 for r, t in rows]
                + [Grant(kind="block", subject=str(r), since=dt.datetime.fromisoformat(str(t)))
                   for r, t in blocked])

    def delegations(self, patient_id: str) -> list[Grant]:
        rows = self._rows("SELECT caregiver_id, classes, granted_at, upload FROM delegations "
                          "WHERE patient_id=? AND revoked_at IS NULL ORDER BY caregiver_id", (patient_id,))
        return [Grant(kind="delegation", subject=str(c),
                      classes=None if k is None else tuple(DocClass(x) for x in json.loads(str(k))),
                      upload=bool(u), since=dt.datetime.fromisoformat(str(t))) for c, k, t, u in rows]

    def representatives(self, patient_id: str, now: dt.datetime | None = None) -> list[Grant]:
        rows = self._rows("SELECT person_id FROM representatives WHERE patient_id=? ORDER BY person_id",
                          (patient_id,))
        birth = self.birth_date(patient_id, (now or dt.datetime.now(dt.UTC)).date())
        until = dt.datetime.combine(_majority(birth), dt.time(), tzinfo=dt.UTC)
        return [Grant(kind="representative", subject=str(p), until=until) for (p,) in rows]

    # -- the decision --------------------------------------------------------------------------

    def _one(self, sql: str, args: tuple[object, ...]) -> tuple[object, ...] | None:
        with self._lock:
            row = self._conn.execute(sql, args).fetchone()
        return tuple(row) if row else None

    def decide(self, who: Principal, patient_id: str, now: dt.datetime) -> AccessDecision:
        """May ``who`` see ``patient_id``'s record at ``now``, and which documents of it."""
        if who.role is Role.PATIENT:
            if who.subject != patient_id:
                return AccessDecision(allowed=False, via="not_own_record")
            return AccessDecision(allowed=True, via="owner", may_upload=True,
                                  exclude_visibility=(Visibility.INVISIBLE_PATIENT,))
        if who.role is Role.PROFESSIONAL:
            if self._one("SELECT 1 FROM blocks WHERE patient_id=? AND rpps=?", (patient_id, who.subject)):
                return AccessDecision(allowed=False, via="blocked")
            hidden = (Visibility.MASQUE_PS,)
            if self._one("SELECT 1 FROM authorisations WHERE patient_id=? AND rpps=? AND revoked_at IS NULL",
                         (patient_id, who.subject)):
                return AccessDecision(allowed=True, via="authorisation", exclude_visibility=hidden)
            if self._one("SELECT 1 FROM break_glass WHERE patient_id=? AND rpps=? AND opened_at<=? "
                         "AND expires_at>?", (patient_id, who.subject, now.isoformat(), now.isoformat())):
                return AccessDecision(allowed=True, via="break_glass", exclude_visibility=hidden)
            return AccessDecision(allowed=False, via="not_authorised")
        if who.role is Role.CAREGIVER:
            return self._caregiver(who, patient_id, now)
        return self._representative(who.subject, patient_id, now)

    def _representative(self, person_id: str, patient_id: str, now: dt.datetime) -> AccessDecision:
        if self._one("SELECT 1 FROM representatives WHERE patient_id=? AND person_id=?",
                     (patient_id, person_id)) is None:
            return AccessDecision(allowed=False, via="not_representative")
        # Majority ends the representatives' access by itself: computed, not a batch job.
        if _age_on(self.birth_date(patient_id, now.date()), now.date()) >= MAJORITY_AGE:
            return AccessDecision(allowed=False, via="patient_of_age")
        return AccessDecision(allowed=True, via="representative", exclude_visibility=_REPRESENTATIVES_HIDDEN,
                              may_upload=True)

    def _caregiver(self, who: Principal, patient_id: str, now: dt.datetime) -> AccessDecision:
        row = self._one("SELECT classes, granted_at, granted_by, granted_by_role, upload FROM delegations "
                        "WHERE patient_id=? AND caregiver_id=? AND revoked_at IS NULL",
                        (patient_id, who.subject))
        if row is None:
            return AccessDecision(allowed=False, via="no_delegation")
        classes_json, granted_at, granted_by, granted_by_role, upload = row
        birth = self.birth_date(patient_id, now.date())
        granted_day = dt.datetime.fromisoformat(str(granted_at)).date()
        if (_age_on(birth, granted_day) < MAJORITY_AGE <= _age_on(birth, now.date())):
            return AccessDecision(allowed=False, via="patient_of_age")  # a minor's delegation
        excluded: tuple[Visibility, ...] = (Visibility.INVISIBLE_PATIENT,)
        if granted_by_role == Role.REPRESENTATIVE.value:
            # Never more than the representative who delegated may see, nor for longer.
            if not self._representative(str(granted_by), patient_id, now).allowed:
                return AccessDecision(allowed=False, via="delegating_representative_gone")
            excluded = _REPRESENTATIVES_HIDDEN
        classes = None if classes_json is None else tuple(DocClass(c) for c in json.loads(str(classes_json)))
        return AccessDecision(allowed=True, via="delegation", allowed_classes=classes,
                              exclude_visibility=excluded, may_upload=bool(upload))
