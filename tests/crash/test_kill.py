"""``kill -9`` at every commit point of a flush and of a run, then a rerun: every input ends
in the state a clean run gives it (the rerun's report says ``indexed``/``replaced`` for what
the killed run wrote, not ``duplicate``), no two live versions, ledger ≡ index ≡ store, and
the acknowledgement written once from one decision. On the embedded index and on a real
Elasticsearch node; ``CARNET_FAULT_POINT`` (pipeline.faults) is the test-only kill switch."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from generator import GeneratedFeed
from pipeline.faults import FAULT_POINTS
from pipeline.ingest import discover_batches, process_batch
from pipeline.settings import Settings
from tests.conftest import hl7_batch
from tests.crash.conftest import (
    FLUSH_EVERY,
    REPO,
    Backend,
    assert_consistent,
    carnet,
    drop_alias,
    es_url,
    run_clean,
)


@pytest.fixture
def sqlite_backend(tmp_path: Path) -> Backend:
    return Backend(tmp_path / "carnet", None)


@pytest.fixture
def es_backend(tmp_path: Path) -> Iterator[Backend]:
    url = es_url()
    b = Backend(tmp_path / "carnet", url)
    yield b
    drop_alias(url, b.alias)


# Every point a run reaches (after_supersede: in the first flush that supersedes; ":2": in
# the second flush, the first one done). The quick set runs by default, the rest is `slow`.
QUICK = {"after_journal", "after_supersede", "before_ledger_record", "before_ack"}
POINTS = [
    p if p in QUICK else pytest.param(p, marks=pytest.mark.slow)
    for p in [*FAULT_POINTS, "after_index_write:2"]
]


def _kill_then_rerun(
    b: Backend, point: str, feed: Path, clean: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    report = b.data_dir.parent / "report.jsonl"
    killed = carnet(
        "ingest", str(feed), "--report", str(report), "-q", data_dir=b.data_dir, fault=point, env=b.env
    )
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    assert report.exists() == (point == "after_ack"), "the report is written last"
    assert b.ingest_in_process(feed, report, monkeypatch) == 0
    assert_consistent(b, report, clean)


@pytest.mark.parametrize("point", POINTS)
def test_killed_at_a_commit_point_then_rerun(
    point: str,
    sqlite_backend: Backend,
    clean_run: dict[str, object],
    small_feed: tuple[Path, GeneratedFeed],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _kill_then_rerun(sqlite_backend, point, small_feed[0], clean_run, monkeypatch)


@pytest.mark.elasticsearch
@pytest.mark.parametrize(
    "point",
    [
        # New versions and supersedes in one bulk request: killed once it is sent.
        "after_supersede",
        pytest.param("after_index_write:2", marks=pytest.mark.slow),
        pytest.param("before_ledger_record", marks=pytest.mark.slow),
    ],
)
def test_killed_at_a_commit_point_then_rerun_on_elasticsearch(
    point: str,
    es_backend: Backend,
    clean_run: dict[str, object],
    small_feed: tuple[Path, GeneratedFeed],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _kill_then_rerun(es_backend, point, small_feed[0], clean_run, monkeypatch)


@pytest.mark.parametrize("point", ["after_journal:2", "before_ledger_record:3"])
def test_killed_in_the_middle_of_an_hl7_file_read_a_message_at_a_time_then_rerun(
    point: str, tmp_path: Path, sqlite_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of more messages than a flush holds is read and flushed a message at a time:
    killed with some of its flushes done, the rerun still leaves every message in the
    state a clean run gives it (one of them a duplicate, one broken)."""
    feed = tmp_path / "feed"
    feed.mkdir()
    broken = b"MSH|^~\\&|LAB\rPID|1\r"  # no MSH-9/10/12: rejected, alone
    (feed / "batch.hl7").write_bytes(hl7_batch(12) + broken + hl7_batch(1, start=5) + hl7_batch(12, start=12))
    clean = run_clean(feed, tmp_path / "clean" / "carnet")
    statuses = sorted(status for status, _ in clean["by_source"].values())  # type: ignore[attr-defined]
    assert statuses == ["duplicate", *["indexed"] * 24, "rejected"] and int(FLUSH_EVERY) < 26
    _kill_then_rerun(sqlite_backend, point, feed, clean, monkeypatch)


def _kill_batches(feed: Path, data_dir: Path, fault: str) -> subprocess.CompletedProcess[str]:
    """Every batch of ``feed`` through ``process_batch`` (the DAG's path) in a subprocess."""
    script = (
        "import sys; from pipeline.settings import Settings; "
        "from pipeline.ingest import discover_batches, process_batch; s = Settings.from_env(); "
        "[process_batch(s, sys.argv[1], k) for k in discover_batches(s, sys.argv[1])]"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARNET_")}
    env.update(
        CARNET_DATA_DIR=str(data_dir),
        PYTHONPATH=str(REPO),
        CARNET_DATA_DOCS="0",
        CARNET_FLUSH_EVERY=FLUSH_EVERY,
        CARNET_FAULT_POINT=fault,
    )
    return subprocess.run(
        [sys.executable, "-c", script, str(feed)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _run_batches(feed: Path, data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, data_docs=False, flush_every=int(FLUSH_EVERY))
    for key in discover_batches(settings, str(feed)):
        process_batch(settings, str(feed), key)


def _acks(feed: Path) -> dict[str, bytes]:
    return {str(p.relative_to(feed)): p.read_bytes() for p in sorted(feed.rglob("_report.json"))}


@pytest.fixture(scope="module")
def clean_acks(
    small_feed: tuple[Path, GeneratedFeed], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, bytes]:
    root, _ = small_feed
    feed = tmp_path_factory.mktemp("clean-batches") / "feed"
    shutil.copytree(root, feed)
    _run_batches(feed, feed.parent / "carnet")
    return _acks(feed)


@pytest.mark.parametrize(
    "point",
    [
        "before_ack",
        pytest.param("after_ack", marks=pytest.mark.slow),
        pytest.param("before_ledger_record:2", marks=pytest.mark.slow),
    ],
)
def test_batch_acknowledgements_are_written_once_from_one_decision(
    point: str, small_feed: tuple[Path, GeneratedFeed], clean_acks: dict[str, bytes], tmp_path: Path
) -> None:
    root, _ = small_feed
    feed = tmp_path / "feed"
    shutil.copytree(root, feed)
    killed = _kill_batches(feed, tmp_path / "carnet", point)
    assert killed.returncode == -9, killed.stderr[-2000:]
    written_before = _acks(feed)
    _run_batches(feed, tmp_path / "carnet")
    after = _acks(feed)
    assert sorted(after) == sorted(clean_acks)

    def statuses(ack: bytes) -> list[tuple[str, str, str | None]]:
        return [(f["file"], f["status"], f["doc_id"]) for f in json.loads(ack)["files"]]

    for name, ack in clean_acks.items():
        assert statuses(after[name]) == statuses(ack), name
    for name, ack in written_before.items():
        assert after[name] == ack, f"{name} was written again with another decision"
    with sqlite3.connect(tmp_path / "carnet" / "state.db") as conn:
        assert conn.execute("SELECT count(*) FROM batches WHERE acked_at IS NULL").fetchone()[0] == 0
