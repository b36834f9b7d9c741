"""What every producer feed is: the batch layout's control names, the batch reference
and its manifest, and the ``Feed`` protocol."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

from pipeline.errors import SourceError
from pipeline.model import Frozen

READY_MARKER = "_READY"
MANIFEST = "_manifest.json"
REPORT = "_report.json"
ACK_DIR = "_ack"
# Files Carnet or the producer's tooling write that are not documents.
CONTROL_NAMES = frozenset({READY_MARKER, MANIFEST, REPORT})


class ManifestEntry(Frozen):
    name: str
    size: int | None = None
    sha256: str | None = None


class BatchRef(Frozen):
    """A complete batch: ``producer/batch`` under a feed root."""

    feed_url: str  # folder path or s3://bucket/prefix of the feed root
    producer: str
    batch: str
    files: tuple[str, ...]  # names relative to the batch, sorted
    manifest: tuple[ManifestEntry, ...] | None = None
    # Why its manifest could not be read, if so: the batch is complete all the same, and
    # its files are refused (the producer vouched for none of them), the feed's others run.
    manifest_error: str | None = None
    # A fingerprint of the batch's files as listed (names, sizes, modification stamps or
    # S3 ETags and dates; never Carnet's own files), in two parts: its closing files
    # (marker, manifest), its documents. The same name closed again, even over the very
    # same bytes, is another delivery (``closed_again``).
    delivery: str = ""

    @property
    def key(self) -> str:
        return f"{self.producer}/{self.batch}"


class UnlistedFolder(Frozen):
    """A producer's folder (or one batch of it) the feed could not list: its permissions,
    or an S3 prefix Carnet is denied. That producer's problem, alerted; the others run."""

    producer: str
    batch: str | None = None  # None: the whole producer folder
    reason: str


def delivery_fingerprint(versions: Iterable[tuple[str, str]]) -> str:
    """``BatchRef.delivery`` from each listed file's (name, version stamp): the digest of
    the closing files' stamps (marker, manifest), ``:``, the digest of the documents'."""
    closing: list[str] = []
    documents: list[str] = []
    for name, version in versions:
        (closing if name in (READY_MARKER, MANIFEST) else documents).append(
            f"{printable_name(name)}\x1f{version}"
        )
    return ":".join(
        hashlib.sha256("\x1e".join(sorted(lines)).encode()).hexdigest()[:32] for lines in (closing, documents)
    )


def closed_again(decided: str, current: str) -> bool:
    """Whether a batch's marker or manifest was written again since the delivery decided:
    the producer closed it anew, a new delivery to process. Documents changed under a
    batch not closed again may be an upload still under way: never processed half."""
    return decided.partition(":")[0] != current.partition(":")[0]


def is_delivered_file(name: str) -> bool:
    """Whether ``name`` is the producer's part of a batch's delivery: a document, the
    marker or the manifest (not Carnet's report and ACKs, nor hidden files)."""
    return name in (READY_MARKER, MANIFEST) or not is_control_file(name)


def printable_name(name: str) -> str:
    """A file name or path as text fit for reports, acknowledgements and the ledger.

    POSIX names are bytes: Python hands a name that is not UTF-8 over with its bad bytes
    as lone surrogates (``surrogateescape``), which no JSON, SQLite or S3 write accepts.
    Those bytes become ``\\xNN`` escapes here; every other name is returned unchanged.
    """
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that does not stand for a byte
        raw = name.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def is_control_file(name: str) -> bool:
    """Whether ``name`` (a path below a batch or a folder given to ingest) is no document:
    a feed's control file, or hidden — a name or a folder on its way starting with a dot
    (``.DS_Store``, ``.git/``, a file manager's ``.Trash-1000/``)."""
    first = name.split("/", 1)[0]
    return name in CONTROL_NAMES or first == ACK_DIR or any(part.startswith(".") for part in Path(name).parts)


def read_manifest(data: bytes, *, where: str) -> tuple[tuple[ManifestEntry, ...] | None, str | None]:
    """(entries, None), or (None, why) for a manifest that cannot be read: one producer's
    broken manifest is its batch's problem, never the whole feed listing's."""
    try:
        return parse_manifest(data, where=where), None
    except SourceError as exc:
        return None, exc.message


def parse_manifest(data: bytes, *, where: str) -> tuple[ManifestEntry, ...]:
    try:
        raw = json.loads(data)
        return tuple(ManifestEntry.model_validate(f) for f in raw["files"])
    # RecursionError: json's decoder recurses per nesting level ("[[[[…" a producer wrote).
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise SourceError(f"unreadable batch manifest: {exc}", source=where) from exc


@runtime_checkable
class Feed(Protocol):
    url: str
    # The folders the last ``list_batches`` could not list (one producer's problem each).
    unlisted: list[UnlistedFolder]
    # What the last listing found outside any batch, relative to the root (a file at the
    # feed's or a producer's level, a link to a folder): never processed, alerted.
    stray: list[str]

    def list_batches(self) -> list[BatchRef]:
        """Every complete batch currently in the feed (processed or not); a producer or
        batch folder that cannot be listed goes to ``unlisted`` instead of failing all."""
        ...

    def read(self, batch: BatchRef, name: str) -> bytes: ...

    def source_uri(self, batch: BatchRef, name: str) -> str:
        """The URI written in reports for one file of a batch."""
        ...

    def write(self, batch: BatchRef, name: str, data: bytes) -> None:
        """Write an acknowledgement file into the batch (report, HL7 ACK)."""
        ...
