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
import fcntl
import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pipeline.model import Frozen

if TYPE_CHECKING:
    from pipeline.settings import Settings

log = logging.getLogger(__name__)

GENESIS = "0" * 64
FORMAT = 2  # keyed entries carry "v": 2
ANCHOR_EVERY = 100
ANCHOR_KIND = "audit"


def audit_log_path(data_dir: Path) -> Path:
    """Where an install keeps its audit log."""
    return data_dir / "audit.jsonl"


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
    """``value`` as valid UTF-8 text: a lone surrogate (from a token claim) is escaped, so
    no caller input can make an append fail."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


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


class AuditLog:
    """A JSON Lines file, one keyed, chained entry per line, only ever appended to."""

    def __init__(self, path: Path, *, key: bytes, anchors: AnchorStore | None = None) -> None:
        if len(key) < 16:
            raise ValueError("the audit key must be at least 16 bytes")
        self.path = path
        self._key = key
        self.anchors = anchors
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    def _last(self) -> AuditEntry | None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return None
        with self.path.open("rb") as fh:
            # Read back from the end: the log can grow large. Widen the window until it holds
            # a whole line (an erasure entry listing many documents can be long).
            fh.seek(0, 2)
            size = fh.tell()
            block = 65536
            while True:
                block = min(size, block)
                fh.seek(size - block)
                tail = fh.read().rstrip(b"\n")
                if b"\n" in tail or block == size:
                    break
                block *= 4
            last_line = tail.rsplit(b"\n", 1)[-1]
        return AuditEntry.model_validate_json(last_line)

    def append(
        self, *, actor: str, role: str, action: str, patient_id: str | None,
        doc_ids: Sequence[str] = (), reason: str | None = None,
        at: dt.datetime | None = None, actor_name: str | None = None,
    ) -> AuditEntry:
        # The thread lock orders this process's writers; the file lock orders processes
        # (the API server and a `carnet erase` may append at the same time).
        with self._lock, self.path.with_suffix(".lock").open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            last = self._last()
            fields: dict[str, object] = {
                "v": FORMAT,
                "seq": (last.seq + 1) if last else 1,
                "at": (at or dt.datetime.now(dt.UTC)).isoformat(),
                "actor": _text(actor), "role": role, "action": action, "patient_id": patient_id,
                "doc_ids": [_text(d) for d in doc_ids],
                "reason": None if reason is None else _text(reason),
                "prev_hash": last.hash if last else GENESIS,
            }
            if actor_name is not None:
                fields["actor_name"] = _text(actor_name)
            line = {**fields, "hash": _mac(self._key, fields)}
            # Written from the very dict that was MACed, so verify() sees the same values.
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            entry = AuditEntry.model_validate(line)
        if self.anchors is not None and entry.seq % ANCHOR_EVERY == 0:
            self.anchor()
        return entry

    def head(self) -> AuditHead | None:
        last = self._last()
        return None if last is None else AuditHead(seq=last.seq, hash=last.hash, at=last.at)

    def anchor(self) -> AuditHead | None:
        """Write the current head to the anchor store (no-op without one); return it."""
        head = self.head()
        if head is not None and self.anchors is not None:
            self.anchors.put_anchor(ANCHOR_KIND, head.seq, head.model_dump_json().encode())
        return head

    def latest_anchor(self) -> AuditHead | None:
        data = self.anchors.latest_anchor(ANCHOR_KIND) if self.anchors is not None else None
        return None if data is None else AuditHead.model_validate_json(data)

    def entries(self) -> Iterator[AuditEntry]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield AuditEntry.model_validate_json(line)

    def for_patient(self, patient_id: str) -> list[AuditEntry]:
        """Who accessed this patient's record, and how (the patient's access history)."""
        return [e for e in self.entries() if e.patient_id == patient_id]

    def verify(self, anchor: AuditHead | None = None, *, accept_legacy: bool = False) -> AuditVerification:
        """Recompute the keyed chain; report the first entry altered, inserted or removed,
        and check the log still holds the anchored head (``anchor``, else the latest one in
        the anchor store)."""
        anchor = anchor or self.latest_anchor()
        if not self.path.exists():
            return self._check(iter(()), anchor, accept_legacy)
        with self.path.open(encoding="utf-8") as lines:
            return self._check(lines, anchor, accept_legacy)

    def _check(self, lines: Iterator[str], anchor: AuditHead | None,
               accept_legacy: bool) -> AuditVerification:
        prev, count, legacy, keyed = GENESIS, 0, 0, False
        anchored_seq = anchor.seq if anchor else None
        found_anchor = anchor is None

        def bad(n: int, problem: str) -> AuditVerification:
            return AuditVerification(ok=False, entries=count, first_bad_seq=n, problem=problem,
                                     legacy_entries=legacy, anchored_seq=anchored_seq)

        for n, line in enumerate(lines, start=1):
            try:
                raw = json.loads(line)
                claimed = str(raw.pop("hash"))
            except (ValueError, KeyError, AttributeError, TypeError):
                return bad(n, "unreadable entry")
            if raw.get("seq") != n:
                return bad(n, "sequence broken (entry removed or inserted)")
            if raw.get("prev_hash") != prev:
                return bad(n, "chain broken (previous entry changed or removed)")
            if raw.get("v") == FORMAT:
                keyed = True
                if not hmac.compare_digest(_mac(self._key, raw), claimed):
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

    anchors = open_store(settings.effective_store_url, endpoint_url=settings.s3_endpoint_url,
                         region=settings.s3_region)
    return AuditLog(audit_log_path(settings.data_dir), key=audit_key(settings), anchors=anchors)
