"""Shared fixtures. Tests needing a real service use ``require_service``: in CI
(``CI=true``) a service that is not running is a failure; on a developer machine the
test is skipped with the command that starts it."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest

from pipeline.settings import Settings

SAMPLES = Path(__file__).parent / "samples"


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
