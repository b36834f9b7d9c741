"""Encryption at rest: what lands on disk, the master key, crypto-shredding; the keyring
on the state database (the embedded SQLite one and PostgreSQL)."""

from __future__ import annotations

import base64
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from sqlalchemy import Engine

from pipeline.crypto import MAGIC, EncryptedStore, KeyRing, open_encrypted_store
from pipeline.errors import ConfigurationError
from pipeline.keywrap import LocalKeyWrapper, load_master_key, unseal
from pipeline.settings import Settings
from pipeline.store import DocumentStore, FileStore, QuarantineRecord, sha256_hex
from tests.test_s3 import FILE_OR_S3, file_or_s3_store, s3_bucket, s3_endpoint  # noqa: F401  (session fixtures)

P = "284057512345672"
OTHER = "192016900100212"
REPORT = "Compte rendu de biologie — Hémoglobine 13,5 g/dL — patient DUPONT Jeanne".encode()


def _key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def master() -> bytes:
    return _key()


@pytest.fixture
def store(tmp_path: Path, master: bytes, state_engine: Engine) -> Iterator[EncryptedStore]:
    ring = KeyRing(state_engine, LocalKeyWrapper(master))
    s = EncryptedStore(FileStore(tmp_path / "store"), ring)
    yield s
    s.close()


def _files(root: Path) -> list[Path]:
    return [p for p in (root / "objects").rglob("*") if p.is_file()]


def test_put_returns_the_plaintext_hash_and_only_ciphertext_reaches_the_disk(
    store: EncryptedStore,
    tmp_path: Path,
) -> None:
    sha = store.put(REPORT)
    assert sha == sha256_hex(REPORT)
    assert store.put(REPORT) == sha  # idempotent: one object, not one per put
    files = _files(tmp_path / "store")
    assert len(files) == 1
    on_disk = files[0].read_bytes()
    assert REPORT not in on_disk and b"DUPONT" not in on_disk and b"moglobine" not in on_disk
    assert files[0].name != sha[2:]  # not even the plaintext's address is visible
    assert store.get(sha) == REPORT and store.exists(sha) and list(store.iter_hashes()) == [sha]
    with pytest.raises(KeyError):
        store.get(sha256_hex(b"never stored"))


def test_assign_re_encrypts_under_the_patients_key(store: EncryptedStore, tmp_path: Path) -> None:
    sha = store.put(REPORT)
    before = _files(tmp_path / "store")[0].read_bytes()
    assert store.assign(sha, P)
    assert not store.assign(sha, P)  # already theirs
    assert not store.assign(sha, OTHER)  # keeps its first owner
    after = _files(tmp_path / "store")
    assert len(after) == 1 and after[0].read_bytes() != before  # old copy gone
    assert store.get(sha) == REPORT
    assert store.owner_of(sha) == P and store.objects_of(P) == [sha] and store.objects_of(OTHER) == []


def test_a_pipeline_store_commits_its_rows_and_drops_replaced_copies_at_sync(
    tmp_path: Path,
    master: bytes,
    state_engine: Engine,
) -> None:
    ring = KeyRing(state_engine, LocalKeyWrapper(master))
    store = EncryptedStore(FileStore(tmp_path / "store"), ring, commit_on_sync=True)
    try:
        sha = store.put(REPORT)
        before = _files(tmp_path / "store")[0].read_bytes()
        assert store.assign(sha, P) and store.get(sha) == REPORT  # this store sees its rows
        other = KeyRing(state_engine, LocalKeyWrapper(master))  # as another process would
        try:
            assert other.lookup(sha) is None  # nothing committed before the sync
            # The copy a committed row could still name stays until the row replacing it is in.
            assert before in [f.read_bytes() for f in _files(tmp_path / "store")]
            store.sync()
            assert other.lookup(sha) is not None and other.objects_of(P) == [sha]
            assert [f.read_bytes() != before for f in _files(tmp_path / "store")] == [True]
        finally:
            other.close()
    finally:
        store.close()


