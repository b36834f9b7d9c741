"""Several processes opening one fresh SQLite file at the same moment (workers starting
together on a new data directory) all open it: none fails with "database is locked"."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

import pytest

from pipeline.index.sqlite import SqliteIndex
from pipeline.settings import Settings
from pipeline.state import open_engine

OPENERS = 2  # two collide most often: more serialise on the barrier's release
ATTEMPTS = 300  # each fresh file collides a few times in a hundred without the retry


def _open_index(path: Path, barrier: Any, errors: Any) -> None:
    barrier.wait(timeout=60)
    try:
        SqliteIndex(path).close()
    except Exception as exc:  # reported to the test, which names it
        errors.put(repr(exc))


def _open_state(data_dir: Path, barrier: Any, errors: Any) -> None:
    barrier.wait(timeout=60)
    try:
        engine = open_engine(Settings(data_dir=data_dir))
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        finally:
            engine.dispose()
    except Exception as exc:
        errors.put(repr(exc))


@pytest.mark.parametrize("opener", [_open_index, _open_state], ids=["index", "state"])
def test_processes_opening_one_fresh_file_together_all_open_it(opener: Any, tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    barrier, errors = ctx.Barrier(OPENERS), ctx.Queue()
    for attempt in range(ATTEMPTS):
        target = tmp_path / f"a{attempt}" / ("index.db" if opener is _open_index else "")
        procs = [ctx.Process(target=opener, args=(target, barrier, errors)) for _ in range(OPENERS)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0] * OPENERS
        assert errors.empty(), (attempt, errors.get())
