"""What a data engineer sees of a ``carnet_ingest`` run: mapped tasks named after their
lane (``rendered_map_index``), an alert that shows in the task name, the asset events,
``carnet status`` and the metrics' ``flagged`` alike, structured log fields, a bad feed
URL failing at once with an alert, and Carnet's counters reaching a real StatsD socket
through Airflow's ``Stats``."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.feeds import READY_MARKER
from pipeline.monitoring import AlertKind, load_alerts, load_metrics
from pipeline.settings import Settings
from tests.dags import test_feed_dags
from tests.dags.conftest import REPO, run_dag
from tests.dags.test_ingest_dag import BIO_BATCH, IMG_BATCH, INS_A, _oru, build_feed

pytestmark = [
    pytest.mark.airflow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

BAD_BATCH = "labo-x/2026-02-01-001"
carnet_env = test_feed_dags.carnet_env  # the same CARNET_* environment fixture


def _feed(root: Path) -> None:
    """The two clean batches of ``build_feed`` and one batch rejected at 50 %."""
    build_feed(root)
    bad = root / BAD_BATCH
    bad.mkdir(parents=True)
    good = _oru(INS_A).replace(b"MSG0001", b"MSGX001").replace(b"CMD0001", b"CMDX001")
    wrong_key = _oru(INS_A[:-2] + "00").replace(b"MSG0001", b"MSGX002")
    (bad / "oru.hl7").write_bytes(good + wrong_key)
    (bad / READY_MARKER).touch()


def _task_instances(dag_run: Any, task_id: str) -> list[Any]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_run.dag_id,
                TaskInstance.run_id == dag_run.run_id,
                TaskInstance.task_id == task_id,
            )
        ).all()
        session.expunge_all()
        return list(tis)


def _asset_events(dag_run: Any, name: str) -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == name, AssetEvent.source_run_id == dag_run.run_id)
        ).all()
        return [dict(r.extra or {}) for r in rows]


def test_lanes_are_named_and_an_alert_shows_everywhere_an_operator_looks(
    airflow_home: Path,
    carnet_env: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    carnet_log_records: list[logging.LogRecord],
) -> None:
    from pipeline.cli import main

    feed = tmp_path / "feed"
    _feed(feed)
    run = run_dag.run_dag("carnet_ingest", {"feed_url": str(feed), "max_reject_rate": 0.2}, retries=0)
    assert str(run.state) == "success"

    # The grid names each mapped task after its lane; the alerting one says so.
    names = sorted(ti.rendered_map_index for ti in _task_instances(run, "process_text"))
    assert names[:2] == [
        "labo-bio (1 batch)",
        "labo-x (1 batch) ALERT: reject rate 50% above the threshold 20%",
    ], names
    assert names[2] == "radio-ouest (1 batch)"

    # One threshold, one answer: the metrics' flagged, the alerts kept and the run totals.
    flagged = {m.batch_key: m.flagged for m in load_metrics(carnet_env)}
    assert flagged == {BIO_BATCH: False, IMG_BATCH: False, BAD_BATCH: True}
    alerts = load_alerts(carnet_env)
    assert [(a.kind, a.batch) for a in alerts] == [(AlertKind.REJECT_RATE, BAD_BATCH)]
    assert run_dag.task_return_value(run, "summarize")["flagged_batches"] == [BAD_BATCH]

    # The asset events of the index (and store) carry each lane's metrics and alerts.
    events = _asset_events(run, "carnet_index")
    assert len(events) == 3
    assert len(_asset_events(run, "carnet_store")) == 3
    [bad] = [e for e in events if e["producer"] == "labo-x"]
    assert bad["batches"][0]["by_status"] == {"indexed": 1, "rejected": 1}
    assert bad["batches"][0]["seconds_per_stage"]["parse"] >= 0
    assert [a["kind"] for a in bad["alerts"]] == ["reject_rate"]
    assert all(not e["alerts"] for e in events if e["producer"] != "labo-x")

    # Log records: a real logger name, producer/batch/document as fields, no dict reprs.
    rejected = [r for r in carnet_log_records if r.getMessage().startswith("document rejected")]
    assert [(r.name, r.producer, r.batch, r.reasons) for r in rejected] == [  # type: ignore[attr-defined]
        ("pipeline.monitoring", "labo-x", BAD_BATCH, "invalid_ins_key")
    ]
    assert rejected[0].document.endswith("labo-x/2026-02-01-001/oru.hl7#2")  # type: ignore[attr-defined]
    assert not any("{'" in r.getMessage() for r in carnet_log_records)
    assert not any(r.name.startswith("unusual_prefix") for r in carnet_log_records)

    # carnet status: a feed column, whole batch keys, the alert; no dict repr.
    capsys.readouterr()
    assert main(["status"]) == 0
    status = capsys.readouterr().out
    assert re.search(rf"{re.escape(str(feed))}\s+labo-x\s+1\s+1\s+2\s", status), status
    for key in (BIO_BATCH, IMG_BATCH, BAD_BATCH):
        assert key in status
    assert "Alerts (1 kept" in status and "reject_rate" in status
    assert "{" not in status


def test_a_feed_url_that_leads_nowhere_fails_at_once_and_alerts(
    airflow_home: Path,
    carnet_env: Settings,
    tmp_path: Path,
) -> None:
    # The DAG's own retries (2, with a 30 s delay): configuration errors must not use them.
    run = run_dag.run_dag("carnet_ingest", {"feed_url": str(tmp_path / "no-such-feed")}, retries=None)
    assert str(run.state) == "failed"
    [ti] = _task_instances(run, "discover")
    assert (str(ti.state), ti.try_number) == ("failed", 1)
    [alert] = load_alerts(carnet_env)
    assert alert.kind is AlertKind.BATCH_FAILED and "feed folder does not exist" in alert.message
    assert alert.details["task"] == "carnet_ingest.discover[-1]"


def test_counters_and_timers_reach_statsd_through_airflow(
    airflow_home: Path,
    carnet_env: Settings,
    tmp_path: Path,
) -> None:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(0.5)
    feed = tmp_path / "feed"
    _feed(feed)
    env = {
        **os.environ,
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(sink.getsockname()[1]),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
    }
    try:
        done = subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "run_dag.py"),
                "--feed",
                str(feed),
                "--airflow-home",
                str(airflow_home),
            ],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        packets: list[str] = []
        while True:
            try:
                packets += sink.recv(65535).decode().split("\n")
            except TimeoutError:
                break
    finally:
        sink.close()
    assert "airflow.carnet.documents.labo-x.indexed:1|c" in packets
    assert "airflow.carnet.documents.labo-x.rejected:1|c" in packets
    assert "airflow.carnet.rejected.labo-x.invalid_ins_key:1|c" in packets
    assert "airflow.carnet.batches.labo-bio:1|c" in packets
    assert any(re.fullmatch(r"airflow\.carnet\.stage\.parse:[0-9.]+\|ms", p) for p in packets)
    assert any(p.startswith("airflow.carnet.reject_rate.labo-x:0.5|g") for p in packets)
    assert json.loads(done.stdout)["batches"] == 3
