"""``S3Feed``: a producer feed in an S3 bucket, and plain reads of an S3 prefix
(``iter_s3_prefix``, for the CLI)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from pipeline.errors import SourceError, UnreadableFileError
from pipeline.feeds.base import (
    ACK_DIR,
    CONTROL_NAMES,
    MANIFEST,
    READY_MARKER,
    BatchRef,
    UnlistedFolder,
    delivery_fingerprint,
    is_control_file,
    is_delivered_file,
    read_manifest,
)
from pipeline.s3 import Bucket, PrefixedBucket, is_access_denied, make_client, parse_s3_url, translated


class S3Feed(PrefixedBucket):
    """A producer feed under ``s3://bucket/<root>/<producer>/<batch>/…``; same contract as
    ``FolderFeed``."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", *, page_size: int | None = None) -> None:
        super().__init__(client, bucket, prefix, page_size=page_size)
        self.unlisted: list[UnlistedFolder] = []
        self.stray: list[str] = []

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        page_size: int | None = None,
    ) -> S3Feed:
        bucket, prefix = parse_s3_url(url)
        return cls(make_client(endpoint_url=endpoint_url, region=region), bucket, prefix, page_size=page_size)

    def _errors(self, action: str, source: str | None = None) -> AbstractContextManager[None]:
        return translated(SourceError, f"S3 feed cannot {action}", source or self.url)

    def list_batches(self) -> list[BatchRef]:
        batches: list[BatchRef] = []
        self.unlisted = []
        with self._errors("list batches"):
            producer_prefixes, loose = self.bucket.children(self.prefix)
        self.stray = self._stray(loose)
        # Delimiter listings: one request per page of producers or batches, however many
        # documents the batches hold. A producer's prefix Carnet is denied (a bucket
        # policy) is that producer's problem: recorded in unlisted, the others run; any
        # other error fails the listing, to be retried.
        for producer_prefix in sorted(producer_prefixes):
            producer = producer_prefix.removeprefix(self.prefix).rstrip("/")
            try:
                with self._errors("list batches", f"s3://{self.bucket.name}/{producer_prefix}"):
                    batch_prefixes, loose = self.bucket.children(producer_prefix)
                    self.stray.extend(self._stray(loose))
                    for batch_prefix in sorted(batch_prefixes):
                        ref = self._batch(producer, batch_prefix)
                        if ref is not None:
                            batches.append(ref)
            except SourceError as exc:
                if not is_access_denied(exc.__cause__):
                    raise
                why = f"prefix cannot be listed: {exc}"
                self.unlisted.append(UnlistedFolder(producer=producer, reason=why))
        return batches

    def _stray(self, keys: list[str]) -> list[str]:
        """Objects outside any batch, relative to the feed's root; folder placeholders
        (keys ending in "/") and hidden names left out."""
        names = (k.removeprefix(self.prefix) for k in keys)
        return [n for n in names if not n.endswith("/") and not n.rsplit("/", 1)[-1].startswith(".")]

    def _batch(self, producer: str, batch_prefix: str) -> BatchRef | None:
        # An object's version stamp for the delivery: an upload, even of the same bytes,
        # changes its LastModified.
        versions = {
            o["Key"].removeprefix(batch_prefix): f"{o.get('Size')}:{o.get('ETag')}:{o.get('LastModified')}"
            for o in self.bucket.objects(batch_prefix)
        }
        names = list(versions)
        manifest, manifest_error = None, None
        if MANIFEST in names:
            data = self.bucket.get(batch_prefix + MANIFEST)
            if data is None:
                return None  # removed since listed: the producer is re-uploading
            where = f"s3://{self.bucket.name}/{batch_prefix}{MANIFEST}"
            manifest, manifest_error = read_manifest(data, where=where)
        elif READY_MARKER not in names:
            return None  # still being uploaded
        # Keys ending in "/" are folder placeholders some upload tools create.
        files = tuple(sorted(n for n in names if n and not n.endswith("/") and not is_control_file(n)))
        batch = batch_prefix.removeprefix(self.prefix).removeprefix(f"{producer}/").rstrip("/")
        return BatchRef(
            feed_url=self.url,
            producer=producer,
            batch=batch,
            files=files,
            manifest=manifest,
            manifest_error=manifest_error,
            delivery=delivery_fingerprint((n, v) for n, v in versions.items() if is_delivered_file(n)),
        )

    def _key(self, batch: BatchRef, name: str) -> str:
        return f"{self.prefix}{batch.producer}/{batch.batch}/{name}"

    def read(self, batch: BatchRef, name: str) -> bytes:
        uri = self.source_uri(batch, name)
        with self._errors("read a file", uri):
            data = self.bucket.get(self._key(batch, name))
        if data is None:
            # Removed since the batch was listed: the producer's doing, rejected unreadable_file.
            raise UnreadableFileError("no such object in the batch (removed since it was listed)", source=uri)
        return data

    def source_uri(self, batch: BatchRef, name: str) -> str:
        return f"s3://{self.bucket.name}/{self._key(batch, name)}"

    def write(self, batch: BatchRef, name: str, data: bytes) -> None:
        uri = self.source_uri(batch, name)
        content_type = "application/json" if name.endswith(".json") else "application/octet-stream"
        with self._errors("write an acknowledgement", uri):
            self.bucket.put(self._key(batch, name), data, content_type)


def iter_s3_prefix(
    url: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
) -> Iterator[tuple[str, bytes | None]]:
    """``(s3://bucket/key, bytes)`` of every document under ``url``, in key order; control
    files (``_READY``, manifests, reports, ``_ack/``, dot-files) left out. ``None`` for
    the bytes of an object removed since it was listed: an input all the same."""
    bucket_name, prefix = parse_s3_url(url)
    bucket = Bucket(make_client(endpoint_url=endpoint_url, region=region), bucket_name)
    with translated(SourceError, "cannot read S3 prefix", url):
        for key in bucket.keys(prefix):
            parts = key.removeprefix(prefix).split("/")
            if (
                key.endswith("/")
                or parts[-1] in CONTROL_NAMES
                or parts[-1].startswith(".")
                or ACK_DIR in parts
            ):
                continue
            # An object gone since listed was left out in silence: the caller rejects it.
            yield f"s3://{bucket_name}/{key}", bucket.get(key)