def test_links_are_committed_with_the_objects_and_go_with_them(
    tmp_path: Path,
    master: bytes,
    state_engine: Engine,
) -> None:
    """An input linked to each patient it holds, whoever's key it is under: the links are
    written in the sync that writes its row (never an input stored unlinked), and an object
    deleted takes its links; ``unlink_patient`` drops the rest of a patient's."""
    ring = KeyRing(state_engine, LocalKeyWrapper(master))
    store = EncryptedStore(FileStore(tmp_path / "store"), ring, commit_on_sync=True)
    other = KeyRing(state_engine, LocalKeyWrapper(master))  # as another process would
    try:
        batch, never = store.put(REPORT, owner=P), sha256_hex(b"never stored")
        store.link([(batch, P), (batch, OTHER), (never, OTHER)])
        assert other.linked_to(OTHER) == [] and other.lookup(batch) is None  # nothing before the sync
        store.sync()
        assert other.linked_to(P) == [batch] and other.lookup(batch) is not None
        assert store.owner_of(batch) == P and store.linked_to(OTHER) == sorted([batch, never])
        store.link([(batch, OTHER)])  # again: one link
        assert store.delete(batch)
        assert store.linked_to(P) == [] and store.linked_to(OTHER) == [never]
        assert store.unlink_patient(OTHER) == 1 and store.linked_to(OTHER) == []
    finally:
        other.close()
        store.close()


def test_wrong_master_key_cannot_open_the_keyring(
    tmp_path: Path,
    master: bytes,
    state_engine: Engine,
) -> None:
    ring = KeyRing(state_engine, LocalKeyWrapper(master))
    EncryptedStore(FileStore(tmp_path / "store"), ring).put(REPORT)
    ring.close()
    with pytest.raises(ConfigurationError, match="does not open"):
        KeyRing(state_engine, LocalKeyWrapper(_key()))
    assert KeyRing(state_engine, LocalKeyWrapper(master)).lookup(sha256_hex(REPORT)) is not None


def test_a_substituted_ciphertext_is_refused(store: EncryptedStore, tmp_path: Path) -> None:
    a, b = store.put(REPORT), store.put(b"another document")
    store.assign(a, P)
    store.assign(b, P)
    # Swap the two ciphertexts on disk: same key, but the plaintext hash is the AAD.
    pa, pb = (store.base._path(store.keyring.lookup(x)[0]) for x in (a, b))  # type: ignore[attr-defined,index]
    da, db = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(db)
    pb.write_bytes(da)
    with pytest.raises(KeyError):
        store.get(a)


def test_destroyed_key_leaves_even_a_backup_copy_unreadable(store: EncryptedStore, tmp_path: Path) -> None:
    sha = store.put(REPORT)
    store.assign(sha, P)
    keep = store.put(b"someone else's report")
    store.assign(keep, OTHER)
    backup = {p: p.read_bytes() for p in _files(tmp_path / "store")}

    assert store.destroy_patient_key(P)
    assert not store.destroy_patient_key(P)
    with pytest.raises(KeyError):
        store.get(sha)
    store.delete(sha)
    # Restore the backup copy of every file: the patient's object stays unreadable,
    # the other patient's one is fine.
    for path, data in backup.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    assert store.get(keep) == b"someone else's report"
    with pytest.raises(KeyError):
        store.get(sha)
    # And the same bytes ingested again are stored afresh, under a new key.
    assert store.put(REPORT) == sha and store.get(sha) == REPORT


@pytest.fixture(params=FILE_OR_S3)
def base(request: pytest.FixtureRequest, tmp_path: Path) -> DocumentStore:
    """The store under the encryption: a folder, or a prefix of the S3 test bucket."""
    return file_or_s3_store(request, tmp_path)


def test_bytes_filed_again_after_a_bare_shredding_are_written_again_under_the_new_key(
    base: DocumentStore, master: bytes, state_engine: Engine
) -> None:
    """A patient key destroyed on its own (crypto-shredding, not an erasure, which deletes
    the objects first) leaves its objects' rows behind. The same bytes filed again, once
    the batch has given the patient a new key, are not "already stored": they are written
    under the new key, readable, and the copy under the destroyed key goes."""
    store = EncryptedStore(base, KeyRing(state_engine, LocalKeyWrapper(master)))
    try:
        (sha,) = store.put_many([(REPORT, P)])
        shredded = base.get(store.keyring.lookup(sha)[0])  # type: ignore[index]
        assert store.destroy_patient_key(P)

        assert store.put_many([(REPORT, P)]) == [sha]
        assert store.get(sha) == REPORT and store.exists(sha) and store.owner_of(sha) == P
        assert [h for h in base.iter_hashes()] == [store.keyring.lookup(sha)[0]]  # type: ignore[index]
        # The shredded copy (a backup of it) does not open under the new key either.
        new_key = store.keyring.existing_patient_key(P)
        assert new_key is not None
        with pytest.raises(InvalidTag):
            unseal(new_key, shredded[len(MAGIC) :], sha.encode())
    finally:
        store.close()


