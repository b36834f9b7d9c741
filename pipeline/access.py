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

Grants, blocks, delegations, representatives, break-the-glass openings, the patients'
birth dates and closed accounts are kept in the state database (``pipeline.state``:
SQLite under the data directory, or PostgreSQL shared by every worker and API replica);
every change and every access is written to the audit log.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import unicodedata
from collections.abc import Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, Executable, Table, case, select

from pipeline.crypto import patient_ref
from pipeline.model import DocClass, DocumentRecord, Frozen, Reason, SearchQuery, Visibility
from pipeline.settings import Settings
from pipeline.state import tables as t
from pipeline.state.engine import insert_new, insert_new_many, upsert
from pipeline.state.opening import engine_of

if TYPE_CHECKING:
    from pipeline.index import DocumentIndex

BREAK_GLASS_DURATION = dt.timedelta(hours=4)
MAJORITY_AGE = 18
MIN_REASON_VISIBLE_CHARS = 10
MIN_REASON_LETTERS = 5
_IN_CHUNK = 500  # ids per ``IN (…)`` list: well under every database's parameter limit

# Why a decision refuses an erased account (``Reason.ACCOUNT_CLOSED``).
ACCOUNT_CLOSED = Reason.ACCOUNT_CLOSED.value

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
        classes = (
            query.allowed_classes
            if classes is None
            else tuple(c for c in query.allowed_classes if c in classes)
        )
    return query.model_copy(update={"exclude_visibility": excluded, "allowed_classes": classes})


def may_see(record: DocumentRecord, decision: AccessDecision) -> bool:
    """Whether one fetched document is within ``decision`` (the check behind every ``get``)."""
    if not decision.allowed:
        return False
    if any(flag in decision.exclude_visibility for flag in record.visibility):
        return False
    return decision.allowed_classes is None or record.doc_class in decision.allowed_classes


def visible_ids(
    index: DocumentIndex, decision: AccessDecision, patient_id: str, doc_ids: Iterable[str]
) -> frozenset[str]:
    """The ids among ``doc_ids`` of documents ``decision`` lets its holder see (history,
    listings of past accesses: an id of a hidden or vanished document is never shown)."""
    shown = set()
    for doc_id in set(doc_ids):
        record = index.get(patient_id, doc_id)
        if record is not None and may_see(record, decision):
            shown.add(doc_id)
    return frozenset(shown)


def as_seen(index: DocumentIndex, decision: AccessDecision, record: DocumentRecord) -> DocumentRecord:
    """``record`` as ``decision``'s holder may know it: superseded by the first newer version
    along its chain that they may see, or current when they may see none (a correction not
    released to the patient, one masked from professionals), as every route answers for such
    a version as if it did not exist and the index's listings count the record current for
    them (``pipeline.index.base.unseen_successors``)."""
    newer, passed = record.superseded_by, set()
    while newer is not None and newer not in passed:
        passed.add(newer)
        version = index.get(record.patient_id, newer)
        if version is not None and may_see(version, decision):
            break
        newer = version.superseded_by if version is not None else None
    else:
        newer = None  # no newer version they may see (or a chain that loops)
    if newer is None and record.superseded_by is not None:
        # Current for them: the time a hidden version superseded it (its ``updated_at``, FHIR's
        # meta.lastUpdated) would tell them one exists, so the record is as filed for them.
        return record.model_copy(update={"superseded_by": None, "updated_at": None})
    if newer != record.superseded_by:
        return record.model_copy(update={"superseded_by": newer})
    return record


class Grant(Frozen):
    """One entry of what a patient manages: an authorisation, block, delegation or representative."""

    kind: str
    subject: str  # RPPS, caregiver id or representative's person id
    classes: tuple[DocClass, ...] | None = None  # delegations: None means every class
    upload: bool | None = None  # delegations: may the caregiver also add documents
    since: dt.datetime | None = None
    until: dt.datetime | None = None  # representatives: the minor's 18th birthday


# The zone where a day starts first among France's (Wallis-et-Futuna, UTC+12, no summer
# time). A birth date is a civil day where the patient was born, which the record does not
# say: a minor's 18th birthday counts from when it has begun there, so that a
# representative's access never outlasts it (reckoned in UTC, it ran on for 1 to 2 hours
# into the birthday in metropolitan France, up to 12 in the Pacific territories).
EARLIEST_CIVIL_ZONE = dt.timezone(dt.timedelta(hours=12), "UTC+12")


