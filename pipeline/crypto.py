"""Encryption at rest of the raw documents: per-patient data keys wrapped by a master key.

Every object goes to the underlying store as ``MAGIC + nonce + AES-GCM(plaintext)``
with the plaintext's SHA-256 as associated data, so a ciphertext cannot be passed off
as another object. Callers keep addressing objects by the plaintext hash: the
``KeyRing`` database maps it to the ciphertext's hash and to the key that opens it.

Keys: an object is written under its patient's data key when the writer knows the
patient (the pipeline identifies a document before it keeps its bytes), else under a key
of its own; ``assign`` re-encrypts such an object once its patient is known (a replay).
An input holding several patients' data (an HL7 batch) is kept under a key of its own too
(``share`` re-encrypts one found under a patient's key), which ``delete`` destroys: the
erasure of any of them leaves no key that opens a backup copy of it.
``destroy_patient_key`` (crypto-shredding) makes every copy of that patient's objects,
backups included, unreadable. A patient may get a new key after that: each object row
names the key it needs (``key_id``), so the old objects stay unreadable under the new key
and their bytes, filed again, are written again rather than taken as stored. Data keys
are stored only wrapped, by the ``KeyWrapper`` the settings choose (``pipeline.keywrap``:
a local master key, or a KMS); no key is ever logged, repr'd or returned in a report.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import secrets
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidTag
from sqlalchemy import Engine, Executable, select

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
from pipeline.state import tables as t
from pipeline.state.engine import engine_name, insert_new, insert_new_many, upsert_many
from pipeline.state.opening import engine_of, open_state
from pipeline.store import DocumentStore, QuarantineRecord, open_store, sha256_hex

__all__ = [
    "KEY_BYTES",
    "MAGIC",
    "NONCE_BYTES",
    "EncryptedStore",
    "KeyRing",
    "ObjectRow",
    "LocalKeyWrapper",
    "decode_master_key",
    "load_master_key",
    "open_encrypted_store",
    "open_keyring",
]

log = logging.getLogger(__name__)

MAGIC = b"CNE1"  # Carnet encrypted object, format 1
_CHECK_LABEL = "check"


def _patient_label(patient_id: str) -> str:
    return f"patient:{patient_id}"


def _object_label(sha256: str) -> str:
    return f"object:{sha256}"


_IN_CHUNK = 500  # values per ``IN (…)`` list: well under every database's parameter limit


class ObjectRow(NamedTuple):
    """Where an object is and what opens it: its patient's key ``key_id`` once it has an
    owner, else its own key (``wrapped_key``)."""

    cipher_sha256: str
    owner: str | None
    wrapped_key: bytes | None
    key_id: str | None = None


class _KeyRow(NamedTuple):
    key_id: str
    wrapped: bytes


@dataclass
class _ReadAhead:
    """Keyring rows read for one batch of writes (``KeyRing.reading_ahead``); None: no row."""

    objects: dict[str, ObjectRow | None] = field(default_factory=dict)
    wrapped_keys: dict[str, _KeyRow | None] = field(default_factory=dict)


def _new_key_id() -> str:
    return secrets.token_hex(16)


class KeyRing:
    """Wrapped per-patient data keys and the plaintext-hash → ciphertext mapping, in the
    state database (``pipeline.state``), shared by every process that opens it.

    The keyring records which kind of wrapper made its keys and a wrapped check key, so
    that a wrong master key, another KMS key or a switch between local and KMS wrapping
    fails when it is opened, not as unreadable documents later. ``KeyRing(settings, …)``
    opens (and closes) its own engine; ``KeyRing(engine, …)`` uses the caller's.
    """

    def __init__(self, state: Settings | Engine, wrapper: KeyWrapper) -> None:
        self._engine, self._owns_engine = engine_of(state)
        self.wrapper = wrapper
        self._lock = threading.RLock()
        # Object rows recorded since the last ``commit`` (None: forgotten): written in one
        # transaction per flush rather than one per document (see ``EncryptedStore.sync``).
        self._uncommitted: dict[str, ObjectRow | None] = {}
        self._unlinked: set[tuple[str, str]] = set()  # links (object, patient) not written yet
        self._reading = threading.local()  # ``.ahead``: see ``reading_ahead``
        try:
            self._check(wrapper)
        except BaseException:
            self.close()
            raise

    @property
    def where(self) -> str:
        """The state database, as messages name it (no password)."""
        return engine_name(self._engine)

    def _check(self, wrapper: KeyWrapper) -> None:
        meta = self._meta()
        if "check" not in meta:
            _, check = wrapper.generate(_CHECK_LABEL)
            with self._engine.begin() as conn:  # two processes creating it at once keep the first
                for name, value in (("wrapper", wrapper.kind.encode()), ("check", check)):
                    insert_new(conn, t.keyring_meta, {"name": name, "value": value})
            meta = self._meta()
        kind = meta["wrapper"].decode()
        if kind != wrapper.kind:
            raise ConfigurationError(
                f"the keyring in {self.where} holds keys wrapped by a {kind} master key, but the "
                f"settings give a {wrapper.kind} one (CARNET_KMS_KEY_ID / CARNET_MASTER_KEY)"
            )
        # Fail at open, not on the first read: a wrong key must not look like data loss.
        try:
            wrapper.unwrap(meta["check"], _CHECK_LABEL)
        except ConfigurationError:
            raise ConfigurationError(f"the master key does not open the keyring in {self.where}") from None

    def _meta(self) -> dict[str, bytes]:
        m = t.keyring_meta.c
        with self._engine.connect() as conn:
            return {
                str(name): bytes(value)
                for name, value in conn.execute(
                    select(m.name, m.value).where(m.name.in_(("wrapper", "check")))
                )
            }

    def __repr__(self) -> str:
        return f"KeyRing({self.where!r}, {self.wrapper!r})"

    def close(self) -> None:
        self.commit()
        if self._owns_engine:
            self._engine.dispose()

    def commit(self) -> None:
        """Write the object rows recorded since the last commit, in one transaction."""
        o = t.keyring_objects.c
        with self._lock:
            if not self._uncommitted and not self._unlinked:
                return
            written = self._uncommitted.items()
            gone = [sha256 for sha256, row in written if row is None]
            rows = [{"sha256": sha256, **row._asdict()} for sha256, row in written if row is not None]
            went = set(gone)  # an object gone since it was linked takes its links with it
            links = [{"sha256": sha, "patient_id": p} for sha, p in sorted(self._unlinked) if sha not in went]
            with self._engine.begin() as conn:
                for at in range(0, len(gone), _IN_CHUNK):
                    chunk = gone[at : at + _IN_CHUNK]
                    conn.execute(t.keyring_objects.delete().where(o.sha256.in_(chunk)))
                    # An object gone takes its links: they named patients, for nothing now.
                    conn.execute(t.keyring_links.delete().where(t.keyring_links.c.sha256.in_(chunk)))
                upsert_many(conn, t.keyring_objects, rows)
                # In the objects' transaction: no input is stored unlinked.
                insert_new_many(conn, t.keyring_links, links)
            self._uncommitted.clear()
            self._unlinked.clear()

    def _scalar(self, query: Executable) -> Any:
        with self._engine.connect() as conn:
            return conn.execute(query).scalar()

    # -- keys --------------------------------------------------------------------------------

    def patient_key(self, patient_id: str) -> bytes:
        """The patient's data key, created on first use."""
        return self.patient_key_with_id(patient_id)[1]

    def patient_key_with_id(self, patient_id: str) -> tuple[str, bytes]:
        """(key id, data key) of the patient, created on first use."""
        existing = self.existing_patient_key_with_id(patient_id)
        if existing is not None:
            return existing
        key, wrapped = self.wrapper.generate(_patient_label(patient_id))
        row = _KeyRow(_new_key_id(), wrapped)
        with self._engine.begin() as conn:
            created = insert_new(
                conn,
                t.patient_keys,
                {
                    "patient_id": patient_id,
                    "wrapped": wrapped,
                    "created_at": dt.datetime.now(dt.UTC).isoformat(),
                    "key_id": row.key_id,
                },
            )
        if created:
            if self._read_ahead is not None:
                self._read_ahead.wrapped_keys[patient_id] = row
            return row.key_id, key
        # Another process gave the patient a key first: theirs is the one.
        if self._read_ahead is not None:
            self._read_ahead.wrapped_keys.pop(patient_id, None)
        theirs = self.existing_patient_key_with_id(patient_id)
        if theirs is None:  # destroyed in between: a fresh one
            return self.patient_key_with_id(patient_id)
        return theirs

    def existing_patient_key(self, patient_id: str) -> bytes | None:
        """The patient's data key, or None when they have none (never had, or destroyed)."""
        existing = self.existing_patient_key_with_id(patient_id)
        return None if existing is None else existing[1]

    def existing_patient_key_with_id(self, patient_id: str) -> tuple[str, bytes] | None:
        """(key id, data key) of the patient, or None when they have none."""
        row = self._key_row(patient_id)
        if row is None:
            return None
        return row.key_id, self.wrapper.unwrap(row.wrapped, _patient_label(patient_id))

    def patient_key_id(self, patient_id: str) -> str | None:
        """The id of the patient's current key (None: they have none), without opening it."""
        row = self._key_row(patient_id)
        return None if row is None else row.key_id

    def _key_row(self, patient_id: str) -> _KeyRow | None:
        read = self._read_ahead
        if read is not None and patient_id in read.wrapped_keys:
            return read.wrapped_keys[patient_id]
        k = t.patient_keys.c
        with self._engine.connect() as conn:
            row = conn.execute(select(k.key_id, k.wrapped).where(k.patient_id == patient_id)).first()
        return None if row is None else _KeyRow(str(row[0]), bytes(row[1]))

    @contextmanager
    def reading_ahead(self, shas: Collection[str], patient_ids: Collection[str]) -> Iterator[None]:
        """Within the block, in this thread, ``lookup`` of ``shas`` and the keys of
        ``patient_ids`` are answered from two queries made on entering it, instead of one
        query per call.

        Patients of ``patient_ids`` without a key are given one on entering (they are about
        to be written for). For one batch of writes (``EncryptedStore.put_many``), nothing
        longer: rows read on entering are as fresh as those each call would have read a
        few milliseconds later, and what this keyring writes inside the block updates them
        (``record``, a key created); the block's end drops them, so nothing read here
        answers a later call."""
        o, k = t.keyring_objects.c, t.patient_keys.c
        read = _ReadAhead()
        wanted, people = sorted(set(shas)), sorted(set(patient_ids))
        with self._engine.connect() as conn:
            for at in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[at : at + _IN_CHUNK]
                read.objects.update(dict.fromkeys(chunk))
                for sha, cipher, owner, wrapped, key_id in conn.execute(
                    select(o.sha256, o.cipher_sha256, o.owner, o.wrapped_key, o.key_id).where(
                        o.sha256.in_(chunk)
                    )
                ):
                    read.objects[str(sha)] = ObjectRow(
                        str(cipher), owner, None if wrapped is None else bytes(wrapped), key_id
                    )
            for at in range(0, len(people), _IN_CHUNK):
                chunk = people[at : at + _IN_CHUNK]
                read.wrapped_keys.update(dict.fromkeys(chunk))
                for patient_id, key_id, wrapped in conn.execute(
                    select(k.patient_id, k.key_id, k.wrapped).where(k.patient_id.in_(chunk))
                ):
                    read.wrapped_keys[str(patient_id)] = _KeyRow(str(key_id), bytes(wrapped))
        self._create_keys(read)
        self._reading.ahead = read
        try:
            yield
        finally:
            self._reading.ahead = None

    def _create_keys(self, read: _ReadAhead) -> None:
        """Keys for the batch's patients who have none, in one transaction rather than one
        each; a patient another process gave a key meanwhile keeps theirs (read on use)."""
        missing = sorted(p for p, wrapped in read.wrapped_keys.items() if wrapped is None)
        if not missing:
            return
        made = {p: _KeyRow(_new_key_id(), self.wrapper.generate(_patient_label(p))[1]) for p in missing}
        now = dt.datetime.now(dt.UTC).isoformat()
        with self._engine.begin() as conn:
            created = {
                str(p)
                for (p,) in insert_new_many(
                    conn,
                    t.patient_keys,
                    [
                        {"patient_id": p, "wrapped": row.wrapped, "created_at": now, "key_id": row.key_id}
                        for p, row in made.items()
                    ],
                )
            }
        for p, row in made.items():
            if p in created:
                read.wrapped_keys[p] = row
            else:
                del read.wrapped_keys[p]

    @property
    def _read_ahead(self) -> _ReadAhead | None:
        return getattr(self._reading, "ahead", None)

    def has_patient_key(self, patient_id: str) -> bool:
        k = t.patient_keys.c
        return self._scalar(select(1).where(k.patient_id == patient_id)) is not None

    def destroy_patient_key(self, patient_id: str) -> bool:
        """Crypto-shredding: forget the patient's data key; False when there was none."""
        with self._engine.begin() as conn:
            removed = (
                conn.execute(
                    t.patient_keys.delete().where(t.patient_keys.c.patient_id == patient_id)
                ).rowcount
                > 0
            )
        self.wrapper.forget(_patient_label(patient_id))  # and this process's opened copy
        if self._read_ahead is not None:
            self._read_ahead.wrapped_keys[patient_id] = None
        return removed

    def named_key(self, name: str) -> bytes:
        """A key of this install for another purpose than documents, created on first use.

        Kept wrapped in the keyring like the data keys, so it is shared by every process
        that opens the keyring and, with a KMS, never written anywhere in clear.
        """
        slot, label = f"named:{name}", f"named:{name}"
        m = t.keyring_meta.c
        wrapped = self._scalar(select(m.value).where(m.name == slot))
        if wrapped is None:
            _, fresh = self.wrapper.generate(label)
            with self._engine.begin() as conn:  # two processes at once keep the first
                insert_new(conn, t.keyring_meta, {"name": slot, "value": fresh})
            wrapped = self._scalar(select(m.value).where(m.name == slot))
        return self.wrapper.unwrap(bytes(wrapped), label)

    def rewrap(self, target: KeyWrapper) -> int:
        """Wrap every key of this keyring under ``target`` instead; the number of keys.

        For moving an install from its local master key to a KMS key. One transaction:
        either every key moves or none does. Stop the workers and the API first: processes
        still holding the old wrapper would refuse the keyring afterwards.
        """
        m, k, o = t.keyring_meta.c, t.patient_keys.c, t.keyring_objects.c
        moved = 0
        self.commit()
        with self._engine.begin() as conn:
            for name, value in conn.execute(
                select(m.name, m.value).where((m.name == "check") | m.name.like("named:%"))
            ).all():
                conn.execute(
                    t.keyring_meta.update()
                    .where(m.name == name)
                    .values(value=target.wrap(self.wrapper.unwrap(bytes(value), name), name))
                )
                moved += 1
            for patient_id, wrapped in conn.execute(select(k.patient_id, k.wrapped)).all():
                label = _patient_label(patient_id)
                conn.execute(
                    t.patient_keys.update()
                    .where(k.patient_id == patient_id)
                    .values(wrapped=target.wrap(self.wrapper.unwrap(bytes(wrapped), label), label))
                )
                moved += 1
            for sha, wrapped in conn.execute(
                select(o.sha256, o.wrapped_key).where(o.wrapped_key.is_not(None))
            ).all():
                label = _object_label(sha)
                conn.execute(
                    t.keyring_objects.update()
                    .where(o.sha256 == sha)
                    .values(wrapped_key=target.wrap(self.wrapper.unwrap(bytes(wrapped), label), label))
                )
                moved += 1
            conn.execute(
                t.keyring_meta.update().where(m.name == "wrapper").values(value=target.kind.encode())
            )
        self.wrapper = target
        return moved

    def new_object_key(self, sha256: str) -> tuple[bytes, bytes]:
        """A fresh key for one object of unknown owner, and its wrapped form."""
        return self.wrapper.generate(_object_label(sha256))

    def object_key(self, sha256: str, wrapped: bytes) -> bytes:
        return self.wrapper.unwrap(wrapped, _object_label(sha256))

    # -- the object mapping ------------------------------------------------------------------

    def lookup(self, sha256: str) -> ObjectRow | None:
        """The row of a stored object, or None; a row whose key was destroyed since stays
        until the object is deleted or written again (``opens`` tells)."""
        with self._lock:
            if sha256 in self._uncommitted:
                return self._uncommitted[sha256]
        read = self._read_ahead
        if read is not None and sha256 in read.objects:
            return read.objects[sha256]  # kept current by ``record`` and ``forget``
        o = t.keyring_objects.c
        with self._engine.connect() as conn:
            row = conn.execute(
                select(o.cipher_sha256, o.owner, o.wrapped_key, o.key_id).where(o.sha256 == sha256)
            ).first()
        if row is None:
            return None
        return ObjectRow(str(row[0]), row[1], bytes(row[2]) if row[2] is not None else None, row[3])

    def record(
        self,
        sha256: str,
        cipher_sha256: str,
        owner: str | None,
        wrapped_key: bytes | None,
        key_id: str | None = None,
    ) -> None:
        """Map an object to its ciphertext and key (``key_id``: the owner's key it is
        encrypted under; None, no key of theirs opens it); written at the next ``commit``."""
        row = ObjectRow(cipher_sha256, owner, wrapped_key, key_id)
        with self._lock:
            self._uncommitted[sha256] = row
        if self._read_ahead is not None:
            self._read_ahead.objects[sha256] = row

    def opens(self, row: ObjectRow) -> bool:
        """Whether a key this keyring holds opens ``row``'s object: its own key, or the
        key of its owner it was encrypted under, not one the owner was given since."""
        if row.owner is None:
            return row.wrapped_key is not None
        return row.key_id is not None and row.key_id == self.patient_key_id(row.owner)

    def forget(self, sha256: str) -> None:
        """Drop an object's row, now (erasure and clean-ups must not wait for a flush): the
        key of its own it may have goes with it, and any opened copy of that key."""
        with self._lock:
            self._uncommitted[sha256] = None
            self.commit()
        self.wrapper.forget(_object_label(sha256))
        if self._read_ahead is not None:
            self._read_ahead.objects[sha256] = None

    def link(self, links: Collection[tuple[str, str]]) -> None:
        """Record that each object ``(sha256, patient_id)`` holds data of that patient, with
        the next ``commit`` (the objects' own rows, if they are written in it too)."""
        with self._lock:
            self._unlinked.update(links)

    def linked_to(self, patient_id: str) -> list[str]:
        """Plaintext hashes of the objects linked to the patient, whoever's key they are under."""
        self.commit()
        k = t.keyring_links.c
        with self._engine.connect() as conn:
            return list(
                conn.execute(select(k.sha256).where(k.patient_id == patient_id).order_by(k.sha256)).scalars()
            )

    def unlink_patient(self, patient_id: str) -> int:
        """Drop every link naming the patient (erasure); how many there were."""
        self.commit()
        k = t.keyring_links.c
        with self._engine.begin() as conn:
            return conn.execute(t.keyring_links.delete().where(k.patient_id == patient_id)).rowcount

    def objects_of(self, patient_id: str) -> list[str]:
        """Plaintext hashes of the objects encrypted under this patient's key."""
        self.commit()
        o = t.keyring_objects.c
        with self._engine.connect() as conn:
            return list(
                conn.execute(select(o.sha256).where(o.owner == patient_id).order_by(o.sha256)).scalars()
            )

    def hashes(self) -> list[str]:
        self.commit()
        o = t.keyring_objects.c
        with self._engine.connect() as conn:
            return list(conn.execute(select(o.sha256).order_by(o.sha256)).scalars())


