"""S3 backends: the raw-document store (``S3Store``), the producer feed (``S3Feed``) and
plain prefix reads (``iter_s3_prefix``), on AWS S3 or any S3-compatible server.

The endpoint and region come from the caller (``Settings.s3_endpoint_url``,
``Settings.s3_region``); access keys come from boto3's default chain (environment,
profile, instance role), never from Carnet's code or settings.

Everything Carnet writes asks for server-side encryption (SSE-S3, ``AES256``). A server
that cannot do it (MinIO without a KMS answers ``NotImplemented``) is detected at the
first write; Carnet then writes unencrypted on that server and logs one warning. Any
other refusal is an error: silently dropping encryption on a misconfigured bucket is
not acceptable for health data.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pipeline.errors import BackendUnavailable, CarnetError, ConfigurationError, SourceError
from pipeline.feeds import (
    ACK_DIR,
    CONTROL_NAMES,
    MANIFEST,
    READY_MARKER,
    BatchRef,
    is_control_file,
    parse_manifest,
)
from pipeline.store import QuarantineRecord, sha256_hex

log = logging.getLogger(__name__)

SSE_ALGORITHM = "AES256"
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix/")`` (prefix "" at the root)."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigurationError(f"not an s3://bucket/prefix URL: {url!r}")
    prefix = parsed.path.strip("/")
    return parsed.netloc, f"{prefix}/" if prefix else ""


def make_client(*, endpoint_url: str | None = None, region: str | None = None) -> Any:
    """An S3 client; keys and profile come from boto3's default credential chain."""
    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        # Custom endpoints (MinIO, Ceph…) rarely resolve bucket subdomains.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
    )
    # A session per client: boto3's default session is shared process-wide state.
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, region_name=region, config=config
    )


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_not_found(exc: ClientError) -> bool:
    return _error_code(exc) in _NOT_FOUND


class _Bucket:
    """One bucket through one client: paginated listing and writes with SSE requested."""

    def __init__(self, client: Any, bucket: str, *, page_size: int | None = None) -> None:
        self.client = client
        self.name = bucket
        self.page_size = page_size
        self._sse: bool | None = None  # None until the first write tells us
        self._sse_lock = threading.Lock()

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix``, in S3's (lexicographic) order, page by page."""
        for page in self._pages(Prefix=prefix):
            for obj in page.get("Contents", ()):
                yield obj["Key"]

    def subprefixes(self, prefix: str) -> Iterator[str]:
        """The "folders" directly under ``prefix`` (``prefix + name + "/"``), without
        listing the objects inside them."""
        for page in self._pages(Prefix=prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", ()):
                yield common["Prefix"]

    def _pages(self, **kwargs: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        config = {"PageSize": self.page_size} if self.page_size else {}
        yield from paginator.paginate(Bucket=self.name, PaginationConfig=config, **kwargs)

    def head(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.head_object(Bucket=self.name, Key=key))
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise

    def get(self, key: str) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.name, Key=key)
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise
        body: bytes = response["Body"].read()
        return body

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if self._sse is not False:
            try:
                self.client.put_object(Bucket=self.name, Key=key, Body=data, ContentType=content_type,
                                       ServerSideEncryption=SSE_ALGORITHM)
                self._sse = True
                return
            except ClientError as exc:
                # Fall back only on the first write and only for "cannot do SSE at all";
                # once a write went through encrypted, a refusal is a real error.
                if self._sse is True or _error_code(exc) != "NotImplemented":
                    raise
                with self._sse_lock:
                    if self._sse is None:
                        log.warning(
                            "s3://%s: server cannot do server-side encryption (%s); "
                            "writing objects unencrypted", self.name, exc)
                    self._sse = False
        self.client.put_object(Bucket=self.name, Key=key, Body=data, ContentType=content_type)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=key)

    def ensure_exists(self, region: str | None) -> None:
        try:
            self.client.head_bucket(Bucket=self.name)
            return
        except ClientError as exc:
            if not _is_not_found(exc):
                raise
        kwargs: dict[str, Any] = {}
        if region and region != "us-east-1":  # us-east-1 rejects an explicit constraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(Bucket=self.name, **kwargs)
        except ClientError as exc:
            if _error_code(exc) != "BucketAlreadyOwnedByYou":
                raise
        log.info("created bucket s3://%s", self.name)


def _check_sha(sha256: str) -> str:
    if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


def _check_quarantine_id(quarantine_id: str) -> str:
    if not quarantine_id.isalnum():
        raise ValueError(f"bad quarantine id {quarantine_id!r}")
    return quarantine_id


