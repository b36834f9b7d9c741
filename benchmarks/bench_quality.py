"""Cost of the quality stage against parsing, for a batch of text PDFs.

Times, for ``N`` documents (1,000; 200 with ``--quick``):
- parsing ``N`` one-page text PDFs with ``parsers.pdf.PdfParser`` (the cheapest real
  ingestion work a batch does);
- the per-document checks (``check_document``) over the parsed documents;
- the GX gate: importing GX and building its context (once per process), then
  ``QualityGate.validate`` over ``N`` records with five lab results each (one
  validation per frame per flush), cold (first call) and warm (second call).

Run: ``.venv/bin/python -m benchmarks.bench_quality [--quick]``; prints one JSON object.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
import tempfile
import time
from pathlib import Path

from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas
from stdnum.fr import nir

from generator.people import finess
from parsers.ocr import TesseractOcr
from parsers.pdf import PdfParser
from pipeline.classification import classify_document
from pipeline.model import DocClass, DocumentRecord, Format, LabResult, PatientDemographics
from pipeline.quality import check_document
from pipeline.settings import Settings

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
LINES = [
    "Compte rendu d'examens biologiques - Laboratoire BioLyon",
    "Hémoglobine : 13,2 g/dL (12,0 - 16,0)",
    "Leucocytes : 6,8 G/L (4,0 - 10,0)",
    "Glycémie à jeun : 5,1 mmol/L (4,1 - 5,9)",
    "Créatinine : 68 µmol/L (45 - 90)",
    "Prélèvement du 14/03/2025, validé par le biologiste",
]
RESULTS = (
    LabResult(
        analyte="Hémoglobine",
        loinc="718-7",
        value="13.2",
        numeric_value=13.2,
        value_type="NM",
        unit="g/dL",
        reference_range="12.0-16.0",
        abnormal_flag="N",
    ),
    LabResult(
        analyte="Leucocytes",
        loinc="6690-2",
        value="6.8",
        numeric_value=6.8,
        value_type="NM",
        unit="10*9/L",
        reference_range="4.0-10.0",
        abnormal_flag="N",
    ),
    LabResult(
        analyte="Glycémie à jeun",
        loinc="14749-6",
        value="5.1",
        numeric_value=5.1,
        value_type="NM",
        unit="mmol/L",
        reference_range="4.1-5.9",
        abnormal_flag="N",
    ),
    LabResult(
        analyte="Créatinine",
        loinc="14682-9",
        value="68",
        numeric_value=68,
        value_type="NM",
        unit="umol/L",
        reference_range="45-90",
        abnormal_flag="N",
    ),
    LabResult(
        analyte="Ferritine",
        loinc="2276-4",
        value="40",
        numeric_value=40,
        value_type="NM",
        unit="ug/L",
        reference_range="30-300",
        abnormal_flag="N",
    ),
)


def make_pdf(seed: int) -> bytes:
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    pdf.setFont("DejaVuSans", 10)
    for i in range(40):
        pdf.drawString(50, 800 - 18 * i, f"{seed}.{i} {LINES[i % len(LINES)]}")
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def _record(n: int, text: str) -> tuple[DocumentRecord, PatientDemographics]:
    body = f"2840569{n % 1000:03d}{n // 1000 + 100:03d}"
    ins = body + nir.calc_check_digits(body)
    record = DocumentRecord(
        doc_id=f"doc-{n:05d}",
        series_id=f"doc-{n:05d}",
        patient_id=ins,
        doc_class=DocClass.BIOLOGY,
        type_code="11502-2",
        classification_rule="text.keywords",
        classification_confidence=0.9,
        title="CR de biologie",
        document_date=dt.date(2025, 3, 14),
        producer="labo-biolyon",
        producer_finess=finess("69", 412031),
        author_rpps=None,
        source=f"bench/{n}.pdf",
        format=Format.PDF,
        content_sha256=f"{n:064d}",
        text=text,
        results=RESULTS,
        page_count=1,
        ingested_at=dt.datetime.now(dt.UTC),
    )
    return record, PatientDemographics(sex="F", birth_date=dt.date(1984, 5, 2))


def run(quick: bool = False) -> dict[str, object]:
    n = 200 if quick else 1000
    pdfmetrics.registerFont(TTFont("DejaVuSans", str(FONT)))
    pdfs = [make_pdf(i) for i in range(n)]
    parser = PdfParser(ocr=TesseractOcr(), min_text_chars_per_page=20)

    t0 = time.perf_counter()
    parsed = [parser.parse(data, source=f"bench/{i}.pdf")[0] for i, data in enumerate(pdfs)]
    parse_s = time.perf_counter() - t0

    classified = [classify_document(doc) for doc in parsed]  # not part of the quality stage
    t0 = time.perf_counter()
    for doc, classification in zip(parsed, classified, strict=True):
        check_document(doc, classification, dt.date(2025, 3, 14))
    per_doc_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        from pipeline.quality import GateItem, QualityGate

        items = [
            GateItem(record=r, demographics=d)
            for r, d in (_record(i, doc.text) for i, doc in enumerate(parsed))
        ]
        t0 = time.perf_counter()
        import great_expectations  # noqa: F401  (the one-off import cost, measured apart)

        import_s = time.perf_counter() - t0
        gate = QualityGate(Settings(data_dir=Path(tmp)), known_producers=frozenset({"labo-biolyon"}))
        t0 = time.perf_counter()
        first = gate.validate(items, batch_label="bench")
        cold_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        second = gate.validate(items, batch_label="bench")
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        gate.validate(items[:10], batch_label="bench-small")
        small_s = time.perf_counter() - t0
    if first.problems or second.problems:
        raise RuntimeError(f"benchmark records should all pass: {next(iter(first.problems.items()))}")
    return {
        "documents": n,
        "lab_results": n * len(RESULTS),
        "parse_text_pdfs_s": round(parse_s, 3),
        "check_document_s": round(per_doc_s, 3),
        "gx_import_s": round(import_s, 3),
        "gate_first_validate_s": round(cold_s, 3),
        "gate_validate_s": round(warm_s, 3),
        "gate_validate_10_docs_s": round(small_s, 3),
        "ratio_gate_to_parse": round(warm_s / parse_s, 4),
        "ratio_stage_to_parse": round((warm_s + per_doc_s) / parse_s, 4),
        "ratio_with_import_and_first_run": round((import_s + cold_s + per_doc_s) / parse_s, 4),
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