@dataclass(frozen=True)
class _Write:
    """A ciphertext ``EncryptedStore`` is about to write, and what its row will say."""

    sha256: str  # of the plaintext
    ciphertext: bytes
    owner: str | None
    wrapped_key: bytes | None
    key_id: str | None
    replaces: ObjectRow | None  # the row it supersedes (its ciphertext unreadable or gone)


class EncryptedStore:
    """A ``DocumentStore`` that encrypts every object before it reaches ``base``."""

    def __init__(self, base: DocumentStore, keyring: KeyRing, *, commit_on_sync: bool = False) -> None:
        """``commit_on_sync``: keyring rows are committed (and replaced ciphertexts deleted)
        at ``sync``, in one transaction, instead of one per write — for a writer that syncs
        once per flush (the pipeline). Other processes see the objects only then."""
        self.base = base
        self.keyring = keyring
        self.commit_on_sync = commit_on_sync
        # Ciphertexts replaced since the last sync: deleted only once the keyring rows that
        # replace them are committed (a kill before that must find the old one still there).
        self._replaced: list[str] = []

    def __repr__(self) -> str:
        return f"EncryptedStore({self.base!r}, {self.keyring!r})"

    def close(self) -> None:
        self.sync()
        self.keyring.close()

    def sync(self) -> None:
        """The ciphertexts durable first, then the keyring rows that point at them: a power
        cut never leaves a row naming an object that is not there."""
        self.base.sync()
        self._commit()

    def _commit(self) -> None:
        self.keyring.commit()
        replaced, self._replaced = self._replaced, []
        for cipher_sha in replaced:
            self.base.delete(cipher_sha)

    def _recorded(self) -> None:
        """After a write: committed now, unless the writer syncs once per flush."""
        if not self.commit_on_sync:
            self._commit()

    @staticmethod
    def _encrypt(key: bytes, data: bytes, sha256: str) -> bytes:
        return MAGIC + seal(key, data, sha256.encode())

    def put(self, data: bytes, *, owner: str | None = None) -> str:
        """Encrypt and keep ``data``; return the SHA-256 of the plaintext. Idempotent.

        ``owner``: the patient whose data key encrypts it, so that bytes whose owner is
        known are written once, under that key; without one (owner unknown, rejected), a
        key of its own. An object kept earlier without an owner is then ``assign``-ed.
        """
        return self._put(data, sha256_hex(data), owner)

    def _put(self, data: bytes, sha: str, owner: str | None) -> str:
        write = self._plan(data, sha, owner)
        if write is not None:
            self._record(write, self.base.put(write.ciphertext))
            self._recorded()
        return sha

    def _plan(self, data: bytes, sha: str, owner: str | None) -> _Write | None:
        """The ciphertext to write for ``data`` and the row that will point at it; None when
        a readable copy is stored already (re-keyed to ``owner`` if it had none)."""
        known = self.keyring.lookup(sha)
        # Already stored only if a live key opens it: a row whose key was destroyed (even
        # if its owner has a new one now) holds nothing readable, so the bytes go in again.
        opens = known is not None and self.keyring.opens(known)
        if known is not None and opens and self.base.exists(known.cipher_sha256):
            if owner is not None:
                self.assign(sha, owner)  # no-op when it has one (the first owner stays)
            return None
        wrapped: bytes | None = None
        key_id: str | None = None
        if known is not None and opens and known.owner is not None:  # its ciphertext went missing
            owner = known.owner
            key_id, key = self.keyring.patient_key_with_id(owner)
        elif owner is not None:
            key_id, key = self.keyring.patient_key_with_id(owner)
        else:  # owner unknown, or their key was destroyed: a key of its own
            key, wrapped = self.keyring.new_object_key(sha)
        return _Write(sha, self._encrypt(key, data, sha), owner, wrapped, key_id, known)

    def _record(self, write: _Write, cipher_sha: str) -> None:
        """The row of a ciphertext now written (committed with the keyring)."""
        self.keyring.record(write.sha256, cipher_sha, write.owner, write.wrapped_key, write.key_id)
        if write.replaces is not None and write.replaces.cipher_sha256 != cipher_sha:
            self._replaced.append(write.replaces.cipher_sha256)  # an unreadable leftover

    def put_many(self, items: Sequence[tuple[bytes, str | None]]) -> list[str]:
        """``put`` of each ``(data, owner)``, as one batch (a pipeline's flush): the keyring
        read in two queries for them all, and the ciphertexts written together
        (``base.put_all``: at once where the store can, as an object store over a network),
        their rows recorded only once all are written. Bytes that come twice are put again
        after the batch, where the first copy is found."""
        shas = [sha256_hex(data) for data, _ in items]
        writes: list[_Write] = []
        again: list[int] = []
        seen: set[str] = set()
        with self.keyring.reading_ahead(shas, {o for _, o in items if o is not None}):
            for i, ((data, owner), sha) in enumerate(zip(items, shas, strict=True)):
                if sha in seen:
                    again.append(i)
                    continue
                seen.add(sha)
                write = self._plan(data, sha, owner)
                if write is not None:
                    writes.append(write)
            if writes:
                cipher_shas = self.base.put_all([w.ciphertext for w in writes])
                for write, cipher_sha in zip(writes, cipher_shas, strict=True):
                    self._record(write, cipher_sha)
                self._recorded()
            for i in again:
                self._put(items[i][0], shas[i], items[i][1])
        return shas

    def put_all(self, items: Sequence[bytes]) -> list[str]:
        """``put_many`` of bytes whose owner is not known."""
        return self.put_many([(data, None) for data in items])

    def _key_for(self, sha256: str, known: ObjectRow) -> bytes:
        if known.owner is None:
            if known.wrapped_key is None:
                raise KeyError(sha256)
            return self.keyring.object_key(sha256, known.wrapped_key)
        existing = self.keyring.existing_patient_key_with_id(known.owner)
        # Crypto-shredded, the owner given a new key since or not: the ciphertext, wherever
        # it is, stays unreadable.
        if existing is None or existing[0] != known.key_id:
            raise KeyError(sha256)
        return existing[1]

    def get(self, sha256: str) -> bytes:
        known = self.keyring.lookup(sha256)
        if known is None:
            raise KeyError(sha256)
        sealed = self.base.get(known.cipher_sha256)
        if not sealed.startswith(MAGIC):
            raise KeyError(sha256)
        key = self._key_for(sha256, known)
        try:
            return unseal(key, sealed[len(MAGIC) :], sha256.encode())
        except InvalidTag:
            log.error("stored object %s fails authentication (corrupted or substituted)", sha256)
            raise KeyError(sha256) from None

    def exists(self, sha256: str) -> bool:
        """Kept and readable: an object whose key was destroyed does not exist any more."""
        known = self.keyring.lookup(sha256)
        return known is not None and self.keyring.opens(known) and self.base.exists(known.cipher_sha256)

    def delete(self, sha256: str) -> bool:
        known = self.keyring.lookup(sha256)
        if known is None:
            return False
        removed = self.base.delete(known.cipher_sha256)
        self.keyring.forget(sha256)
        return removed

    def iter_hashes(self) -> Iterator[str]:
        yield from self.keyring.hashes()

    def owner_of(self, sha256: str) -> str | None:
        known = self.keyring.lookup(sha256)
        return known[1] if known else None

    def objects_of(self, patient_id: str) -> list[str]:
        return self.keyring.objects_of(patient_id)

    def link(self, links: Collection[tuple[str, str]]) -> None:
        """Each ``(sha256, patient_id)``: the object holds that patient's data, whoever's key
        it is under; recorded with the next write of keyring rows (``sync``)."""
        self.keyring.link(links)
        self._recorded()

    def linked_to(self, patient_id: str) -> list[str]:
        return self.keyring.linked_to(patient_id)

    def unlink_patient(self, patient_id: str) -> int:
        return self.keyring.unlink_patient(patient_id)

    def assign(self, sha256: str, patient_id: str) -> bool:
        """Re-encrypt an object under ``patient_id``'s data key; True when it changed.

        An object already owned by another patient (identical bytes filed for two people)
        keeps its first owner: re-keying it would lock the first patient out.
        """
        known = self.keyring.lookup(sha256)
        if known is None:
            raise KeyError(sha256)
        if known.owner is not None:  # under its owner's key, or one destroyed: nothing to re-key
            if known.owner != patient_id:
                log.warning("object %s already belongs to another patient; left under their key", sha256)
            return False
        return self._rekey(sha256, known, patient_id)

    def hand_over(self, sha256: str, patient_id: str) -> bool:
        known = self.keyring.lookup(sha256)
        if known is None or known.owner == patient_id:
            return False
        return self._rekey(sha256, known, patient_id)

    def _rekey(self, sha256: str, known: ObjectRow, patient_id: str) -> bool:
        """Re-encrypt a stored object under ``patient_id``'s data key."""
        data = self.get(sha256)
        key_id, key = self.keyring.patient_key_with_id(patient_id)
        new_cipher_sha = self.base.put(self._encrypt(key, data, sha256))
        self.keyring.record(sha256, new_cipher_sha, patient_id, None, key_id)
        # The former copy goes (at the next sync); an object key is gone from the keyring
        # with the row, a former owner's copy with their key at their erasure.
        self._replaced.append(known.cipher_sha256)
        self._recorded()
        return True

    def share(self, sha256: str) -> bool:
        """Re-encrypt an object under a key of its own; True when it changed (see
        ``KeyedStore.share``). Its owner's copy goes at the next sync, as ``assign``'s does."""
        known = self.keyring.lookup(sha256)
        if known is None or known.owner is None:
            return False
        data = self.get(sha256)
        key, wrapped = self.keyring.new_object_key(sha256)
        new_cipher_sha = self.base.put(self._encrypt(key, data, sha256))
        self.keyring.record(sha256, new_cipher_sha, None, wrapped)
        self._replaced.append(known.cipher_sha256)
        self._recorded()
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
    if settings.kms.key_id:
        ring = open_keyring(settings)
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


