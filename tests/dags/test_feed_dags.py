"""The ingestion, replay and maintenance DAGs run with ``dag.test()`` over a generated
feed with bad inputs: every document's final state against the generator's expectation,
the acknowledgement reports, the metrics and status, a re-run that changes nothing, the
replay of the quarantine, and the integrity check passing on a clean run and finding a
planted discrepancy."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from generator import generate_feed
from pipeline.feeds import ACK_DIR, REPORT
from pipeline.model import Status
from pipeline.settings import Settings
from tests.dags.conftest import run_dag

pytestmark = [
    pytest.mark.airflow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def _tis(dag_run: Any) -> dict[tuple[str, int], str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
            )
        ).all()
        return {(ti.task_id, ti.map_index): str(ti.state) for ti in rows}


def _final_outcomes(settings: Settings, feed: Path) -> dict[str, dict[str, Any]]:
    """source_ref relative to the feed → the last outcome line the ledger holds for it."""
    conn = sqlite3.connect(settings.data_dir / "state.db")
    try:
        rows = conn.execute(
            "SELECT o.line FROM outcomes o JOIN runs r USING (run_id) WHERE r.kind = 'batch' "
            "ORDER BY r.started_at, o.seq"
        ).fetchall()
    finally:
        conn.close()
    out = {}
    for (line,) in rows:
        d = json.loads(line)
        out[d["source"].removeprefix(f"{feed}/")] = d
    return out


@pytest.fixture
def carnet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CARNET_DATA_DIR", str(tmp_path / "carnet"))
    for name in (
        "CARNET_INDEX_URL",
        "CARNET_STORE_URL",
        "CARNET_FEED_URL",
        "CARNET_FEEDS_FILE",
        "CARNET_ALERT_WEBHOOK",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_THREAD_LIMIT", "1")
    return Settings.from_env()


def test_ingest_replay_and_maintenance_over_a_generated_feed(
    airflow_home: Path,
    carnet_env: Settings,
    tmp_path: Path,
    carnet_log_records: list[logging.LogRecord],
) -> None:
    from pipeline.crypto import open_encrypted_store
    from pipeline.index import open_index
    from pipeline.monitoring import format_producer_status, load_metrics, producer_status

    feed = tmp_path / "feed"
    generated = generate_feed(feed, seed=7, patients=6, documents=28, include_bad=True, scans=0)
    expected = {d.source_ref: d for d in generated.documents}
    batches = sorted({f"{d.producer}/{d.batch}" for d in generated.documents})

    # -- ingestion ------------------------------------------------------------------------
    run = run_dag.run_dag("carnet_ingest", {"feed_url": str(feed)}, retries=0)
    assert str(run.state) == "success", _tis(run)
    plan = run_dag.task_return_value(run, "discover")
    lanes = plan["text"] + plan["ocr"]
    assert sorted(k for lane in lanes for k in lane) == batches
    for lane in lanes:  # one producer per lane, its batches in arrival order
        assert len({k.split("/")[0] for k in lane}) == 1 and lane == sorted(lane)
    # The one image in the feed sends its producer's lane to the OCR pool, no other.
    image_producers = {d.producer for d in generated.documents if d.format == "image"}
    assert {lane[0].split("/")[0] for lane in plan["ocr"]} == image_producers
    states = _tis(run)
    assert sorted(i for (t, i), s in states.items() if t == "process_text" and s == "success") == list(
        range(len(plan["text"]))
    )
    assert (
        sum(1 for (t, _), s in states.items() if t == "process_ocr" and s == "success")
        == len(plan["ocr"])
        == 1
    )

    finals = _final_outcomes(carnet_env, feed)
    assert set(finals) == set(expected), set(finals) ^ set(expected)
    for ref, doc in expected.items():
        got = finals[ref]
        assert got["status"] == doc.expected_status.value, (ref, got, doc)
        codes = {r.split(":", 1)[0] for r in got["reasons"]}
        assert set(doc.expected_reasons) <= codes, (ref, got["reasons"], doc.expected_reasons)
        if doc.expected_status is not Status.REJECTED:
            assert got["patient_id"] == doc.patient_id, ref

    # Every rejected document is named in the task log, producer, batch and document as fields.
    rejected = [r for r, d in expected.items() if d.expected_status is Status.REJECTED]
    logged = [
        (r.producer, r.batch, r.document)
        for r in carnet_log_records  # type: ignore[attr-defined]
        if r.getMessage().startswith("document rejected")
    ]
    for ref in rejected:
        producer, batch = ref.split("/")[:2]
        document = f"{feed}/{ref.split('#')[0]}"
        assert any(
            p == producer and b == f"{producer}/{batch}" and d.startswith(document) for p, b, d in logged
        ), ref

    # The acknowledgement report of each batch: one line per document, counts that add up.
    for key in batches:
        report = json.loads((feed / key / REPORT).read_text())
        mine = {r: d for r, d in expected.items() if r.startswith(key + "/")}
        # Sources are relative to the batch: no server path reaches the producer.
        assert str(tmp_path) not in json.dumps(report)
        files = {f"{key}/{f['source']}": f for f in report["files"]}
        assert set(files) == set(mine), key
        for ref, f in files.items():
            assert f["status"] == mine[ref].expected_status.value
            if f["status"] == "rejected":
                assert f["reasons"] and all(r["message"] for r in f["reasons"]), f
        counts = Counter(d.expected_status.value for d in mine.values())
        assert (report["accepted"], report["duplicate"], report["replaced"], report["rejected"]) == (
            counts["indexed"],
            counts["duplicate"],
            counts["replaced"],
            counts["rejected"],
        )

    # Metrics: one record per batch, adding up to the feed; status per producer.
    metrics = load_metrics(carnet_env)
    assert sorted(m.batch_key for m in metrics) == batches
    assert sum(m.total for m in metrics) == len(expected)
    by_status = Counter()
    for m in metrics:
        by_status.update(m.by_status)
        assert m.feed == str(feed) and m.seconds_per_stage
    assert dict(by_status) == dict(Counter(d.expected_status.value for d in expected.values()))
    status = {p.producer: p for p in producer_status(carnet_env)}
    assert set(status) == {d.producer for d in expected.values()}
    text = format_producer_status(carnet_env)
    for producer in status:
        assert producer in text
    totals = run_dag.task_return_value(run, "summarize")
    assert totals["documents"] == len(expected) and totals["batches"] == len(batches)

    index = open_index(carnet_env.effective_index_url)
    try:
        held = index.list_ids()
    finally:
        index.close()

    # -- re-running changes nothing ---------------------------------------------------------
    mtimes = {k: (feed / k / REPORT).stat().st_mtime_ns for k in batches}
    again = run_dag.run_dag("carnet_ingest", {"feed_url": str(feed)}, retries=0)
    assert str(again.state) == "success"
    assert run_dag.task_return_value(again, "discover") == {"text": [], "ocr": []}
    assert {k: (feed / k / REPORT).stat().st_mtime_ns for k in batches} == mtimes
    assert len(load_metrics(carnet_env)) == len(batches)
    index = open_index(carnet_env.effective_index_url)
    try:
        assert index.list_ids() == held
    finally:
        index.close()

    # -- replay: a dry run lists, a real run keeps the history of what fails again -----------
    store = open_encrypted_store(carnet_env)
    quarantined = {q.quarantine_id: q for q in store.list_quarantine()}
    assert len(quarantined) >= len(rejected) - 1  # a missing manifest file has no bytes to keep
    producer = next(iter(quarantined.values())).producer
    theirs = {i for i, q in quarantined.items() if q.producer == producer}
    dry = run_dag.run_dag("carnet_replay", {"producer": producer, "dry_run": True}, retries=0)
    assert str(dry.state) == "success"
    assert run_dag.task_return_value(dry, "replay") == {
        "dry_run": True,
        "selected": len(theirs),
        "released": 0,
        "still_rejected": 0,
        "not_replayable": 0,
        "filter": {"producer": producer, "ids": []},
    }
    assert {q.quarantine_id: len(q.attempts) for q in store.list_quarantine()} == {
        i: len(q.attempts) for i, q in quarantined.items()
    }, "a dry run changes nothing"
    real = run_dag.run_dag("carnet_replay", {"producer": producer, "dry_run": False}, retries=0)
    result = run_dag.task_return_value(real, "replay")
    assert (result["selected"], result["still_rejected"]) == (len(theirs), len(theirs)), result
    after = {q.quarantine_id: q for q in store.list_quarantine()}
    for i in theirs:
        assert len(after[i].attempts) == len(quarantined[i].attempts) + 1, "history kept"

    # -- maintenance: clean, then a planted discrepancy --------------------------------------
    clean = run_dag.run_dag("carnet_maintenance", {}, retries=0)
    assert str(clean.state) == "success", _tis(clean)
    report = run_dag.task_return_value(clean, "check_integrity")
    assert report["ok"] and report["discrepancy_count"] == 0, report
    assert report["indexed"] == len(held) > 0
    assert _tis(clean)[("reindex", -1)] == "skipped"

    patient, doc_id, sha = held[0]
    assert store.delete(sha)
    broken = run_dag.run_dag("carnet_maintenance", {"reindex": True}, retries=0)
    report = run_dag.task_return_value(broken, "check_integrity")
    assert not report["ok"]
    assert [(d["kind"], d["doc_id"]) for d in report["discrepancies"]] == [("missing_bytes", doc_id)]
    assert run_dag.task_return_value(broken, "reindex")["documents"] == len(held)


def test_hl7_acks_are_written_next_to_the_batch(
    airflow_home: Path, carnet_env: Settings, tmp_path: Path
) -> None:
    feed = tmp_path / "feed"
    generated = generate_feed(feed, seed=7, patients=6, documents=28, include_bad=True, scans=0)
    run = run_dag.run_dag("carnet_ingest", {"feed_url": str(feed)}, retries=0)
    assert str(run.state) == "success"
    hl7 = [d for d in generated.documents if d.format == "hl7v2"]
    # A message whose MSH is unreadable has no control id to acknowledge: its report
    # entry names the file and the message's position instead.
    acked = [d for d in hl7 if "parse_error" not in d.expected_reasons]
    for d in hl7:
        if "parse_error" in d.expected_reasons:
            name, _, position = d.source_ref.split("/", 2)[2].partition("#")
            report = json.loads((feed / d.producer / d.batch / REPORT).read_text())
            [entry] = [e for e in report["files"] if e["file"] == name and e["position"] == int(position)]
            assert entry["status"] == "rejected" and entry["ack"] is None
    want = Counter("AE" if d.expected_status is Status.REJECTED else "AA" for d in acked)
    assert want["AA"] and want["AE"], "the feed should hold accepted and rejected messages"
    codes: Counter[str] = Counter()
    for key in {f"{d.producer}/{d.batch}" for d in hl7}:
        for ack in (feed / key / ACK_DIR).glob("*.hl7"):
            # In the charset the producer declared (MSH-18), which may be ISO-8859-1.
            segments = ack.read_bytes().decode("latin-1").split("\r")
            assert segments[0].startswith("MSH|^~\\&|CARNET|") and "ACK" in segments[0]
            assert segments[1].startswith("MSA|") and segments[1].split("|")[2], segments
            codes[segments[1].split("|")[1]] += 1
    assert codes == want, (codes, want)
