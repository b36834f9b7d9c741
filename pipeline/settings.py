"""Carnet's one settings object, read once from the environment with embedded defaults.

Nothing below ``pipeline`` or ``parsers`` reads the environment: a ``Settings`` is built
at the edge (CLI, DAG, API) and passed down.

``Settings`` is a frozen pydantic-settings model whose only source is its keyword
arguments (``settings_customise_sources``): ``Settings(data_dir=…)`` never looks at the
environment, so a test or a caller gets exactly what it wrote, and validation is the same
for both ways in. ``Settings.from_env`` alone reads variables, through pydantic-settings'
own environment source (over ``os.environ`` or a given mapping), and passes them in under
the overrides. Each field's variable is its ``validation_alias``; an empty variable counts
as unset. An invalid value is a ``ConfigurationError`` naming the variable (or the keyword).
One class rather than a model plus a separate ``BaseSettings`` reader: the fields, their
variables and their checks are written once.

Sections, one frozen model per concern: ``index``, ``store``, ``s3`` (the S3 service the
store, S3 feeds and Data Docs share), ``state``, ``ocr``, ``kms``, ``ingestion`` (feeds,
verdict threshold, Data Docs, acknowledgements, flushes), ``alerts`` and ``api``. Three
fields stay at the top: ``data_dir``, because every section's embedded default lives under
it (the ``effective_*_url`` properties join the two), so a ``paths`` section would hold one
field; ``environment`` and ``worker_name``, which describe the process, not a backend.
The variables are those of the flat settings before, unchanged.

Keyword arguments take a section whole (``index=IndexSettings(url=…)``) or one field by its
flat name (``index_url=…``, ``FLAT_NAMES``), in ``Settings(…)`` as in ``from_env``'s
overrides: the CLI flags, the Airflow Connections and the tests set one field each, and a
flat name says that without building a section; an error names the keyword as given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from pipeline.errors import ConfigurationError


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# AWS_REGION wins over AWS_DEFAULT_REGION, as in boto3; S3 and the KMS read the same.
_REGION = AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")

MIN_HS256_KEY_BYTES = 32
LEEWAY_S = 30
MAX_LIFETIME_S = 12 * 3600


class ApiSettings(BaseModel):
    """How the API verifies the portal's tokens (``pipeline.api.auth``). Keys stay out of the repr.

    Clocks may disagree by ``leeway_s`` seconds; a token lives at most ``max_lifetime_s``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)

    # HS256 shared key.
    jwt_key: str | None = Field(default=None, repr=False, validation_alias="CARNET_API_JWT_KEY")
    # RS256: the portal's public key (PEM), or the path to its PEM file.
    jwt_public_key: str | None = Field(default=None, repr=False, validation_alias="CARNET_API_JWT_PUBLIC_KEY")
    audience: str | None = Field(default=None, validation_alias="CARNET_API_JWT_AUDIENCE")
    issuer: str | None = Field(default=None, validation_alias="CARNET_API_JWT_ISSUER")
    leeway_s: int = Field(default=LEEWAY_S, ge=0)
    max_lifetime_s: int = Field(
        default=MAX_LIFETIME_S, ge=1, validation_alias="CARNET_API_JWT_MAX_LIFETIME_S"
    )

    @field_validator("jwt_public_key")
    @classmethod
    def _pem(cls, value: str | None) -> str | None:
        if value and not value.lstrip().startswith("-----"):
            try:
                return Path(value).read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as e:
                raise ValueError(f"neither a PEM key nor a readable PEM file ({e})") from None
        return value

    def check(self) -> None:
        """Refuse to serve without a way to verify tokens, or with a guessable HS256 key."""
        if not self.jwt_key and not self.jwt_public_key:
            raise ConfigurationError(
                "no token key configured: set CARNET_API_JWT_KEY (or CARNET_API_JWT_PUBLIC_KEY for RS256)"
            )
        if self.jwt_key and len(self.jwt_key.encode()) < MIN_HS256_KEY_BYTES:
            raise ConfigurationError(f"CARNET_API_JWT_KEY must be at least {MIN_HS256_KEY_BYTES} bytes")


