"""The command line on a PostgreSQL state database, as an operator uses it: a fresh
database refused until ``carnet db upgrade``, then ``carnet ingest`` twice (the second
run all duplicates) and ``carnet status`` reading both runs back, each command in a
fresh interpreter with nothing of the state on the local disk."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

from tests.conftest import SAMPLES
from tests.crash.conftest import carnet, read_report


def test_db_upgrade_ingest_and_status_on_postgresql(pg_state_url: str, tmp_path: Path) -> None:
    feed = tmp_path / "in" / "labo"
    feed.mkdir(parents=True)
    for name in ("cr-bio.xml", "cr-imagerie.xml"):
        shutil.copy(SAMPLES / "cda" / name, feed / name)
    env = {"CARNET_STATE_URL": pg_state_url, "CARNET_MASTER_KEY": base64.b64encode(b"m" * 32).decode()}
    data_dir = tmp_path / "carnet"

    refused = carnet("ingest", str(feed), "-q", data_dir=data_dir, env=env)
    assert refused.returncode == 1 and "carnet db upgrade" in refused.stderr
    assert carnet("db", "upgrade", data_dir=data_dir, env=env).returncode == 0

    for report in ("first.jsonl", "second.jsonl"):
        run = carnet(
            "ingest", str(feed), "-q", "--report", str(tmp_path / report), data_dir=data_dir, env=env
        )
        assert run.returncode == 0, run.stderr
    first, second = read_report(tmp_path / "first.jsonl"), read_report(tmp_path / "second.jsonl")
    assert sorted(x["status"] for x in first) == ["indexed", "indexed"]
    assert sorted(x["status"] for x in second) == ["duplicate", "duplicate"]
    assert not (data_dir / "state.db").exists()  # the ledger is in PostgreSQL only

    status = carnet("status", data_dir=data_dir, env=env)
    assert status.returncode == 0, status.stderr
    assert "Last runs (2, newest first):" in status.stdout
    assert "[duplicate 2]" in status.stdout and "[indexed 2]" in status.stdout
