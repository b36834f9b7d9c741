"""S3-specific behaviour against a real S3 server (MinIO from ``scripts/s3.sh``):
server-side encryption, pagination past 1,000 keys, credentials from the environment.

The S3 fixtures shared by ``test_store_contract`` and ``test_feeds`` live here too.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import BackendUnavailable
from pipeline.feeds import BatchRef
from pipeline.feeds.s3 import S3Feed, iter_s3_prefix
from pipeline.s3 import make_client
from pipeline.store import DocumentStore, FileStore, open_store
from pipeline.store.base import sha256_hex
from pipeline.store.s3 import S3Store
from tests.conftest import require_service

REPO = Path(__file__).resolve().parents[1]
# The credentials scripts/s3.sh gives its server; the environment wins when set.
TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "carnet-test",
    "AWS_SECRET_ACCESS_KEY": "carnet-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The S3 server's URL, with credentials in the environment for boto3's default chain."""
    url = require_service(
        "S3", os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"), "scripts/s3.sh start"
    )
    with pytest.MonkeyPatch.context() as mp:
        for name, value in TEST_CREDENTIALS.items():
            mp.setenv(name, os.environ.get(name, value))
        yield url


@pytest.fixture(scope="session")
def s3_bucket(s3_endpoint: str) -> Iterator[str]:
    """A bucket of its own for this test session, emptied and removed at the end."""
    name = f"carnet-test-{uuid.uuid4().hex[:12]}"
    S3Store.from_url(f"s3://{name}", endpoint_url=s3_endpoint, region="us-east-1", create_bucket=True)
    yield name
    client = make_client(endpoint_url=s3_endpoint, region="us-east-1")
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=name)


@pytest.fixture
def s3_url(s3_bucket: str) -> str:
    """A fresh ``s3://bucket/prefix`` for one test."""
    return f"s3://{s3_bucket}/t-{uuid.uuid4().hex[:10]}"


# A store fixture over both backends: ``@pytest.fixture(params=FILE_OR_S3)`` returning
# ``file_or_s3_store(request, tmp_path)``.
FILE_OR_S3 = ["file", pytest.param("s3", marks=pytest.mark.s3)]


def file_or_s3_store(request: pytest.FixtureRequest, tmp_path: Path) -> DocumentStore:
    """A ``FileStore`` in ``tmp_path``, or an ``S3Store`` under a prefix of its own in the
    session's bucket, as the fixture's parameter says."""
    if request.param == "file":
        return FileStore(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    endpoint = request.getfixturevalue("s3_endpoint")
    prefix = f"t-{tmp_path.name}"  # pytest's tmp_path names are unique per test
    return S3Store.from_url(f"s3://{bucket}/{prefix}", endpoint_url=endpoint, region="us-east-1")


def _count_calls(client: Any, operation: str) -> list[str]:
    """Record each ``operation`` request the client sends (a listener, not a stub)."""
    calls: list[str] = []
    client.meta.events.register(f"before-call.s3.{operation}", lambda **_: calls.append(operation))
    return calls


pytestmark = pytest.mark.s3


def test_puts_ask_for_server_side_encryption(s3_endpoint: str, s3_url: str) -> None:
    store = S3Store.from_url(s3_url, endpoint_url=s3_endpoint, region="us-east-1")
    puts: list[dict[str, Any]] = []
    store.bucket.client.meta.events.register(
        "provide-client-params.s3.PutObject", lambda params, **_: puts.append(dict(params))
    )
    digest = store.put(b"compte rendu de biologie")
    assert puts and puts[0]["ServerSideEncryption"] == "AES256"
    # scripts/s3.sh gives MinIO a KMS key, so the server really encrypts: no fallback.
    head = store.bucket.client.head_object(Bucket=store.bucket.name, Key=store._key(digest))
    assert head["ServerSideEncryption"] == "AES256"

    feed = S3Feed.from_url(s3_url, endpoint_url=s3_endpoint, region="us-east-1")
    batch = BatchRef(feed_url=feed.url, producer="lab", batch="b1", files=())
    feed.write(batch, "_report.json", b"{}")
    key = feed.source_uri(batch, "_report.json").removeprefix(f"s3://{feed.bucket.name}/")
    head = feed.bucket.client.head_object(Bucket=feed.bucket.name, Key=key)
    assert head["ServerSideEncryption"] == "AES256"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def s3_without_kms(s3_endpoint: str, tmp_path: Path) -> Iterator[str]:
    """A second MinIO started by scripts/s3.sh without a KMS key: it refuses SSE requests."""
    env = {**os.environ, "CARNET_S3_PORT": str(_free_port()), "CARNET_S3_SSE": "0"}
    script = str(REPO / "scripts" / "s3.sh")
    out = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    try:
        yield exports["AWS_ENDPOINT_URL"]
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=120, check=True)


