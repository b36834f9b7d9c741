"""What every raw-document store is: the ``DocumentStore`` protocol, the quarantine
records it keeps, and the content address (SHA-256) it files bytes under."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Collection, Iterator, Sequence
from typing import Protocol, runtime_checkable

from pipeline.model import Frozen, Problem


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class QuarantineAttempt(Frozen):
    at: dt.datetime
    reasons: tuple[Problem, ...]
    exception: str | None = None


class QuarantineRecord(Frozen):
    """A rejected document kept for replay: where it came from and every failed attempt."""

    quarantine_id: str
    source: str
    producer: str
    batch: str | None = None
    content_sha256: str  # the raw input file's hash (the bytes to replay)
    part: int | None = None  # n-th HL7 message of the file
    patient_id: str | None = None
    # Keyed hashes (``pipeline.crypto.patient_ref``) of every INS the document names,
    # structured or printed, valid or not: erasure finds it by any of them. None: not
    # recorded (quarantined before this existed).
    patient_refs: tuple[str, ...] | None = None
    reasons: tuple[Problem, ...]
    exception: str | None = None
    first_quarantined_at: dt.datetime
    attempts: tuple[QuarantineAttempt, ...] = ()

    @staticmethod
    def make_id(producer: str, source_ref: str, content_sha256: str) -> str:
        return sha256_hex(f"{producer}\x00{source_ref}\x00{content_sha256}".encode())[:32]


@runtime_checkable
class DocumentStore(Protocol):
    def put(self, data: bytes) -> str:
        """Keep ``data``; return its SHA-256. Idempotent."""
        ...

    def put_all(self, items: Sequence[bytes]) -> list[str]:
        """``put`` of each item (several at once where the store gains by it); their SHA-256s.
        If one fails, the error is raised once the others are done."""
        ...

    def get(self, sha256: str) -> bytes:
        """The bytes stored under ``sha256``; ``KeyError`` when absent."""
        ...

    def exists(self, sha256: str) -> bool: ...

    def sync(self) -> None:
        """Make everything written or removed so far durable (a power cut cannot take it
        back). Writes are atomic but need not be durable before this is called; callers
        sync before they record or acknowledge what they wrote."""
        ...

    def delete(self, sha256: str) -> bool: ...

    def iter_hashes(self) -> Iterator[str]: ...

    def put_quarantine(self, record: QuarantineRecord) -> None: ...

    def get_quarantine(self, quarantine_id: str) -> QuarantineRecord | None: ...

    def list_quarantine(self) -> Iterator[QuarantineRecord]: ...

    def remove_quarantine(self, quarantine_id: str) -> bool: ...

    def put_anchor(self, kind: str, seq: int, data: bytes) -> None:
        """Keep a small anchor (e.g. the audit chain's head) under a write-once name."""
        ...

    def latest_anchor(self, kind: str) -> bytes | None:
        """The anchor of ``kind`` with the highest sequence number, or None."""
        ...


@runtime_checkable
class KeyedStore(DocumentStore, Protocol):
    """A store that keeps each object under its patient's data key (``pipeline.crypto``'s
    ``EncryptedStore``, what ingestion and erasure always open): objects can be re-keyed
    to their patient, and a patient's objects shredded by destroying that one key."""

    def put(self, data: bytes, *, owner: str | None = None) -> str:
        """Keep ``data`` under ``owner``'s data key (written once, under the right key), or
        under a key of its own without one; an object kept earlier without an owner is
        re-keyed to ``owner``. Returns its SHA-256. Idempotent."""
        ...

    def put_many(self, items: Sequence[tuple[bytes, str | None]]) -> list[str]:
        """``put(data, owner=owner)`` of each item in turn, in one batch."""
        ...

    def assign(self, sha256: str, patient_id: str) -> bool:
        """Put a stored object under ``patient_id``'s data key; True when it changed (an
        object already another patient's keeps its first owner)."""
        ...

    def hand_over(self, sha256: str, patient_id: str) -> bool:
        """Put an object under ``patient_id``'s data key, whoever's it was: the erasure of its
        owner, when the same bytes are that other patient's document too. True when it
        changed; False when it is not stored."""
        ...

    def share(self, sha256: str) -> bool:
        """Put a stored object under a key of its own (an input of several patients, which
        the erasure of any of them shreds with that key); True when it changed. False when
        it is under its own key already, or not stored."""
        ...

    def owner_of(self, sha256: str) -> str | None:
        """The patient whose key holds the object, or None (not assigned yet)."""
        ...

    def objects_of(self, patient_id: str) -> list[str]:
        """The objects held under ``patient_id``'s key."""
        ...

    def link(self, links: Collection[tuple[str, str]]) -> None:
        """Each ``(sha256, patient_id)``: the object (a raw input) holds that patient's data,
        under their key or not (an input of several patients is under a key of its own)."""
        ...

    def linked_to(self, patient_id: str) -> list[str]:
        """The objects linked to ``patient_id`` (``link``), whoever's key they are under."""
        ...

    def unlink_patient(self, patient_id: str) -> int:
        """Drop the links naming ``patient_id``; how many there were."""
        ...

    def destroy_patient_key(self, patient_id: str) -> bool:
        """Shred: destroy ``patient_id``'s data key; False when there was none."""
        ...


def anchor_name(kind: str, seq: int) -> str:
    """``anchors/<kind>/<seq>.json``, zero-padded so names sort by sequence."""
    if not kind.isalnum() or seq < 0:
        raise ValueError(f"bad anchor {kind!r} {seq!r}")
    return f"anchors/{kind}/{seq:012d}.json"


_HEX_DIGITS = frozenset("0123456789abcdef")


def check_sha256(sha256: str) -> str:
    """``sha256`` if it is a lowercase hex digest; a key outside that shape never reaches a
    path or an object key."""
    if len(sha256) != 64 or not _HEX_DIGITS.issuperset(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


def check_quarantine_id(quarantine_id: str) -> str:
    if not quarantine_id.isalnum():
        raise ValueError(f"bad quarantine id {quarantine_id!r}")
    return quarantine_id