class S3Store:
    """Content-addressed objects under ``prefix/objects/ab/cdef…`` and quarantine records
    under ``prefix/quarantine/<id>.json``; same contract as ``FileStore``."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", *, page_size: int | None = None,
                 ) -> None:
        self.bucket = _Bucket(client, bucket, page_size=page_size)
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None, region: str | None = None,
                 create_bucket: bool = False, page_size: int | None = None) -> S3Store:
        bucket, prefix = parse_s3_url(url)
        store = cls(make_client(endpoint_url=endpoint_url, region=region), bucket, prefix,
                    page_size=page_size)
        if create_bucket:
            with store._errors("create bucket"):
                store.bucket.ensure_exists(region)
        return store

    def _errors(self, action: str) -> AbstractContextManager[None]:
        return _translated(BackendUnavailable, f"S3 store cannot {action}", self.url)

    def _key(self, sha256: str) -> str:
        _check_sha(sha256)
        return f"{self.prefix}objects/{sha256[:2]}/{sha256[2:]}"

    def _qkey(self, quarantine_id: str) -> str:
        return f"{self.prefix}quarantine/{_check_quarantine_id(quarantine_id)}.json"

    def put(self, data: bytes) -> str:
        digest = sha256_hex(data)
        key = self._key(digest)
        with self._errors("store an object"):
            if self.bucket.head(key) is None:
                self.bucket.put(key, data, "application/octet-stream")
        return digest

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


class S3Feed:
    """A producer feed under ``s3://bucket/<root>/<producer>/<batch>/…``; same contract as
    ``FolderFeed``."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", *, page_size: int | None = None,
                 ) -> None:
        self.bucket = _Bucket(client, bucket, page_size=page_size)
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")

    @classmethod
    def from_url(cls, url: str, *, endpoint_url: str | None = None, region: str | None = None,
                 page_size: int | None = None) -> S3Feed:
        bucket, prefix = parse_s3_url(url)
        return cls(make_client(endpoint_url=endpoint_url, region=region), bucket, prefix,
                   page_size=page_size)

    def _errors(self, action: str, source: str | None = None) -> AbstractContextManager[None]:
        return _translated(SourceError, f"S3 feed cannot {action}", source or self.url)

    def list_batches(self) -> list[BatchRef]:
        batches = []
        with self._errors("list batches"):
            # Delimiter listings: one request per page of producers or batches, however
            # many documents the batches hold.
            for producer_prefix in sorted(self.bucket.subprefixes(self.prefix)):
                producer = producer_prefix.removeprefix(self.prefix).rstrip("/")
                for batch_prefix in sorted(self.bucket.subprefixes(producer_prefix)):
                    ref = self._batch(producer, batch_prefix)
                    if ref is not None:
                        batches.append(ref)
        return batches

    def _batch(self, producer: str, batch_prefix: str) -> BatchRef | None:
        names = [k.removeprefix(batch_prefix) for k in self.bucket.keys(batch_prefix)]
        manifest = None
        if MANIFEST in names:
            data = self.bucket.get(batch_prefix + MANIFEST)
            if data is None:
                return None  # removed since listed: the producer is re-uploading
            manifest = parse_manifest(data, where=f"s3://{self.bucket.name}/{batch_prefix}{MANIFEST}")
        elif READY_MARKER not in names:
            return None  # still being uploaded
        # Keys ending in "/" are folder placeholders some upload tools create.
        files = tuple(sorted(n for n in names if n and not n.endswith("/") and not is_control_file(n)))
        batch = batch_prefix.removeprefix(self.prefix).removeprefix(f"{producer}/").rstrip("/")
        return BatchRef(feed_url=self.url, producer=producer, batch=batch, files=files,
                        manifest=manifest)

    def _key(self, batch: BatchRef, name: str) -> str:
        return f"{self.prefix}{batch.producer}/{batch.batch}/{name}"

    def read(self, batch: BatchRef, name: str) -> bytes:
        uri = self.source_uri(batch, name)
        with self._errors("read a file", uri):
            data = self.bucket.get(self._key(batch, name))
        if data is None:
            raise SourceError("no such object in the batch", source=uri)
        return data

    def source_uri(self, batch: BatchRef, name: str) -> str:
        return f"s3://{self.bucket.name}/{self._key(batch, name)}"

    def write(self, batch: BatchRef, name: str, data: bytes) -> None:
        uri = self.source_uri(batch, name)
        content_type = "application/json" if name.endswith(".json") else "application/octet-stream"
        with self._errors("write an acknowledgement", uri):
            self.bucket.put(self._key(batch, name), data, content_type)


def iter_s3_prefix(url: str, *, endpoint_url: str | None = None, region: str | None = None,
                   ) -> Iterator[tuple[str, bytes]]:
    """``(s3://bucket/key, bytes)`` of every document under ``url``, in key order; control
    files (``_READY``, manifests, reports, ``_ack/``, dot-files) left out."""
    bucket_name, prefix = parse_s3_url(url)
    bucket = _Bucket(make_client(endpoint_url=endpoint_url, region=region), bucket_name)
    with _translated(SourceError, "cannot read S3 prefix", url):
        for key in bucket.keys(prefix):
            parts = key.removeprefix(prefix).split("/")
            if key.endswith("/") or parts[-1] in CONTROL_NAMES or parts[-1].startswith(".") \
                    or ACK_DIR in parts:
                continue
            data = bucket.get(key)
            if data is not None:
                yield f"s3://{bucket_name}/{key}", data


@contextmanager
def _translated(error_type: type[CarnetError], message: str, source: str) -> Iterator[None]:
    """Turn boto errors into Carnet's: ``error_type("<message>: <cause>", source=…)``."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise error_type(f"{message}: {exc}", source=source) from exc