def civil_day(at: dt.datetime) -> dt.date:
    """The latest calendar day anywhere in France at ``at`` (naive: UTC)."""
    return (at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)).astimezone(EARLIEST_CIVIL_ZONE).date()


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


# Direction embeddings, overrides and isolates: they reorder what follows them when shown, so
# a reason holding one reads in the patient's history as something else than was written.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def meaningful_reason(reason: str) -> bool:
    """A break-the-glass reason someone can read: enough visible characters, some letters,
    shown as written (no control characters, no direction overrides).

    Invisible characters (zero-width spaces, joiners, controls) do not count.
    """
    visible = [c for c in reason if unicodedata.category(c)[0] in "LNPS"]
    letters = sum(1 for c in visible if unicodedata.category(c)[0] == "L")
    controls = any(
        (unicodedata.category(c) == "Cc" and c not in "\t\n") or c in _BIDI_CONTROLS for c in reason
    )
    return len(visible) >= MIN_REASON_VISIBLE_CHARS and letters >= MIN_REASON_LETTERS and not controls


def _grantor(by: Principal | None) -> dict[str, object]:
    """Who granted an authorisation or a delegation, recorded when a legal representative
    did (None: the patient), so that it stays under the representatives' restrictions."""
    if by is None or by.role is not Role.REPRESENTATIVE:
        return {"granted_by": None, "granted_by_role": None}
    return {"granted_by": by.subject, "granted_by_role": Role.REPRESENTATIVE.value}