class _Section(BaseModel):
    """A section of ``Settings``: frozen, its fields set by name or by their variable."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)


class IndexSettings(_Section):
    """The search index."""

    # sqlite:///… (default under data_dir) or http(s)://host:9200
    url: str = Field(default="", validation_alias="CARNET_INDEX_URL")
    es_alias: str = Field(default="carnet-documents", validation_alias="CARNET_ES_ALIAS")


class StoreSettings(_Section):
    """The document store."""

    # file://… (default under data_dir) or s3://bucket/prefix
    url: str = Field(default="", validation_alias="CARNET_STORE_URL")
    # How a file:// store makes a flush durable: one syncfs of its filesystem, or an fsync
    # per file and folder; "auto" is syncfs on Linux >= 5.8 (pipeline.store.file says why).
    sync: Literal["auto", "syncfs", "fsync"] = Field(default="auto", validation_alias="CARNET_STORE_SYNC")


class S3Settings(_Section):
    """The S3 service the store, S3 feeds and Data Docs share (keys: boto3's own chain)."""

    endpoint_url: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL")
    # AWS_REGION wins over AWS_DEFAULT_REGION, as in boto3.
    region: str = Field(default="us-east-1", validation_alias=_REGION)


class StateSettings(_Section):
    """The state database (ledger, rules, audit, keys)."""

    # sqlite:///… (default under data_dir) or postgresql://…
    url: str = Field(default="", validation_alias="CARNET_STATE_URL")


class OcrSettings(_Section):
    """How documents without a text layer are read."""

    lang: str = Field(default="fra", validation_alias="CARNET_OCR_LANG")
    timeout_s: int = Field(default=120, ge=1)
    # Pages OCR'd at once, one tesseract process (one thread) each; 0 means 1 (never no OCR).
    workers: int = Field(default_factory=available_cpus, ge=0, validation_alias="CARNET_OCR_WORKERS")
    # Pages whose text layer holds fewer characters than this are OCR'd.
    min_text_chars_per_page: int = Field(default=20, ge=0)
    # Pages OCR'd per document; past it, the rest are left unread (``text_truncated``, the
    # document kept whole). A scan of thousands of pages would hold a lane for hours: 200
    # pages is ~2 minutes of tesseract on 2 cores, far beyond any report. 0: no limit.
    max_pages: int = Field(default=200, ge=0, validation_alias="CARNET_OCR_MAX_PAGES")

    @field_validator("workers")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        return max(1, value)


class KmsSettings(_Section):
    """The master key wrapping per-patient data keys: local, or held by a KMS."""

    # base64 key; kept out of the repr.
    master_key: str | None = Field(default=None, repr=False, validation_alias="CARNET_MASTER_KEY")
    # The master key held by an AWS-KMS-compatible service instead (key id, ARN or alias);
    # its endpoint is AWS_ENDPOINT_URL_KMS (AWS_ENDPOINT_URL names the S3 server here).
    key_id: str | None = Field(default=None, validation_alias="CARNET_KMS_KEY_ID")
    endpoint_url: str | None = Field(default=None, validation_alias="AWS_ENDPOINT_URL_KMS")
    # The same variables as S3's region; a Connection's region is S3's only.
    region: str = Field(default="us-east-1", validation_alias=_REGION)
    # Data keys opened by the KMS stay in memory this long, at most this many per process.
    cache_ttl_s: float = Field(default=300.0, ge=0, validation_alias="CARNET_KMS_CACHE_TTL_S")
    cache_size: int = Field(default=10_000, ge=0, validation_alias="CARNET_KMS_CACHE_SIZE")


class IngestionSettings(_Section):
    """How batches are read, judged, written and acknowledged."""

    feeds_file: Path | None = Field(default=None, validation_alias="CARNET_FEEDS_FILE")
    # The ingestion DAG's default feed root (folder or s3://…); default under data_dir.
    feed_url: str = Field(default="", validation_alias="CARNET_FEED_URL")
    # A batch whose reject share is above this fails its quality verdict.
    max_reject_rate: float = Field(default=0.5, ge=0, validation_alias="CARNET_MAX_REJECT_RATE")
    # Build Great Expectations Data Docs (pseudonymised) for every processed batch.
    data_docs: bool = Field(default=True, validation_alias="CARNET_DATA_DOCS")
    # Language of the texts a producer reads in its acknowledgements (fr, en).
    report_language: str = Field(default="fr", validation_alias="CARNET_REPORT_LANG")
    # Records gated and written to the index per flush (one unit of commit each); 0 means 1.
    # A flush costs ~0.18 s of CPU whatever its size (GX's validation graph for the checks,
    # commits, fsyncs): 0.18 ms a record at 1,000, 0.36 ms at 500. A flush also comes early
    # when its records hold 32 M characters of text.
    flush_every: int = Field(default=1000, ge=0, validation_alias="CARNET_FLUSH_EVERY")
    # Characters of a document's text that are classified, checked and indexed; the rest is
    # dropped with a ``text_truncated`` warning (the document itself is stored whole); 0 keeps
    # all. A million is Elasticsearch's default ``index.highlight.max_analyzed_offset``, past
    # which it refuses to highlight, and ~400 pages of text: searching further into one
    # document is of little use, while indexing it costs ~25 × its text in memory.
    max_text_chars: int = Field(default=1_000_000, ge=0, validation_alias="CARNET_MAX_TEXT_CHARS")
    # Test-only: kill the process at this commit point (pipeline.faults). Never in production.
    fault_point: str | None = Field(default=None, validation_alias="CARNET_FAULT_POINT")

    @field_validator("flush_every")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        return max(1, value)

    @field_validator("fault_point")
    @classmethod
    def _known_fault_point(cls, value: str | None) -> str | None:
        from pipeline.faults import check_fault_point

        return check_fault_point(value)


class AlertSettings(_Section):
    """Where alerts go besides the log."""

    # Alerts are also POSTed as JSON here when set.
    webhook: str | None = Field(default=None, validation_alias="CARNET_ALERT_WEBHOOK")


class Settings(BaseSettings):
    """Where Carnet keeps things and how it reads documents, one section per concern."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        case_sensitive=True,
        env_ignore_empty=True,
        validate_by_name=True,
        validate_by_alias=True,
    )

    # Every section's embedded default lives under it (effective_* below).
    data_dir: Path = Field(default_factory=lambda: Path.cwd() / ".carnet", validation_alias="CARNET_DATA_DIR")
    # "production" refuses development conveniences such as ``carnet token``.
    environment: str = Field("development", validation_alias="CARNET_ENV")
    # The name a Celery worker reports to Airflow (several workers on one host).
    worker_name: str | None = Field(None, validation_alias="CARNET_WORKER_NAME")
    index: IndexSettings = Field(default_factory=IndexSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    s3: S3Settings = Field(default_factory=S3Settings)
    state: StateSettings = Field(default_factory=StateSettings)
    ocr: OcrSettings = Field(default_factory=OcrSettings)
    kms: KmsSettings = Field(default_factory=KmsSettings)
    ingestion: IngestionSettings = Field(default_factory=IngestionSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    # The search API's token verification.
    api: ApiSettings = Field(default_factory=ApiSettings)

    def __init__(self, _read_from: Mapping[str, str] | None = None, **values: Any) -> None:
        """Keyword arguments only, sections or flat names (``index_url=…``, see ``FLAT_NAMES``).

        ``_read_from`` (field → variable) names errors for ``from_env``.
        """
        read_from = dict(_read_from or {})
        try:
            super().__init__(**_nest(values, read_from))
        except ValidationError as e:
            raise ConfigurationError(_one_line(e, read_from)) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments only: the environment is read by ``from_env`` alone."""
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``CARNET_*`` (and AWS_*) variables; ``overrides`` (None: unset) win.

        An override is a flat name (``index_url=…``) replacing one field, or a section
        (``index=IndexSettings(…)``) replacing the whole section.
        """
        given: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
        read_from: dict[str, str] = {}  # field (section.field) → the variable it came from
        found = _read(_EnvironmentSource(cls, env), cls.model_fields, read_from)
        given = _nest(given, read_from)
        for name, value in given.items():
            if isinstance(value, dict) and isinstance(found.get(name), dict):
                found[name] = {**found[name], **value}
            else:
                found[name] = value
                read_from = {k: v for k, v in read_from.items() if k.partition(".")[0] != name}
        return cls(read_from, **found)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` applied and checked as ``Settings(…)`` checks it: a flat name
        (``ocr_workers=…``) reaches its section (pydantic's own copy would keep it as a stray
        attribute and change nothing, silently)."""
        if not update:
            return super().model_copy(deep=deep)
        current = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**{**current, **update})

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.resolve()  # the same folder whatever the working directory is later

    @field_validator("environment")
    @classmethod
    def _normalised(cls, value: str) -> str:
        return value.strip().lower()

    @property
    def effective_state_url(self) -> str:
        return self.state.url or f"sqlite:///{self.data_dir / 'state.db'}"

    @property
    def effective_index_url(self) -> str:
        return self.index.url or f"sqlite:///{self.data_dir / 'index.db'}"

    @property
    def effective_store_url(self) -> str:
        return self.store.url or f"file://{self.data_dir / 'store'}"

    @property
    def effective_feed_url(self) -> str:
        return self.ingestion.feed_url or str(self.data_dir / "feed")


