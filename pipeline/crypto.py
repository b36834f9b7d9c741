"""Encryption at rest of the raw documents: per-patient data keys wrapped by a master key.

Every object goes to the underlying store as ``MAGIC + nonce + AES-GCM(plaintext)``
with the plaintext's SHA-256 as associated data, so a ciphertext cannot be passed off
as another object. Callers keep addressing objects by the plaintext hash: the
``KeyRing`` database maps it to the ciphertext's hash and to the key that opens it.

Keys: raw input is stored before the patient is known, under its own random object key;
``assign`` re-encrypts it under the patient's data key once the patient is identified.
``destroy_patient_key`` (crypto-shredding) makes every copy of that patient's objects,
backups included, unreadable. Data keys are stored only wrapped (AES-GCM under the
master key); no key is ever logged, repr'd or returned in a report.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.errors import ConfigurationError
from pipeline.settings import Settings
from pipeline.store import DocumentStore, QuarantineRecord, open_store, sha256_hex

log = logging.getLogger(__name__)

MAGIC = b"CNE1"  # Carnet encrypted object, format 1
NONCE_BYTES = 12
KEY_BYTES = 32
_CHECK = b"carnet keyring check"

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

_warned_default_key = False


def _seal(key: bytes, data: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, data, aad)


def _open(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)


def decode_master_key(value: str) -> bytes:
    """The master key from its base64 form; it must be exactly 32 bytes."""
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError("master key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise ConfigurationError(f"master key must be {KEY_BYTES} bytes, got {len(key)}")
    return key


def load_master_key(settings: Settings) -> bytes:
    """``settings.master_key``, or this install's own key file (created 0600 when missing)."""
    global _warned_default_key
    if settings.master_key:
        return decode_master_key(settings.master_key)
    path = settings.data_dir / "master.key"
    if not _warned_default_key:
        log.warning("no master key configured (CARNET_MASTER_KEY): using the per-install key file %s; "
                    "production must supply its own key", path)
        _warned_default_key = True
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first: use theirs
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(base64.b64encode(os.urandom(KEY_BYTES)).decode() + "\n")
    return decode_master_key(path.read_text())


class KeyRing:
    """Wrapped per-patient data keys and the plaintext-hash → ciphertext mapping (SQLite)."""

    def __init__(self, path: Path, master_key: bytes) -> None:
        if len(master_key) != KEY_BYTES:
            raise ConfigurationError(f"master key must be {KEY_BYTES} bytes")
        self.path = path
        self._master = master_key
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._lock = threading.RLock()
        with self._lock, self._conn:
            self._conn.executescript(_SCHEMA)
            row = self._conn.execute("SELECT value FROM meta WHERE name='check'").fetchone()
            if row is None:
                self._conn.execute("INSERT INTO meta VALUES ('check', ?)",
                                   (_seal(master_key, _CHECK, b"check"),))
        if row is not None:
            # Fail at open, not on the first read: a wrong key must not look like data loss.
            try:
                _open(master_key, bytes(row[0]), b"check")
            except InvalidTag:
                self._conn.close()
                raise ConfigurationError(f"the master key does not open the keyring {path}") from None

    def __repr__(self) -> str:
        return f"KeyRing({str(self.path)!r})"

    def close(self) -> None:
        self._conn.close()

    # -- keys --------------------------------------------------------------------------------

    def _wrap(self, key: bytes, label: str) -> bytes:
        return _seal(self._master, key, label.encode())

    def _unwrap(self, wrapped: bytes, label: str) -> bytes:
        try:
            return _open(self._master, wrapped, label.encode())
        except InvalidTag:
            raise ConfigurationError("a wrapped key does not open with the master key") from None

    def patient_key(self, patient_id: str) -> bytes:
        """The patient's data key, created on first use."""
        with self._lock:
            key = self.existing_patient_key(patient_id)
            if key is not None:
                return key
            key = AESGCM.generate_key(bit_length=256)
            with self._conn:
                self._conn.execute("INSERT INTO patient_keys VALUES (?,?,?)",
                                   (patient_id, self._wrap(key, f"patient:{patient_id}"),
                                    dt.datetime.now(dt.UTC).isoformat()))
            return key

    def existing_patient_key(self, patient_id: str) -> bytes | None:
        """The patient's data key, or None when they have none (never had, or destroyed)."""
        with self._lock:
            row = self._conn.execute("SELECT wrapped FROM patient_keys WHERE patient_id=?",
                                     (patient_id,)).fetchone()
        return None if row is None else self._unwrap(bytes(row[0]), f"patient:{patient_id}")

    def has_patient_key(self, patient_id: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM patient_keys WHERE patient_id=?",
                                      (patient_id,)).fetchone() is not None

    def destroy_patient_key(self, patient_id: str) -> bool:
        """Crypto-shredding: forget the patient's data key; False when there was none."""
        with self._lock, self._conn:
            return self._conn.execute("DELETE FROM patient_keys WHERE patient_id=?",
                                      (patient_id,)).rowcount > 0

    def new_object_key(self, sha256: str) -> tuple[bytes, bytes]:
        """A fresh key for one object of unknown owner, and its wrapped form."""
        key = AESGCM.generate_key(bit_length=256)
        return key, self._wrap(key, f"object:{sha256}")

    def object_key(self, sha256: str, wrapped: bytes) -> bytes:
        return self._unwrap(wrapped, f"object:{sha256}")

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
        return MAGIC + _seal(key, data, sha256.encode())

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
            return _open(key, sealed[len(MAGIC):], sha256.encode())
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


def keyring_path(settings: Settings) -> Path:
    return settings.data_dir / "keyring.db"


def open_encrypted_store(settings: Settings) -> EncryptedStore:
    """The configured store (file:// or s3://) behind encryption with this install's keys."""
    base = open_store(settings.effective_store_url, endpoint_url=settings.s3_endpoint_url,
                      region=settings.s3_region)
    return EncryptedStore(base, KeyRing(keyring_path(settings), load_master_key(settings)))
