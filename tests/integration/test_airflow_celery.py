"""Scale-out for real: PostgreSQL and Redis from Debian's packages, an Airflow API
server, scheduler, DAG processor and two Celery workers, each in its own process group
(``scripts/airflow_celery.sh``). The ingestion DAG runs end to end over a generated feed
and its task instances ran on both workers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.feeds import REPORT
from tests.integration.conftest import AirflowApi, free_port, unavailable

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.timeout(330)]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "airflow_celery.sh"
SERVICES = ("postgres", "redis", "api-server", "scheduler", "dag-processor", "worker1", "worker2")


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_celery_workers_share_the_ingestion(tmp_path: Path) -> None:
    from generator import generate_feed
    from pipeline.index import open_index
    from pipeline.settings import Settings

    if shutil.which("apt-get") is None and shutil.which("redis-server") is None:
        unavailable("neither redis-server nor apt-get to install it")
    feed = tmp_path / "feed"
    generated = generate_feed(feed, seed=7, patients=6, documents=28, include_bad=True, scans=0)
    batches = sorted({f"{d.producer}/{d.batch}" for d in generated.documents})
    state = tmp_path / "celery"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CARNET_"))}
    env.update(CARNET_CELERY_HOME=str(state), CARNET_AIRFLOW_PORT=str(port),
               CARNET_PG_PORT=str(free_port()), CARNET_REDIS_PORT=str(free_port()),
               CARNET_DATA_DIR=str(tmp_path / "carnet"))
    started = time.monotonic()
    done = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True,
                          timeout=240, check=False)
    pgids = {s: int((state / f"{s}.pgid").read_text()) for s in SERVICES
             if (state / f"{s}.pgid").exists()}
    try:
        if done.returncode != 0:
            logs = {p.name: p.read_text(errors="replace")[-1500:] for p in state.glob("*.log")}
            raise AssertionError(f"{done.stdout}{done.stderr}\n{json.dumps(logs, indent=1)}")
        assert set(pgids) == set(SERVICES), pgids
        api = AirflowApi(f"http://127.0.0.1:{port}")
        deadline = started + 280
        api.wait_ready(deadline, alive=lambda: _alive(pgids["api-server"]))
        api.wait_dag("carnet_ingest", deadline)
        run_id = api.trigger("carnet_ingest", {"feed_url": str(feed)})
        state_ = api.wait_run("carnet_ingest", run_id, deadline)
        tis = api.task_instances("carnet_ingest", run_id)
        assert state_ == "success", json.dumps(tis, indent=1)[-3000:]
    finally:
        subprocess.run([str(SCRIPT), "purge"], env=env, capture_output=True, timeout=120, check=False)
    assert not [s for s, g in pgids.items() if _alive(g)], "a service group survived stop"

    ran = [t for t in tis if t["state"] == "success"]
    assert {t["hostname"] for t in ran} == {"worker1", "worker2"}, [
        (t["task_id"], t["map_index"], t["hostname"]) for t in ran]
    lanes = [t for t in ran if t["task_id"] in ("process_text", "process_ocr")]
    assert len(lanes) == len({b.split("/")[0] for b in batches})
    for key in batches:
        assert (feed / key / REPORT).exists(), key
    expected_docs = {(d.patient_id, d.source_ref) for d in generated.documents
                     if d.expected_status.value in ("indexed", "replaced")}
    index = open_index(Settings.from_env({"CARNET_DATA_DIR": str(tmp_path / "carnet")})
                       .effective_index_url)
    try:
        assert len(index.list_ids()) == len(expected_docs)
    finally:
        index.close()
