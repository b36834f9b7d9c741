"""A backend dying mid-run, two ingests on one data directory, and replay after a fix."""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from generator import GeneratedFeed
from parsers.registry import ParserRegistry
from pipeline.crypto import open_encrypted_store
from pipeline.errors import ParserError
from pipeline.index import open_index
from pipeline.ingest import ingest_sources
from pipeline.ledger import Ledger
from pipeline.maintenance import check_integrity
from pipeline.model import ParsedDocument, Status
from pipeline.replay import ReplayFilter, replay_quarantine
from pipeline.settings import Settings
from tests.conftest import SAMPLES
from tests.crash.conftest import (
    REPO,
    Backend,
    assert_consistent,
    carnet,
    drop_alias,
    es_url,
    live_versions_by_series,
    read_report,
)

MASTER_KEY = {"CARNET_MASTER_KEY": "Y2FybmV0LWNyYXNoLXRlc3RzLW1hc3Rlci1rZXkhISE="}  # 32 bytes, tests only


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proxy(port: int, upstream: str, *cut: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.crash.es_proxy", str(port), upstream, *cut],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def es_alias() -> Iterator[tuple[str, str]]:
    url, alias = es_url(), f"carnet-crash-{uuid.uuid4().hex[:8]}"
    yield url, alias
    drop_alias(url, alias)


@pytest.mark.elasticsearch
def test_elasticsearch_dying_mid_bulk_in_the_final_flush_is_exit_1_then_the_rerun_repairs(
    es_alias: tuple[str, str],
    small_feed: tuple[Path, GeneratedFeed],
    clean_run: dict[str, object],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    upstream, alias = es_alias
    port = _free_port()
    # One flush (the default size holds the whole feed): the bulk that dies is the final one.
    proxy = _proxy(port, upstream, "--cut-bulk", "1")
    b = Backend(tmp_path / "carnet", f"http://127.0.0.1:{port}")
    b.alias = alias
    b.env.update(CARNET_ES_ALIAS=alias, CARNET_FLUSH_EVERY="500", **MASTER_KEY)
    report = tmp_path / "report.jsonl"
    try:
        done = carnet(
            "ingest", str(small_feed[0]), "--report", str(report), "-q", data_dir=b.data_dir, env=b.env
        )
        assert proxy.wait(timeout=30) == 0, "the proxy died at the bulk request"
    finally:
        proxy.kill()
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("carnet ingest: error:") and "Elasticsearch" in lines[0], (
        done.stderr
    )
    # What reached the node, searchable or not: the run died before its refresh, and the
    # node's own periodic refresh may not have come yet.
    urllib.request.urlopen(urllib.request.Request(f"{upstream}/{alias}/_refresh", method="POST")).close()
    held = open_index(upstream, alias=alias)
    try:
        written = held.count()
    finally:
        held.close()
    accepted = sum(1 for s, _ in clean_run["by_source"].values() if s in ("indexed", "replaced"))  # type: ignore[attr-defined]
    assert 0 < written < accepted, "half of the bulk request reached the node"
    proxy = _proxy(port, upstream)  # the node is back, at the same address
    try:
        assert b.ingest_in_process(small_feed[0], report, monkeypatch) == 0
        assert_consistent(b, report, clean_run)
    finally:
        proxy.kill()


def test_a_second_ingest_on_a_busy_data_dir_refuses_in_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "carnet"
    folder = tmp_path / "in" / "labo" / "b1"
    folder.mkdir(parents=True)
    (folder / "cr-bio.xml").write_bytes((SAMPLES / "cda" / "cr-bio.xml").read_bytes())
    ledger = Ledger(Settings(data_dir=data_dir))
    try:
        with ledger.run_lease("ingest", exclusive=True):  # what a running `carnet ingest` holds
            refused = carnet(
                "ingest",
                str(tmp_path / "in"),
                "--report",
                str(tmp_path / "r.jsonl"),
                data_dir=data_dir,
                env=MASTER_KEY,
            )
    finally:
        ledger.close()
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()], refused.stderr
    assert refused.stderr.startswith("carnet ingest: error: another ingest or replay is running")
    assert not (tmp_path / "r.jsonl").exists()
    with sqlite3.connect(data_dir / "state.db") as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0, "nothing half-started"


def test_two_ingests_at_once_each_completes_or_refuses_cleanly(
    small_feed: tuple[Path, GeneratedFeed], tmp_path: Path
) -> None:
    data_dir = tmp_path / "carnet"
    env = {
        "CARNET_DATA_DIR": str(data_dir),
        "CARNET_DATA_DOCS": "0",
        "PYTHONPATH": str(REPO),
        "OMP_THREAD_LIMIT": "1",
        "PATH": "/usr/bin:/bin",
        **MASTER_KEY,
    }
    cmd = [sys.executable, "-m", "pipeline.cli", "ingest", str(small_feed[0]), "-q", "--report"]
    first = subprocess.Popen(
        [*cmd, str(tmp_path / "a.jsonl")], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the first one has its run in the ledger
        if (data_dir / "state.db").exists():
            with sqlite3.connect(data_dir / "state.db", timeout=30) as conn:
                if (
                    conn.execute("SELECT count(*) FROM sqlite_master WHERE name='runs'").fetchone()[0]
                    and conn.execute("SELECT count(*) FROM runs").fetchone()[0]
                ):
                    break
        time.sleep(0.05)
    second = subprocess.run(
        [*cmd, str(tmp_path / "b.jsonl")], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert len(read_report(tmp_path / "a.jsonl")) == len(small_feed[1].documents)
    for rc, err, report in ((second.returncode, second.stderr, tmp_path / "b.jsonl"),):
        if rc == 0:  # it ran once the first had finished: a full report of duplicates
            assert len(read_report(report)) == len(small_feed[1].documents)
        else:
            assert rc == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
            assert not report.exists()
    integrity = check_integrity(Settings(data_dir=data_dir, master_key=MASTER_KEY["CARNET_MASTER_KEY"]))
    assert integrity.ok, integrity.discrepancies


# -- replay after a parser fix --------------------------------------------------------------

HL7_CORRECTION = (SAMPLES / "hl7" / "oru_correction.hl7").read_bytes()
# The report the correction replaces: same filler order number (OBR-3), final status.
HL7_ORIGINAL = HL7_CORRECTION.replace(b"MSG0902", b"MSG0901").replace(b"|||C|", b"|||F|")


def _feed(root: Path) -> dict[str, bytes]:
    files = {
        "1-cr-bio-v1.xml": (SAMPLES / "cda" / "cr-bio.xml").read_bytes(),
        "2-cr-bio-v2.xml": (SAMPLES / "cda" / "cr-bio-v2.xml").read_bytes(),
        "3-oru-original.hl7": HL7_ORIGINAL,
        "4-oru-correction.hl7": HL7_CORRECTION,
        "5-cr-img.xml": (SAMPLES / "cda" / "cr-img.xml").read_bytes(),
        "6-ipp-only.xml": (SAMPLES / "cda" / "cr-ipp-only.xml").read_bytes(),  # no INS: stays out
    }
    batch = root / "labo" / "b1"
    batch.mkdir(parents=True)
    for name, data in files.items():
        (batch / name).write_bytes(data)
    return files


class _BuggyParser:
    """A parser with a bug: it fails on every input it is given."""

    name = "buggy"

    def score(self, head: bytes) -> int:
        return 0

    def parse(self, data: bytes, *, source: str) -> list[ParsedDocument]:
        raise ParserError("simulated parser bug", source=source)


@pytest.mark.parametrize("how", ["replay", "resend"])
def test_after_a_parser_fix_the_quarantine_is_released_and_versions_keep_producer_order(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _feed(tmp_path / "in")
    assert HL7_ORIGINAL != HL7_CORRECTION and b"|||F|" in HL7_ORIGINAL
    # The bug: the older version of each document and the imaging report fail to parse.
    buggy = {
        hashlib.sha256(files[n]).hexdigest()
        for n in ("1-cr-bio-v1.xml", "3-oru-original.hl7", "5-cr-img.xml")
    }
    choose = ParserRegistry.choose

    def broken_choose(self: ParserRegistry, data: bytes) -> object:
        # Chosen for every input, whichever way it is then parsed (ahead, or by ``process``).
        return _BuggyParser() if hashlib.sha256(data).hexdigest() in buggy else choose(self, data)

    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False)
    monkeypatch.setattr(ParserRegistry, "choose", broken_choose)
    first = ingest_sources([str(tmp_path / "in")], settings)
    assert [o.status for o in first.outcomes].count(Status.REJECTED) == 4
    store = open_encrypted_store(settings)
    assert len(list(store.list_quarantine())) == 4
    monkeypatch.setattr(ParserRegistry, "choose", choose)  # the fix

    if how == "replay":
        result = replay_quarantine(settings, ReplayFilter())
        outcomes = {Path(o.source.split("#")[0]).name: o for o in result.outcomes}
        assert len(result.released) == 3 and len(result.still_rejected) == 1
    else:
        outcomes = {
            Path(o.source.split("#")[0]).name: o
            for o in ingest_sources([str(tmp_path / "in")], settings).outcomes
        }
    for name in ("1-cr-bio-v1.xml", "3-oru-original.hl7", "5-cr-img.xml"):
        assert outcomes[name].status is Status.INDEXED, name
    left = [q.source for q in store.list_quarantine()]
    assert left == [str(tmp_path / "in" / "labo" / "b1" / "6-ipp-only.xml")]

    # The older versions arrived last but are filed as superseded: the live ones stay live.
    live = live_versions_by_series(settings.effective_index_url)
    assert all(len(ids) == 1 for ids in live.values()), live
    live_ids = {d for ids in live.values() for d in ids}
    index = open_index(settings.effective_index_url)
    try:
        for old, new in (
            ("1-cr-bio-v1.xml", "2-cr-bio-v2.xml"),
            ("3-oru-original.hl7", "4-oru-correction.hl7"),
        ):
            old_id = outcomes[old].doc_id
            new_id = next(o.doc_id for o in first.outcomes if Path(o.source.split("#")[0]).name == new)
            assert new_id in live_ids and old_id not in live_ids
            record = index.get(outcomes[old].patient_id or "", old_id or "")
            assert record is not None and record.superseded_by == new_id
    finally:
        index.close()
    integrity = check_integrity(settings)
    assert integrity.ok, integrity.discrepancies
