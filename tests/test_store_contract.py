"""The ``DocumentStore`` contract, run against ``FileStore`` and ``S3Store`` (real MinIO)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from pipeline.model import Problem, Reason
from pipeline.store import DocumentStore, FileStore, QuarantineAttempt, QuarantineRecord, sha256_hex
from pipeline.store import file as file_store
from pipeline.store.file import syncfs_reports_errors
from tests.test_s3 import FILE_OR_S3, file_or_s3_store, s3_bucket, s3_endpoint  # noqa: F401  (session fixtures)

FIVE_MB = os.urandom(5 * 1024 * 1024)


@pytest.fixture(params=FILE_OR_S3)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> DocumentStore:
    return file_or_s3_store(request, tmp_path)


def test_is_a_document_store(store: DocumentStore) -> None:
    assert isinstance(store, DocumentStore)


@pytest.mark.parametrize(
    "data", [b"", b"MSH|^~\\&|LAB\r", bytes(range(256)), FIVE_MB], ids=["empty", "hl7", "all-bytes", "5MB"]
)
def test_round_trip_byte_for_byte(store: DocumentStore, data: bytes) -> None:
    digest = store.put(data)
    assert digest == sha256_hex(data)
    assert store.exists(digest)
    assert store.get(digest) == data


def test_put_is_idempotent(store: DocumentStore) -> None:
    first = store.put(b"same document")
    assert store.put(b"same document") == first
    assert list(store.iter_hashes()) == [first]
    assert store.get(first) == b"same document"


def test_exists_and_delete(store: DocumentStore) -> None:
    digest = store.put(b"to delete")
    assert store.delete(digest) is True
    assert not store.exists(digest)
    assert store.delete(digest) is False
    with pytest.raises(KeyError):
        store.get(digest)


def test_missing_object_is_a_key_error(store: DocumentStore) -> None:
    missing = sha256_hex(b"never stored")
    assert not store.exists(missing)
    with pytest.raises(KeyError):
        store.get(missing)


def test_iter_hashes_lists_every_object_in_order(store: DocumentStore) -> None:
    assert list(store.iter_hashes()) == []
    digests = [store.put(f"document {i}".encode()) for i in range(5)]
    assert list(store.iter_hashes()) == sorted(digests)


@pytest.mark.parametrize("bad", ["", "abc", "A" * 64, "g" * 64, "../" + "a" * 61, "a" * 65])
def test_bad_sha_is_rejected(store: DocumentStore, bad: str) -> None:
    with pytest.raises(ValueError):
        store.get(bad)
    with pytest.raises(ValueError):
        store.exists(bad)
    with pytest.raises(ValueError):
        store.delete(bad)


def _record(qid: str, attempts: int = 0) -> QuarantineRecord:
    at = dt.datetime(2025, 3, 14, 9, 26, 53, tzinfo=dt.UTC)
    problem = Problem(code=Reason.INVALID_INS_KEY, message="INS key does not match")
    return QuarantineRecord(
        quarantine_id=qid,
        source="s3://feeds/lab/b1/a.hl7",
        producer="lab",
        batch="b1",
        content_sha256=sha256_hex(b"a"),
        part=2,
        patient_id=None,
        reasons=(problem,),
        first_quarantined_at=at,
        attempts=tuple(
            QuarantineAttempt(at=at + dt.timedelta(hours=i), reasons=(problem,)) for i in range(attempts)
        ),
    )


def test_quarantine_round_trip(store: DocumentStore) -> None:
    qid = QuarantineRecord.make_id("lab", "b1/a.hl7", sha256_hex(b"a"))
    other = QuarantineRecord.make_id("lab", "b1/b.hl7", sha256_hex(b"b"))
    assert store.get_quarantine(qid) is None
    store.put_quarantine(_record(qid))
    store.put_quarantine(_record(other))
    assert store.get_quarantine(qid) == _record(qid)
    assert sorted(r.quarantine_id for r in store.list_quarantine()) == sorted([qid, other])

    store.put_quarantine(_record(qid, attempts=2))  # a retry overwrites the record
    assert store.get_quarantine(qid) == _record(qid, attempts=2)

    assert store.remove_quarantine(qid) is True
    assert store.remove_quarantine(qid) is False
    assert store.get_quarantine(qid) is None
    assert [r.quarantine_id for r in store.list_quarantine()] == [other]
    # Quarantine records are not documents.
    assert list(store.iter_hashes()) == []


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", "x.json"])
def test_bad_quarantine_id_is_rejected(store: DocumentStore, bad: str) -> None:
    with pytest.raises(ValueError):
        store.get_quarantine(bad)
    with pytest.raises(ValueError):
        store.remove_quarantine(bad)


def test_anchors_are_write_once_and_the_latest_is_found(store: DocumentStore) -> None:
    assert store.latest_anchor("audit") is None
    store.put_anchor("audit", 9, b'{"seq": 9}')
    store.put_anchor("audit", 120, b'{"seq": 120}')
    store.put_anchor("audit", 120, b'{"seq": 120, "rewritten": true}')  # never overwritten
    store.put_anchor("other", 500, b"{}")
    assert store.latest_anchor("audit") == b'{"seq": 120}'
    assert list(store.iter_hashes()) == []  # anchors are not objects
    with pytest.raises(ValueError):
        store.put_anchor("../x", 1, b"")


def test_a_file_store_sync_reaches_every_file_and_folder_and_retries_after_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files are fsynced several at once, then their folders deepest first; a failed sync
    leaves everything to the next one."""
    store = FileStore(tmp_path / "store", sync="fsync")
    shas = [store.put(os.urandom(64)) for _ in range(40)]
    synced: list[Path] = []
    real_fsync, fail = os.fsync, [True]

    def fsync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if fail[0] and path.is_dir():
            raise OSError("disk gone")
        real_fsync(fd)
        synced.append(path)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="disk gone"):
        store.sync()
    assert store.unsynced > 0
    fail[0], synced[:] = False, []
    store.sync()
    objects = tmp_path / "store" / "objects"
    files = {objects / sha[:2] / sha[2:] for sha in shas}
    assert files <= set(synced) and store.unsynced == 0
    folders = [p for p in synced if p not in files]
    assert {objects / sha[:2] for sha in shas} <= set(folders)
    assert folders.index(objects) > max(folders.index(objects / sha[:2]) for sha in shas)


