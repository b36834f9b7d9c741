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
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


class Settings(BaseSettings):
    """Where Carnet keeps things and how it reads documents."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        case_sensitive=True,
        env_ignore_empty=True,
        validate_by_name=True,
        validate_by_alias=True,
    )

    data_dir: Path = Field(default_factory=lambda: Path.cwd() / ".carnet", validation_alias="CARNET_DATA_DIR")
    # sqlite:///… (default under data_dir) or http(s)://host:9200
    index_url: str = Field("", validation_alias="CARNET_INDEX_URL")
    # file://… (default under data_dir) or s3://bucket/prefix
    store_url: str = Field("", validation_alias="CARNET_STORE_URL")
    # The state database (ledger, …): sqlite:///… (default under data_dir) or postgresql://…
    state_url: str = Field("", validation_alias="CARNET_STATE_URL")
    ocr_lang: str = Field("fra", validation_alias="CARNET_OCR_LANG")
    ocr_timeout_s: int = Field(120, ge=1)
    # Pages OCR'd at once, one tesseract process (one thread) each; 0 means 1 (never no OCR).
    ocr_workers: int = Field(default_factory=available_cpus, ge=0, validation_alias="CARNET_OCR_WORKERS")
    # Pages whose text layer holds fewer characters than this are OCR'd.
    min_text_chars_per_page: int = Field(20, ge=0)
    # A batch whose reject share is above this fails its quality verdict.
    max_reject_rate: float = Field(0.5, ge=0, validation_alias="CARNET_MAX_REJECT_RATE")
    es_index_alias: str = Field("carnet-documents", validation_alias="CARNET_ES_ALIAS")
    s3_endpoint_url: str | None = Field(None, validation_alias="AWS_ENDPOINT_URL")
    # AWS_REGION wins over AWS_DEFAULT_REGION, as in boto3.
    s3_region: str = Field("us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"))
    # base64 key wrapping per-patient data keys; kept out of the repr.
    master_key: str | None = Field(None, repr=False, validation_alias="CARNET_MASTER_KEY")
    # The master key held by an AWS-KMS-compatible service instead (key id, ARN or alias);
    # its endpoint is AWS_ENDPOINT_URL_KMS (AWS_ENDPOINT_URL names the S3 server here).
    kms_key_id: str | None = Field(None, validation_alias="CARNET_KMS_KEY_ID")
    kms_endpoint_url: str | None = Field(None, validation_alias="AWS_ENDPOINT_URL_KMS")
    # From the same variables as s3_region (_READ_AS); a Connection's region is S3's only.
    kms_region: str = "us-east-1"
    # Data keys opened by the KMS stay in memory this long, at most this many per process.
    kms_cache_ttl_s: float = Field(300.0, ge=0, validation_alias="CARNET_KMS_CACHE_TTL_S")
    kms_cache_size: int = Field(10_000, ge=0, validation_alias="CARNET_KMS_CACHE_SIZE")
    feeds_file: Path | None = Field(None, validation_alias="CARNET_FEEDS_FILE")
    # Build Great Expectations Data Docs (pseudonymised) for every processed batch.
    data_docs: bool = Field(True, validation_alias="CARNET_DATA_DOCS")
    # Language of the texts a producer reads in its acknowledgements (fr, en).
    report_language: str = Field("fr", validation_alias="CARNET_REPORT_LANG")
    # "production" refuses development conveniences such as ``carnet token``.
    environment: str = Field("development", validation_alias="CARNET_ENV")
    # The ingestion DAG's default feed root (folder or s3://…); default under data_dir.
    feed_url: str = Field("", validation_alias="CARNET_FEED_URL")
    # Alerts are also POSTed as JSON here when set (else only logged).
    alert_webhook: str | None = Field(None, validation_alias="CARNET_ALERT_WEBHOOK")
    # The name a Celery worker reports to Airflow (several workers on one host).
    worker_name: str | None = Field(None, validation_alias="CARNET_WORKER_NAME")
    # Records gated and written to the index per flush (one unit of commit each); 0 means 1.
    flush_every: int = Field(500, ge=0, validation_alias="CARNET_FLUSH_EVERY")
    # Test-only: kill the process at this commit point (pipeline.faults). Never in production.
    fault_point: str | None = Field(None, validation_alias="CARNET_FAULT_POINT")
    # The search API's token verification (a section: its own model, its own variables).
    api: ApiSettings = Field(default_factory=ApiSettings)

    def __init__(self, _read_from: Mapping[str, str] | None = None, **values: Any) -> None:
        """Keyword arguments only; ``_read_from`` (field → variable) names errors for ``from_env``."""
        try:
            super().__init__(**values)
        except ValidationError as e:
            raise ConfigurationError(_one_line(e, _read_from or {})) from None

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
        """Build settings from ``CARNET_*`` (and AWS_*) variables; ``overrides`` (None: unset) win."""
        given = {k: v for k, v in overrides.items() if v is not None}
        read_from: dict[str, str] = {}  # field (section.field) → the variable it came from
        found = _read(_EnvironmentSource(cls, env), cls.model_fields, read_from)
        read_from = {k: v for k, v in read_from.items() if k.partition(".")[0] not in given}
        return cls(read_from, **{**found, **given})

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.resolve()  # the same folder whatever the working directory is later

    @field_validator("ocr_workers", "flush_every")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        return max(1, value)

    @field_validator("environment")
    @classmethod
    def _normalised(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("fault_point")
    @classmethod
    def _known_fault_point(cls, value: str | None) -> str | None:
        from pipeline.faults import check_fault_point

        return check_fault_point(value)

    @property
    def effective_state_url(self) -> str:
        return self.state_url or f"sqlite:///{self.data_dir / 'state.db'}"

    @property
    def effective_index_url(self) -> str:
        return self.index_url or f"sqlite:///{self.data_dir / 'index.db'}"

    @property
    def effective_store_url(self) -> str:
        return self.store_url or f"file://{self.data_dir / 'store'}"

    @property
    def effective_feed_url(self) -> str:
        return self.feed_url or str(self.data_dir / "feed")


# Fields read from another field's variables: pydantic-settings cannot give two fields one
# alias (its keyword names would collide), and one AWS_REGION configures both clients.
_READ_AS = {"kms_region": "s3_region"}


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
        field = fields[_READ_AS.get(name, name)]
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
