"""Opening a feed from its URL (folder path, ``file://`` or ``s3://``) and checking a
file against its batch manifest."""

from __future__ import annotations

from pipeline.errors import ConfigurationError
from pipeline.feeds import Feed, FolderFeed, ManifestEntry
from pipeline.store import sha256_hex


def open_feed(url: str, *, endpoint_url: str | None = None, region: str | None = None) -> Feed:
    """``FolderFeed`` for a path or ``file://`` URL, ``S3Feed`` for ``s3://bucket/prefix``."""
    if url.startswith("s3://"):
        from pipeline.s3 import S3Feed  # boto3 only when an S3 feed is configured

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