def open_keyring(settings: Settings, wrapper: KeyWrapper | None = None, *, create: bool = True) -> KeyRing:
    """This install's keyring, on its state database, opened with ``wrapper`` (else the one
    the settings choose); with ``create=False``, a ``ConfigurationError`` when there is none."""
    if not create:
        engine = open_state(settings)
        try:
            if not has_keyring(engine):
                raise ConfigurationError(f"no keyring in {engine_name(engine)}: nothing to move")
        finally:
            engine.dispose()
    return KeyRing(settings, wrapper or open_key_wrapper(settings))


def has_keyring(engine: Engine) -> bool:
    """Whether the state database holds a keyring yet (one is made on first open)."""
    m = t.keyring_meta.c
    with engine.connect() as conn:
        return conn.execute(select(m.name).where(m.name == "check")).first() is not None


def open_encrypted_store(settings: Settings, *, commit_on_sync: bool = False) -> EncryptedStore:
    """The configured store (file:// or s3://) behind encryption with this install's keys.

    The keys are wrapped by the KMS when ``kms_key_id`` is set (no key file is then
    written or read), else by the local master key. ``commit_on_sync``: see
    :class:`EncryptedStore`.
    """
    wrapper = open_key_wrapper(settings)
    base = open_store(
        settings.effective_store_url,
        endpoint_url=settings.s3.endpoint_url,
        region=settings.s3.region,
        sync=settings.store.sync,
    )
    return EncryptedStore(base, open_keyring(settings, wrapper), commit_on_sync=commit_on_sync)
