"""Raw-document store: every input kept byte-for-byte, content-addressed by SHA-256,
plus the quarantine of rejected documents with their reason records.

``FileStore`` (``file://`` URL, the default, in ``pipeline.store.file``) and ``S3Store``
(``s3://bucket/prefix``, in ``pipeline.store.s3``) implement the same ``DocumentStore``
protocol (``pipeline.store.base``) and pass the same contract tests; ``open_store``
picks one from a URL. The encrypting wrapper is ``pipeline.crypto.EncryptedStore``.
"""

from __future__ import annotations

from pipeline.errors import ConfigurationError
from pipeline.store.base import (
    DocumentStore,
    KeyedStore,
    QuarantineAttempt,
    QuarantineRecord,
    sha256_hex,
)
from pipeline.store.file import FileStore

__all__ = [
    "DocumentStore",
    "FileStore",
    "KeyedStore",
    "QuarantineAttempt",
    "QuarantineRecord",
    "open_store",
    "sha256_hex",
]


def open_store(
    url: str, *, endpoint_url: str | None = None, region: str | None = None, sync: str = "auto"
) -> DocumentStore:
    """Open the store named by ``url``: ``file:///path`` or ``s3://bucket/prefix``
    (``sync``: how a file store makes writes durable, see ``FileStore``)."""
    if url.startswith("file://"):
        return FileStore(url.removeprefix("file://"), sync=sync)
    if url.startswith("s3://"):
        from pipeline.store.s3 import S3Store  # boto3 only when an S3 store is configured

        return S3Store.from_url(url, endpoint_url=endpoint_url, region=region)
    raise ConfigurationError(f"unsupported store URL {url!r} (want file:// or s3://)")