def test_a_key_given_again_does_not_make_a_shredded_object_look_stored(
    store: EncryptedStore, caplog: pytest.LogCaptureFixture
) -> None:
    """After a bare shredding, another document gives the patient a new key: the old
    object's row names the patient, but not that key."""
    sha = store.put(REPORT, owner=P)
    assert store.destroy_patient_key(P)
    store.put(b"a later report", owner=P)
    assert not store.exists(sha)
    with caplog.at_level(logging.ERROR), pytest.raises(KeyError):
        store.get(sha)
    assert "fails authentication" not in caplog.text  # not taken for a corrupted object
    assert not store.assign(sha, P)  # nothing to re-key: its bytes are gone
    # Filed again before its owner is known: under a key of its own, then re-keyed.
    assert store.put(REPORT) == sha and store.get(sha) == REPORT and store.owner_of(sha) is None
    assert store.assign(sha, P) and store.get(sha) == REPORT and store.owner_of(sha) == P


def test_rows_a_flush_commits_after_its_key_was_shredded_elsewhere_are_not_trusted(
    tmp_path: Path, master: bytes, state_engine: Engine
) -> None:
    """A flush encrypts under the key it read, another process destroys that key before the
    flush commits its rows, then the patient gets a new key: the rows name the old key."""
    ring = KeyRing(state_engine, LocalKeyWrapper(master))
    store = EncryptedStore(FileStore(tmp_path / "store"), ring, commit_on_sync=True)
    other = KeyRing(state_engine, LocalKeyWrapper(master))  # as another process would
    try:
        (sha,) = store.put_many([(REPORT, P)])
        assert other.destroy_patient_key(P)
        store.sync()
        other.patient_key(P)
        assert store.put_many([(REPORT, P)]) == [sha]
        store.sync()
        assert EncryptedStore(FileStore(tmp_path / "store"), other).get(sha) == REPORT
    finally:
        other.close()
        store.close()


def test_a_batch_of_puts_reads_the_keyring_once_and_nothing_after_it(
    tmp_path: Path, master: bytes, state_engine: Engine
) -> None:
    """``put_many`` reads the rows and keys it needs in one go; what it writes meanwhile
    (objects, a new key) is what the rest of the batch sees; what it read is dropped at the
    end, so a key destroyed after it (by another process) is never used again."""
    ring = KeyRing(state_engine, LocalKeyWrapper(master))
    store = EncryptedStore(FileStore(tmp_path / "store"), ring, commit_on_sync=True)
    other = KeyRing(state_engine, LocalKeyWrapper(master))  # as another process would
    try:
        unowned = store.put(b"owner unknown at first")
        first = store.put_many([(REPORT, P), (b"owner unknown at first", P), (REPORT, OTHER), (b"x", None)])
        assert first == [sha256_hex(REPORT), unowned, sha256_hex(REPORT), sha256_hex(b"x")]
        assert store.owner_of(first[0]) == P and store.owner_of(unowned) == P  # first owner kept
        assert store.owner_of(first[3]) is None and ring._read_ahead is None
        store.sync()
        assert other.destroy_patient_key(P)
        with pytest.raises(KeyError):
            store.get(first[0])
        # Filed again after the shredding: a fresh key, not the one read in the batch.
        again = store.put_many([(b"a later report", P), (b"and another", P)])
        assert [store.get(sha) for sha in again] == [b"a later report", b"and another"]
        store.sync()
        assert other.lookup(again[0]) is not None and other.existing_patient_key(P) is not None
    finally:
        other.close()
        store.close()


