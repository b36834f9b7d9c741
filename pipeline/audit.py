"""The access audit log: append-only, keyed and anchored, so tampering is detected.

Each entry carries an HMAC-SHA256, under a key held apart from the log (derived from the
master key, see ``pipeline.crypto.audit_key``), of its fields and of the previous entry's
MAC (a keyed chain): whoever can write the log but does not hold the key cannot modify,
insert or remove an entry and recompute the chain. The head of the chain (last sequence
number and MAC) is *anchored* outside the log: written to the object store
(``anchors/audit/<seq>.json``, write-once names) on every erasure, every
``ANCHOR_EVERY`` entries and by ``carnet audit anchor``; ``verify`` checks that the log
still holds the anchored entry, so truncation or wholesale replacement up to the last
anchor is detected. Entries never contain document text or keys: who, role, when, which
patient, which documents, what and why.

Logs written before keyed entries existed (plain SHA-256 chain, no ``v``) verify as a
legacy prefix only when asked (``accept_legacy``, ``carnet audit verify --accept-legacy``):
anyone can write such entries, so by default they are tampering, and a plain entry after
a keyed one always is.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import ColumnElement, Engine, select

from pipeline.model import Frozen
from pipeline.state import tables as t
from pipeline.state.audit_rows import GENESIS, HEAD_ROW, entry_fields, entry_row
from pipeline.state.engine import engine_name, insert_new
from pipeline.state.opening import engine_of

if TYPE_CHECKING:
    from pipeline.settings import Settings

log = logging.getLogger(__name__)

FORMAT = 2  # keyed entries carry "v": 2
ANCHOR_EVERY = 100
ANCHOR_KIND = "audit"


class AuditEntry(Frozen):
    seq: int
    at: dt.datetime
    actor: str
    actor_name: str | None = None
    role: str
    action: str  # search, read, download, grant, revoke, visibility, break_glass, erase…
    patient_id: str | None
    doc_ids: tuple[str, ...] = ()
    reason: str | None = None
    prev_hash: str
    hash: str
    v: int | None = None


class AuditHead(Frozen):
    """The last entry of the chain, as anchored outside the log."""

    seq: int
    hash: str
    at: dt.datetime


class AnchorStore(Protocol):
    """Where heads are anchored (the object store: ``DocumentStore.put_anchor``)."""

    def put_anchor(self, kind: str, seq: int, data: bytes) -> None: ...

    def latest_anchor(self, kind: str) -> bytes | None: ...


def _text(value: str) -> str:
    """``value`` as text every database keeps: a lone surrogate (from a token claim) and a
    NUL (PostgreSQL text holds none) are escaped, so no caller input can make an append fail."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def _canonical(fields: dict[str, object], *, ascii_only: bool) -> bytes:
    return json.dumps(fields, sort_keys=True, ensure_ascii=ascii_only, separators=(",", ":")).encode()


def _legacy_digest(fields: dict[str, object]) -> str:
    return hashlib.sha256(_canonical(fields, ascii_only=False)).hexdigest()


def _mac(key: bytes, fields: dict[str, object]) -> str:
    return hmac.new(key, _canonical(fields, ascii_only=True), hashlib.sha256).hexdigest()


class AuditVerification(Frozen):
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None
    legacy_entries: int = 0  # unkeyed entries written before keyed ones existed
    anchored_seq: int | None = None  # the anchored head the log was checked against


_PAGE = 1000  # entries read per transaction


