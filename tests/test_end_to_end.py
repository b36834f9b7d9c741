"""End to end on the embedded defaults: a generated feed with good and bad documents goes
through the real parsers (tesseract included), identity, classification, store and index;
every document must end in its expected state and searches must find what they must and
nothing of another patient."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from generator import GeneratedFeed, generate_feed
from pipeline.crypto import open_encrypted_store
from pipeline.index import open_index
from pipeline.ingest import discover_batches, ingest_sources, process_batch
from pipeline.model import SearchQuery, Status
from pipeline.settings import Settings

pytestmark = pytest.mark.tesseract


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GeneratedFeed]:
    root = tmp_path_factory.mktemp("feed") / "feed"
    return root, generate_feed(root, seed=7, patients=12, documents=60, include_bad=True, scans=3)


@pytest.fixture(scope="module")
def ingested(feed: tuple[Path, GeneratedFeed], tmp_path_factory: pytest.TempPathFactory):
    root, generated = feed
    settings = Settings(data_dir=tmp_path_factory.mktemp("carnet"))
    report = settings.data_dir / "report.jsonl"
    summary = ingest_sources([str(root)], settings, report_path=report)
    return settings, generated, summary, report


def _key(source: str, root: Path) -> str:
    return str(Path(source.split("#")[0]).relative_to(root)) + (
        "#" + source.split("#")[1] if "#" in source else ""
    )


def test_every_document_ends_in_its_expected_state(feed, ingested) -> None:
    root, _ = feed
    settings, generated, summary, report = ingested
    got = {_key(o.source, root): o for o in summary.outcomes}
    expected = {e.source_ref: e for e in generated.documents}
    assert sorted(got) == sorted(expected), "each document found exactly once"
    wrong = []
    for ref, exp in expected.items():
        o = got[ref]
        codes = tuple(r.code.value for r in o.reasons if o.status is Status.REJECTED)
        if o.status.value != exp.expected_status or (
            exp.expected_reasons and tuple(exp.expected_reasons) != codes
        ):
            wrong.append((ref, exp.expected_status, exp.expected_reasons, o.status.value, codes))
        if o.status is not Status.REJECTED:
            assert o.patient_id == exp.patient_id, ref
            if exp.doc_class:
                assert o.doc_class is not None and o.doc_class.value == exp.doc_class, ref
    assert not wrong, "\n".join(map(str, wrong))
    statuses = Counter(o.status for o in summary.outcomes)
    assert statuses[Status.INDEXED] > 0 and statuses[Status.REJECTED] > 0
    assert statuses[Status.DUPLICATE] > 0 and statuses[Status.REPLACED] > 0


def test_report_follows_the_command_line_contract(ingested) -> None:
    _, _, summary, report = ingested
    lines = [json.loads(x) for x in report.read_text().splitlines()]
    assert len(lines) == len(summary.outcomes)
    for line in lines:
        assert {"source", "status", "doc_id", "patient_id", "doc_class", "type_code", "reasons"} <= set(line)
        assert line["status"] in {"indexed", "rejected", "duplicate", "replaced"}
        if line["status"] == "rejected":
            assert line["reasons"] and all(": " in r for r in line["reasons"])
            assert line["doc_id"] is None
        else:
            assert len(line["patient_id"]) == 15 and line["doc_id"]


def test_raw_bytes_kept_and_rejects_quarantined(ingested) -> None:
    settings, _, summary, _ = ingested
    store = open_encrypted_store(settings)
    raw_root = settings.data_dir / "store" / "objects"
    # At rest the bytes are ciphertext: no INS of the feed appears in any stored object.
    some_ins = next(o.patient_id for o in summary.outcomes if o.patient_id)
    assert not any(some_ins.encode() in f.read_bytes() for f in raw_root.rglob("*") if f.is_file())
    assert all(store.exists(o.content_sha256) for o in summary.outcomes if o.content_sha256)
    quarantined = {q.source for q in store.list_quarantine()}
    rejected = {o.source for o in summary.outcomes if o.status is Status.REJECTED}
    assert rejected == quarantined


def test_searches_find_what_they_must_and_nothing_of_another_patient(ingested) -> None:
    settings, generated, summary, _ = ingested
    index = open_index(settings.effective_index_url)
    try:
        superseded = {e.source_ref for e in generated.documents if e.replaced_by}
        by_patient: dict[str, set[str]] = {}
        for o in summary.outcomes:
            if o.status in (Status.INDEXED, Status.REPLACED) and not any(
                o.source.endswith(ref) for ref in superseded
            ):
                by_patient.setdefault(o.patient_id, set()).add(o.doc_id)  # type: ignore[arg-type]
        for patient, doc_ids in by_patient.items():
            everything = index.search(SearchQuery(patient_id=patient, limit=500))
            assert {h.doc_id for h in everything.hits} == doc_ids
        indexed = {o.source: o for o in summary.outcomes if o.status in (Status.INDEXED, Status.REPLACED)}
        checked = 0
        for exp in generated.documents:
            hit_outcome = next((o for s, o in indexed.items() if s.endswith(exp.source_ref)), None)
            if hit_outcome is None or not exp.key_terms or exp.replaced_by:
                continue
            term = exp.key_terms[0]
            result = index.search(SearchQuery(patient_id=hit_outcome.patient_id, text=term, limit=100))
            assert hit_outcome.doc_id in {h.doc_id for h in result.hits}, (exp.source_ref, term)
            assert {h.doc_id for h in result.hits} <= by_patient[hit_outcome.patient_id]
            checked += 1
        assert checked >= 10
        # A superseded version leaves default searches but is still there on request.
        for o in summary.outcomes:
            if any(o.source.endswith(ref) for ref in superseded) and o.status is not Status.REJECTED:
                everything = index.search(
                    SearchQuery(
                        patient_id=o.patient_id,  # type: ignore[arg-type]
                        include_superseded=True,
                        limit=500,
                    )
                )
                assert o.doc_id in {h.doc_id for h in everything.hits}
    finally:
        index.close()


def test_reingesting_changes_nothing(feed, ingested) -> None:
    root, _ = feed
    settings, _, first, _ = ingested
    index = open_index(settings.effective_index_url)
    before = index.count()
    index.close()
    again = ingest_sources([str(root)], settings)
    assert {o.status for o in again.outcomes} <= {Status.DUPLICATE, Status.REJECTED}
    index = open_index(settings.effective_index_url)
    assert index.count() == before
    index.close()


def test_batches_are_processed_once_with_an_acknowledgement(feed, tmp_path: Path) -> None:
    root, generated = feed
    settings = Settings(data_dir=tmp_path / "carnet")
    keys = discover_batches(settings, str(root))
    assert keys and len(keys) == len({(e.producer, e.batch) for e in generated.documents})
    summaries = [process_batch(settings, str(root), k) for k in keys]
    assert sum(s.total for s in summaries) == len(generated.documents)
    for key in keys:
        ack = json.loads((root / key / "_report.json").read_text())
        assert ack["accepted"] + ack["duplicate"] + ack["replaced"] + ack["rejected"] == len(ack["files"])
        for f in ack["files"]:
            if f["status"] == "rejected":
                assert f["reasons"][0]["code"] and f["reasons"][0]["message"]
    assert discover_batches(settings, str(root)) == []
    assert process_batch(settings, str(root), keys[0]) == summaries[0]


def test_erasing_a_patient_leaves_nothing_findable_readable_or_named(ingested) -> None:
    """Last in this module: it erases one of the ingested patients."""
    import sqlite3

    from pipeline.erasure import erase_patient

    settings, _, summary, _ = ingested
    kept = [o for o in summary.outcomes if o.status is Status.INDEXED]
    patient = kept[0].patient_id
    assert patient is not None
    receipt = erase_patient(settings, patient, actor="test-operator")
    assert receipt.documents >= 1 and receipt.key_destroyed
    index = open_index(settings.effective_index_url)
    try:
        assert index.search(SearchQuery(patient_id=patient, include_superseded=True)).total == 0
    finally:
        index.close()
    store = open_encrypted_store(settings)
    for o in kept:
        if o.patient_id == patient:
            assert not store.exists(o.content_sha256)  # type: ignore[arg-type]
    with sqlite3.connect(settings.data_dir / "state.db") as conn:
        assert (
            conn.execute(
                "SELECT COUNT(*) FROM outcomes WHERE patient_id=? OR line LIKE ?", (patient, f"%{patient}%")
            ).fetchone()[0]
            == 0
        )
