"""The operations modules without Airflow: feeds file, HL7 ACKs built from real pipeline
outcomes, alerts (log and a real local webhook), retention purge."""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from pipeline.acks import ack_code, write_acknowledgements
from pipeline.errors import ConfigurationError
from pipeline.feeds import FolderFeed
from pipeline.feeds.config import is_scan_heavy, load_feeds
from pipeline.model import Format, Outcome, Problem, Reason, Status
from pipeline.monitoring import (
    Alert,
    AlertKind,
    BatchMetrics,
    WebhookNotifier,
    reject_rate_alerts,
    silence_alert,
)
from pipeline.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_the_example_feeds_file_loads() -> None:
    feeds = load_feeds(REPO / "config" / "feeds.example.toml")
    assert [f.id for f in feeds] == ["labo-biolyon", "imagerie-du-parc"]
    assert feeds[0].dag_id == "carnet_ingest_labo_biolyon"
    assert feeds[1].url == "s3://carnet-feeds/imagerie-du-parc" and feeds[1].scans


@pytest.mark.parametrize(
    "body",
    [
        '[[feeds]]\nid = "Bad Id"\nlocation = "/x"\n',
        '[[feeds]]\nid = "a"\nlocation = "/x"\nfiness = "12"\n',
        '[[feeds]]\nid = "a"\nlocation = "/x"\n[[feeds]]\nid = "a"\nlocation = "/y"\n',
        '[[feeds]]\nid = "a"\nlocation = "/x"\nmax_reject_rate = 2\n',
        "feeds = 3",
    ],
)
def test_a_bad_feeds_file_is_refused(tmp_path: Path, body: str) -> None:
    path = tmp_path / "feeds.toml"
    path.write_text(body)
    with pytest.raises(ConfigurationError):
        load_feeds(path)


def test_scan_heavy_batches_are_told_by_their_file_names() -> None:
    assert is_scan_heavy(["a.hl7", "scan.TIFF"])
    assert not is_scan_heavy(["a.hl7", "b.pdf", "c.xml"])
    assert is_scan_heavy(["b.pdf"], scans=True)


def _hl7_outcomes(tmp_path: Path) -> list[Outcome]:
    """Real outcomes: the pipeline run on one good and one INS-less ORU^R01 message."""
    from pipeline.ingest import InputFile, Pipeline
    from tests.dags.test_ingest_dag import INS_A, _oru

    good = _oru(INS_A)
    bad = _oru(INS_A[:-2] + "00").replace(b"MSG0001", b"MSG0002")
    settings = Settings(data_dir=tmp_path / "carnet")
    path = tmp_path / "feed" / "labo" / "b1" / "oru.hl7"
    path.parent.mkdir(parents=True)
    path.write_bytes(good + bad)
    with Pipeline(settings) as pipe:
        pipe.process(InputFile(data=good + bad, source=str(path), producer="labo", batch="b1"))
        pipe.flush()
        return list(pipe.outcomes)


def test_hl7_acks_carry_the_code_and_the_message_control_id(tmp_path: Path) -> None:
    outcomes = _hl7_outcomes(tmp_path)
    assert [o.status for o in outcomes] == [Status.INDEXED, Status.REJECTED]
    feed_root = tmp_path / "feed"
    feed = FolderFeed(feed_root)
    from pipeline.feeds import BatchRef

    batch = BatchRef(feed_url=str(feed_root), producer="labo", batch="b1", files=("oru.hl7",))
    names = [e.ack for e in write_acknowledgements(feed, batch, outcomes).files]
    assert names == ["_ack/MSG0001.hl7", "_ack/MSG0002.hl7"]
    first = (feed_root / "labo" / "b1" / names[0]).read_bytes().decode().split("\r")
    second = (feed_root / "labo" / "b1" / names[1]).read_bytes().decode().split("\r")
    assert first[0].startswith("MSH|^~\\&|CARNET|CARNET|SIL|LABO-BIO^750000001^FINESS|")
    assert "|ACK^R01^ACK|" in first[0]
    assert first[1].startswith("MSA|AA|MSG0001|")
    assert second[1].startswith("MSA|AE|MSG0002|INS invalide")
    assert second[2].startswith("ERR||PID^1^3|102^") and "|E|invalid_ins_key^" in second[2]
    # Only HL7 messages get an ACK.
    pdf = Outcome(source=str(feed_root / "labo" / "b1" / "x.pdf"), status=Status.INDEXED, format=Format.PDF)
    [entry] = write_acknowledgements(feed, batch, [pdf]).files
    assert (entry.file, entry.ack) == ("x.pdf", None)


def test_an_index_refusal_is_acknowledged_ar() -> None:
    refused = Outcome(
        source="a.hl7",
        status=Status.REJECTED,
        format=Format.HL7V2,
        message_control_id="M1",
        reasons=(Problem(code=Reason.INDEX_ERROR, message="mapping"),),
    )
    assert ack_code(refused) == "AR"