class AuditLog:
    """One table of keyed, chained entries in the state database, only ever appended to.

    Appends are serialised by the database: each runs in one transaction that first locks
    the one-row ``audit_head`` (a row lock on PostgreSQL, the write lock on SQLite), so any
    number of processes, on any number of hosts, extend one chain in turn.
    ``AuditLog(settings, …)`` opens (and closes) its own engine; ``AuditLog(engine, …)``
    uses the caller's.
    """

    def __init__(self, state: Settings | Engine, *, key: bytes, anchors: AnchorStore | None = None) -> None:
        if len(key) < 16:
            raise ValueError("the audit key must be at least 16 bytes")
        self._engine, self._owns_engine = engine_of(state)
        self._key = key
        self.anchors = anchors

    def __repr__(self) -> str:
        return f"AuditLog({engine_name(self._engine)!r})"

    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()

    def append(
        self,
        *,
        actor: str,
        role: str,
        action: str,
        patient_id: str | None,
        doc_ids: Sequence[str] = (),
        reason: str | None = None,
        at: dt.datetime | None = None,
        actor_name: str | None = None,
    ) -> AuditEntry:
        head = t.audit_head.c
        with self._engine.begin() as conn:
            # Lock the head first: the next append anywhere waits until this one commits.
            locked = conn.execute(
                t.audit_head.update()
                .where(head.id == HEAD_ROW)
                .values(seq=head.seq)
                .returning(head.seq, head.hash)
            ).first()
            if locked is None:  # a new chain: the first append creates the head, others wait on it
                e = t.audit_entries.c
                last = conn.execute(select(e.seq, e.hash).order_by(e.seq.desc()).limit(1)).first()
                insert_new(
                    conn,
                    t.audit_head,
                    {"id": HEAD_ROW, "seq": last.seq if last else 0, "hash": last.hash if last else GENESIS},
                )
                locked = conn.execute(
                    t.audit_head.update()
                    .where(head.id == HEAD_ROW)
                    .values(seq=head.seq)
                    .returning(head.seq, head.hash)
                ).one()
            last_seq, last_hash = int(locked[0]), str(locked[1])
            fields: dict[str, object] = {
                "v": FORMAT,
                "seq": last_seq + 1,
                "at": (at or dt.datetime.now(dt.UTC)).isoformat(),
                "actor": _text(actor),
                "role": role,
                "action": action,
                "patient_id": None if patient_id is None else _text(patient_id),
                "doc_ids": [_text(d) for d in doc_ids],
                "reason": None if reason is None else _text(reason),
                "prev_hash": last_hash,
            }
            if actor_name is not None:
                fields["actor_name"] = _text(actor_name)
            entry = AuditEntry.model_validate({**fields, "hash": _mac(self._key, fields)})
            # Stored from the very values that were MACed, so verify() sees the same fields.
            conn.execute(t.audit_entries.insert().values(entry_row(fields, entry.hash)))
            conn.execute(
                t.audit_head.update().where(head.id == HEAD_ROW).values(seq=entry.seq, hash=entry.hash)
            )
        if self.anchors is not None and entry.seq % ANCHOR_EVERY == 0:
            self.anchor()
        return entry

    def head(self) -> AuditHead | None:
        e = t.audit_entries.c
        with self._engine.connect() as conn:
            row = conn.execute(select(e.seq, e.hash, e.at).order_by(e.seq.desc()).limit(1)).first()
        return None if row is None else AuditHead(seq=row.seq, hash=row.hash, at=row.at)

    def anchor(self) -> AuditHead | None:
        """Write the current head to the anchor store (no-op without one); return it."""
        head = self.head()
        if head is not None and self.anchors is not None:
            self.anchors.put_anchor(ANCHOR_KIND, head.seq, head.model_dump_json().encode())
        return head

    def latest_anchor(self) -> AuditHead | None:
        data = self.anchors.latest_anchor(ANCHOR_KIND) if self.anchors is not None else None
        return None if data is None else AuditHead.model_validate_json(data)

    def _fields(self, where: ColumnElement[bool] | None = None) -> Iterator[tuple[dict[str, object], str]]:
        """Each entry's fields, as they were MACed, and its claimed MAC, in chain order."""
        e = t.audit_entries.c
        last = 0
        while True:
            # Page by page, each in a short transaction of its own: the chain can be long, and
            # on SQLite every transaction holds the write lock, which appends wait for.
            query = select(t.audit_entries).where(e.seq > last).order_by(e.seq).limit(_PAGE)
            if where is not None:
                query = query.where(where)
            with self._engine.connect() as conn:
                rows = conn.execute(query).all()
            for row in rows:
                yield entry_fields(dict(row._mapping)), str(row.hash)
            if len(rows) < _PAGE:
                return
            last = rows[-1].seq

    def entries(self) -> Iterator[AuditEntry]:
        for fields, mac in self._fields():
            yield AuditEntry.model_validate({**fields, "hash": mac})

    def for_patient(self, patient_id: str) -> list[AuditEntry]:
        """Who accessed this patient's record, and how (the patient's access history)."""
        return [
            AuditEntry.model_validate({**fields, "hash": mac})
            for fields, mac in self._fields(t.audit_entries.c.patient_id == patient_id)
        ]

    def verify(self, anchor: AuditHead | None = None, *, accept_legacy: bool = False) -> AuditVerification:
        """Recompute the keyed chain; report the first entry altered, inserted or removed,
        and check the log still holds the anchored head (``anchor``, else the latest one in
        the anchor store)."""
        return verify_chain(
            self._fields(), self._key, anchor or self.latest_anchor(), accept_legacy=accept_legacy
        )


def verify_chain(
    entries: Iterable[tuple[dict[str, object], str]],
    key: bytes,
    anchor: AuditHead | None,
    *,
    accept_legacy: bool,
) -> AuditVerification:
    """Check a chain of (fields, claimed MAC) pairs; see ``AuditLog.verify``."""
    prev, count, legacy, keyed = GENESIS, 0, 0, False
    anchored_seq = anchor.seq if anchor else None
    found_anchor = anchor is None

    def bad(n: int, problem: str) -> AuditVerification:
        return AuditVerification(
            ok=False,
            entries=count,
            first_bad_seq=n,
            problem=problem,
            legacy_entries=legacy,
            anchored_seq=anchored_seq,
        )

    for n, (raw, claimed) in enumerate(entries, start=1):
        if raw.get("seq") != n:
            return bad(n, "sequence broken (entry removed or inserted)")
        if raw.get("prev_hash") != prev:
            return bad(n, "chain broken (previous entry changed or removed)")
        if raw.get("v") == FORMAT:
            keyed = True
            if not hmac.compare_digest(_mac(key, raw), claimed):
                return bad(n, "entry modified (its MAC does not match)")
        elif keyed or "v" in raw:
            return bad(n, "unkeyed entry after keyed ones (chain rewritten)")
        elif not accept_legacy:
            return bad(n, "unkeyed entry (legacy format, or rewritten without the key)")
        elif _legacy_digest(raw) != claimed:
            return bad(n, "entry modified")
        else:
            legacy += 1
        if anchor is not None and n == anchor.seq:
            if not hmac.compare_digest(claimed, anchor.hash):
                return bad(n, "differs from the anchored head (log rewritten)")
            found_anchor = True
        prev, count = claimed, n
    if not found_anchor:
        return bad(count + 1, f"anchored head (entry {anchored_seq}) missing: log truncated or replaced")
    return AuditVerification(ok=True, entries=count, legacy_entries=legacy, anchored_seq=anchored_seq)


def open_audit_log(settings: Settings) -> AuditLog:
    """This install's audit log, keyed by its audit key, anchored in its object store."""
    from pipeline.crypto import audit_key
    from pipeline.store import open_store

    anchors = open_store(
        settings.effective_store_url,
        endpoint_url=settings.s3.endpoint_url,
        region=settings.s3.region,
        sync=settings.store.sync,
    )
    return AuditLog(settings, key=audit_key(settings), anchors=anchors)
