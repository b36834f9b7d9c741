"""Every DAG in ``dags/`` imports cleanly, has the basics Carnet requires, and stays cheap
to parse (no heavy library imported at the top of a DAG file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

DAG_FILES = sorted((REPO / "dags").glob("*.py"))
# What the scheduler must never pay for at every parse of a DAG file.
HEAVY_MODULES = (
    "pypdf",
    "pytesseract",
    "great_expectations",
    "elasticsearch",
    "hl7apy",
    "boto3",
    "pipeline.ingest",
    "parsers.registry",
)


@pytest.fixture(scope="module")
def dagbag() -> Any:
    from airflow.models.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"), include_examples=False)


def test_dags_folder_has_dag_files() -> None:
    assert [p.name for p in DAG_FILES if not p.name.startswith("_")], "no DAG file in dags/"


def test_every_dag_file_imports_without_errors(dagbag: Any) -> None:
    assert dagbag.import_errors == {}
    assert "carnet_ingest" in dagbag.dags


def test_every_dag_has_the_basics(dagbag: Any) -> None:
    assert dagbag.dags
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id}: no tags"
        assert dag.catchup is False, f"{dag_id}: catchup must be False"
        assert (dag.default_args or {}).get("retries", 0) >= 1, f"{dag_id}: no retries"
        assert dag.doc_md and dag.doc_md.strip(), f"{dag_id}: no doc_md"
        assert isinstance(dag.start_date, datetime) and dag.start_date.tzinfo is not None, (
            f"{dag_id}: start_date must be a fixed, timezone-aware datetime"
        )
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id}: no retries"


def _parse_in_fresh_interpreter(dag_file: Path) -> dict[str, Any]:
    code = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("dag_under_test", {str(dag_file)!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from airflow.sdk import DAG
dags = {{v.dag_id: v.start_date.isoformat() for v in vars(module).values() if isinstance(v, DAG)}}
heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]
print(json.dumps({{"heavy": heavy, "start_dates": dags}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=lambda p: p.name)
def test_parsing_a_dag_file_imports_nothing_heavy(dag_file: Path, dagbag: Any) -> None:
    parsed = _parse_in_fresh_interpreter(dag_file)
    assert parsed["heavy"] == [], f"{dag_file.name} imports {parsed['heavy']} at parse time"
    # Another interpreter, another moment: a start_date computed from "now" would differ.
    for dag_id, start in parsed["start_dates"].items():
        assert dagbag.dags[dag_id].start_date.isoformat() == start, f"{dag_id}: start_date moves"


def test_the_feeds_file_gives_one_asset_or_cron_dag_per_feed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.models.dagbag import DagBag

    monkeypatch.setenv("CARNET_FEEDS_FILE", str(REPO / "config" / "feeds.example.toml"))
    bag = DagBag(dag_folder=str(REPO / "dags" / "carnet_ingest.py"), include_examples=False)
    assert bag.import_errors == {}
    assert set(bag.dags) == {"carnet_ingest", "carnet_ingest_labo_biolyon", "carnet_ingest_imagerie_du_parc"}
    dag = bag.dags["carnet_ingest_imagerie_du_parc"]
    assert dag.params["feed_url"] == "s3://carnet-feeds/imagerie-du-parc"
    assert dag.params["scans"] is True and dag.params["max_reject_rate"] == 0.3
    assert "carnet-feed://imagerie-du-parc" in str(dag.timetable.asset_condition)
    assert "0 * * * *" in str(dag.timetable.timetable.summary)
    ocr = dag.get_task("process_ocr")
    assert ocr.pool == "ocr"
    assert bag.dags["carnet_ingest"].timetable.summary in ("None", "")


def test_every_task_alerts_on_failure(dagbag: Any) -> None:
    for dag_id in ("carnet_ingest", "carnet_replay", "carnet_maintenance"):
        for t in dagbag.dags[dag_id].tasks:
            assert t.on_failure_callback, f"{dag_id}.{t.task_id}"


def test_mapped_tasks_are_named_and_declare_what_they_update(dagbag: Any) -> None:
    dag = dagbag.dags["carnet_ingest"]
    for task_id in ("process_text", "process_ocr"):
        task = dag.get_task(task_id)
        assert task.map_index_template == "{{ lane_label }}"
        assert {a.name for a in task.outlets} == {"carnet_index", "carnet_store"}
