"""Helpers for the crash-consistency tests: ``carnet`` run as a real subprocess (so a
fault point can ``kill -9`` it), a small generated feed, and the checks every test makes
after a rerun: one final state per input, no two live versions, ledger ≡ index ≡ store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from generator import GeneratedFeed, generate_feed

REPO = Path(__file__).resolve().parents[2]


def carnet(*args: str, data_dir: Path, fault: str | None = None, env: dict[str, str] | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``carnet ARGS`` in a fresh interpreter on ``data_dir``, optionally with a fault point."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CARNET_")}
    environ.update(CARNET_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO), CARNET_DATA_DOCS="0",
                   OMP_THREAD_LIMIT="1", **(env or {}))
    if fault:
        environ["CARNET_FAULT_POINT"] = fault
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=environ, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


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
