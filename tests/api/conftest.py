"""A live API for tests: the real app under uvicorn on a free port, real HTTP through httpx.

``Api`` holds the server, an httpx client, the app's clock (tests move it), and the
backends it runs on, so tests can file documents directly (``DocumentRecord`` upserts
and ``store.put``) without going through parsers. ``backend`` runs a test on the
embedded index and on a real Elasticsearch node (``CARNET_TEST_ES_URL``).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
import uvicorn

from pipeline.access import Principal, Role
from pipeline.api import create_app
from pipeline.api.auth import issue_token
from pipeline.api.guard import Services
from pipeline.crypto import EncryptedStore, open_encrypted_store
from pipeline.index import DocumentIndex, open_index
from pipeline.model import DocClass, DocumentRecord, Visibility
from pipeline.settings import ApiSettings, Settings
from tests.index.conftest import make_record

TEST_JWT_KEY = "carnet-tests-only-hs256-key-0123456789abcdef"
NOW = dt.datetime(2026, 11, 29, 10, 0, tzinfo=dt.UTC)


def make_ins(serial: int, born: str = "8505") -> str:
    """A valid INS (13-character NIR + key) for test patient number ``serial``, born in the
    year and month ``born`` (``YYMM``, as the INS carries them)."""
    nir = f"2{born}75{serial:06d}"
    return f"{nir}{97 - int(nir) % 97:02d}"


def patient(ins: str) -> Principal:
    return Principal(role=Role.PATIENT, subject=ins, name="Patient test")


def professional(rpps: str = "10101234567") -> Principal:
    return Principal(role=Role.PROFESSIONAL, subject=rpps, name="Dr Test")


def caregiver(person: str = "aidant-1") -> Principal:
    return Principal(role=Role.CAREGIVER, subject=person)


def representative(person: str = "parent-1") -> Principal:
    return Principal(role=Role.REPRESENTATIVE, subject=person)


@dataclass
class Clock:
    now: dt.datetime = NOW

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class Api:
    url: str
    http: httpx.Client
    clock: Clock
    settings: Settings
    services: Services
    tokens: dict[Principal, str] = field(default_factory=dict)

    @property
    def index(self) -> DocumentIndex:
        return self.services.index

    @property
    def store(self) -> EncryptedStore:
        return self.services.store

    def token(self, who: Principal) -> str:
        if who not in self.tokens:
            # Issued at the real time: the JWT library checks exp against the wall clock.
            self.tokens[who] = issue_token(TEST_JWT_KEY, who)
        return self.tokens[who]

    def as_(self, who: Principal) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(who)}"}

    def get(self, who: Principal, path: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, headers=self.as_(who), **kw)

    def put(self, who: Principal, path: str, **kw: Any) -> httpx.Response:
        return self.http.put(path, headers=self.as_(who), **kw)

    def post(self, who: Principal, path: str, **kw: Any) -> httpx.Response:
        return self.http.post(path, headers=self.as_(who), **kw)

    def delete(self, who: Principal, path: str, **kw: Any) -> httpx.Response:
        return self.http.delete(path, headers=self.as_(who), **kw)

    def file(
        self,
        ins: str,
        doc_id: str,
        *,
        doc_class: DocClass = DocClass.BIOLOGY,
        visibility: tuple[Visibility, ...] = (),
        text: str = "",
        content: bytes | None = None,
        **fields: Any,
    ) -> DocumentRecord:
        """Store ``content`` (encrypted, assigned to the patient) and index its record."""
        raw = content if content is not None else f"%PDF-1.4 raw {doc_id} {text}".encode()
        sha = self.store.put(raw)
        self.store.assign(sha, ins)
        record = make_record(
            doc_id, patient_id=ins, doc_class=doc_class, visibility=visibility, text=text, **fields
        ).model_copy(update={"content_sha256": sha})
        assert self.index.upsert([record]) == []
        return record


class LiveServer:
    """uvicorn serving ``app`` in a thread, on a port the OS picked."""

    def __init__(self, app: Any) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=20)
        self._sock.close()


def _open_backend(backend: str) -> DocumentIndex:
    if backend == "sqlite":
        raise AssertionError("sqlite is opened from the settings")
    from tests.conftest import require_service

    url = require_service(
        "Elasticsearch",
        os.environ.get("CARNET_TEST_ES_URL", "http://127.0.0.1:9200"),
        "scripts/elasticsearch.sh start",
    )
    return open_index(url, alias=f"carnet-test-api-{uuid4().hex[:8]}")


@contextmanager
def running_api(data_dir: Path, backend: str = "sqlite") -> Iterator[Api]:
    settings = Settings(data_dir=data_dir, master_key=base64.b64encode(os.urandom(32)).decode())
    index = None if backend == "sqlite" else _open_backend(backend)
    clock = Clock()
    app = create_app(
        settings,
        config=ApiSettings(jwt_key=TEST_JWT_KEY),
        clock=clock,
        index=index,
        store=open_encrypted_store(settings),
    )
    services: Services = app.state.services
    # Stopping the server closes the backends (the app's lifespan); a test alias goes first.
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        try:
            yield Api(url=server.url, http=http, clock=clock, settings=settings, services=services)
        finally:
            drop = getattr(services.index, "drop", None)
            if callable(drop):
                drop()


BACKENDS = ["sqlite", pytest.param("elasticsearch", marks=pytest.mark.elasticsearch)]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """A live API on the embedded index, fresh for each test."""
    with running_api(tmp_path / "carnet") as a:
        yield a


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def carnet_serve(env: dict[str, str], cwd: Path) -> Iterator[httpx.Client]:
    """``carnet serve`` in a process of its own with ``env``, and a client on it once it answers."""
    import subprocess
    import sys

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "serve", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            deadline = time.monotonic() + 90
            while True:
                try:
                    http.get("/")
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("carnet serve did not start") from None
                    time.sleep(0.2)
            yield http
    finally:
        server.terminate()
        server.wait(timeout=30)