# The flat keyword names (those of the settings before they had sections) → section, field.
# Callers and Airflow Connections set one field without building its section.
FLAT_NAMES: dict[str, tuple[str, str]] = {
    "index_url": ("index", "url"),
    "es_index_alias": ("index", "es_alias"),
    "store_url": ("store", "url"),
    "store_sync": ("store", "sync"),
    "s3_endpoint_url": ("s3", "endpoint_url"),
    "s3_region": ("s3", "region"),
    "state_url": ("state", "url"),
    "ocr_lang": ("ocr", "lang"),
    "ocr_timeout_s": ("ocr", "timeout_s"),
    "ocr_workers": ("ocr", "workers"),
    "min_text_chars_per_page": ("ocr", "min_text_chars_per_page"),
    "master_key": ("kms", "master_key"),
    "kms_key_id": ("kms", "key_id"),
    "kms_endpoint_url": ("kms", "endpoint_url"),
    "kms_region": ("kms", "region"),
    "kms_cache_ttl_s": ("kms", "cache_ttl_s"),
    "kms_cache_size": ("kms", "cache_size"),
    "feeds_file": ("ingestion", "feeds_file"),
    "feed_url": ("ingestion", "feed_url"),
    "max_reject_rate": ("ingestion", "max_reject_rate"),
    "data_docs": ("ingestion", "data_docs"),
    "report_language": ("ingestion", "report_language"),
    "flush_every": ("ingestion", "flush_every"),
    "fault_point": ("ingestion", "fault_point"),
    "alert_webhook": ("alerts", "webhook"),
}