def _metrics(rate: float, run: str) -> BatchMetrics:
    return BatchMetrics(
        run_id=run,
        feed="f",
        producer="p",
        batch_key=f"p/{run}",
        recorded_at=dt.datetime.now(dt.UTC),
        total=10,
        by_status={},
        rejected_by_reason={},
        reject_rate=rate,
        flagged=False,
    )


def test_reject_rate_alerts_on_threshold_and_on_a_jump() -> None:
    history = [_metrics(0.1, "r1"), _metrics(0.1, "r2")]
    assert reject_rate_alerts(_metrics(0.2, "r3"), history, max_reject_rate=0.5) == []
    kinds = [a.kind for a in reject_rate_alerts(_metrics(0.4, "r3"), history, max_reject_rate=0.5)]
    assert kinds == [AlertKind.REJECT_RATE_JUMP]
    kinds = [a.kind for a in reject_rate_alerts(_metrics(0.6, "r3"), [], max_reject_rate=0.5)]
    assert kinds == [AlertKind.REJECT_RATE]


def test_a_silent_feed_alerts_only_past_its_limit() -> None:
    now = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    limit = dt.timedelta(hours=24)
    assert silence_alert("f", now - dt.timedelta(hours=23), max_silence=limit, now=now) is None
    alert = silence_alert("f", now - dt.timedelta(hours=30), max_silence=limit, now=now)
    assert alert is not None and alert.kind is AlertKind.FEED_SILENT and "30.0 h" in alert.message
    assert silence_alert("f", None, max_silence=limit, now=now) is None


def test_the_webhook_notifier_posts_the_alert_and_survives_a_dead_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    received: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    alert = Alert(
        kind=AlertKind.BATCH_FAILED,
        message="boom",
        feed="f",
        producer="p",
        batch="p/b",
        at=dt.datetime.now(dt.UTC),
    )
    WebhookNotifier(f"http://127.0.0.1:{server.server_port}/hook").notify(alert)
    thread.join(5)
    server.server_close()
    assert received and received[0]["kind"] == "batch_failed" and received[0]["batch"] == "p/b"

    with caplog.at_level("ERROR"):
        WebhookNotifier(f"http://127.0.0.1:{server.server_port}/hook", timeout_s=2).notify(alert)
    assert any("unreachable" in r.getMessage() for r in caplog.records)
    assert any("ALERT batch_failed" in r.getMessage() for r in caplog.records)


def test_retention_purges_old_quarantine_but_keeps_recent_and_indexed(tmp_path: Path) -> None:
    from pipeline.crypto import open_encrypted_store
    from pipeline.maintenance import purge_retention
    from pipeline.store import QuarantineRecord

    settings = Settings(data_dir=tmp_path / "carnet")
    store = open_encrypted_store(settings)
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    problem = (Problem(code=Reason.MISSING_INS, message="no INS"),)
    old_sha, new_sha = store.put(b"old"), store.put(b"new")
    for sha, age in ((old_sha, 400), (new_sha, 10)):
        at = now - dt.timedelta(days=age)
        store.put_quarantine(
            QuarantineRecord(
                quarantine_id=sha[:32],
                source=f"s-{age}",
                producer="p",
                content_sha256=sha,
                reasons=problem,
                first_quarantined_at=at,
            )
        )
    dry = purge_retention(settings, quarantine_days=365, metrics_days=0, now=now, dry_run=True)
    assert (dry.quarantine_records, dry.objects) == (1, 1) and store.exists(old_sha)
    done = purge_retention(settings, quarantine_days=365, metrics_days=0, now=now)
    assert (done.quarantine_records, done.objects) == (1, 1)
    assert not store.exists(old_sha) and store.exists(new_sha)
    assert [q.content_sha256 for q in store.list_quarantine()] == [new_sha]


def test_the_failure_callback_alerts_with_the_lane_of_batches(
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from types import SimpleNamespace

    from pipeline.monitoring import load_alerts, on_task_failure

    monkeypatch.delenv("CARNET_ALERT_WEBHOOK", raising=False)
    monkeypatch.setenv("CARNET_DATA_DIR", str(tmp_path / "carnet"))
    context = {
        "ti": SimpleNamespace(dag_id="carnet_ingest", task_id="process_ocr", map_index=3, try_number=2),
        "task": SimpleNamespace(op_kwargs={"lane": ["labo/b1", "labo/b2"]}),
        "params": {"feed_id": "labo-feed", "feed_url": "/srv/feed"},
        "exception": OSError("disk full"),
    }
    with caplog.at_level("ERROR"):
        on_task_failure(context)
    [record] = [r for r in caplog.records if "ALERT" in r.getMessage()]
    # Feed, producer and batch are fields of the log record, not words of its message.
    assert (record.feed, record.producer, record.batch) == (  # type: ignore[attr-defined]
        "labo-feed",
        "labo",
        "labo/b1, labo/b2",
    )
    assert "OSError: disk full" in record.getMessage()
    [kept] = load_alerts(Settings(data_dir=tmp_path / "carnet"))
    assert kept.batch == "labo/b1, labo/b2" and kept.details["task"] == "carnet_ingest.process_ocr[3]"
