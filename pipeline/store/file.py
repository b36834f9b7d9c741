"""``FileStore``: the raw-document store in a local or mounted folder (``file://``)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.store.base import (
    QuarantineRecord,
    anchor_name,
    check_quarantine_id,
    check_sha256,
    sha256_hex,
)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FileStore:
    """Content-addressed files under ``root/objects/ab/cdef…`` and ``root/quarantine/``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        (self.root / "quarantine").mkdir(parents=True, exist_ok=True)

    def _path(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.root / "objects" / sha256[:2] / sha256[2:]

    def put(self, data: bytes) -> str:
        digest = sha256_hex(data)
        path = self._path(digest)
        if not path.exists():
            _atomic_write(path, data)
        return digest

    def get(self, sha256: str) -> bytes:
        try:
            return self._path(sha256).read_bytes()
        except FileNotFoundError:
            raise KeyError(sha256) from None

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).exists()

    def delete(self, sha256: str) -> bool:
        path = self._path(sha256)
        if not path.exists():
            return False
        path.unlink()
        return True

    def iter_hashes(self) -> Iterator[str]:
        for sub in sorted((self.root / "objects").iterdir()):
            for f in sorted(sub.iterdir()):
                if not f.name.startswith(".tmp-"):
                    yield sub.name + f.name

    def _qpath(self, quarantine_id: str) -> Path:
        return self.root / "quarantine" / f"{check_quarantine_id(quarantine_id)}.json"

    def put_quarantine(self, record: QuarantineRecord) -> None:
        _atomic_write(self._qpath(record.quarantine_id), record.model_dump_json().encode())

    def get_quarantine(self, quarantine_id: str) -> QuarantineRecord | None:
        path = self._qpath(quarantine_id)
        if not path.exists():
            return None
        return QuarantineRecord.model_validate_json(path.read_bytes())

    def list_quarantine(self) -> Iterator[QuarantineRecord]:
        for path in sorted((self.root / "quarantine").glob("*.json")):
            yield QuarantineRecord.model_validate_json(path.read_bytes())

    def remove_quarantine(self, quarantine_id: str) -> bool:
        path = self._qpath(quarantine_id)
        if not path.exists():
            return False
        path.unlink()
        return True

    def put_anchor(self, kind: str, seq: int, data: bytes) -> None:
        path = self.root / anchor_name(kind, seq)
        if not path.exists():  # write-once: an anchor is never overwritten
            _atomic_write(path, data)
            path.chmod(0o444)

    def latest_anchor(self, kind: str) -> bytes | None:
        names = sorted((self.root / anchor_name(kind, 0)).parent.glob("*.json"))
        return names[-1].read_bytes() if names else None