def test_a_key_another_process_gave_first_is_the_one_a_batch_uses(
    tmp_path: Path, master: bytes, state_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    ring = KeyRing(state_engine, LocalKeyWrapper(master))
    store = EncryptedStore(FileStore(tmp_path / "store"), ring, commit_on_sync=True)
    other = KeyRing(state_engine, LocalKeyWrapper(master))  # as another process would
    generate = ring.wrapper.generate

    def first_elsewhere(label: str) -> tuple[bytes, bytes]:
        if label == f"patient:{P}":
            other.patient_key(P)  # between the batch's read and its insert
        return generate(label)

    monkeypatch.setattr(ring.wrapper, "generate", first_elsewhere)
    try:
        (sha,) = store.put_many([(REPORT, P)])
        store.sync()
        assert ring.existing_patient_key(P) == other.existing_patient_key(P)
        reader = EncryptedStore(FileStore(tmp_path / "store"), other)
        assert reader.get(sha) == REPORT
    finally:
        other.close()
        store.close()


def test_keys_never_show_in_reprs_or_logs(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(data_dir=tmp_path / "carnet")
    with caplog.at_level(logging.DEBUG):
        store = open_encrypted_store(settings)
        sha = store.put(REPORT)
        store.assign(sha, P)
        store.get(sha)
    master = load_master_key(settings)
    patient_key = store.keyring.existing_patient_key(P)
    assert patient_key is not None
    text = repr(store) + repr(store.keyring) + caplog.text
    for key in (master, patient_key):
        assert key.hex() not in text and base64.b64encode(key).decode() not in text
        assert repr(key) not in text
    store.close()


def test_default_master_key_file_is_private_and_stable(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "carnet")
    first = load_master_key(settings)
    path = settings.data_dir / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_master_key(settings) == first
    configured = base64.b64encode(_key()).decode()
    assert load_master_key(Settings(data_dir=tmp_path / "carnet", master_key=configured)) != first
    with pytest.raises(ConfigurationError):
        load_master_key(Settings(data_dir=tmp_path, master_key=base64.b64encode(b"short").decode()))


def test_quarantine_records_pass_through(store: EncryptedStore) -> None:
    import datetime as dt

    from pipeline.model import Problem, Reason

    sha = store.put(b"%PDF- broken")
    rec = QuarantineRecord(
        quarantine_id=QuarantineRecord.make_id("labo", "a.pdf", sha),
        source="a.pdf",
        producer="labo",
        content_sha256=sha,
        reasons=(Problem(code=Reason.PARSE_ERROR, message="broken"),),
        first_quarantined_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    store.put_quarantine(rec)
    assert store.get_quarantine(rec.quarantine_id) == rec
    assert list(store.list_quarantine()) == [rec]
    assert store.remove_quarantine(rec.quarantine_id)


class _FailingAfter(FileStore):
    """A folder store whose batch write fails after its first object (a network or disk
    error mid-flush)."""

    def put_all(self, items: Sequence[bytes]) -> list[str]:
        self.put(items[0])
        raise OSError("the disk went away")


def test_a_batch_records_its_rows_only_once_every_ciphertext_is_written(
    tmp_path: Path, master: bytes, state_engine: Engine
) -> None:
    store = EncryptedStore(
        _FailingAfter(tmp_path / "store"), KeyRing(state_engine, LocalKeyWrapper(master)), commit_on_sync=True
    )
    with pytest.raises(OSError, match="went away"):
        store.put_many([(REPORT, P), (b"second report", OTHER)])
    store.sync()  # what the pipeline's next flush would commit
    # No row names a ciphertext that was never written (the one written is an orphan).
    assert store.keyring.lookup(sha256_hex(REPORT)) is None
    assert store.keyring.lookup(sha256_hex(b"second report")) is None
    store.close()


def test_bytes_twice_in_one_batch_are_written_once(
    base: DocumentStore, master: bytes, state_engine: Engine
) -> None:
    store = EncryptedStore(base, KeyRing(state_engine, LocalKeyWrapper(master)))
    try:
        shas = store.put_many([(REPORT, None), (b"other", P), (REPORT, P)])
        assert shas == [sha256_hex(REPORT), sha256_hex(b"other"), sha256_hex(REPORT)]
        # Kept once, then given to its patient by the second occurrence, as two puts would.
        assert len(list(base.iter_hashes())) == 2
        assert store.owner_of(shas[0]) == P and store.get(shas[0]) == REPORT
        assert store.get(shas[1]) == b"other"
    finally:
        store.close()
