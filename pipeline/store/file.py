"""``FileStore``: the raw-document store in a local or mounted folder (``file://``).

Writes are atomic (a temporary file renamed into place) but not synced one by one:
``sync`` makes everything written or removed since its last call durable at once. The
pipeline calls it once per flush, before the flush is recorded and before any
acknowledgement is written. Two ways, chosen by ``CARNET_STORE_SYNC``:

- ``syncfs`` (the default on Linux 5.8 and later): one ``syncfs(2)`` of the store's
  filesystem, which writes back every file and directory entry on it and commits its
  journal once. A flush of 2,000 small objects: 0.03 s instead of 0.2-0.4 s, and none of
  the ~50-90 µs of CPU per object that a per-file fsync costs (the write-back itself is
  the kernel's flusher threads' work either way). It also writes back other programs'
  data on that filesystem: where the store shares a busy disk, ``fsync`` is the better
  choice. Before 5.8, ``syncfs`` did not report write-back errors: not used there.
- ``fsync``: each file written, then each directory whose entries changed (a rename
  survives a power cut only once its directory is synced), several at once.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import os
import platform
import secrets
import threading
import weakref
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pipeline.store.base import (
    QuarantineRecord,
    anchor_name,
    check_quarantine_id,
    check_sha256,
    sha256_hex,
)


def _fsync(path: Path, flags: int = os.O_RDONLY) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# fsyncs in flight at once: the filesystem commits its journal once for all those waiting,
# so a flush's hundreds of files cost a few journal commits rather than one each.
_FSYNC_THREADS = 8


def _fsync_all(paths: list[Path], flags: int, *, missing_ok: bool = False) -> None:
    """fsync every path, several at once; ``missing_ok``: a file replaced or removed since
    is skipped (its directory, synced after, says so)."""

    def run(share: list[Path]) -> None:
        for path in share:
            try:
                _fsync(path, flags)
            except FileNotFoundError:
                if not missing_ok:
                    raise

    if len(paths) <= 1:
        run(paths)
        return
    # Each thread takes a fixed share, not one task per file: a future per file cost as
    # much CPU as the fsyncs themselves (900 files: 60 ms -> 25 ms).
    threads = min(_FSYNC_THREADS, len(paths))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for done in [pool.submit(run, paths[i::threads]) for i in range(threads)]:
            done.result()  # the first failure is raised (the others still ran)


SYNC_METHODS = ("auto", "syncfs", "fsync")


@functools.cache
def _libc_syncfs() -> Any:
    """libc's ``syncfs``, or None where there is none (not Linux, or a libc without it)."""
    if platform.system() != "Linux":
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


def syncfs_reports_errors() -> bool:
    """Whether ``syncfs`` can be trusted here: Linux 5.8 made it report write-back errors."""
    if _libc_syncfs() is None:
        return False
    try:
        major, minor = (int(x) for x in platform.release().split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 8)


def _syncfs(fd: int) -> None:
    """``syncfs(2)`` of the filesystem holding ``fd``; ``OSError`` as the kernel says."""
    if _libc_syncfs()(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"syncfs: {os.strerror(code)}")