class AccessRules:
    """The rules in the state database (``pipeline.state``): every process and host that
    opens it decides from the same rows. ``AccessRules(settings)`` opens (and closes) its
    own engine; ``AccessRules(engine)`` uses the caller's, which stays the caller's."""

    def __init__(self, state: Settings | Engine, *, ref_key: bytes | None = None) -> None:
        self._engine, self._owns_engine = engine_of(state)
        self._reading = threading.local()  # the connection ``decide`` reads through
        # The key of patient references (``pipeline.crypto.patient_ref_key``): with it,
        # ``decide`` refuses every access to a closed account (the API always gives it).
        self._ref_key = ref_key

    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()

    def _write(self, statement: Executable) -> int:
        with self._engine.begin() as conn:
            return conn.execute(statement).rowcount

    def _upsert(self, table: Table, values: dict[str, object]) -> None:
        """Insert the row, or replace the one with the same primary key."""
        with self._engine.begin() as conn:
            upsert(conn, table, values)

    # -- what the patient manages ------------------------------------------------------------

    def authorise(self, patient_id: str, rpps: str, now: dt.datetime, *, by: Principal | None = None) -> None:
        """Authorise a professional; ``by`` is who grants it (the patient when None). A
        representative's authorisation carries the representatives' restrictions and lasts
        only as long as their own representation, as their delegations do."""
        self._upsert(
            t.authorisations,
            {
                "patient_id": patient_id,
                "rpps": rpps,
                "granted_at": now.isoformat(),
                "revoked_at": None,
                **_grantor(by),
            },
        )

    def revoke_authorisation(self, patient_id: str, rpps: str, now: dt.datetime) -> bool:
        """End the professional's access: their authorisation, and any break-the-glass they
        opened that is still running (the patient's latest word; a new emergency is a new,
        audited opening). True when there was either."""
        a, g = t.authorisations.c, t.break_glass.c
        stamp = now.isoformat()
        with self._engine.begin() as conn:
            revoked = conn.execute(
                t.authorisations.update()
                .where(a.patient_id == patient_id, a.rpps == rpps, a.revoked_at.is_(None))
                .values(revoked_at=stamp)
            ).rowcount
            closed = conn.execute(
                t.break_glass.update()
                .where(g.patient_id == patient_id, g.rpps == rpps, g.expires_at > stamp)
                .values(expires_at=stamp)
            ).rowcount
        return revoked + closed > 0

    def block(self, patient_id: str, rpps: str, now: dt.datetime) -> None:
        self._upsert(t.blocks, {"patient_id": patient_id, "rpps": rpps, "blocked_at": now.isoformat()})

    def unblock(self, patient_id: str, rpps: str) -> bool:
        b = t.blocks.c
        return self._write(t.blocks.delete().where(b.patient_id == patient_id, b.rpps == rpps)) > 0

    def delegate(
        self,
        patient_id: str,
        caregiver_id: str,
        classes: tuple[DocClass, ...] | None,
        now: dt.datetime,
        *,
        by: Principal | None = None,
        upload: bool = False,
    ) -> None:
        """Delegate to a caregiver; ``by`` is who grants it (the patient when None);
        ``upload`` lets the caregiver add documents to the record too.

        A representative's delegation carries the representatives' restrictions and lasts
        only as long as their own representation.
        """
        self._upsert(
            t.delegations,
            {
                "patient_id": patient_id,
                "caregiver_id": caregiver_id,
                "classes": json.dumps([c.value for c in classes]) if classes is not None else None,
                "granted_at": now.isoformat(),
                "revoked_at": None,
                "upload": upload,
                **_grantor(by),
            },
        )

    def revoke_delegation(self, patient_id: str, caregiver_id: str, now: dt.datetime) -> bool:
        d = t.delegations.c
        return (
            self._write(
                t.delegations.update()
                .where(d.patient_id == patient_id, d.caregiver_id == caregiver_id, d.revoked_at.is_(None))
                .values(revoked_at=now.isoformat())
            )
            > 0
        )

    def add_representative(
        self, patient_id: str, person_id: str, now: dt.datetime, declared_birth_date: dt.date | None = None
    ) -> dt.date:
        """Register a minor's legal representative; return the birth date that counts.

        ``declared_birth_date`` is only checked, never used: one that contradicts the INS or
        the recorded birth date raises ``BirthDateMismatch``.
        """
        birth = self.birth_date(patient_id, civil_day(now))
        if declared_birth_date is not None and (
            not consistent_with_ins(patient_id, declared_birth_date)
            or (self._recorded_birth_date(patient_id) not in (None, declared_birth_date))
        ):
            raise BirthDateMismatch(
                "the declared birth date contradicts the patient's INS or the birth date on record"
            )
        # The column keeps the date known at registration; decisions read the current fact.
        self._upsert(
            t.representatives,
            {"patient_id": patient_id, "person_id": person_id, "patient_birth_date": birth.isoformat()},
        )
        return birth

    def record_birth_date(self, patient_id: str, birth: dt.date, now: dt.datetime) -> bool:
        """Keep the birth date identity traits gave for a patient; False when it contradicts
        the INS (ignored). Of two different consistent dates, the earlier one is kept."""
        if not consistent_with_ins(patient_id, birth):
            return False
        with self._engine.begin() as conn:
            self._record_day(conn, patient_id, birth.isoformat(), now.isoformat())
        return True

    def record_birth_dates(self, traits: Iterable[tuple[str, dt.date]], now: dt.datetime) -> int:
        """``record_birth_date`` for many patients at once (one flush's documents), in one
        transaction; returns how many dates were consistent with their INS.

        A date no earlier than the one on record changes nothing, so it is not written:
        the recorded date only ever moves earlier (``record_birth_date``), and a row erased
        meanwhile stays erased either way."""
        earliest: dict[str, str] = {}
        for patient_id, birth in traits:
            if consistent_with_ins(patient_id, birth):
                day = birth.isoformat()
                earliest[patient_id] = min(day, earliest.get(patient_id, day))
        if not earliest:
            return 0
        b, stamp = t.patient_birth_dates.c, now.isoformat()
        with self._engine.begin() as conn:
            recorded: dict[str, str] = {}
            ids = sorted(earliest)
            for at in range(0, len(ids), _IN_CHUNK):
                recorded.update(
                    (str(p), str(d))
                    for p, d in conn.execute(
                        select(b.patient_id, b.birth_date).where(b.patient_id.in_(ids[at : at + _IN_CHUNK]))
                    )
                )
            earlier = {p: day for p, day in earliest.items() if p not in recorded or day < recorded[p]}
            # The days no patient had yet in one statement; another writer's meanwhile (rare)
            # is then kept only if it is earlier, one statement each (``_record_day``).
            inserted = insert_new_many(
                conn,
                t.patient_birth_dates,
                [
                    {"patient_id": p, "birth_date": day, "recorded_at": stamp}
                    for p, day in earlier.items()
                    if p not in recorded
                ],
            )
            for patient_id, day in earlier.items():
                if (patient_id,) not in inserted:
                    self._record_day(conn, patient_id, day, stamp)
        return len(earliest)

    @staticmethod
    def _record_day(conn: Connection, patient_id: str, day: str, stamp: str) -> None:
        b = t.patient_birth_dates.c
        if not insert_new(
            conn, t.patient_birth_dates, {"patient_id": patient_id, "birth_date": day, "recorded_at": stamp}
        ):
            # One statement: two documents recorded at once still keep the earlier day.
            conn.execute(
                t.patient_birth_dates.update()
                .where(b.patient_id == patient_id)
                .values(birth_date=case((b.birth_date > day, day), else_=b.birth_date), recorded_at=stamp)
            )

    def _recorded_birth_date(self, patient_id: str) -> dt.date | None:
        b = t.patient_birth_dates.c
        row = self._one(select(b.birth_date).where(b.patient_id == patient_id))
        return None if row is None else dt.date.fromisoformat(str(row[0]))

    def birth_date(self, patient_id: str, today: dt.date) -> dt.date:
        """The patient's birth date as the record knows it (trait, else the INS's month)."""
        return self._recorded_birth_date(patient_id) or birth_date_from_ins(patient_id, today)

    def open_break_glass(self, patient_id: str, rpps: str, reason: str, now: dt.datetime) -> dt.datetime:
        """Record an emergency access; returns when it expires. The reason is mandatory,
        must be readable (see ``meaningful_reason``) and is kept verbatim."""
        if not meaningful_reason(reason):
            raise ValueError(
                f"break-the-glass needs a reason of at least {MIN_REASON_VISIBLE_CHARS} visible characters"
            )
        expires = now + BREAK_GLASS_DURATION
        if self._ref_key is not None and self._closed(patient_id):
            # Opened as on any INS, under the keyed reference: the INS and the reason (which
            # may name the patient) stay out of the state database.
            patient_id, reason = self._ref(patient_id), ""
        self._write(
            t.break_glass.insert().values(
                patient_id=patient_id,
                rpps=rpps,
                reason=reason,
                opened_at=now.isoformat(),
                expires_at=expires.isoformat(),
            )
        )
        return expires

    def remove_representative(self, patient_id: str, person_id: str) -> bool:
        r = t.representatives.c
        return (
            self._write(
                t.representatives.delete().where(r.patient_id == patient_id, r.person_id == person_id)
            )
            > 0
        )

    def forget_patient(self, patient_id: str) -> int:
        """Erasure: drop every grant, block, delegation and representative of a patient;
        return how many rows went."""
        removed = 0
        with self._engine.begin() as conn:
            for table in (
                t.authorisations,
                t.blocks,
                t.delegations,
                t.representatives,
                t.break_glass,
                t.patient_birth_dates,
            ):
                removed += conn.execute(table.delete().where(table.c.patient_id == patient_id)).rowcount
        return removed

    def purge_old_versions(self) -> None:
        """After an erasure: SQLite's write-ahead log is checkpointed and truncated, so no
        earlier version of an erased row lingers in it (deleted content itself is zeroed:
        ``secure_delete``, set on every connection by ``pipeline.state.engine``).
        PostgreSQL's autovacuum reclaims dead rows on its own."""
        if self._engine.dialect.name == "sqlite":
            with self._engine.connect() as conn:  # outside a transaction: the driver's own connection
                raw = conn.connection.driver_connection
                assert raw is not None  # an open pooled connection has its driver's
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- closed accounts and oppositions (keyed by ``pipeline.crypto.patient_ref``) --------------

    def close_account(self, patient_ref: str, reason: Reason, now: dt.datetime) -> None:
        """Refuse new documents for the INS behind ``patient_ref`` (erasure, opposition)."""
        if reason not in (Reason.ACCOUNT_CLOSED, Reason.OPPOSITION):
            raise ValueError(f"not a closure reason: {reason}")
        self._upsert(
            t.closures, {"patient_ref": patient_ref, "reason": reason.value, "closed_at": now.isoformat()}
        )

    def reopen_account(self, patient_ref: str) -> bool:
        """Accept documents again (the patient asked); False when it was not closed."""
        return self._write(t.closures.delete().where(t.closures.c.patient_ref == patient_ref)) > 0

    def closure(self, patient_ref: str) -> Reason | None:
        """Why documents for this INS are refused, or None when they are accepted."""
        c = t.closures.c
        row = self._one(select(c.reason).where(c.patient_ref == patient_ref))
        return None if row is None else Reason(str(row[0]))

    def closed_accounts(self, *, at_most: int) -> dict[str, Reason] | None:
        """Every closed account (``patient_ref`` -> why), or None when there are more than
        ``at_most``."""
        c = t.closures.c
        rows = self._rows(select(c.patient_ref, c.reason).limit(at_most + 1))
        if len(rows) > at_most:
            return None
        return {str(ref): Reason(str(reason)) for ref, reason in rows}

    def closures(self, patient_refs: Iterable[str]) -> dict[str, Reason]:
        """``closure`` of many INS at once: the closed ones among ``patient_refs``, and why."""
        c, refs = t.closures.c, sorted(set(patient_refs))
        closed: dict[str, Reason] = {}
        for at in range(0, len(refs), _IN_CHUNK):
            chunk = refs[at : at + _IN_CHUNK]
            rows = self._rows(select(c.patient_ref, c.reason).where(c.patient_ref.in_(chunk)))
            closed.update((str(ref), Reason(str(reason))) for ref, reason in rows)
        return closed

    # -- what the patient (or their representative) reads back ---------------------------------

    def _rows(self, query: Executable) -> list[tuple[Any, ...]]:
        with self._engine.connect() as conn:
            return [tuple(r) for r in conn.execute(query)]

    def authorisations(self, patient_id: str) -> list[Grant]:
        """Professionals currently authorised, and the ones blocked."""
        a, b = t.authorisations.c, t.blocks.c
        rows = self._rows(
            select(a.rpps, a.granted_at)
            .where(a.patient_id == patient_id, a.revoked_at.is_(None))
            .order_by(a.rpps)
        )
        blocked = self._rows(select(b.rpps, b.blocked_at).where(b.patient_id == patient_id).order_by(b.rpps))
        return [
            Grant(kind="authorisation", subject=str(r), since=dt.datetime.fromisoformat(str(s)))
            for r, s in rows
        ] + [Grant(kind="block", subject=str(r), since=dt.datetime.fromisoformat(str(s))) for r, s in blocked]

    def delegations(self, patient_id: str) -> list[Grant]:
        d = t.delegations.c
        rows = self._rows(
            select(d.caregiver_id, d.classes, d.granted_at, d.upload)
            .where(d.patient_id == patient_id, d.revoked_at.is_(None))
            .order_by(d.caregiver_id)
        )
        return [
            Grant(
                kind="delegation",
                subject=str(c),
                classes=None if k is None else tuple(DocClass(x) for x in json.loads(str(k))),
                upload=bool(u),
                since=dt.datetime.fromisoformat(str(s)),
            )
            for c, k, s, u in rows
        ]

    def representatives(self, patient_id: str, now: dt.datetime | None = None) -> list[Grant]:
        r = t.representatives.c
        rows = self._rows(select(r.person_id).where(r.patient_id == patient_id).order_by(r.person_id))
        birth = self.birth_date(patient_id, civil_day(now or dt.datetime.now(dt.UTC)))
        until = dt.datetime.combine(_majority(birth), dt.time(), tzinfo=EARLIEST_CIVIL_ZONE)
        return [Grant(kind="representative", subject=str(p), until=until) for (p,) in rows]

    # -- the decision --------------------------------------------------------------------------

    def _one(self, query: Executable) -> tuple[Any, ...] | None:
        reading = getattr(self._reading, "conn", None)
        if reading is not None:
            row = reading.execute(query).first()
        else:
            with self._engine.connect() as conn:
                row = conn.execute(query).first()
        return tuple(row) if row else None

    def decide(self, who: Principal, patient_id: str, now: dt.datetime) -> AccessDecision:
        """May ``who`` see ``patient_id``'s record at ``now``, and which documents of it."""
        # One connection for the decision's few queries (one pool checkout and one
        # transaction, not one per query), kept for this thread while it decides.
        with self._engine.connect() as conn:
            self._reading.conn = conn
            try:
                return self._decide(who, patient_id, now)
            finally:
                self._reading.conn = None

    def _decide(self, who: Principal, patient_id: str, now: dt.datetime) -> AccessDecision:
        if self._ref_key is not None and self._closed(patient_id):
            # Erased: nobody reads or writes it any more, so no grant, delegation or
            # break-the-glass row brings the INS back into the state database. A
            # professional's emergency opening is kept under the account's keyed reference
            # and shows nothing: as for an INS Carnet never held, an empty record (refused,
            # it told any professional who had erased their account).
            if who.role is Role.PROFESSIONAL and self._emergency(self._ref(patient_id), who.subject, now):
                return AccessDecision(allowed=True, via="break_glass", allowed_classes=())
            return AccessDecision(allowed=False, via=ACCOUNT_CLOSED)
        if who.role is Role.PATIENT:
            if who.subject != patient_id:
                return AccessDecision(allowed=False, via="not_own_record")
            return AccessDecision(
                allowed=True, via="owner", may_upload=True, exclude_visibility=(Visibility.INVISIBLE_PATIENT,)
            )
        if who.role is Role.PROFESSIONAL:
            b, a = t.blocks.c, t.authorisations.c
            if self._one(select(1).where(b.patient_id == patient_id, b.rpps == who.subject)):
                return AccessDecision(allowed=False, via="blocked")
            hidden = (Visibility.MASQUE_PS,)
            granted = self._one(
                select(a.granted_by, a.granted_by_role).where(
                    a.patient_id == patient_id, a.rpps == who.subject, a.revoked_at.is_(None)
                )
            )
            if granted is not None:
                granted_by, granted_by_role = granted
                if granted_by_role != Role.REPRESENTATIVE.value:
                    return AccessDecision(allowed=True, via="authorisation", exclude_visibility=hidden)
                # Never what the minor hid from the representative who authorised, nor after.
                if not self._representative(str(granted_by), patient_id, now).allowed:
                    return AccessDecision(allowed=False, via="authorising_representative_gone")
                return AccessDecision(
                    allowed=True,
                    via="authorisation",
                    exclude_visibility=(*hidden, Visibility.INVISIBLE_REPRESENTANTS_LEGAUX),
                )
            if self._emergency(patient_id, who.subject, now):
                return AccessDecision(allowed=True, via="break_glass", exclude_visibility=hidden)
            return AccessDecision(allowed=False, via="not_authorised")
        if who.role is Role.CAREGIVER:
            return self._caregiver(who, patient_id, now)
        return self._representative(who.subject, patient_id, now)

    def _ref(self, patient_id: str) -> str:
        assert self._ref_key is not None
        return patient_ref(self._ref_key, patient_id)

    def _closed(self, patient_id: str) -> bool:
        c = t.closures.c
        ref = self._ref(patient_id)
        return self._one(select(1).where(c.patient_ref == ref, c.reason == ACCOUNT_CLOSED)) is not None

    def _emergency(self, patient_key: str, rpps: str, now: dt.datetime) -> bool:
        """Whether ``rpps`` holds an open break-the-glass on ``patient_key`` (an INS, or a
        closed account's keyed reference)."""
        g = t.break_glass.c
        return (
            self._one(
                select(1).where(
                    g.patient_id == patient_key,
                    g.rpps == rpps,
                    g.opened_at <= now.isoformat(),
                    g.expires_at > now.isoformat(),
                )
            )
            is not None
        )

    def _representative(self, person_id: str, patient_id: str, now: dt.datetime) -> AccessDecision:
        r = t.representatives.c
        if self._one(select(1).where(r.patient_id == patient_id, r.person_id == person_id)) is None:
            return AccessDecision(allowed=False, via="not_representative")
        # Majority ends the representatives' access by itself: computed, not a batch job.
        today = civil_day(now)
        if _age_on(self.birth_date(patient_id, today), today) >= MAJORITY_AGE:
            return AccessDecision(allowed=False, via="patient_of_age")
        return AccessDecision(
            allowed=True, via="representative", exclude_visibility=_REPRESENTATIVES_HIDDEN, may_upload=True
        )

    def _caregiver(self, who: Principal, patient_id: str, now: dt.datetime) -> AccessDecision:
        d = t.delegations.c
        row = self._one(
            select(d.classes, d.granted_at, d.granted_by, d.granted_by_role, d.upload).where(
                d.patient_id == patient_id, d.caregiver_id == who.subject, d.revoked_at.is_(None)
            )
        )
        if row is None:
            return AccessDecision(allowed=False, via="no_delegation")
        classes_json, granted_at, granted_by, granted_by_role, upload = row
        today = civil_day(now)
        birth = self.birth_date(patient_id, today)
        granted_day = civil_day(dt.datetime.fromisoformat(str(granted_at)))
        if _age_on(birth, granted_day) < MAJORITY_AGE <= _age_on(birth, today):
            return AccessDecision(allowed=False, via="patient_of_age")  # a minor's delegation
        excluded: tuple[Visibility, ...] = (Visibility.INVISIBLE_PATIENT,)
        if granted_by_role == Role.REPRESENTATIVE.value:
            # Never more than the representative who delegated may see, nor for longer.
            if not self._representative(str(granted_by), patient_id, now).allowed:
                return AccessDecision(allowed=False, via="delegating_representative_gone")
            excluded = _REPRESENTATIVES_HIDDEN
        classes = None if classes_json is None else tuple(DocClass(c) for c in json.loads(str(classes_json)))
        return AccessDecision(
            allowed=True,
            via="delegation",
            allowed_classes=classes,
            exclude_visibility=excluded,
            may_upload=bool(upload),
        )
