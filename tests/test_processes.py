"""Carnet's worker processes (parsers after a run's first inputs, Great Expectations from
its first) start from a host whose main module must not be imported again: under Airflow,
``__main__`` is the ``airflow`` script, which a task process cannot import (its database
is off limits there), and every child that imported it died before its first line; nor
from a daemonic process (a Celery worker's), which may start none."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import hl7_batch

REPO = Path(__file__).resolve().parents[1]

# A host's main script that refuses to be imported as anything but the program itself.
HOST = """\
import sys
if __name__ != "__main__":
    raise SystemExit("the host's main module was imported again in a child process")
sys.path.insert(0, {repo!r})
from pipeline.cli import main
sys.exit(main(["ingest", {feed!r}, "--report", {report!r}]))
"""


def test_a_run_large_enough_for_worker_processes_from_a_host_whose_main_cannot_be_imported(
    tmp_path: Path,
) -> None:
    feed = tmp_path / "feed" / "labo"
    feed.mkdir(parents=True)
    inputs = 24  # past the inputs a run parses in threads before its processes start
    for n in range(inputs):
        (feed / f"{n:02d}.hl7").write_bytes(hl7_batch(1, start=n))
    host, report = tmp_path / "host.py", tmp_path / "report.jsonl"
    host.write_text(HOST.format(repo=str(REPO), feed=str(feed.parent), report=str(report)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARNET_")}
    env.update(CARNET_DATA_DIR=str(tmp_path / "carnet"), CARNET_OCR_WORKERS="2")
    done = subprocess.run(
        [sys.executable, str(host)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "imported again" not in done.stderr, done.stderr[-3000:]
    lines = report.read_text().splitlines()
    assert len(lines) == inputs and all('"indexed"' in line for line in lines), lines[:3]


def _ingest_in_a_daemon(feed: str, report: str) -> None:
    from pipeline.cli import main

    sys.exit(main(["ingest", feed, "--report", report]))


def test_a_large_run_in_a_daemonic_process_as_a_celery_worker_runs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Celery worker's pool processes are daemonic and may not have children: the run
    parses in threads and gates in its own process, and ends as anywhere else."""
    feed = tmp_path / "feed" / "labo"
    feed.mkdir(parents=True)
    inputs = 24
    for n in range(inputs):
        (feed / f"{n:02d}.hl7").write_bytes(hl7_batch(1, start=n))
    report = tmp_path / "report.jsonl"
    for name in [k for k in os.environ if k.startswith("CARNET_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CARNET_DATA_DIR", str(tmp_path / "carnet"))
    monkeypatch.setenv("CARNET_OCR_WORKERS", "2")
    worker = mp.get_context("spawn").Process(
        target=_ingest_in_a_daemon, args=(str(feed.parent), str(report)), daemon=True
    )
    worker.start()
    worker.join(300)
    assert worker.exitcode == 0
    lines = report.read_text().splitlines()
    assert len(lines) == inputs and all('"indexed"' in line for line in lines), lines[:3]
