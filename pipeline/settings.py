"""Carnet's one settings object, read once from the environment with embedded defaults.

Nothing below ``pipeline`` or ``parsers`` reads the environment: a ``Settings`` is built
at the edge (CLI, DAG, API) and passed down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import ConfigurationError


def _default_data_dir() -> Path:
    return Path(os.environ.get("CARNET_DATA_DIR", Path.cwd() / ".carnet")).resolve()


def _number(env: Mapping[str, str], name: str, kind: type[float] | type[int]) -> float | int:
    try:
        value = kind(env[name])
    except ValueError:
        raise ConfigurationError(f"{name} must be a {kind.__name__}, got {env[name]!r}") from None
    if value < 0:
        raise ConfigurationError(f"{name} must not be negative, got {value}")
    return value


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Settings:
    """Where Carnet keeps things and how it reads documents."""

    data_dir: Path = field(default_factory=_default_data_dir)
    index_url: str = ""  # sqlite:///… (default under data_dir) or http(s)://host:9200
    store_url: str = ""  # file://… (default under data_dir) or s3://bucket/prefix
    # The state database (ledger, …): sqlite:///… (default under data_dir) or postgresql://…
    state_url: str = ""
    ocr_lang: str = "fra"
    ocr_timeout_s: int = 120
    # Pages OCR'd at once, one tesseract process (one thread) each.
    ocr_workers: int = field(default_factory=available_cpus)
    # Pages whose text layer holds fewer characters than this are OCR'd.
    min_text_chars_per_page: int = 20
    # A batch whose reject share is above this fails its quality verdict.
    max_reject_rate: float = 0.5
    es_index_alias: str = "carnet-documents"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    master_key: str | None = None  # base64 key wrapping per-patient data keys
    # The master key held by an AWS-KMS-compatible service instead (key id, ARN or alias);
    # its endpoint is AWS_ENDPOINT_URL_KMS (AWS_ENDPOINT_URL names the S3 server here).
    kms_key_id: str | None = None
    kms_endpoint_url: str | None = None
    kms_region: str = "us-east-1"
    # Data keys opened by the KMS stay in memory this long, at most this many per process.
    kms_cache_ttl_s: float = 300.0
    kms_cache_size: int = 10_000
    feeds_file: Path | None = None
    # Build Great Expectations Data Docs (pseudonymised) for every processed batch.
    data_docs: bool = True
    # Language of the texts a producer reads in its acknowledgements (fr, en).
    report_language: str = "fr"
    # "production" refuses development conveniences such as ``carnet token`` (CARNET_ENV).
    environment: str = "development"
    # The ingestion DAG's default feed root (folder or s3://…); default under data_dir.
    feed_url: str = ""
    # Alerts are also POSTed as JSON here when set (else only logged).
    alert_webhook: str | None = None
    # The name a Celery worker reports to Airflow (several workers on one host).
    worker_name: str | None = None
    # Records gated and written to the index per flush (one unit of commit each).
    flush_every: int = 500
    # Test-only: kill the process at this commit point (pipeline.faults). Never in production.
    fault_point: str | None = None

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

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from ``CARNET_*`` (and AWS_*) variables; ``overrides`` win."""
        e = os.environ if env is None else env
        values: dict[str, object] = {}
        if "CARNET_DATA_DIR" in e:
            values["data_dir"] = Path(e["CARNET_DATA_DIR"]).resolve()
        if "CARNET_INDEX_URL" in e:
            values["index_url"] = e["CARNET_INDEX_URL"]
        if "CARNET_STORE_URL" in e:
            values["store_url"] = e["CARNET_STORE_URL"]
        if e.get("CARNET_STATE_URL"):
            values["state_url"] = e["CARNET_STATE_URL"]
        if "CARNET_OCR_LANG" in e:
            values["ocr_lang"] = e["CARNET_OCR_LANG"]
        if "CARNET_OCR_WORKERS" in e:
            values["ocr_workers"] = max(1, int(_number(e, "CARNET_OCR_WORKERS", int)))
        if "CARNET_MAX_REJECT_RATE" in e:
            values["max_reject_rate"] = float(e["CARNET_MAX_REJECT_RATE"])
        if "CARNET_ES_ALIAS" in e:
            values["es_index_alias"] = e["CARNET_ES_ALIAS"]
        if "AWS_ENDPOINT_URL" in e:
            values["s3_endpoint_url"] = e["AWS_ENDPOINT_URL"]
        if "AWS_DEFAULT_REGION" in e or "AWS_REGION" in e:
            values["s3_region"] = e.get("AWS_REGION") or e["AWS_DEFAULT_REGION"]
        if "CARNET_MASTER_KEY" in e:
            values["master_key"] = e["CARNET_MASTER_KEY"]
        if e.get("CARNET_KMS_KEY_ID"):
            values["kms_key_id"] = e["CARNET_KMS_KEY_ID"]
        if e.get("AWS_ENDPOINT_URL_KMS"):
            values["kms_endpoint_url"] = e["AWS_ENDPOINT_URL_KMS"]
        if "AWS_DEFAULT_REGION" in e or "AWS_REGION" in e:
            values["kms_region"] = e.get("AWS_REGION") or e["AWS_DEFAULT_REGION"]
        if "CARNET_KMS_CACHE_TTL_S" in e:
            values["kms_cache_ttl_s"] = _number(e, "CARNET_KMS_CACHE_TTL_S", float)
        if "CARNET_KMS_CACHE_SIZE" in e:
            values["kms_cache_size"] = _number(e, "CARNET_KMS_CACHE_SIZE", int)
        if "CARNET_DATA_DOCS" in e:
            values["data_docs"] = e["CARNET_DATA_DOCS"].lower() not in ("0", "false", "no")
        if "CARNET_ENV" in e:
            values["environment"] = e["CARNET_ENV"].strip().lower()
        if "CARNET_REPORT_LANG" in e:
            values["report_language"] = e["CARNET_REPORT_LANG"]
        if "CARNET_FLUSH_EVERY" in e:
            values["flush_every"] = max(1, int(e["CARNET_FLUSH_EVERY"]))
        if e.get("CARNET_FAULT_POINT"):
            from pipeline.faults import check_fault_point

            values["fault_point"] = check_fault_point(e["CARNET_FAULT_POINT"])
        if "CARNET_FEEDS_FILE" in e:
            values["feeds_file"] = Path(e["CARNET_FEEDS_FILE"])
        if e.get("CARNET_FEED_URL"):
            values["feed_url"] = e["CARNET_FEED_URL"]
        if e.get("CARNET_ALERT_WEBHOOK"):
            values["alert_webhook"] = e["CARNET_ALERT_WEBHOOK"]
        if e.get("CARNET_WORKER_NAME"):
            values["worker_name"] = e["CARNET_WORKER_NAME"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
