"""The gate on whole documents: normal reports of every format pass, each defect is caught in each format.

The corpus (``tests/samples/quality/corpus.py``) goes through ``ingest_sources``: parsing,
text extraction of printed results, the per-document checks and the GX gate, as
``carnet ingest`` runs them. ``benchmarks/quality_false_rejections.py`` measures the same
on a larger corpus.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pipeline.model import Outcome, Status
from tests.samples.quality.corpus import Sample, defect_corpus, ingest_corpus, normal_corpus


@pytest.fixture(scope="module")
def normal(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Sample, Outcome]]:
    return ingest_corpus(normal_corpus(per_format=6), tmp_path_factory.mktemp("normal"))


@pytest.fixture(scope="module")
def defects(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Sample, Outcome]]:
    return ingest_corpus(defect_corpus(), tmp_path_factory.mktemp("defects"))


def test_normal_reports_of_every_format_are_indexed(normal: list[tuple[Sample, Outcome]]) -> None:
    assert Counter(s.format for s, _ in normal) == {"pdf": 12, "hl7": 6, "cda": 9}
    refused = {s.name: [p.render() for p in o.reasons] for s, o in normal if o.status is not Status.INDEXED}
    assert refused == {}
    assert all(o.patient_id == s.ins for s, o in normal)


def test_printed_results_are_checked_like_structured_ones(
    normal: list[tuple[Sample, Outcome]], tmp_path: Path
) -> None:
    from pipeline.index import open_index

    pdf = next(o for s, o in normal if s.format == "pdf" and s.name.startswith("bio"))
    data_dir = Path(pdf.source).parents[2] / "carnet"
    index = open_index(f"sqlite:///{data_dir / 'index.db'}")
    try:
        record = index.get(pdf.patient_id or "", pdf.doc_id or "")
    finally:
        index.close()
    assert record is not None and len(record.results) >= 5
    assert all(r.unit or r.reference_range for r in record.results)


@pytest.mark.parametrize("fmt", ["pdf", "hl7", "cda"])
def test_each_defect_is_rejected_with_its_reason_in_each_format(
    defects: list[tuple[Sample, Outcome]], fmt: str
) -> None:
    found = {
        s.name: (o.status, sorted({p.code for p in o.reasons if p.blocking}))
        for s, o in defects
        if s.format == fmt
    }
    expected = {s.name: (Status.REJECTED, [s.expected]) for s, _ in defects if s.format == fmt}
    assert found == expected


@pytest.mark.tesseract
def test_scanned_normal_reports_are_indexed(tmp_path: Path) -> None:
    # Tesseract reads a printed "µmol/L" as "pmol/L": a warning, never a rejection.
    scans = ingest_corpus(normal_corpus(per_format=0, scans=2), tmp_path)
    assert [(s.format, o.status) for s, o in scans] == [("image", Status.INDEXED)] * 2
    assert all(not p.blocking for _, o in scans for p in o.reasons)
