"""Producer feeds: where batches are dropped and how Carnet finds the complete ones.

Layout, for folders and S3 alike: ``<root>/<producer>/<batch>/…files…``. A batch is
complete when its ``_READY`` marker or its ``_manifest.json`` is present. A manifest
lists ``{"files": [{"name", "size", "sha256"}]}``; a file that does not match it is
rejected with ``manifest_mismatch``. Carnet writes its acknowledgement ``_report.json``
(and HL7 ACKs under ``_ack/``) back into the batch.

``FolderFeed`` and ``S3Feed`` (in ``pipeline.s3``) implement the ``Feed`` protocol.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from pipeline.errors import SourceError
from pipeline.model import Frozen

READY_MARKER = "_READY"
MANIFEST = "_manifest.json"
REPORT = "_report.json"
ACK_DIR = "_ack"
# Files Carnet or the producer's tooling write that are not documents.
CONTROL_NAMES = frozenset({READY_MARKER, MANIFEST, REPORT})


class ManifestEntry(Frozen):
    name: str
    size: int | None = None
    sha256: str | None = None


class BatchRef(Frozen):
    """A complete batch: ``producer/batch`` under a feed root."""

    feed_url: str  # folder path or s3://bucket/prefix of the feed root
    producer: str
    batch: str
    files: tuple[str, ...]  # names relative to the batch, sorted
    manifest: tuple[ManifestEntry, ...] | None = None

    @property
    def key(self) -> str:
        return f"{self.producer}/{self.batch}"


def printable_name(name: str) -> str:
    """A file name or path as text fit for reports, acknowledgements and the ledger.

    POSIX names are bytes: Python hands a name that is not UTF-8 over with its bad bytes
    as lone surrogates (``surrogateescape``), which no JSON, SQLite or S3 write accepts.
    Those bytes become ``\\xNN`` escapes here; every other name is returned unchanged.
    """
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that does not stand for a byte
        raw = name.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def is_control_file(name: str) -> bool:
    first = name.split("/", 1)[0]
    return name in CONTROL_NAMES or first == ACK_DIR or Path(name).name.startswith(".")


def parse_manifest(data: bytes, *, where: str) -> tuple[ManifestEntry, ...]:
    try:
        raw = json.loads(data)
        return tuple(ManifestEntry.model_validate(f) for f in raw["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"unreadable batch manifest: {exc}", source=where) from exc


@runtime_checkable
class Feed(Protocol):
    url: str

    def list_batches(self) -> list[BatchRef]:
        """Every complete batch currently in the feed (processed or not)."""
        ...

    def read(self, batch: BatchRef, name: str) -> bytes: ...

    def source_uri(self, batch: BatchRef, name: str) -> str:
        """The URI written in reports for one file of a batch."""
        ...

    def write(self, batch: BatchRef, name: str, data: bytes) -> None:
        """Write an acknowledgement file into the batch (report, HL7 ACK)."""
        ...


class FolderFeed:
    """A feed in a local or mounted folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def list_batches(self) -> list[BatchRef]:
        if not self.root.is_dir():
            raise SourceError("feed folder does not exist", source=str(self.root))
        batches = []
        for producer_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for batch_dir in sorted(p for p in producer_dir.iterdir() if p.is_dir()):
                ref = self._batch(producer_dir.name, batch_dir)
                if ref is not None:
                    batches.append(ref)
        return batches

    def _batch(self, producer: str, batch_dir: Path) -> BatchRef | None:
        manifest_path = batch_dir / MANIFEST
        manifest = None
        if manifest_path.exists():
            manifest = parse_manifest(manifest_path.read_bytes(), where=str(manifest_path))
        elif not (batch_dir / READY_MARKER).exists():
            return None  # still being uploaded
        files = tuple(
            sorted(
                str(p.relative_to(batch_dir))
                for p in batch_dir.rglob("*")
                if p.is_file() and not is_control_file(str(p.relative_to(batch_dir)))
            )
        )
        return BatchRef(
            feed_url=self.url, producer=producer, batch=batch_dir.name, files=files,
            manifest=manifest,
        )

    def _path(self, batch: BatchRef, name: str) -> Path:
        return self.root / batch.producer / batch.batch / name

    def read(self, batch: BatchRef, name: str) -> bytes:
        return self._path(batch, name).read_bytes()

    def source_uri(self, batch: BatchRef, name: str) -> str:
        return str(self._path(batch, name))

    def write(self, batch: BatchRef, name: str, data: bytes) -> None:
        path = self._path(batch, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def iter_folder_files(root: Path) -> Iterator[Path]:
    """Every document file below ``root`` (recursive, control files left out), sorted."""
    for p in sorted(root.rglob("*")):
        if p.is_file() and not is_control_file(p.name) and ACK_DIR not in p.parts:
            yield p
