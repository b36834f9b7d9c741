"""``carnet_ingest`` run for real with ``dag.test()`` (tasks in this process, SQLite
Airflow home) on a small folder feed: one mapped ``process`` per complete batch, an
acknowledgement in each batch, the documents in the embedded index, and a second run
that finds nothing new."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from stdnum.fr import nir

from pipeline.feeds import READY_MARKER, REPORT
from pipeline.settings import Settings
from tests.dags.conftest import REPO, run_dag

pytestmark = [
    pytest.mark.airflow,
    # Airflow 3.1's own deprecation chatter (SQLAlchemy noload, starlette, HTTP 422 alias).
    pytest.mark.filterwarnings("ignore::DeprecationWarning:airflow.*"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:starlette.*"),
]

BIO_BATCH = "labo-bio/2026-01-15-001"
IMG_BATCH = "radio-ouest/2026-01-16-001"
UNFINISHED_BATCH = "radio-ouest/2026-01-17-001"  # no _READY yet: must be left alone


def _ins(nir13: str) -> str:
    return nir13 + nir.calc_check_digits(nir13)


INS_A = _ins("1840575123456")
INS_B = _ins("2910269012345")


def _spaced(ins: str) -> str:
    return f"{ins[0]} {ins[1:3]} {ins[3:5]} {ins[5:7]} {ins[7:10]} {ins[10:13]} {ins[13:]}"


def _oru(ins: str) -> bytes:
    segments = [
        "MSH|^~\\&|SIL|LABO-BIO^750000001^FINESS|CARNET|DMP|20260115103000||ORU^R01^ORU_R01"
        "|MSG0001|P|2.5|||||FRA|UNICODE UTF-8",
        f"PID|1||{ins}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||MARTIN^PAUL^^^^^L||19840512|M",
        "OBR|1||CMD0001|11502-2^CR d'examens biologiques^LN|||20260115080000",
        "OBX|1|NM|718-7^Hémoglobine^LN||14.2|g/dL|13.0-17.0|N|||F",
        "OBX|2|NM|6690-2^Leucocytes^LN||6.5|10*9/L|4.0-10.0|N|||F",
        "OBX|3|NM|777-3^Plaquettes^LN||250|10*9/L|150-400|N|||F",
    ]
    return ("\r".join(segments) + "\r").encode("utf-8")


def _pdf(path: Path, lines: list[str]) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4)
    y = 800
    for line in lines:
        c.drawString(60, y, line)
        y -= 18
    c.save()


def build_feed(root: Path) -> dict[str, int]:
    """Two complete batches and one still uploading; returns documents per batch."""
    bio = root / BIO_BATCH
    bio.mkdir(parents=True)
    (bio / "oru-0001.hl7").write_bytes(_oru(INS_A))
    _pdf(
        bio / "cr-bio-0002.pdf",
        [
            "Laboratoire de biologie médicale du Parc",
            "Compte rendu d'examens biologiques",
            f"Patiente : DURAND Claire   INS : {_spaced(INS_B)}",
            "Date du prélèvement : 14/01/2026",
            "Hémogramme - numération formule sanguine",
            "Hémoglobine 12.9 g/dL (valeurs de référence 12.0 - 16.0)",
            "Ferritine 45 µg/L    Créatinine 62 µmol/L    Glycémie 0.92 g/L",
            "Validé par le Dr Alice Bernard, biologiste",
        ],
    )
    (bio / READY_MARKER).touch()
    img = root / IMG_BATCH
    img.mkdir(parents=True)
    _pdf(
        img / "cr-img-0001.pdf",
        [
            "Cabinet de radiologie de l'Ouest - imagerie médicale",
            "Compte rendu d'imagerie médicale : radiographie du thorax de face",
            f"Patient : MARTIN Paul   INS : {_spaced(INS_A)}",
            "Date de l'examen : 16/01/2026",
            "Indication : toux persistante. Technique : cliché thoracique de face.",
            "Résultat : pas de foyer parenchymateux, pas d'épanchement pleural.",
            "Conclusion : radiographie thoracique normale.",
            "Dr Marc Petit, radiologue",
        ],
    )
    (img / READY_MARKER).touch()
    unfinished = root / UNFINISHED_BATCH
    unfinished.mkdir(parents=True)
    (unfinished / "oru-0009.hl7").write_bytes(_oru(INS_B))
    return {BIO_BATCH: 2, IMG_BATCH: 1}


def _task_instances(dag_run: Any) -> list[Any]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
            )
        ).all()
        session.expunge_all()
        return list(tis)


def _states(dag_run: Any, task_id: str) -> dict[int, str]:
    return {ti.map_index: str(ti.state) for ti in _task_instances(dag_run) if ti.task_id == task_id}


@pytest.fixture
def carnet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """CARNET_* variables for the tasks (dag.test runs them in this process)."""
    data_dir = tmp_path / "carnet"
    monkeypatch.setenv("CARNET_DATA_DIR", str(data_dir))
    monkeypatch.delenv("CARNET_INDEX_URL", raising=False)
    monkeypatch.delenv("CARNET_STORE_URL", raising=False)
    monkeypatch.delenv("CARNET_FEED_URL", raising=False)
    monkeypatch.setenv("OMP_THREAD_LIMIT", "1")
    return Settings.from_env()


def test_dag_ingests_each_complete_batch_once(
    airflow_home: Path, carnet_env: Settings, tmp_path: Path
) -> None:
    from pipeline.index import open_index

    feed = tmp_path / "feed"
    expected = build_feed(feed)

    first = run_dag.run_dag("carnet_ingest", {"feed_url": str(feed)}, retries=0)
    assert str(first.state) == "success", _task_instances(first)
    assert _states(first, "discover") == {-1: "success"}
    assert _states(first, "process_text") == {0: "success", 1: "success"}, "one task per producer"
    assert _states(first, "process_ocr") == {-1: "skipped"}, "no scan in these batches"
    assert _states(first, "summarize") == {-1: "success"}

    plan = run_dag.task_return_value(first, "discover")
    assert plan == {"text": [[BIO_BATCH], [IMG_BATCH]], "ocr": []}
    totals = run_dag.task_return_value(first, "summarize")
    assert totals["batches"] == 2
    assert totals["documents"] == sum(expected.values())
    assert totals["by_status"] == {"indexed": 3}, totals

    for key, n_docs in expected.items():
        report = json.loads((feed / key / REPORT).read_text())
        assert report["accepted"] == n_docs, report
        assert len(report["files"]) == n_docs
    assert not (feed / UNFINISHED_BATCH / REPORT).exists()

    index = open_index(carnet_env.effective_index_url)
    try:
        held = index.list_ids()
    finally:
        index.close()
    patients = sorted(p for p, _, _ in held)
    assert patients == sorted([INS_A, INS_A, INS_B]), held
    report_mtimes = {k: (feed / k / REPORT).stat().st_mtime_ns for k in expected}

    second = run_dag.run_dag("carnet_ingest", {"feed_url": str(feed)}, retries=0)
    assert str(second.state) == "success"
    assert run_dag.task_return_value(second, "discover") == {"text": [], "ocr": []}
    assert _states(second, "process_text") == {-1: "skipped"}, "zero-length map: nothing to do"
    assert run_dag.task_return_value(second, "summarize")["batches"] == 0
    assert {k: (feed / k / REPORT).stat().st_mtime_ns for k in expected} == report_mtimes
    index = open_index(carnet_env.effective_index_url)
    try:
        assert sorted(index.list_ids()) == sorted(held)
    finally:
        index.close()


def _run_script(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "run_dag.py"), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_run_dag_script_reports_an_empty_feed_and_fails_on_a_missing_one(
    airflow_home: Path, carnet_env: Settings, tmp_path: Path
) -> None:
    env = dict(os.environ)
    empty = tmp_path / "empty-feed"
    empty.mkdir()
    done = _run_script("--feed", str(empty), "--airflow-home", str(airflow_home), env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["batches"] == 0
    assert "success" in done.stderr

    gone = json.dumps({"feed_url": str(tmp_path / "no-such-feed")})
    done = _run_script("--conf", gone, "--airflow-home", str(airflow_home), env=env)
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert "failed" in done.stderr

    done = _run_script("--feed", str(tmp_path / "no-such-feed"), env=env)
    assert done.returncode == 2
