"""``FolderFeed``: a producer feed in a local or mounted folder.

Nothing outside a folder feed's root is ever read: a symbolic link (to a file or a
folder) or any other non-regular file (FIFO, device, socket) below the root is listed as
an entry, so it is accounted for, but reading it raises ``UnsafePathError`` and ingestion
rejects it ``unsafe_path``; a file Carnet may not open (permissions) or gone since it
was listed raises ``UnreadableFileError``, rejected ``unreadable_file``. A producer or
batch folder that is itself a link is no batch (skipped with a warning): its files would
be another folder's, and its acknowledgement written through it into another batch.
A producer or batch folder Carnet may not list goes to ``unlisted`` (alerted, the feed's
other batches run); a sub-folder of a batch it may not list is an entry of the batch,
rejected ``unreadable_file``.
``read_regular_file`` is the one way folder files are read (feeds and ``carnet ingest``
alike).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.errors import SourceError, UnreadableFileError, UnsafePathError
from pipeline.feeds.base import (
    ACK_DIR,
    MANIFEST,
    READY_MARKER,
    BatchRef,
    UnlistedFolder,
    delivery_fingerprint,
    is_control_file,
    is_delivered_file,
    printable_name,
    read_manifest,
)

log = logging.getLogger(__name__)


class FolderFeed:
    """A feed in a local or mounted folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)
        self.unlisted: list[UnlistedFolder] = []
        self.stray: list[str] = []

    def list_batches(self) -> list[BatchRef]:
        if not self.root.is_dir():
            raise SourceError("feed folder does not exist", source=str(self.root))
        try:
            producers, loose = _folders(self.root)
        except OSError as exc:
            raise SourceError(f"cannot list the feed folder: {exc.strerror}", source=str(self.root)) from exc
        batches, self.unlisted, self.stray = [], [], [printable_name(n) for n in loose]
        # A folder Carnet may not list is that producer's (or batch's) problem: recorded in
        # unlisted for an alert, and the feed's other producers and batches run.
        for producer_dir in producers:
            producer = printable_name(producer_dir.name)
            try:
                batch_dirs, loose = _folders(producer_dir)
            except OSError as exc:
                self.unlisted.append(UnlistedFolder(producer=producer, reason=_cannot_list(exc)))
                continue
            self.stray.extend(f"{producer}/{printable_name(n)}" for n in loose)
            for batch_dir in batch_dirs:
                try:
                    ref = self._batch(producer_dir.name, batch_dir)
                except OSError as exc:
                    name = printable_name(batch_dir.name)
                    unlisted = UnlistedFolder(producer=producer, batch=name, reason=_cannot_list(exc))
                    self.unlisted.append(unlisted)
                    continue
                if ref is not None:
                    batches.append(ref)
        return batches

    def _batch(self, producer: str, batch_dir: Path) -> BatchRef | None:
        """The batch in ``batch_dir`` if complete; OSError if the folder cannot be listed."""
        names = _batch_names(batch_dir)  # first: a folder Carnet may not list raises here
        manifest, manifest_error = None, None
        manifest_path = batch_dir / MANIFEST
        if manifest_path.exists() or manifest_path.is_symlink():
            try:
                # As any file of the feed: a link (another batch's manifest) or a FIFO (which
                # would hang the listing) is never read.
                data = read_regular_file(self.root, manifest_path)
            except SourceError as exc:
                manifest_error = f"unreadable batch manifest: {exc.message}"
            else:
                manifest, manifest_error = read_manifest(data, where=str(manifest_path))
        elif not (batch_dir / READY_MARKER).exists():
            return None  # still being uploaded
        return BatchRef(
            feed_url=self.url,
            producer=producer,
            batch=batch_dir.name,
            files=tuple(sorted(n for n in names if not is_control_file(n))),
            manifest=manifest,
            manifest_error=manifest_error,
            delivery=delivery_fingerprint((n, _stamp(batch_dir / n)) for n in names if is_delivered_file(n)),
        )

    def _path(self, batch: BatchRef, name: str) -> Path:
        return self.root / batch.producer / batch.batch / name

    def read(self, batch: BatchRef, name: str) -> bytes:
        return read_regular_file(self.root, self._path(batch, name))

    def source_uri(self, batch: BatchRef, name: str) -> str:
        return str(self._path(batch, name))

    def write(self, batch: BatchRef, name: str, data: bytes) -> None:
        """Write Carnet's file ``name`` (``_report.json``, ``_ack/…``) into the batch, never
        through a link: whatever else a producer put under that name (a link to another
        batch's report or ACK folder, a FIFO) is replaced. Each folder on the way is opened
        without following links, so none can be swapped for one meanwhile."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        *folders, leaf = Path(name).parts
        fd = os.open(self.root / batch.producer / batch.batch, flags)
        try:
            for part in folders:
                _replace_unless(part, fd, stat.S_ISDIR)
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass
                inner = os.open(part, flags, dir_fd=fd)
                os.close(fd)
                fd = inner
            _replace_unless(leaf, fd, stat.S_ISREG)
            out = os.open(
                leaf,
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0),
                0o644,
                dir_fd=fd,
            )
            with os.fdopen(out, "wb") as fh:
                fh.write(data)
        finally:
            os.close(fd)


def iter_folder_files(root: Path) -> Iterator[Path]:
    """Every document entry below ``root`` (recursive, control files left out), sorted:
    regular files, and symbolic links or special files (to be rejected when read)."""
    for p in sorted(root.rglob("*")):
        if (
            _is_entry(p)
            and not is_control_file(p.name)
            and not is_control_file(str(p.relative_to(root)))
            and ACK_DIR not in p.parts
        ):
            yield p


def _replace_unless(name: str, folder_fd: int, kind: Callable[[int], bool]) -> None:
    """Remove ``name`` from the folder unless it is of ``kind`` (a link never is)."""
    try:
        mode = os.stat(name, dir_fd=folder_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if not kind(mode):
        os.unlink(name, dir_fd=folder_fd)


def _is_folder(path: Path) -> bool:
    """A real folder (a link to one is not: skipped with a warning)."""
    if path.is_symlink():
        if path.is_dir():
            log.warning("feed folder %s is a symbolic link: not a batch, never followed", path)
        return False
    return path.is_dir()


def _folders(folder: Path) -> tuple[list[Path], list[str]]:
    """The real folders in ``folder``, sorted, and the names of its other entries (files,
    links; hidden ones left out); OSError if it cannot be listed."""
    with os.scandir(folder) as entries:
        paths = sorted(Path(e.path) for e in entries)
    folders = [p for p in paths if _is_folder(p)]
    return folders, [p.name for p in paths if p not in folders and not p.name.startswith(".")]


def _batch_names(batch_dir: Path, below: str = "") -> list[str]:
    """Every entry below ``batch_dir`` as a relative name, sorted; links and special files
    are entries, never descended into. A sub-folder Carnet may not list is an entry too,
    refused ``unreadable_file`` when read: its files are never silently left out (pathlib's
    glob skips such a folder). OSError if ``batch_dir`` itself cannot be listed."""
    with os.scandir(batch_dir) as it:
        entries = sorted(it, key=lambda e: e.name)
    names = []
    for entry in entries:
        name = f"{below}{entry.name}"
        if not entry.is_dir(follow_symlinks=False):
            names.append(name)
            continue
        try:
            names.extend(_batch_names(Path(entry.path), f"{name}/"))
        except OSError as exc:
            log.warning("batch sub-folder %s cannot be listed: %s", entry.path, exc.strerror)
            names.append(name)
    return names


def _stamp(path: Path) -> str:
    """A file's version stamp for the batch's delivery: size, modification and change
    times (a file written again, or replaced by a copy keeping its mtime, changes them)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"unreadable:{exc.errno}"  # gone since listed: the next listing tells
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _cannot_list(exc: OSError) -> str:
    return f"folder cannot be listed: {exc.strerror}"


