"""``S3Store``: the raw-document store in an S3 bucket (``s3://bucket/prefix``).

Objects are written with server-side encryption requested (see ``pipeline.s3``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager

from pipeline.errors import BackendUnavailable
from pipeline.s3 import PrefixedBucket, make_client, parse_s3_url, translated
from pipeline.store.base import (
    QuarantineRecord,
    anchor_name,
    check_quarantine_id,
    check_sha256,
    sha256_hex,
)

# PUTs of one batch in flight at once: within botocore's default pool of 10 connections.
_PUTS_IN_FLIGHT = 8


class S3Store(PrefixedBucket):
    """Content-addressed objects under ``prefix/objects/ab/cdef…`` and quarantine records
    under ``prefix/quarantine/<id>.json``; same contract as ``FileStore``."""

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        create_bucket: bool = False,
        page_size: int | None = None,
    ) -> S3Store:
        bucket, prefix = parse_s3_url(url)
        store = cls(
            make_client(endpoint_url=endpoint_url, region=region), bucket, prefix, page_size=page_size
        )
        if create_bucket:
            with store._errors("create bucket"):
                store.bucket.ensure_exists(region)
        return store

    def _errors(self, action: str) -> AbstractContextManager[None]:
        return translated(BackendUnavailable, f"S3 store cannot {action}", self.url)

    def _key(self, sha256: str) -> str:
        check_sha256(sha256)
        return f"{self.prefix}objects/{sha256[:2]}/{sha256[2:]}"

    def _qkey(self, quarantine_id: str) -> str:
        return f"{self.prefix}quarantine/{check_quarantine_id(quarantine_id)}.json"

    def put(self, data: bytes) -> str:
        digest = sha256_hex(data)
        key = self._key(digest)
        # No HEAD first: the key is the bytes' own hash, so writing them again changes
        # nothing, and the bytes Carnet stores are ciphertexts under a fresh nonce, which
        # are never the same twice: a check would cost a request for every object.
        with self._errors("store an object"):
            self.bucket.put(key, data, "application/octet-stream")
        return digest

    def put_all(self, items: Sequence[bytes]) -> list[str]:
        """``put`` of each, ``_PUTS_IN_FLIGHT`` at once: a PUT is a network round trip
        (milliseconds on a LAN, tens of them to a cloud region) that a flush's objects need
        not wait for one after the other. The client is thread-safe and pools as many
        connections."""
        if len(items) <= 1:
            return [self.put(data) for data in items]
        with ThreadPoolExecutor(max_workers=min(_PUTS_IN_FLIGHT, len(items))) as pool:
            futures = [pool.submit(self.put, data) for data in items]
        # The first failure is raised, the other puts having run to their end.
        return [future.result() for future in futures]

    def sync(self) -> None:
        """Nothing to do: S3 answers a PUT once the object is durable."""

    def get(self, sha256: str) -> bytes:
        key = self._key(sha256)
        with self._errors("read an object"):
            data = self.bucket.get(key)
        if data is None:
            raise KeyError(sha256)
        return data

    def exists(self, sha256: str) -> bool:
        key = self._key(sha256)
        with self._errors("check an object"):
            found = self.bucket.head(key) is not None
        return found

    def delete(self, sha256: str) -> bool:
        key = self._key(sha256)
        with self._errors("delete an object"):
            if self.bucket.head(key) is None:
                return False
            self.bucket.delete(key)
        return True

    def iter_hashes(self) -> Iterator[str]:
        base = f"{self.prefix}objects/"
        with self._errors("list objects"):
            for key in self.bucket.keys(base):
                sub, _, rest = key.removeprefix(base).partition("/")
                digest = sub + rest
                if len(sub) == 2 and len(digest) == 64:
                    yield digest

    def put_quarantine(self, record: QuarantineRecord) -> None:
        key = self._qkey(record.quarantine_id)
        with self._errors("store a quarantine record"):
            self.bucket.put(key, record.model_dump_json().encode(), "application/json")

    def get_quarantine(self, quarantine_id: str) -> QuarantineRecord | None:
        key = self._qkey(quarantine_id)
        with self._errors("read a quarantine record"):
            data = self.bucket.get(key)
        return None if data is None else QuarantineRecord.model_validate_json(data)

    def list_quarantine(self) -> Iterator[QuarantineRecord]:
        base = f"{self.prefix}quarantine/"
        with self._errors("list quarantine records"):
            for key in self.bucket.keys(base):
                name = key.removeprefix(base)
                if "/" in name or not name.endswith(".json"):
                    continue
                data = self.bucket.get(key)
                if data is not None:  # removed between listing and reading
                    yield QuarantineRecord.model_validate_json(data)

    def remove_quarantine(self, quarantine_id: str) -> bool:
        key = self._qkey(quarantine_id)
        with self._errors("remove a quarantine record"):
            if self.bucket.head(key) is None:
                return False
            self.bucket.delete(key)
        return True

    def put_anchor(self, kind: str, seq: int, data: bytes) -> None:
        # Write-once names; a bucket with S3 Object Lock (compliance mode) makes them immutable.
        key = self.prefix + anchor_name(kind, seq)
        with self._errors("store an anchor"):
            if self.bucket.head(key) is None:
                self.bucket.put(key, data, "application/json")

    def latest_anchor(self, kind: str) -> bytes | None:
        base = self.prefix + anchor_name(kind, 0).rsplit("/", 1)[0] + "/"
        with self._errors("read anchors"):
            keys = [k for k in self.bucket.keys(base) if k.endswith(".json")]
            return self.bucket.get(max(keys)) if keys else None
