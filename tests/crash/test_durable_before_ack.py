"""An acknowledgement never announces a document a power cut could take back.

A power cut cannot be staged in a test, so the order is checked instead, on a real batch
with the real file store and keyring, under each way the store syncs: every ``os.fsync``
is recorded (and done), every ``syncfs`` too (everything on disk then counts as synced), and when
the run reaches its ``before_ack`` fault point every object, quarantine record and their
directories must have been synced and every stored object must have its keyring row committed (read from
another connection). Nothing here replaces the store, the keyring or the feed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.crypto import open_encrypted_store, open_keyring
from pipeline.ingest import Pipeline, process_batch
from pipeline.settings import Settings
from pipeline.store import file as file_store
from pipeline.store import sha256_hex
from pipeline.store.file import syncfs_reports_errors
from tests.test_erasure import A, B, _oru

JUNK = b"\x00not a document"


@pytest.fixture(params=["fsync", "syncfs"])
def sync_method(request: pytest.FixtureRequest) -> str:
    if request.param == "syncfs" and not syncfs_reports_errors():
        pytest.skip("syncfs needs Linux >= 5.8")
    return str(request.param)


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[set[Path]]:
    """The paths this process has made durable so far: each one fsynced, and all of the
    test's files at each syncfs (it writes back the whole filesystem)."""
    paths: set[Path] = set()
    real_fsync, real_syncfs = os.fsync, file_store._syncfs

    def fsync(fd: int) -> None:
        real_fsync(fd)
        paths.add(Path(os.readlink(f"/proc/self/fd/{fd}")))

    def syncfs(fd: int) -> None:
        on_disk = {tmp_path, *tmp_path.rglob("*")}  # listed first: what exists before it
        real_syncfs(fd)
        paths.update(on_disk)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(file_store, "_syncfs", syncfs)
    yield paths


def _batch(tmp_path: Path) -> Path:
    batch = tmp_path / "feed" / "labo" / "b1"
    batch.mkdir(parents=True)
    (batch / "a.hl7").write_bytes(_oru(A, "D1", surname="DURABLE", words="ferritine"))
    (batch / "b.hl7").write_bytes(_oru(B, "D2", surname="DURABLE", words="glycemie"))
    (batch / "junk.bin").write_bytes(JUNK)  # rejected: a quarantine record
    (batch / "_READY").write_text("")
    return tmp_path / "feed"


def test_the_store_is_durable_before_a_batch_is_acknowledged(
    tmp_path: Path, synced: set[Path], monkeypatch: pytest.MonkeyPatch, sync_method: str
) -> None:
    feed = _batch(tmp_path)
    settings = Settings(data_dir=tmp_path / "carnet", store_sync=sync_method)
    store_root = settings.data_dir / "store"
    at_ack: dict[str, object] = {}
    real_checkpoint = Pipeline.checkpoint

    def checkpoint(self: Pipeline, point: str) -> None:
        if point == "before_ack":
            # Documents and quarantine records (Data Docs, also published there, are not
            # what an acknowledgement announces).
            kept = [store_root / "objects", store_root / "quarantine"]
            on_disk = [store_root, *kept, *(p for folder in kept for p in folder.rglob("*"))]
            at_ack["unsynced"] = sorted(str(p) for p in on_disk if p not in synced)
            at_ack["objects"] = {
                p.parent.name + p.name for p in (store_root / "objects").rglob("*") if p.is_file()
            }
            ring = open_keyring(settings)  # its own connection: what is committed
            try:
                at_ack["rows"] = {ring.lookup(sha)[0] for sha in ring.hashes()}  # type: ignore[index]
            finally:
                ring.close()
            at_ack["acknowledged"] = (feed / "labo" / "b1" / "_report.json").exists()
        real_checkpoint(self, point)

    monkeypatch.setattr(Pipeline, "checkpoint", checkpoint)
    summary = process_batch(settings, str(feed), "labo/b1")

    assert summary.by_status == {"indexed": 2, "rejected": 1}
    assert at_ack["acknowledged"] is False
    assert at_ack["unsynced"] == []
    # Two inputs and the messages cut out of them, one junk file: each kept once, and
    # each under a committed keyring row (no row naming a missing object, nor the reverse).
    assert len(at_ack["objects"]) >= 3  # type: ignore[arg-type]
    assert at_ack["rows"] == at_ack["objects"]
    assert (feed / "labo" / "b1" / "_report.json").exists()


def test_each_input_is_written_once_under_the_right_key(
    tmp_path: Path, synced: set[Path], sync_method: str
) -> None:
    feed = _batch(tmp_path)
    settings = Settings(data_dir=tmp_path / "carnet", store_sync=sync_method)
    summary = process_batch(settings, str(feed), "labo/b1")
    assert summary.by_status == {"indexed": 2, "rejected": 1}
    objects = settings.data_dir / "store" / "objects"
    kept = {p for p in objects.rglob("*") if p.is_file()}
    # Every object ever written was fsynced by a flush: none was written, then replaced by
    # a copy under another key (what storing first and re-encrypting later did).
    written = {p for p in synced if p.parent.parent == objects}  # objects/ab/cdef…
    assert written == kept
    store = open_encrypted_store(settings)
    try:
        # Each patient's document under their key; the rejected file under its own.
        assert store.objects_of(A) and store.objects_of(B)
        assert store.owner_of(sha256_hex(JUNK)) is None and store.exists(sha256_hex(JUNK))
    finally:
        store.close()
