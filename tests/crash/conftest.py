"""Helpers for the crash-consistency tests: ``carnet`` run as a real subprocess (so a
fault point can ``kill -9`` it), a small generated feed, and the checks every test makes
after a rerun: one final state per input, no two live versions, ledger ≡ index ≡ store."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from generator import GeneratedFeed, generate_feed
from pipeline.cli import main as carnet_main
from pipeline.crypto import open_encrypted_store
from pipeline.index import open_index
from pipeline.maintenance import check_integrity
from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def carnet(
    *args: str,
    data_dir: Path,
    fault: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``carnet ARGS`` in a fresh interpreter on ``data_dir``, optionally with a fault point."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CARNET_")}
    environ.update(
        CARNET_DATA_DIR=str(data_dir),
        PYTHONPATH=str(REPO),
        CARNET_DATA_DOCS="0",
        OMP_THREAD_LIMIT="1",
        **(env or {}),
    )
    if fault:
        environ["CARNET_FAULT_POINT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=environ,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_report(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="session")
def small_feed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GeneratedFeed]:
    """Good, bad, duplicate and replaced documents, no scans (OCR is slow), two flushes' worth
    when the flush size is lowered (CARNET_FLUSH_EVERY)."""
    root = tmp_path_factory.mktemp("crash-feed") / "feed"
    return root, generate_feed(root, seed=11, patients=8, documents=48, include_bad=True, scans=0)


def live_versions_by_series(index_url: str, alias: str | None = None) -> dict[tuple[str, str], list[str]]:
    """(patient, series) → doc ids not superseded: more than one is a broken version chain."""
    from pipeline.index import open_index

    index = open_index(index_url, alias=alias or "carnet-documents")
    try:
        live: dict[tuple[str, str], list[str]] = defaultdict(list)
        for patient, doc_id, _ in index.list_ids():
            record = index.get(patient, doc_id)
            assert record is not None
            if record.superseded_by is None:
                live[(patient, record.series_id)].append(doc_id)
        return dict(live)
    finally:
        index.close()


def es_url() -> str:
    from tests.conftest import require_service

    return require_service(
        "Elasticsearch",
        os.environ.get("CARNET_TEST_ES_URL", "http://127.0.0.1:9200"),
        "scripts/elasticsearch.sh start",
    )


def drop_alias(url: str, alias: str) -> None:
    from pipeline.index.elasticsearch import ElasticsearchIndex

    index = ElasticsearchIndex(url, alias=alias)
    try:
        index.drop()
    finally:
        index.close()


# Small flushes, so a kill lands in the middle of a run with flushes done before it.
FLUSH_EVERY = "8"


class Backend:
    """Where the index lives for one test: the embedded file or a fresh Elasticsearch alias."""

    def __init__(self, data_dir: Path, url: str | None) -> None:
        self.data_dir = data_dir
        self.alias = f"carnet-crash-{uuid.uuid4().hex[:8]}"
        self.url = url
        self.env = {"CARNET_FLUSH_EVERY": FLUSH_EVERY}
        if url:
            self.env.update(CARNET_INDEX_URL=url, CARNET_ES_ALIAS=self.alias)

    @property
    def settings(self) -> Settings:
        return Settings.from_env({"CARNET_DATA_DIR": str(self.data_dir), **self.env})

    def ingest_in_process(self, feed: Path, report: Path, monkeypatch: pytest.MonkeyPatch) -> int:
        """The rerun: ``carnet ingest`` in this process (no second GX import)."""
        with monkeypatch.context() as m:
            for k, v in {"CARNET_DATA_DIR": str(self.data_dir), "CARNET_DATA_DOCS": "0", **self.env}.items():
                m.setenv(k, v)
            return carnet_main(["ingest", str(feed), "--report", str(report), "-q"])


@pytest.fixture(scope="session")
def clean_run(
    small_feed: tuple[Path, GeneratedFeed], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    """What an uninterrupted run gives on the small feed (see ``run_clean``)."""
    return run_clean(small_feed[0], tmp_path_factory.mktemp("clean") / "carnet")


def run_clean(feed: Path, data_dir: Path) -> dict[str, object]:
    """What an uninterrupted run of ``feed`` gives: every source's (status, doc id), the
    live versions."""
    b = Backend(data_dir, None)
    report = b.data_dir.parent / "report.jsonl"
    with pytest.MonkeyPatch.context() as m:
        assert b.ingest_in_process(feed, report, m) == 0
    lines = read_report(report)
    live = live_versions_by_series(b.settings.effective_index_url)
    return {
        "by_source": {x["source"]: (x["status"], x["doc_id"]) for x in lines},
        "live": {d for ids in live.values() for d in ids},
    }


def assert_consistent(b: Backend, report: Path, clean: dict[str, object]) -> None:
    """One final state per input (the clean run's), one live version per series, and the
    ledger, the index and the store telling the same story."""
    lines = read_report(report)
    got = {x["source"]: (x["status"], x["doc_id"]) for x in lines}
    assert len(got) == len(lines), "one line per input"
    expected = clean["by_source"]
    assert got == expected, {k: (v, got.get(k)) for k, v in expected.items() if got.get(k) != v}  # type: ignore[union-attr]
    settings = b.settings
    live = live_versions_by_series(settings.effective_index_url, settings.index.es_alias)
    assert all(len(ids) == 1 for ids in live.values()), {k: v for k, v in live.items() if len(v) > 1}
    assert {d for ids in live.values() for d in ids} == clean["live"]
    integrity = check_integrity(settings)
    assert integrity.ok, integrity.discrepancies
    index = open_index(settings.effective_index_url, alias=settings.index.es_alias)
    try:
        accepted = {x["doc_id"] for x in lines if x["status"] in ("indexed", "replaced")}
        assert {d for _, d, _ in index.list_ids()} == accepted
    finally:
        index.close()
    quarantined = {q.source for q in open_encrypted_store(settings).list_quarantine()}
    assert quarantined == {x["source"] for x in lines if x["status"] == "rejected"}
    with sqlite3.connect(settings.data_dir / "state.db") as conn:
        assert conn.execute("SELECT count(*) FROM flushes").fetchone()[0] == 0  # all completed
        (run_id, n) = conn.execute(
            "SELECT r.run_id, count(o.seq) FROM runs r JOIN outcomes o USING (run_id)"
            " GROUP BY r.run_id ORDER BY r.started_at DESC LIMIT 1"
        ).fetchone()
        assert n == len(lines), "the rerun recorded exactly what it reported"
        # A killed run that recorded accepted documents and never reported them: the rerun
        # must have taken it over (one killed before recording anything has nothing to hand on).
        interrupted = conn.execute(
            "SELECT count(DISTINCT r.run_id) FROM runs r JOIN outcomes o USING (run_id)"
            " WHERE r.reported_at IS NULL AND r.taken_over_by IS NULL AND r.run_id != ?"
            " AND o.status IN ('indexed', 'replaced')",
            (run_id,),
        ).fetchone()[0]
        assert interrupted == 0, "the killed run's documents were reported by the rerun"
