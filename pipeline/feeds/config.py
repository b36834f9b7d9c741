"""The producers' feeds configuration: one TOML file listing every feed Carnet ingests.

Each ``[[feeds]]`` table names a feed (``id``), where its batches land (``kind`` folder
or s3, ``location``), who sends it (``producer``, ``finess``), what it should contain
(``formats``), when to look (``schedule``, a cron expression) and the thresholds the
monitoring alerts on (``max_reject_rate``, ``max_silence_hours``). See
``config/feeds.example.toml``. The file is read with the standard library only, so DAG
files may load it at parse time.
"""

from __future__ import annotations

import functools
import re
import tomllib
from enum import StrEnum
from pathlib import Path

from pydantic import Field, ValidationError, field_validator

from pipeline.errors import ConfigurationError
from pipeline.identifiers import is_finess
from pipeline.model import Frozen
from pipeline.settings import Settings

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# File extensions whose batches go through OCR (scans); PDFs may too, but rarely.
SCAN_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp"})


class FeedKind(StrEnum):
    FOLDER = "folder"
    S3 = "s3"


class FeedConfig(Frozen):
    """One producer feed."""

    id: str
    kind: FeedKind = FeedKind.FOLDER
    location: str  # folder path, or s3://bucket/prefix
    producer: str | None = None  # human name of the sender
    finess: str | None = None  # FINESS of the producing establishment (9 digits)
    formats: tuple[str, ...] = ()  # expected: pdf, image, hl7v2, cda
    schedule: str = "*/15 * * * *"  # cron: the safety-net look at the feed
    max_reject_rate: float = Field(default=0.5, ge=0.0, le=1.0)
    max_silence_hours: float = Field(default=48.0, gt=0)
    scans: bool = False  # the producer sends scans: every batch of it is OCR-heavy

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("feed id must be lower-case letters, digits, '-' or '_' (DAG-id safe)")
        return value

    @field_validator("finess")
    @classmethod
    def _check_finess(cls, value: str | None) -> str | None:
        if value is not None and not is_finess(value):
            raise ValueError("FINESS must be 9 characters (digits, or 2A/2B + 7 digits)")
        return value

    @property
    def url(self) -> str:
        """The feed URL ``pipeline.feeds.open_feed`` reads."""
        if self.kind is FeedKind.S3 and not self.location.startswith("s3://"):
            raise ConfigurationError(f"feed {self.id}: kind s3 needs an s3:// location")
        return self.location

    @property
    def dag_id(self) -> str:
        return f"carnet_ingest_{self.id.replace('-', '_')}"

    @property
    def asset_uri(self) -> str:
        """The asset a producer (or a storage notification) updates when it closes a batch."""
        return f"carnet-feed://{self.id}"


class FeedsFile(Frozen):
    feeds: tuple[FeedConfig, ...] = ()


def load_feeds(path: Path) -> tuple[FeedConfig, ...]:
    """Every feed of the TOML file at ``path``; ids must be unique."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        feeds = FeedsFile.model_validate(raw).feeds
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ConfigurationError(f"cannot read feeds file {path}: {exc}") from exc
    seen: set[str] = set()
    for f in feeds:
        if f.id in seen:
            raise ConfigurationError(f"feeds file {path}: feed id {f.id!r} appears twice")
        seen.add(f.id)
    return feeds


def find_feed(
    feeds: tuple[FeedConfig, ...], *, feed_id: str | None = None, url: str | None = None
) -> FeedConfig | None:
    """The feed with this id, or whose location is this URL."""
    for f in feeds:
        if (feed_id is not None and f.id == feed_id) or (url is not None and f.location == url):
            return f
    return None


def is_scan_heavy(files: tuple[str, ...] | list[str], *, scans: bool = False) -> bool:
    """Whether a batch should run in the OCR pool, judged from its file names only."""
    return scans or any(Path(name).suffix.lower() in SCAN_EXTENSIONS for name in files)


def producer_name(settings: Settings, producer: str) -> str | None:
    """The human name the feeds file gives a producer id (what a patient reads), if any."""
    if settings.ingestion.feeds_file is None:
        return None
    return _producer_names(settings.ingestion.feeds_file).get(producer)


@functools.lru_cache(maxsize=4)
def _producer_names(path: Path) -> dict[str, str]:
    try:
        feeds = load_feeds(path)
    except ConfigurationError:
        return {}  # the API still answers; ingestion reports the broken file loudly
    return {f.id: f.producer for f in feeds if f.producer}
