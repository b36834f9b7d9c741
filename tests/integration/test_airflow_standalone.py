"""``airflow standalone`` for real (SQLite, LocalExecutor, low parallelism), started by
``scripts/airflow_standalone.sh`` in its own process group: trigger ``carnet_ingest``
over the REST API, wait for success, check the index, stop it by its process group."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.feeds import REPORT
from tests.integration.conftest import AirflowApi, free_port, unavailable

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.timeout(330)]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "airflow_standalone.sh"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_standalone_runs_the_ingestion_over_the_rest_api(tmp_path: Path) -> None:
    from pipeline.index import open_index
    from pipeline.settings import Settings
    from tests.dags.test_ingest_dag import INS_A, INS_B, build_feed

    if not (REPO / ".venv" / "bin" / "airflow").exists():
        unavailable("no airflow in .venv (scripts/bootstrap.sh)")
    feed = tmp_path / "feed"
    expected = build_feed(feed)
    port = free_port()
    data_dir = tmp_path / "carnet"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CARNET_"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"), CARNET_AIRFLOW_PORT=str(port), CARNET_DATA_DIR=str(data_dir)
    )
    started = time.monotonic()
    done = subprocess.run(
        [str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    pgid = int((tmp_path / "airflow" / "standalone.pgid").read_text())
    log = tmp_path / "airflow" / "standalone.log"
    try:
        api = AirflowApi(f"http://127.0.0.1:{port}")
        deadline = started + 270
        try:
            api.wait_ready(deadline, alive=lambda: _group_alive(pgid))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text(errors='replace')[-4000:]}") from None
        api.wait_dag("carnet_ingest", deadline)
        run_id = api.trigger("carnet_ingest", {"feed_url": str(feed)})
        state = api.wait_run("carnet_ingest", run_id, deadline)
        tis = api.task_instances("carnet_ingest", run_id)
        assert state == "success", json.dumps(tis, indent=1)[-3000:]
        processed = [t for t in tis if t["task_id"] == "process_text"]
        assert sorted(t["map_index"] for t in processed) == [0, 1]
        assert all(t["state"] == "success" for t in processed)
    finally:
        stopped = subprocess.run(
            [str(SCRIPT), "stop"], env=env, capture_output=True, text=True, timeout=90, check=False
        )
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    left = subprocess.run(["ps", "-o", "pid,ppid,stat,args", "-g", str(pgid)], capture_output=True, text=True)
    assert not _group_alive(pgid), f"the standalone group survived stop:\n{left.stdout}{stopped.stderr}"
    for key, n in expected.items():
        assert json.loads((feed / key / REPORT).read_text())["accepted"] == n, tail
    index = open_index(Settings.from_env({"CARNET_DATA_DIR": str(data_dir)}).effective_index_url)
    try:
        assert sorted(p for p, _, _ in index.list_ids()) == sorted([INS_A, INS_A, INS_B])
    finally:
        index.close()