class FileStore:
    """Content-addressed files under ``root/objects/ab/cdef…`` and ``root/quarantine/``."""

    def __init__(self, root: str | Path, *, sync: str = "auto") -> None:
        """``sync``: ``syncfs``, ``fsync`` or ``auto`` (``syncfs`` where it reports
        write-back errors); see the module's docstring."""
        if sync not in SYNC_METHODS:
            raise ValueError(f"unknown sync method {sync!r} (want one of {', '.join(SYNC_METHODS)})")
        if sync == "syncfs" and not syncfs_reports_errors():
            raise ValueError("syncfs needs Linux 5.8 or later (earlier, it hid write-back errors)")
        self.root = Path(root)
        self._objects = os.path.join(self.root, "objects")
        self._lock = threading.Lock()
        # Written since the last sync: files, and directories whose entries changed.
        self._unsynced_files: set[Path] = set()
        self._unsynced_dirs: set[Path] = set()
        # Folders this store made or found: a flush's hundreds of objects are written
        # without walking up every parent again (a folder removed behind its back is made
        # again: see ``_write``).
        self._folders: set[str] = set()
        # Temporary names unique to this store (one random prefix, then a counter) instead
        # of ``tempfile``'s random name per file; ``O_EXCL`` still refuses any clash.
        self._tmp_prefix = f".tmp-{secrets.token_hex(6)}-"
        self._tmp_seq = itertools.count()
        for sub in ("objects", "quarantine"):
            self._mkdir(self.root / sub)
        # Opened before anything is written: syncfs reports the write-back errors met on
        # the filesystem since this descriptor was opened (and any not yet reported).
        self._syncfs_fd: int | None = None
        if sync == "syncfs" or (sync == "auto" and syncfs_reports_errors()):
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self._syncfs_fd = fd
            weakref.finalize(self, os.close, fd)
        self.sync()

    @property
    def sync_method(self) -> str:
        """How ``sync`` makes writes durable: ``syncfs`` or ``fsync``."""
        return "fsync" if self._syncfs_fd is None else "syncfs"

    def _mkdir(self, folder: Path) -> None:
        """``folder`` and its missing parents, each new entry to be synced."""
        if str(folder) in self._folders:
            return
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._unsynced_dirs.update(p.parent for p in missing)
            self._folders.add(str(folder))

    def _write(self, path: Path, data: bytes) -> None:
        """Write ``path`` atomically (readers see the old file or the new one, whole)."""
        folder = path.parent
        self._mkdir(folder)
        try:
            tmp = self._create_tmp(folder)
        except FileNotFoundError:  # the folder went since: made again
            with self._lock:
                self._folders.discard(str(folder))
            self._mkdir(folder)
            tmp = self._create_tmp(folder)
        fd, name = tmp
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(name, path)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        with self._lock:
            self._unsynced_files.add(path)
            self._unsynced_dirs.add(folder)

    def _create_tmp(self, folder: Path) -> tuple[int, str]:
        """A new temporary file in ``folder``, opened for writing (mode 0600, as mkstemp)."""
        while True:
            name = os.path.join(folder, f"{self._tmp_prefix}{next(self._tmp_seq)}")
            try:
                return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), name
            except FileExistsError:
                continue

    def _remove(self, path: Path) -> bool:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        with self._lock:
            self._unsynced_files.discard(path)
            self._unsynced_dirs.add(path.parent)
        return True

    def sync(self) -> None:
        """Make every write and removal since the last call durable: one ``syncfs`` of the
        store's filesystem, or an fsync of each file written, then of each directory whose
        entries changed, deepest first."""
        with self._lock:
            files, self._unsynced_files = self._unsynced_files, set()
            dirs, self._unsynced_dirs = self._unsynced_dirs, set()
        try:
            if self._syncfs_fd is not None:
                if files or dirs:
                    _syncfs(self._syncfs_fd)
                return
            _fsync_all(sorted(files), os.O_RDONLY, missing_ok=True)
            by_depth: dict[int, list[Path]] = {}
            for folder in dirs:
                by_depth.setdefault(len(folder.parts), []).append(folder)
            for depth in sorted(by_depth, reverse=True):  # a folder after the ones inside it
                _fsync_all(sorted(by_depth[depth]), os.O_RDONLY | os.O_DIRECTORY)
        except BaseException:
            with self._lock:  # not durable: the next sync tries again
                self._unsynced_files |= files
                self._unsynced_dirs |= dirs
            raise

    @property
    def unsynced(self) -> int:
        """How many files and directories ``sync`` has still to make durable."""
        with self._lock:
            return len(self._unsynced_files) + len(self._unsynced_dirs)

    def _path(self, sha256: str) -> Path:
        check_sha256(sha256)
        return Path(self._objects, sha256[:2], sha256[2:])

    def put(self, data: bytes) -> str:
        digest = sha256_hex(data)
        path = self._path(digest)
        if not path.exists():
            self._write(path, data)
        return digest

    def put_all(self, items: Sequence[bytes]) -> list[str]:
        # One after the other: a local write waits on nothing that threads would overlap
        # (its fsync, the slow part, comes at ``sync``, already several at once).
        return [self.put(data) for data in items]

    def get(self, sha256: str) -> bytes:
        try:
            return self._path(sha256).read_bytes()
        except FileNotFoundError:
            raise KeyError(sha256) from None

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).exists()

    def delete(self, sha256: str) -> bool:
        return self._remove(self._path(sha256))

    def iter_hashes(self) -> Iterator[str]:
        for sub in sorted((self.root / "objects").iterdir()):
            for f in sorted(sub.iterdir()):
                if not f.name.startswith(".tmp-"):
                    yield sub.name + f.name

    def _qpath(self, quarantine_id: str) -> Path:
        return self.root / "quarantine" / f"{check_quarantine_id(quarantine_id)}.json"

    def put_quarantine(self, record: QuarantineRecord) -> None:
        self._write(self._qpath(record.quarantine_id), record.model_dump_json().encode())

    def get_quarantine(self, quarantine_id: str) -> QuarantineRecord | None:
        path = self._qpath(quarantine_id)
        if not path.exists():
            return None
        return QuarantineRecord.model_validate_json(path.read_bytes())

    def list_quarantine(self) -> Iterator[QuarantineRecord]:
        for path in sorted((self.root / "quarantine").glob("*.json")):
            yield QuarantineRecord.model_validate_json(path.read_bytes())

    def remove_quarantine(self, quarantine_id: str) -> bool:
        return self._remove(self._qpath(quarantine_id))

    def put_anchor(self, kind: str, seq: int, data: bytes) -> None:
        path = self.root / anchor_name(kind, seq)
        if not path.exists():  # write-once: an anchor is never overwritten
            self._write(path, data)
            path.chmod(0o444)

    def latest_anchor(self, kind: str) -> bytes | None:
        names = sorted((self.root / anchor_name(kind, 0)).parent.glob("*.json"))
        return names[-1].read_bytes() if names else None