def _is_entry(path: Path) -> bool:
    """Anything but a real folder (a link to a folder is an entry, never descended into)."""
    return path.is_symlink() or not path.is_dir()


def read_regular_file(root: Path, path: Path) -> bytes:
    """The bytes of ``path``, a regular file below ``root`` reached through no symbolic link.

    Raises ``UnsafePathError`` for a link (the file itself or a folder on the way) or a
    non-regular file, ``UnreadableFileError`` for a file Carnet may not read or that is
    gone; the file is opened without following links and checked on the open descriptor,
    so it cannot be swapped for a link between the check and the read.
    """
    try:
        rel = path.relative_to(root)
    except ValueError:
        raise UnsafePathError("outside the feed's root", source=str(path)) from None
    if ".." in rel.parts:
        # relative_to is arithmetic on names: "b1/../../other/x" climbs out of the root it
        # is relative to (a manifest entry can name any file so).
        raise UnsafePathError("outside the feed's root (a '..' in its name)", source=str(path))
    folder = root
    for part in rel.parts[:-1]:
        folder = folder / part
        if folder.is_symlink() or not folder.is_dir():
            raise UnsafePathError("a folder on its path is a symbolic link", source=str(path))
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EMLINK):
            raise UnsafePathError(
                "a symbolic link or a special file, never followed", source=str(path)
            ) from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.ENOENT):
            # Its permissions, or removed since it was listed: the producer's to fix.
            raise UnreadableFileError(f"cannot read: {exc.strerror}", source=str(path)) from exc
        raise SourceError(f"cannot read: {exc.strerror}", source=str(path)) from exc
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)  # fdopen refuses a folder's descriptor
        # Listed as an entry because it could not be listed: its files are unknown.
        raise UnreadableFileError("a folder, not a file (one Carnet could not list)", source=str(path))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePathError("not a regular file (FIFO, device or socket)", source=str(path))
        return fh.read()
