"""The S3 access shared by the S3 store (``pipeline.store.s3``) and the S3 feed
(``pipeline.feeds.s3``): URL parsing, the client, one bucket's reads and writes, and
boto errors turned into Carnet's. Works on AWS S3 or any S3-compatible server.

The endpoint and region come from the caller (``Settings.s3.endpoint_url``,
``Settings.s3.region``); access keys come from boto3's default chain (environment,
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
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from pipeline.errors import CarnetError, ConfigurationError

log = logging.getLogger(__name__)

SSE_ALGORITHM = "AES256"
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix/")`` (prefix "" at the root).

    The prefix is taken as written: S3 keys may hold ``#``, ``?`` and ``;``, which a URL
    parser reads as a fragment or a query (``s3://b/labo#2`` was the prefix ``labo/``, of
    another producer's folder)."""
    bucket, _, path = url.removeprefix("s3://").partition("/") if url.startswith("s3://") else ("", "", "")
    if not bucket or any(c in bucket for c in "?#"):
        raise ConfigurationError(f"not an s3://bucket/prefix URL: {url!r}")
    prefix = path.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def make_client(*, endpoint_url: str | None = None, region: str | None = None) -> Any:
    """An S3 client; keys and profile come from boto3's default credential chain."""
    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        # Custom endpoints (MinIO, Ceph…) rarely resolve bucket subdomains.
        s3={"addressing_style": "path" if endpoint_url else "auto"},
    )
    # A session per client: boto3's default session is shared process-wide state.
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_not_found(exc: ClientError) -> bool:
    return _error_code(exc) in _NOT_FOUND


def is_access_denied(exc: BaseException | None) -> bool:
    """Whether S3 refused the request for Carnet's rights (not a fault of the service)."""
    return isinstance(exc, ClientError) and _error_code(exc) in ("AccessDenied", "AllAccessDisabled")


class Bucket:
    """One bucket through one client: paginated listing and writes with SSE requested."""

    def __init__(self, client: Any, bucket: str, *, page_size: int | None = None) -> None:
        self.client = client
        self.name = bucket
        self.page_size = page_size
        self._sse: bool | None = None  # None until the first write tells us
        self._sse_lock = threading.Lock()

    def keys(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix``, in S3's (lexicographic) order, page by page."""
        for obj in self.objects(prefix):
            yield obj["Key"]

    def objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Every object under ``prefix`` as listed (``Key``, ``Size``, ``ETag``,
        ``LastModified``…), in key order, page by page."""
        for page in self._pages(Prefix=prefix):
            yield from page.get("Contents", ())

    def subprefixes(self, prefix: str) -> Iterator[str]:
        """The "folders" directly under ``prefix`` (``prefix + name + "/"``), without
        listing the objects inside them."""
        yield from self.children(prefix)[0]

    def children(self, prefix: str) -> tuple[list[str], list[str]]:
        """The "folders" directly under ``prefix`` and the keys directly under it, in one
        delimiter listing (the objects inside the folders are not listed)."""
        folders: list[str] = []
        keys: list[str] = []
        for page in self._pages(Prefix=prefix, Delimiter="/"):
            folders.extend(common["Prefix"] for common in page.get("CommonPrefixes", ()))
            keys.extend(obj["Key"] for obj in page.get("Contents", ()))
        return folders, keys

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
                self.client.put_object(
                    Bucket=self.name,
                    Key=key,
                    Body=data,
                    ContentType=content_type,
                    ServerSideEncryption=SSE_ALGORITHM,
                )
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
                            "writing objects unencrypted",
                            self.name,
                            exc,
                        )
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


class PrefixedBucket:
    """A bucket and a key prefix in it: what the S3 store and the S3 feed both stand on."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        page_size: int | None = None,
    ) -> None:
        self.bucket = Bucket(client, bucket, page_size=page_size)
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")


@contextmanager
def translated(error_type: type[CarnetError], message: str, source: str) -> Iterator[None]:
    """Turn boto errors into Carnet's: ``error_type("<message>: <cause>", source=…)``."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise error_type(f"{message}: {exc}", source=source) from exc
