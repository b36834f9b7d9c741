"""``FolderFeed``: a producer feed in a local or mounted folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import SourceError
from pipeline.feeds.base import ACK_DIR, MANIFEST, READY_MARKER, BatchRef, is_control_file, parse_manifest


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