def test_store_falls_back_once_when_server_cannot_encrypt(
    s3_without_kms: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"carnet-nokms-{uuid.uuid4().hex[:8]}"
    store = S3Store.from_url(
        f"s3://{name}/p", endpoint_url=s3_without_kms, region="us-east-1", create_bucket=True
    )
    puts = _count_calls(store.bucket.client, "PutObject")
    with caplog.at_level("WARNING", logger="pipeline.s3"):
        first = store.put(b"one")
        second = store.put(b"two")
    assert store.get(first) == b"one" and store.get(second) == b"two"
    # One refused encrypted attempt, then plain writes only.
    assert len(puts) == 3
    warnings = [r for r in caplog.records if "server-side encryption" in r.getMessage()]
    assert len(warnings) == 1
    head = store.bucket.client.head_object(Bucket=name, Key=store._key(first))
    assert "ServerSideEncryption" not in head


def test_pagination_past_one_thousand_keys(s3_endpoint: str, s3_url: str) -> None:
    store = S3Store.from_url(s3_url, endpoint_url=s3_endpoint, region="us-east-1")
    blobs = [f"doc {i}".encode() for i in range(1100)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        digests = list(pool.map(store.put, blobs))
    lists = _count_calls(store.bucket.client, "ListObjectsV2")
    hashes = list(store.iter_hashes())
    assert hashes == sorted(digests)
    assert len(lists) >= 2  # S3 pages hold at most 1,000 keys


def test_feed_lists_producers_and_batches_across_pages(s3_endpoint: str, s3_url: str) -> None:
    client = make_client(endpoint_url=s3_endpoint, region="us-east-1")
    bucket, prefix = s3_url.removeprefix("s3://").split("/", 1)
    expected = []
    for p in range(4):
        for b in range(3):
            key = f"{prefix}/prod{p}/batch{b}"
            client.put_object(Bucket=bucket, Key=f"{key}/doc.hl7", Body=b"MSH|")
            client.put_object(Bucket=bucket, Key=f"{key}/_READY", Body=b"")
            expected.append(f"prod{p}/batch{b}")
    feed = S3Feed.from_url(s3_url, endpoint_url=s3_endpoint, region="us-east-1", page_size=2)
    lists = _count_calls(feed.bucket.client, "ListObjectsV2")
    batches = feed.list_batches()
    assert [b.key for b in batches] == expected
    assert all(b.files == ("doc.hl7",) for b in batches)
    # At least 2 pages of producers + 4 × 2 pages of batches + one listing per batch.
    assert len(lists) >= 2 + 4 * 2 + 12


def test_credentials_come_from_the_environment(
    s3_endpoint: str, s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = S3Store.from_url(s3_url, endpoint_url=s3_endpoint, region="us-east-1")
    digest = store.put(b"with the test keys")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    wrong = S3Store.from_url(s3_url, endpoint_url=s3_endpoint, region="us-east-1")
    with pytest.raises(BackendUnavailable, match="SignatureDoesNotMatch|AccessDenied"):
        wrong.get(digest)


def test_a_put_is_one_request_and_putting_the_same_bytes_again_is_harmless(
    s3_endpoint: str, s3_url: str
) -> None:
    store = S3Store.from_url(s3_url, endpoint_url=s3_endpoint, region="us-east-1")
    puts = _count_calls(store.bucket.client, "PutObject")
    heads = _count_calls(store.bucket.client, "HeadObject")
    assert store.put(b"same bytes") == store.put(b"same bytes") == sha256_hex(b"same bytes")
    assert (len(puts), len(heads)) == (2, 0)
    assert store.get(sha256_hex(b"same bytes")) == b"same bytes"


def test_a_batch_of_puts_is_sent_several_at_once(s3_endpoint: str, s3_url: str) -> None:
    store = S3Store.from_url(s3_url, endpoint_url=s3_endpoint, region="us-east-1")
    in_flight: list[int] = [0]
    most: list[int] = [0]
    lock = threading.Lock()

    def started(**_: Any) -> None:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.02)  # a slower network: requests overlap if they may

    def ended(**_: Any) -> None:
        with lock:
            in_flight[0] -= 1

    store.bucket.client.meta.events.register("before-call.s3.PutObject", started)
    store.bucket.client.meta.events.register("after-call.s3.PutObject", ended)
    items = [f"objet {n}".encode() for n in range(20)]
    assert store.put_all(items) == [sha256_hex(data) for data in items]
    assert most[0] > 1
    assert [store.get(sha256_hex(data)) for data in items] == items


def test_open_store_and_prefix_reads(s3_endpoint: str, s3_url: str) -> None:
    store = open_store(s3_url, endpoint_url=s3_endpoint, region="us-east-1")
    assert isinstance(store, S3Store)
    client = store.bucket.client  # type: ignore[attr-defined]
    bucket, prefix = s3_url.removeprefix("s3://").split("/", 1)
    objects = {
        "lab/b1/a.hl7": b"MSH|a",
        "lab/b1/sub/b.pdf": b"%PDF-b",
        "lab/b1/_READY": b"",
        "lab/b1/_manifest.json": json.dumps({"files": []}).encode(),
        "lab/b1/_ack/a.hl7": b"ACK",
        "lab/b1/.hidden": b"x",
        "lab/b1/_report.json": b"{}",
    }
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=body)
    got = dict(iter_s3_prefix(s3_url, endpoint_url=s3_endpoint, region="us-east-1"))
    assert got == {f"{s3_url}/lab/b1/a.hl7": b"MSH|a", f"{s3_url}/lab/b1/sub/b.pdf": b"%PDF-b"}


def test_batches_from_an_s3_feed_into_an_s3_store_with_data_docs_beside_it(
    s3_endpoint: str, s3_url: str, tmp_path: Path
) -> None:
    """The production path end to end on real S3: feed, encrypted store, acknowledgement,
    and Data Docs published next to the store without any patient identifier."""
    from generator import generate_feed
    from pipeline.ingest import discover_batches, process_batch
    from pipeline.settings import Settings

    local = tmp_path / "feed"
    generated = generate_feed(local, seed=3, patients=6, documents=30, include_bad=True, scans=0)
    client = make_client(endpoint_url=s3_endpoint, region="us-east-1")
    bucket, prefix = s3_url.removeprefix("s3://").split("/", 1)
    for path in (p for p in local.rglob("*") if p.is_file()):
        client.put_object(
            Bucket=bucket, Key=f"{prefix}/feed/{path.relative_to(local).as_posix()}", Body=path.read_bytes()
        )
    settings = Settings(
        data_dir=tmp_path / "carnet", store_url=f"{s3_url}/store", s3_endpoint_url=s3_endpoint
    )
    feed_url = f"{s3_url}/feed"
    keys = discover_batches(settings, feed_url)
    summaries = [process_batch(settings, feed_url, k) for k in keys]
    assert sum(s.total for s in summaries) == len(generated.documents)
    report = client.get_object(Bucket=bucket, Key=f"{prefix}/feed/{keys[0]}/_report.json")["Body"].read()
    assert b'"files"' in report
    assert summaries[-1].data_docs and summaries[-1].data_docs.startswith(f"s3://{bucket}/")
    docs_keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{prefix}/store/data-docs/"
        )
        for o in page.get("Contents", [])
    ]
    assert any(k.endswith("index.html") for k in docs_keys)
    every_ins = {d.patient_id for d in generated.documents if d.patient_id}
    for key in docs_keys:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert not any(ins.encode() in body for ins in every_ins), key
    assert discover_batches(settings, feed_url) == []


