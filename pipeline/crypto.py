"""Encryption at rest of the raw documents: per-patient data keys wrapped by a master key.

Every object goes to the underlying store as ``MAGIC + nonce + AES-GCM(plaintext)``
with the plaintext's SHA-256 as associated data, so a ciphertext cannot be passed off
as another object. Callers keep addressing objects by the plaintext hash: the
``KeyRing`` database maps it to the ciphertext's hash and to the key that opens it.

Keys: raw input is stored before the patient is known, under its own object key;
``assign`` re-encrypts it under the patient's data key once the patient is identified.
``destroy_patient_key`` (crypto-shredding) makes every copy of that patient's objects,
backups included, unreadable. Data keys are stored only wrapped, by the ``KeyWrapper``
the settings choose (``pipeline.keywrap``: a local master key, or a KMS); no key is ever
logged, repr'd or returned in a report.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag

from pipeline.errors import ConfigurationError
from pipeline.keywrap import (
    KEY_BYTES,
    NONCE_BYTES,
    KeyWrapper,
    LocalKeyWrapper,
    decode_master_key,
    load_master_key,
    open_key_wrapper,
    seal,
    unseal,
)
from pipeline.settings import Settings
from pipeline.store import DocumentStore, QuarantineRecord, open_store, sha256_hex

__all__ = [
    "KEY_BYTES", "MAGIC", "NONCE_BYTES", "EncryptedStore", "KeyRing", "LocalKeyWrapper",
    "decode_master_key", "keyring_path", "load_master_key", "open_encrypted_store",
]

log = logging.getLogger(__name__)

MAGIC = b"CNE1"  # Carnet encrypted object, format 1
_CHECK_LABEL = "check"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS patient_keys (
    patient_id TEXT PRIMARY KEY, wrapped BLOB NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    sha256 TEXT PRIMARY KEY,        -- of the plaintext: the address callers use
    cipher_sha256 TEXT NOT NULL,    -- of the ciphertext: the address in the base store
    owner TEXT,                     -- patient id once assigned
    wrapped_key BLOB);              -- the object's own key while the owner is unknown
CREATE INDEX IF NOT EXISTS objects_owner ON objects(owner);
"""


def _patient_label(patient_id: str) -> str:
    return f"patient:{patient_id}"


def _object_label(sha256: str) -> str:
    return f"object:{sha256}"