def _nest(values: Mapping[str, Any], read_from: dict[str, str]) -> dict[str, Any]:
    """``values`` with flat names moved into their section (a dict); errors name them as given."""
    nested: dict[str, Any] = {}
    for name, value in values.items():
        if name not in FLAT_NAMES:
            nested[name] = value
            continue
        section, field = FLAT_NAMES[name]
        into = nested.setdefault(section, {})
        if isinstance(into, BaseModel):  # a section given whole and one of its fields: merge
            into = nested[section] = into.model_dump()
        into[field] = value
        read_from[f"{section}.{field}"] = name
    return nested


class _EnvironmentSource(EnvSettingsSource):
    """pydantic-settings' environment source, over ``os.environ`` or the mapping given."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str] | None) -> None:
        super().__init__(settings_cls)
        if env is not None:  # case-sensitive names, empty values unset (model_config)
            self.env_vars = {name: value for name, value in env.items() if value != ""}


def _read(
    source: EnvSettingsSource, fields: Mapping[str, FieldInfo], read_from: dict[str, str], prefix: str = ""
) -> dict[str, Any]:
    """The values the variables give for ``fields`` (a section's, as a dict of its own)."""
    values: dict[str, Any] = {}
    for name, field in fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            values[name] = _read(source, section.model_fields, read_from, f"{prefix}{name}.")
            continue
        if field.validation_alias is None:  # no variable sets it
            continue
        value, variable, is_complex = source.get_field_value(field, name)
        if value is not None:
            values[name] = source.prepare_field_value(name, field, value, is_complex)
            read_from[prefix + name] = variable
    return values


def _one_line(error: ValidationError, read_from: Mapping[str, str]) -> str:
    """The first problem, naming the variable (or keyword) and the value refused."""
    first = error.errors(include_url=False)[0]
    name = ".".join(str(part) for part in first["loc"]) or "settings"
    name = read_from.get(name, name)
    return f"{name}: {first['msg']}, got {first['input']!r}"