def test_an_s3_url_s_prefix_is_taken_as_written() -> None:
    """Keys may hold '#', '?' and ';': parsed as a URL, ``s3://b/labo#2/in`` was the prefix
    ``labo/`` (its '#2/in' a fragment), so ``carnet ingest`` or a feed read another
    producer's folder whole."""
    from pipeline.errors import ConfigurationError
    from pipeline.s3 import parse_s3_url

    assert parse_s3_url("s3://b/labo#2/in") == ("b", "labo#2/in/")
    assert parse_s3_url("s3://b/a?x=1/") == ("b", "a?x=1/")
    assert parse_s3_url("s3://b") == parse_s3_url("s3://b/") == ("b", "")
    assert parse_s3_url("s3://b//p//") == ("b", "p/")
    for bad in ("s3:///p", "http://b/p", "s3://b?x/p", "s3://"):
        with pytest.raises(ConfigurationError):
            parse_s3_url(bad)


def test_an_object_gone_between_listing_and_read_is_rejected_not_left_out(
    s3_endpoint: str, s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``carnet ingest s3://…``: an object removed after the listing was left out of the
    run in silence (no outcome, no report entry). It is rejected ``unreadable_file``, as
    on the feeds and for a folder's file."""
    from pipeline.ingest.sources import ingest_sources
    from pipeline.s3 import Bucket
    from pipeline.settings import Settings

    client = make_client(endpoint_url=s3_endpoint, region="us-east-1")
    bucket, prefix = s3_url.removeprefix("s3://").split("/", 1)
    for name in ("gone.pdf", "kept.txt"):
        client.put_object(Bucket=bucket, Key=f"{prefix}/in/{name}", Body=b"pas un document")
    real_get = Bucket.get

    def get(self: Bucket, key: str) -> bytes | None:
        return None if key.endswith("gone.pdf") else real_get(self, key)

    monkeypatch.setattr(Bucket, "get", get)
    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False, s3_endpoint_url=s3_endpoint)
    summary = ingest_sources([f"{s3_url}/in"], settings, producer="labo")
    assert summary.metrics["rejected_by_reason"] == {"unreadable_file": 1, "unsupported_format": 1}
