"""Inputs that once took a whole run down or made its answers unstable: file names that are
not UTF-8, and the same content sent twice in one batch under two names."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline.feeds import READY_MARKER, REPORT
from pipeline.ingest import discover_batches, process_batch
from pipeline.settings import Settings
from tests.conftest import SAMPLES
from tests.crash.conftest import carnet, read_report

LATIN1_NAME = os.fsdecode(b"r\xe9sultat d'analyse.xml")  # "résultat" in Latin-1: not UTF-8


def _batch_with_a_latin1_name(root: Path) -> Path:
    batch = root / "labo" / "b1"
    batch.mkdir(parents=True)
    for name in ("cr-bio.xml", "cr-img.xml", "cr-masque-ps.xml"):
        (batch / name).write_bytes((SAMPLES / "cda" / name).read_bytes())
    (batch / LATIN1_NAME).write_bytes((SAMPLES / "cda" / "cr-pdf.xml").read_bytes())
    return batch


def test_a_file_name_that_is_not_utf8_is_ingested_and_escaped_in_the_report(tmp_path: Path) -> None:
    _batch_with_a_latin1_name(tmp_path / "in")
    report = tmp_path / "report.jsonl"
    for attempt in ("first run", "rerun"):
        done = carnet(
            "ingest", str(tmp_path / "in"), "--report", str(report), "-q", data_dir=tmp_path / "carnet"
        )
        assert done.returncode == 0, (attempt, done.stderr)
        assert "Traceback" not in done.stderr
        lines = read_report(report)
        assert len(lines) == 4, attempt
        escaped = [x for x in lines if str(x["source"]).endswith("r\\xe9sultat d'analyse.xml")]
        assert len(escaped) == 1, [x["source"] for x in lines]
        expected = "indexed" if attempt == "first run" else "duplicate"
        assert escaped[0]["status"] == expected and escaped[0]["doc_id"], attempt
    # The raw bytes are kept like any other file's.
    assert report.read_bytes().decode("utf-8")


def test_a_batch_holding_a_name_that_is_not_utf8_is_acknowledged(tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    batch = _batch_with_a_latin1_name(feed)
    (batch / READY_MARKER).touch()
    settings = Settings(data_dir=tmp_path / "carnet", data_docs=False)
    (key,) = discover_batches(settings, str(feed))
    summary = process_batch(settings, str(feed), key)
    assert summary.total == 4 and summary.by_status.get("indexed") == 4
    ack = json.loads((batch / REPORT).read_text(encoding="utf-8"))
    assert sorted(f["file"] for f in ack["files"]) == sorted(
        ["cr-bio.xml", "cr-img.xml", "cr-masque-ps.xml", "r\\xe9sultat d'analyse.xml"]
    )
    assert discover_batches(settings, str(feed)) == []


@pytest.mark.parametrize("names", [("a-copy.xml", "b-copy.xml"), ("z-copy.xml", "m-copy.xml")])
def test_same_content_under_two_names_the_first_in_batch_order_is_indexed(
    tmp_path: Path, names: tuple[str, str]
) -> None:
    batch = tmp_path / "in" / "labo" / "b1"
    batch.mkdir(parents=True)
    data = (SAMPLES / "cda" / "cr-bio.xml").read_bytes()
    for name in names:
        (batch / name).write_bytes(data)
    first, second = sorted(names)
    report = tmp_path / "report.jsonl"
    done = carnet("ingest", str(tmp_path / "in"), "--report", str(report), "-q", data_dir=tmp_path / "carnet")
    assert done.returncode == 0, done.stderr
    status = {Path(str(x["source"])).name: x["status"] for x in read_report(report)}
    assert status == {first: "indexed", second: "duplicate"}
    # Killed after the index write, before anything was recorded: the rerun gives the same
    # answer, not "duplicate" for both.
    crashed = tmp_path / "crashed"
    killed = carnet("ingest", str(tmp_path / "in"), "-q", data_dir=crashed, fault="before_ledger_record")
    assert killed.returncode == -9, killed.stderr
    done = carnet("ingest", str(tmp_path / "in"), "--report", str(report), "-q", data_dir=crashed)
    assert done.returncode == 0, done.stderr
    assert {Path(str(x["source"])).name: x["status"] for x in read_report(report)} == status