class KeyRing:
    """Wrapped per-patient data keys and the plaintext-hash → ciphertext mapping (SQLite).

    The keyring records which kind of wrapper made its keys and a wrapped check key, so
    that a wrong master key, another KMS key or a switch between local and KMS wrapping
    fails when it is opened, not as unreadable documents later.
    """

    def __init__(self, path: Path, wrapper: KeyWrapper) -> None:
        self.path = path
        self.wrapper = wrapper
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._lock = threading.RLock()
        try:
            self._check(path, wrapper)
        except BaseException:
            self._conn.close()
            raise

    def _check(self, path: Path, wrapper: KeyWrapper) -> None:
        with self._lock, self._conn:
            self._conn.executescript(_SCHEMA)
        meta = self._meta()
        if "check" not in meta:
            _, check = wrapper.generate(_CHECK_LABEL)
            with self._lock, self._conn:  # two processes creating it at once keep the first
                self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('wrapper', ?)", (wrapper.kind,))
                self._conn.execute("INSERT OR IGNORE INTO meta VALUES ('check', ?)", (check,))
            meta = self._meta()
        # Keyrings made before KMS wrapping existed have no 'wrapper' row: they are local.
        kind = str(meta.get("wrapper", "local"))
        if kind != wrapper.kind:
            raise ConfigurationError(
                f"the keyring {path} holds keys wrapped by a {kind} master key, but the settings "
                f"give a {wrapper.kind} one (CARNET_KMS_KEY_ID / CARNET_MASTER_KEY)")
        # Fail at open, not on the first read: a wrong key must not look like data loss.
        try:
            wrapper.unwrap(bytes(meta["check"]), _CHECK_LABEL)
        except ConfigurationError:
            raise ConfigurationError(f"the master key does not open the keyring {path}") from None

    def _meta(self) -> dict[str, Any]:
        with self._lock:
            return {str(name): value for name, value in self._conn.execute("SELECT name, value FROM meta")}

    def __repr__(self) -> str:
        return f"KeyRing({str(self.path)!r}, {self.wrapper!r})"

    def close(self) -> None:
        self._conn.close()

    # -- keys --------------------------------------------------------------------------------

    def patient_key(self, patient_id: str) -> bytes:
        """The patient's data key, created on first use."""
        with self._lock:
            key = self.existing_patient_key(patient_id)
            if key is not None:
                return key
            key, wrapped = self.wrapper.generate(_patient_label(patient_id))
            with self._conn:
                created = self._conn.execute(
                    "INSERT OR IGNORE INTO patient_keys VALUES (?,?,?)",
                    (patient_id, wrapped, dt.datetime.now(dt.UTC).isoformat())).rowcount
            if created:
                return key
        # Another process gave the patient a key first: theirs is the one.
        theirs = self.existing_patient_key(patient_id)
        if theirs is None:  # destroyed in between: a fresh one
            return self.patient_key(patient_id)
        return theirs

    def existing_patient_key(self, patient_id: str) -> bytes | None:
        """The patient's data key, or None when they have none (never had, or destroyed)."""
        with self._lock:
            row = self._conn.execute("SELECT wrapped FROM patient_keys WHERE patient_id=?",
                                     (patient_id,)).fetchone()
        return None if row is None else self.wrapper.unwrap(bytes(row[0]), _patient_label(patient_id))

    def has_patient_key(self, patient_id: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM patient_keys WHERE patient_id=?",
                                      (patient_id,)).fetchone() is not None

    def destroy_patient_key(self, patient_id: str) -> bool:
        """Crypto-shredding: forget the patient's data key; False when there was none."""
        with self._lock, self._conn:
            removed = self._conn.execute("DELETE FROM patient_keys WHERE patient_id=?",
                                         (patient_id,)).rowcount > 0
        self.wrapper.forget(_patient_label(patient_id))  # and this process's opened copy
        return removed

    def named_key(self, name: str) -> bytes:
        """A key of this install for another purpose than documents, created on first use.

        Kept wrapped in the keyring like the data keys, so it is shared by every process
        that opens the keyring and, with a KMS, never written anywhere in clear.
        """
        slot, label = f"named:{name}", f"named:{name}"
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE name=?", (slot,)).fetchone()
            if row is None:
                _, wrapped = self.wrapper.generate(label)
                with self._conn:  # two processes at once keep the first
                    self._conn.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (slot, wrapped))
                row = self._conn.execute("SELECT value FROM meta WHERE name=?", (slot,)).fetchone()
        return self.wrapper.unwrap(bytes(row[0]), label)

    def rewrap(self, target: KeyWrapper) -> int:
        """Wrap every key of this keyring under ``target`` instead; the number of keys.

        For moving an install from its local master key to a KMS key. One transaction:
        either every key moves or none does. Stop the workers and the API first: the
        keyring is locked meanwhile, and processes still holding the old wrapper would
        refuse it afterwards.
        """
        moved = 0
        with self._lock, self._conn:
            rows: list[tuple[str, str, str, str, bytes]] = []  # table, key column, key, label, wrapped
            for name, value in self._conn.execute(
                    "SELECT name, value FROM meta WHERE name='check' OR name LIKE 'named:%'"):
                rows.append(("meta", "name", name, name, bytes(value)))
            for patient_id, wrapped in self._conn.execute("SELECT patient_id, wrapped FROM patient_keys"):
                rows.append(("patient_keys", "patient_id", patient_id, _patient_label(patient_id),
                             bytes(wrapped)))
            for sha, wrapped in self._conn.execute(
                    "SELECT sha256, wrapped_key FROM objects WHERE wrapped_key IS NOT NULL"):
                rows.append(("objects", "sha256", sha, _object_label(sha), bytes(wrapped)))
            column = {"meta": "value", "patient_keys": "wrapped", "objects": "wrapped_key"}
            for table, key_column, key, label, wrapped in rows:
                rewrapped = target.wrap(self.wrapper.unwrap(wrapped, label), label)
                self._conn.execute(f"UPDATE {table} SET {column[table]}=? WHERE {key_column}=?",
                                   (rewrapped, key))
                moved += 1
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES ('wrapper', ?)", (target.kind,))
        self.wrapper = target
        return moved

    def new_object_key(self, sha256: str) -> tuple[bytes, bytes]:
        """A fresh key for one object of unknown owner, and its wrapped form."""
        return self.wrapper.generate(_object_label(sha256))

    def object_key(self, sha256: str, wrapped: bytes) -> bytes:
        return self.wrapper.unwrap(wrapped, _object_label(sha256))

    # -- the object mapping ------------------------------------------------------------------

    def lookup(self, sha256: str) -> tuple[str, str | None, bytes | None] | None:
        """(ciphertext hash, owner, wrapped object key) of a stored object, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT cipher_sha256, owner, wrapped_key FROM objects WHERE sha256=?",
                (sha256,)).fetchone()
        if row is None:
            return None
        return str(row[0]), row[1], bytes(row[2]) if row[2] is not None else None

    def record(self, sha256: str, cipher_sha256: str, owner: str | None, wrapped_key: bytes | None) -> None:
        with self._lock, self._conn:
            self._conn.execute("INSERT OR REPLACE INTO objects VALUES (?,?,?,?)",
                               (sha256, cipher_sha256, owner, wrapped_key))

    def forget(self, sha256: str) -> None:
        with self._lock, self._conn:
            self._conn.execute("DELETE FROM objects WHERE sha256=?", (sha256,))

    def objects_of(self, patient_id: str) -> list[str]:
        """Plaintext hashes of the objects encrypted under this patient's key."""
        with self._lock:
            return [r[0] for r in self._conn.execute(
                "SELECT sha256 FROM objects WHERE owner=? ORDER BY sha256", (patient_id,))]

    def hashes(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT sha256 FROM objects ORDER BY sha256")]


class EncryptedStore:
    """A ``DocumentStore`` that encrypts every object before it reaches ``base``."""

    def __init__(self, base: DocumentStore, keyring: KeyRing) -> None:
        self.base = base
        self.keyring = keyring

    def __repr__(self) -> str:
        return f"EncryptedStore({self.base!r}, {self.keyring!r})"

    def close(self) -> None:
        self.keyring.close()

    @staticmethod
    def _encrypt(key: bytes, data: bytes, sha256: str) -> bytes:
        return MAGIC + seal(key, data, sha256.encode())

    def put(self, data: bytes) -> str:
        """Encrypt and keep ``data``; return the SHA-256 of the plaintext. Idempotent."""
        sha = sha256_hex(data)
        known = self.keyring.lookup(sha)
        owner_key = None
        if known is not None:
            cipher_sha, owner, _ = known
            owner_key = self.keyring.existing_patient_key(owner) if owner is not None else None
            readable = owner is None or owner_key is not None
            if readable and self.base.exists(cipher_sha):
                return sha
        if known is not None and owner_key is not None:
            key, owner, wrapped = owner_key, known[1], None
        else:  # owner unknown, or their key was destroyed: a key of its own
            key, wrapped = self.keyring.new_object_key(sha)
            owner = None
        new_cipher_sha = self.base.put(self._encrypt(key, data, sha))
        self.keyring.record(sha, new_cipher_sha, owner, wrapped)
        if known is not None and known[0] != new_cipher_sha:
            self.base.delete(known[0])  # an unreadable leftover
        return sha

    def _key_for(self, sha256: str, owner: str | None, wrapped: bytes | None) -> bytes:
        if owner is None:
            if wrapped is None:
                raise KeyError(sha256)
            return self.keyring.object_key(sha256, wrapped)
        key = self.keyring.existing_patient_key(owner)
        if key is None:  # crypto-shredded: the ciphertext, wherever it is, stays unreadable
            raise KeyError(sha256)
        return key

    def get(self, sha256: str) -> bytes:
        known = self.keyring.lookup(sha256)
        if known is None:
            raise KeyError(sha256)
        cipher_sha, owner, wrapped = known
        sealed = self.base.get(cipher_sha)
        if not sealed.startswith(MAGIC):
            raise KeyError(sha256)
        key = self._key_for(sha256, owner, wrapped)
        try:
            return unseal(key, sealed[len(MAGIC):], sha256.encode())
        except InvalidTag:
            log.error("stored object %s fails authentication (corrupted or substituted)", sha256)
            raise KeyError(sha256) from None

    def exists(self, sha256: str) -> bool:
        known = self.keyring.lookup(sha256)
        return known is not None and self.base.exists(known[0])

    def delete(self, sha256: str) -> bool:
        known = self.keyring.lookup(sha256)
        if known is None:
            return False
        removed = self.base.delete(known[0])
        self.keyring.forget(sha256)
        return removed

    def iter_hashes(self) -> Iterator[str]:
        yield from self.keyring.hashes()

    def owner_of(self, sha256: str) -> str | None:
        known = self.keyring.lookup(sha256)
        return known[1] if known else None

    def objects_of(self, patient_id: str) -> list[str]:
        return self.keyring.objects_of(patient_id)

    def assign(self, sha256: str, patient_id: str) -> bool:
        """Re-encrypt an object under ``patient_id``'s data key; True when it changed.

        An object already owned by another patient (identical bytes filed for two people)
        keeps its first owner: re-keying it would lock the first patient out.
        """
        known = self.keyring.lookup(sha256)
        if known is None:
            raise KeyError(sha256)
        cipher_sha, owner, wrapped = known
        if owner is not None:
            if owner != patient_id:
                log.warning("object %s already belongs to another patient; left under their key", sha256)
            return False
        data = self.get(sha256)
        key = self.keyring.patient_key(patient_id)
        new_cipher_sha = self.base.put(self._encrypt(key, data, sha256))
        self.keyring.record(sha256, new_cipher_sha, patient_id, None)
        # The copy under the object key goes; its key is gone from the keyring with the row.
        self.base.delete(cipher_sha)
        return True

    def destroy_patient_key(self, patient_id: str) -> bool:
        return self.keyring.destroy_patient_key(patient_id)

    # Quarantine records hold no document bytes: they pass through.

    def put_quarantine(self, record: QuarantineRecord) -> None:
        self.base.put_quarantine(record)

    def get_quarantine(self, quarantine_id: str) -> QuarantineRecord | None:
        return self.base.get_quarantine(quarantine_id)

    def list_quarantine(self) -> Iterator[QuarantineRecord]:
        return self.base.list_quarantine()

    def remove_quarantine(self, quarantine_id: str) -> bool:
        return self.base.remove_quarantine(quarantine_id)

    # Anchors hold no secret (a sequence number and a keyed MAC): they pass through too.

    def put_anchor(self, kind: str, seq: int, data: bytes) -> None:
        self.base.put_anchor(kind, seq, data)

    def latest_anchor(self, kind: str) -> bytes | None:
        return self.base.latest_anchor(kind)


def _derived_key(settings: Settings, label: bytes) -> bytes:
    """A key for one purpose, held apart from what it protects: derived from the local
    master key (HMAC-SHA256 as a PRF, never stored), or, with the master key in a KMS, a
    named key kept wrapped in the keyring (never written anywhere in clear)."""
    if settings.kms_key_id:
        ring = KeyRing(keyring_path(settings), open_key_wrapper(settings))
        try:
            return ring.named_key(label.decode())
        finally:
            ring.close()
    return hmac.new(load_master_key(settings), label, hashlib.sha256).digest()


def audit_key(settings: Settings) -> bytes:
    """The key of the audit log's chain of MACs."""
    return _derived_key(settings, b"carnet audit chain v2")


def patient_ref_key(settings: Settings) -> bytes:
    """The key of patient references: keyed hashes standing for an INS where the INS
    itself must not be kept (closed accounts, identifiers named by quarantined documents)."""
    return _derived_key(settings, b"carnet patient reference v1")


def patient_ref(key: bytes, ins: str) -> str:
    """The keyed hash standing for ``ins`` (not reversible without the key)."""
    return hmac.new(key, ins.encode(), hashlib.sha256).hexdigest()


def keyring_path(settings: Settings) -> Path:
    return settings.data_dir / "keyring.db"


def open_encrypted_store(settings: Settings) -> EncryptedStore:
    """The configured store (file:// or s3://) behind encryption with this install's keys.

    The keys are wrapped by the KMS when ``kms_key_id`` is set (no key file is then
    written or read), else by the local master key.
    """
    wrapper = open_key_wrapper(settings)
    base = open_store(settings.effective_store_url, endpoint_url=settings.s3_endpoint_url,
                      region=settings.s3_region)
    return EncryptedStore(base, KeyRing(keyring_path(settings), wrapper))
