"""Shared fixtures. Tests needing a real service use ``require_service``: in CI
(``CI=true``) a service that is not running is a failure; on a developer machine the
test is skipped with the command that starts it."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from sqlalchemy import Engine

from pipeline.settings import Settings

SAMPLES = Path(__file__).parent / "samples"


def hl7_batch(messages: int, *, start: int = 0) -> bytes:
    """An HL7 file of ``messages`` lab results for one patient, each a new document: the
    first message of ``oru_three_lf.hl7`` with its own control id and order numbers
    (``start``, ``start`` + 1…)."""
    sample = (SAMPLES / "hl7" / "oru_three_lf.hl7").read_bytes()
    first = sample[: sample.index(b"\nMSH", 1) + 1].replace(b"\n", b"\r")
    return b"".join(first.replace(b"MSG0101", b"M%06d" % n) for n in range(start, start + messages))


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, url: str, start_hint: str) -> str:
    """Return ``url`` if something listens there; else fail in CI, skip elsewhere."""
    if _reachable(url):
        return url
    message = f"{name} not reachable at {url}; start it with `{start_hint}`"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def samples() -> Path:
    return SAMPLES


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on a throwaway data folder (embedded index and file store)."""
    return Settings(data_dir=tmp_path / "carnet")


# The PostgreSQL cluster of scripts/postgres.sh (scripts/test.sh exports the variable).
PG_TEST_URL = os.environ.get("CARNET_TEST_STATE_URL", "postgresql://carnet:carnet@127.0.0.1:5434/carnet")


@pytest.fixture
def pg_state_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database of its own for one test (dropped after)."""
    from sqlalchemy import create_engine, text

    from pipeline.state import state_url

    require_service(
        "PostgreSQL", "tcp://" + PG_TEST_URL.split("@", 1)[-1].split("/", 1)[0], "scripts/postgres.sh start"
    )
    admin = create_engine(state_url(PG_TEST_URL), isolation_level="AUTOCOMMIT")
    name = f"carnet_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield PG_TEST_URL.rsplit("/", 1)[0] + "/" + name
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_state_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings on a throwaway data folder whose state database is the embedded SQLite one
    or a fresh, empty PostgreSQL database: tests taking it run on both."""
    if request.param == "sqlite":
        return Settings(data_dir=tmp_path / "carnet")
    return Settings(data_dir=tmp_path / "carnet", state_url=request.getfixturevalue("pg_state_url"))


@pytest.fixture
def state_settings(empty_state_settings: Settings) -> Settings:
    """``empty_state_settings`` with PostgreSQL migrated, as ``carnet db upgrade`` does
    (SQLite migrates itself when opened)."""
    if empty_state_settings.state.url:
        from pipeline.state import open_engine, upgrade

        engine = open_engine(empty_state_settings)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
    return empty_state_settings


@pytest.fixture
def state_engine(state_settings: Settings) -> Iterator[Engine]:
    """An engine on ``state_settings``' state database, migrated: SQLite and PostgreSQL."""
    from pipeline.state import open_engine, upgrade

    engine = open_engine(state_settings)
    upgrade(engine)
    yield engine
    engine.dispose()
