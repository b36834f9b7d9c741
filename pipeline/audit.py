"""The access audit log: append-only and tamper-evident.

Each entry carries the SHA-256 of the previous entry (a hash chain), so ``verify``
detects any modified, inserted or removed entry. Entries never contain document text
or keys: who, role, when, which patient, which documents, what and why.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from pipeline.model import Frozen

GENESIS = "0" * 64


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


def _digest(fields: dict[str, object]) -> str:
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class AuditVerification(Frozen):
    ok: bool
    entries: int
    first_bad_seq: int | None = None
    problem: str | None = None


class AuditLog:
    """A JSON Lines file, one hash-chained entry per line, only ever appended to."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

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
                "seq": (last.seq + 1) if last else 1,
                "at": (at or dt.datetime.now(dt.UTC)).isoformat(),
                "actor": actor, "role": role, "action": action, "patient_id": patient_id,
                "doc_ids": list(doc_ids), "reason": reason,
                "prev_hash": last.hash if last else GENESIS,
            }
            if actor_name is not None:  # only when given: older entries hash as they were
                fields["actor_name"] = actor_name
            line = {**fields, "hash": _digest(fields)}
            # Written from the very dict that was hashed, so verify() sees the same bytes.
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            return AuditEntry.model_validate(line)

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

    def verify(self) -> AuditVerification:
        """Recompute the chain; report the first entry that was altered, inserted or removed."""
        prev, count = GENESIS, 0
        if not self.path.exists():
            return AuditVerification(ok=True, entries=0)
        with self.path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                try:
                    raw = json.loads(line)
                    claimed = raw.pop("hash")
                except (ValueError, KeyError):
                    return AuditVerification(ok=False, entries=count, first_bad_seq=n,
                                             problem="unreadable entry")
                if raw.get("seq") != n:
                    return AuditVerification(ok=False, entries=count, first_bad_seq=n,
                                             problem="sequence broken (entry removed or inserted)")
                if raw.get("prev_hash") != prev:
                    return AuditVerification(ok=False, entries=count, first_bad_seq=n,
                                             problem="chain broken (previous entry changed or removed)")
                if _digest(raw) != claimed:
                    return AuditVerification(ok=False, entries=count, first_bad_seq=n,
                                             problem="entry modified")
                prev, count = claimed, n
        return AuditVerification(ok=True, entries=count)
