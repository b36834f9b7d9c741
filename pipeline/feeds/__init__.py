"""Producer feeds: where batches are dropped and how Carnet finds the complete ones.

Layout, for folders and S3 alike: ``<root>/<producer>/<batch>/…files…``. A batch is
complete when its ``_READY`` marker or its ``_manifest.json`` is present. A manifest
lists ``{"files": [{"name", "size", "sha256"}]}``; a file that does not match it is
rejected with ``manifest_mismatch``, and so is every file of a batch whose manifest
cannot be read (``BatchRef.manifest_error``): the batch is listed, answered, and the
feed's other batches run. Carnet writes its acknowledgement ``_report.json``
(and HL7 ACKs under ``_ack/``) back into the batch. A batch's identity is its key and its
delivery (``BatchRef.delivery``, a fingerprint of its listing): the same name closed
again (marker or manifest written again) is a new delivery, processed again.

``FolderFeed`` (``pipeline.feeds.folder``) and ``S3Feed`` (``pipeline.feeds.s3``) implement
the ``Feed`` protocol (``pipeline.feeds.base``); ``open_feed`` picks one from a URL. Which
feeds exist is ``pipeline.feeds.config``; which of their batches to run, ``pipeline.feeds.plan``.
"""

from __future__ import annotations

from pipeline.errors import ConfigurationError
from pipeline.feeds.base import (
    ACK_DIR,
    CONTROL_NAMES,
    MANIFEST,
    READY_MARKER,
    REPORT,
    BatchRef,
    Feed,
    ManifestEntry,
    UnlistedFolder,
    printable_name,
)
from pipeline.feeds.folder import FolderFeed, iter_folder_files, read_regular_file
from pipeline.store import sha256_hex

__all__ = [
    "ACK_DIR",
    "CONTROL_NAMES",
    "MANIFEST",
    "READY_MARKER",
    "REPORT",
    "BatchRef",
    "Feed",
    "FolderFeed",
    "ManifestEntry",
    "UnlistedFolder",
    "iter_folder_files",
    "open_feed",
    "printable_name",
    "read_regular_file",
    "verify_manifest",
]


def open_feed(url: str, *, endpoint_url: str | None = None, region: str | None = None) -> Feed:
    """``FolderFeed`` for a path or ``file://`` URL, ``S3Feed`` for ``s3://bucket/prefix``."""
    if url.startswith("s3://"):
        from pipeline.feeds.s3 import S3Feed  # boto3 only when an S3 feed is configured

        return S3Feed.from_url(url, endpoint_url=endpoint_url, region=region)
    if url.startswith("file://"):
        return FolderFeed(url.removeprefix("file://"))
    if "://" in url:
        raise ConfigurationError(f"unsupported feed URL {url!r} (want a folder, file:// or s3://)")
    return FolderFeed(url)


def verify_manifest(entry: ManifestEntry, data: bytes) -> str | None:
    """Why ``data`` disagrees with its manifest entry (size, then SHA-256), or None."""
    if entry.size is not None and entry.size != len(data):
        return f"size {len(data)} bytes, manifest says {entry.size}"
    if entry.sha256 is not None:
        actual = sha256_hex(data)
        if actual != entry.sha256.lower():
            return f"sha256 {actual}, manifest says {entry.sha256}"
    return None
