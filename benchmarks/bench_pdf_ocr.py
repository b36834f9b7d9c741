"""PDF text-layer and OCR throughput, as per-core rates.

- text PDFs: pages/s on one core through ``PdfParser.parse`` and through bare pypdf
  (``PdfReader`` + ``extract_text``) on the same files, and their ratio (the parser's
  overhead: header/EOF checks, decryption probe, cleaning, model building);
- scanned PDFs: OCR pages/s per tesseract process, running one process per core, the
  tesseract CPU seconds per page (independent of what else the machine runs) and the
  parser's own CPU per page beside it; bare ``tesseract … tsv`` on the same page image
  with as many processes, for the ratio.

Inputs are generated in a temporary folder. Run: ``.venv/bin/python -m benchmarks.bench_pdf_ocr``
(``--quick`` for a smaller run). Prints one JSON object.
"""

from __future__ import annotations

import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from pypdf import PdfReader
from reportlab.lib.pagesizes import A4
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

from parsers.ocr import TesseractOcr
from parsers.pdf import PdfParser

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
PAGES_PER_PDF = 10
LINES = [
    "Compte rendu d'examens biologiques",
    "Patiente : EXEMPLE Jeanne, INS : 2 84 05 75 123 456 72",
    "Hémoglobine : 13,2 g/dL (12,0 - 16,0)",
    "Hématocrite : 39 % (36 - 46)",
    "Leucocytes : 6,8 G/L (4,0 - 10,0)",
    "Plaquettes : 245 G/L (150 - 400)",
    "Glycémie à jeun : 5,1 mmol/L (4,1 - 5,9)",
    "Créatinine : 68 µmol/L (45 - 90)",
    "Sodium : 140 mmol/L (135 - 145)",
    "Potassium : 4,1 mmol/L (3,5 - 5,0)",
]


def make_text_pdf(seed: int) -> bytes:
    """A PDF of ``PAGES_PER_PDF`` pages of report text (about 40 lines a page)."""
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    for page in range(PAGES_PER_PDF):
        pdf.setFont("DejaVuSans", 10)
        for i in range(40):
            pdf.drawString(50, 800 - 18 * i, f"{seed}.{page}.{i} {LINES[i % len(LINES)]}")
        pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def make_scanned_pdf() -> bytes:
    """One A4 page rendered at 300 dpi as a bilevel image, no text layer."""
    font = ImageFont.truetype(str(FONT), 46)
    page = Image.new("L", (2480, 3508), 255)
    draw = ImageDraw.Draw(page)
    for i in range(30):
        draw.text((240, 240 + 75 * i), LINES[i % len(LINES)], font=font, fill=0)
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    pdf.drawImage(ImageReader(page.convert("1")), 0, 0, width=A4[0], height=A4[1])
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


def bare_pypdf(data: bytes) -> int:
    reader = PdfReader(io.BytesIO(data))
    return sum(len(page.extract_text()) for page in reader.pages)


def best_of(repeats: int, work: list[bytes], fn: Callable[[bytes], object]) -> float:
    """Smallest CPU time of this process over ``repeats`` runs of ``fn`` on every input."""
    times = []
    for _ in range(repeats):
        start = time.process_time()
        for data in work:
            fn(data)
        times.append(time.process_time() - start)
    return min(times)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(quick: bool = False) -> dict[str, object]:
    pdfmetrics.registerFont(TTFont("DejaVuSans", str(FONT)))
    text_pdfs = 4 if quick else 20
    ocr_pages = 2 if quick else 8
    workers = os.cpu_count() or 1
    parser = PdfParser(ocr=TesseractOcr(lang="fra", timeout_s=300), min_text_chars_per_page=20)

    with tempfile.TemporaryDirectory(prefix="bench_pdf_ocr_") as folder:
        paths = []
        for seed in range(text_pdfs):
            path = Path(folder) / f"text_{seed}.pdf"
            path.write_bytes(make_text_pdf(seed))
            paths.append(path)
        scanned = Path(folder) / "scanned.pdf"
        scanned.write_bytes(make_scanned_pdf())
        texts = [path.read_bytes() for path in paths]
        scan = scanned.read_bytes()

        pages = text_pdfs * PAGES_PER_PDF
        repeats = 2 if quick else 3
        parser_cpu = best_of(repeats, texts, lambda d: parser.parse(d, source="bench"))
        bare_cpu = best_of(repeats, texts, bare_pypdf)

        # OCR: one page per task, as many tesseract processes at once as cores.
        cpu_before, own_before = children_cpu(), time.process_time()
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda _: parser.parse(scan, source="scan")[0], range(ocr_pages)))
        wall = time.perf_counter() - start
        tesseract_cpu = children_cpu() - cpu_before
        parser_cpu_ocr = time.process_time() - own_before  # decode, prepare, run tesseract

        # Bare tesseract on the same page image, as Carnet hands it over (8-bit gray PGM).
        page_image = Path(folder) / "page.pgm"
        PdfReader(io.BytesIO(scan)).pages[0].images[0].image.convert("L").save(page_image, "PPM")
        command = ["tesseract", str(page_image), "-", "-l", "fra", "--dpi", "300", "tsv"]
        env = dict(os.environ, OMP_THREAD_LIMIT="1")
        cpu_before = children_cpu()
        bare_start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(
                pool.map(
                    lambda _: subprocess.run(command, env=env, capture_output=True, check=True),
                    range(ocr_pages),
                )
            )
        bare_tesseract_wall = time.perf_counter() - bare_start
        bare_tesseract_cpu = children_cpu() - cpu_before

    assert all(doc.ocr_pages == 1 and "Hémoglobine" in doc.text for doc in results)
    return {
        "benchmark": "pdf_ocr",
        "quick": quick,
        "cores": workers,
        "text_pages": pages,
        "text_pages_per_s_per_core_parser": round(pages / parser_cpu, 1),
        "text_pages_per_s_per_core_bare_pypdf": round(pages / bare_cpu, 1),
        "parser_over_bare_time_ratio": round(parser_cpu / bare_cpu, 3),
        "ocr_pages": ocr_pages,
        "ocr_processes": workers,
        "ocr_pages_per_s_per_process": round(ocr_pages / wall / workers, 3),
        "ocr_tesseract_cpu_s_per_page": round(tesseract_cpu / ocr_pages, 3),
        # The parser's own CPU per OCR'd page beside tesseract's (image decoding, gray
        # conversion, the PGM handed over, the subprocess): what Carnet adds to tesseract.
        "ocr_parser_cpu_s_per_page": round(parser_cpu_ocr / ocr_pages, 3),
        "bare_tesseract_cpu_s_per_page": round(bare_tesseract_cpu / ocr_pages, 3),
        "ocr_wall_over_bare_tesseract": round(wall / bare_tesseract_wall, 2),
        "ocr_mean_confidence": round(sum(doc.ocr_confidence or 0.0 for doc in results) / len(results), 1),
        "omp_thread_limit": os.environ.get("OMP_THREAD_LIMIT"),
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