@pytest.mark.skipif(not syncfs_reports_errors(), reason="syncfs needs Linux >= 5.8")
def test_a_file_store_syncs_its_filesystem_once_per_sync_and_retries_after_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With syncfs (the default on Linux >= 5.8) a sync with writes pending is one syncfs
    of the store's own filesystem; none without; a failure leaves the writes pending."""
    store = FileStore(tmp_path / "store")
    assert store.sync_method == "syncfs"
    calls: list[int] = []
    real, fail = file_store._syncfs, [True]

    def syncfs(fd: int) -> None:
        assert os.path.samefile(os.readlink(f"/proc/self/fd/{fd}"), tmp_path / "store")
        calls.append(fd)
        if fail[0]:
            raise OSError(5, "syncfs: Input/output error")
        real(fd)

    monkeypatch.setattr(file_store, "_syncfs", syncfs)
    store.sync()
    assert calls == []  # nothing written since the store was opened (and synced)
    for _ in range(40):
        store.put(os.urandom(64))
    with pytest.raises(OSError, match="Input/output error"):
        store.sync()
    assert store.unsynced > 0
    fail[0] = False
    store.sync()
    assert len(calls) == 2 and store.unsynced == 0
    store.delete(store.put(b"x"))
    store.sync()
    assert len(calls) == 3  # a removal is a change of a folder's entries: synced too


def test_a_file_store_refuses_an_unknown_sync_method(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown sync method"):
        FileStore(tmp_path / "store", sync="sometimes")
