"""Raw-document store: every input kept byte-for-byte, content-addressed by SHA-256,
plus the quarantine of rejected documents with their reason records.

``FileStore`` (``file://`` URL, the default) and ``S3Store`` (``s3://bucket/prefix``)
implement the same ``DocumentStore`` protocol and pass the same contract tests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from pipeline.errors import ConfigurationError
from pipeline.model import Frozen, Problem


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class QuarantineAttempt(Frozen):
    at: dt.datetime
    reasons: tuple[Problem, ...]
    exception: str | None = None


class QuarantineRecord(Frozen):
    """A rejected document kept for replay: where it came from and every failed attempt."""

    quarantine_id: str
    source: str
    producer: str
    batch: str | None = None
    content_sha256: str  # the raw input file's hash (the bytes to replay)
    part: int | None = None  # n-th HL7 message of the file
    patient_id: str | None = None
    reasons: tuple[Problem, ...]
    exception: str | None = None
    first_quarantined_at: dt.datetime
    attempts: tuple[QuarantineAttempt, ...] = ()

    @staticmethod
    def make_id(producer: str, source_ref: str, content_sha256: str) -> str:
        return sha256_hex(f"{producer}\x00{source_ref}\x00{content_sha256}".encode())[:32]


@runtime_checkable
class DocumentStore(Protocol):
    def put(self, data: bytes) -> str:
        """Keep ``data``; return its SHA-256. Idempotent."""
        ...

    def get(self, sha256: str) -> bytes:
        """The bytes stored under ``sha256``; ``KeyError`` when absent."""
        ...

    def exists(self, sha256: str) -> bool: ...

    def delete(self, sha256: str) -> bool: ...

    def iter_hashes(self) -> Iterator[str]: ...

    def put_quarantine(self, record: QuarantineRecord) -> None: ...

    def get_quarantine(self, quarantine_id: str) -> QuarantineRecord | None: ...

    def list_quarantine(self) -> Iterator[QuarantineRecord]: ...

    def remove_quarantine(self, quarantine_id: str) -> bool: ...


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
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
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
        if not quarantine_id.isalnum():
            raise ValueError(f"bad quarantine id {quarantine_id!r}")
        return self.root / "quarantine" / f"{quarantine_id}.json"

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


def open_store(url: str, *, endpoint_url: str | None = None, region: str | None = None) -> DocumentStore:
    """Open the store named by ``url``: ``file:///path`` or ``s3://bucket/prefix``."""
    if url.startswith("file://"):
        return FileStore(url.removeprefix("file://"))
    if url.startswith("s3://"):
        from pipeline.s3 import S3Store

        return S3Store.from_url(url, endpoint_url=endpoint_url, region=region)
    raise ConfigurationError(f"unsupported store URL {url!r} (want file:// or s3://)")
