"""Wall-clock throughput as a user sees it, beside bare references on the same files.

One run, same generated files for both sides:

- a non-scanned mixed feed (HL7 v2, text PDFs, CDA) through ``carnet ingest`` in a fresh
  process (start-up included) into the embedded defaults, and into Elasticsearch + S3
  when both answer; beside the bare parse of the same files, also in a fresh process:
  pypdf text extraction, ElementTree for CDA, hl7apy's ``parse_message`` per message;
- scanned documents (PNG, TIFF, image PDFs) through ``carnet ingest``, beside bare
  ``tesseract`` on the same page images, run with as many processes as Carnet runs
  (``Settings.ocr.workers``), ``OMP_THREAD_LIMIT=1``;
- Elasticsearch: the bulk helper alone (``helpers.bulk`` of ready documents) beside
  Carnet's write path (``ElasticsearchIndex.apply`` per flush, supersedes, analysis and
  serialisation included), on the same records (:mod:`benchmarks.bench_es_bulk`);
- HL7 v2 through the whole pipeline: messages per second per core, with the CPU of every
  process a run starts, the run's fixed cost left out;
- peak memory on a 500-page text PDF, a 50 MB CDA and an HL7 file of 100,000 segments
  (:mod:`benchmarks.bench_memory`).

Figures are wall-clock rates and ratios (Carnet / bare), plus CPU seconds per document
(a per-core figure that holds on a busy machine); never a pass/fail threshold.
Run: ``.venv/bin/python -m benchmarks.bench_wallclock [--quick]`` (``--scanned [PAGES]``,
``--non-scanned [DOCS]``, ``--hl7 [DOCS]``: one comparison alone; ``--help``); prints one JSON
object and a table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipeline.settings import available_cpus

PYTHON = sys.executable
# Scanned pages in one run: about the batch issue 14 measured (69 pages). A run pays a
# fixed cost (start-up, Great Expectations' import and first validation) that weighs on
# a small batch; the fixed and per-page costs are reported apart to read any batch size.
SCANNED_PAGES = 72
# Documents of the generated feed whose HL7 files are measured: ~1,400 messages. The
# per-message figure is a difference between two runs; with the ~590 messages of 1,500
# documents, a tenth of a second of noise in either run moved it by 15 %.
HL7_FEED_DOCUMENTS = 3750
# Alternated rounds of the two HL7 runs; the median round is reported.
HL7_ROUNDS = 3
ES_URL = os.environ.get("CARNET_TEST_ES_URL", "http://127.0.0.1:9200")
S3_URL = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")


def _up(url: str) -> bool:
    parts = urlparse(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=1):
            return True
    except OSError:
        return False


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _adopt_orphans() -> None:
    """Become the child subreaper (Linux): Carnet's parse workers are children of its
    forkserver, which outlives the run by a moment and is never waited for by it; adopted
    here and reaped by ``_timed``, their CPU is counted in the run's."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _reap_orphans() -> None:
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the process and all its descendants, stdout) of one fresh process."""
    _adopt_orphans()
    cpu0, wall0 = _children_cpu(), time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - wall0
    _reap_orphans()
    cpu = _children_cpu() - cpu0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall, cpu, done.stdout


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARNET_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[1]), env.get("PYTHONPATH")]))
    env.setdefault("OMP_THREAD_LIMIT", "1")
    env.update(extra)
    return env


def _carnet_ingest(folder: Path, data_dir: Path, **extra: str) -> dict[str, Any]:
    """``carnet ingest folder`` in a fresh process: wall, CPU (with every process it
    started: tesseract, parse workers, the quality gate's), documents and OCR pages."""
    report = data_dir / "report.jsonl"
    wall, cpu, _ = _timed(
        [PYTHON, "-m", "pipeline.cli", "ingest", str(folder), "--quiet", "--report", str(report)],
        _env(CARNET_DATA_DIR=str(data_dir), **extra),
    )
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    statuses: dict[str, int] = {}
    for line in lines:
        statuses[line["status"]] = statuses.get(line["status"], 0) + 1
    return {
        "documents": len(lines),
        "by_status": statuses,
        "ocr_pages": sum(line["ocr_pages"] or 0 for line in lines),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
    }


# -- bare references (run in a fresh process: ``python -m benchmarks.bench_wallclock --bare``) --


def bare_parse(folder: Path) -> dict[str, int]:
    """Parse every file with the bare libraries; counts of what was read."""
    import xml.etree.ElementTree as ET

    from hl7apy.parser import parse_message
    from pypdf import PdfReader

    counts = {"pdf_pages": 0, "cda": 0, "hl7_messages": 0, "chars": 0}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if data.startswith(b"%PDF"):
            for page in PdfReader(io.BytesIO(data)).pages:
                counts["chars"] += len(page.extract_text())
                counts["pdf_pages"] += 1
        elif data.lstrip().startswith(b"<"):
            root = ET.fromstring(data)
            counts["chars"] += sum(len(t) for t in root.itertext())
            counts["cda"] += 1
        elif data.lstrip(b"\x0b").startswith(b"MSH"):
            text = data.decode("latin-1").replace("\x0b", "").replace("\x1c", "").replace("\n", "\r")
            for message in ("MSH" + m for m in text.split("\rMSH") if m.strip()):
                message = message.removeprefix("MSHMSH").strip("\r")
                if not message.startswith("MSH"):
                    message = "MSH" + message
                parse_message(message, find_groups=False)
                counts["hl7_messages"] += 1
    return counts


def _page_images(folder: Path, out: Path) -> list[Path]:
    """The page images of every scan under ``folder``, as Carnet hands them to tesseract
    (8-bit gray BMP with the page's resolution, by ``parsers.ocr.prepare_page``)."""
    from PIL import Image, ImageSequence
    from pypdf import PdfReader

    from parsers.ocr import prepare_page

    paths: list[Path] = []

    def keep(image: Image.Image) -> None:
        path = out / f"page{len(paths):04d}.bmp"
        page, dpi = prepare_page(image)
        page.save(path, "BMP", dpi=(dpi, dpi))
        paths.append(path)

    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if data.startswith(b"%PDF"):
            for page in PdfReader(io.BytesIO(data)).pages:
                for image_file in page.images:
                    keep(image_file.image)
        elif data[:4] in (b"\x89PNG", b"II*\x00", b"MM\x00*") or data[:3] == b"\xff\xd8\xff":
            with Image.open(io.BytesIO(data)) as image:
                for frame in ImageSequence.Iterator(image):
                    keep(frame)
    return paths


def _tesseract_on(inputs: list[Path], processes: int) -> dict[str, float]:
    """``tesseract INPUT - -l fra tsv`` for every input, ``processes`` at once."""
    env = dict(os.environ, OMP_THREAD_LIMIT="1")

    def one(path: Path) -> None:
        command = ["tesseract", str(path), "-", "-l", "fra", "tsv"]
        subprocess.run(command, env=env, capture_output=True, check=True)

    cpu0, wall0 = _children_cpu(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=processes) as pool:
        list(pool.map(one, inputs))
    return {"wall_s": time.perf_counter() - wall0, "cpu_s": _children_cpu() - cpu0}


def bare_tesseract(pages: list[Path], processes: int) -> dict[str, float]:
    """Tesseract on every page, ``processes`` at once: one process a page, as issue 14
    measured it."""
    return _tesseract_on(pages, processes)


def bare_tesseract_lists(pages: list[Path], processes: int, folder: Path) -> dict[str, float]:
    """Tesseract given lists of pages: ``processes`` processes, each reading its list (the
    pages dealt in turn), so each loads its model once: tesseract's own best."""
    lists = []
    for n in range(processes):
        listing = folder / f"pages-{n}-{uuid.uuid4().hex}.txt"
        listing.write_text("".join(f"{page}\n" for page in pages[n::processes]))
        lists.append(listing)
    return _tesseract_on(lists, processes)


def scanned_rates(base: Path, workers: int, scans: int) -> dict[str, Any]:
    """Carnet on ``scans`` generated scans beside bare tesseract on the same page images,
    with the same number of processes.

    Bare tesseract reads the page images as Carnet hands them to tesseract (8-bit gray
    BMP, extracted here beforehand: its best case, no decoding; the extraction's CPU is
    reported, not counted), in two ways: one process a page (the reference issue 14
    set), and one process per worker reading a list of pages (the model loaded once per
    process, as Carnet's processes do: tesseract's own best). On a shared machine the load
    drifts: bare runs half of the pages before Carnet's run and half after, so a steady
    drift weighs on both sides alike (the halves' times show a load that moved faster). A
    second Carnet run on one of the scans gives the fixed cost of a run; the per-page
    figures are the difference between the two runs. CPU counts every process a run started (tesseract, parse
    workers, the quality gate's): the steady figure on a loaded machine.
    """
    from generator import generate_feed

    generate_feed(
        base / "scans", seed=8, patients=max(6, scans // 4), documents=scans, include_bad=False, scans=scans
    )
    (base / "pages").mkdir()
    cpu0 = time.process_time()
    pages = _page_images(base / "scans", base / "pages")
    extraction_cpu = time.process_time() - cpu0
    first = sorted(p for p in (base / "scans").rglob("*") if p.is_file() and p.name.startswith("SCAN_"))[0]
    (base / "one-scan").mkdir()
    shutil.copy(first, base / "one-scan" / first.name)

    half = len(pages) // 2
    bare_before = bare_tesseract(pages[:half], workers)
    lists_before = bare_tesseract_lists(pages[:half], workers, base)
    carnet = _carnet_ingest(base / "scans", base / "carnet-scans")
    bare_after = bare_tesseract(pages[half:], workers)
    lists_after = bare_tesseract_lists(pages[half:], workers, base)
    one = _carnet_ingest(base / "one-scan", base / "carnet-one-scan")
    lists_wall = lists_before["wall_s"] + lists_after["wall_s"]
    lists_cpu = lists_before["cpu_s"] + lists_after["cpu_s"]

    n = carnet["ocr_pages"]
    bare_wall = bare_before["wall_s"] + bare_after["wall_s"]
    bare_cpu = bare_before["cpu_s"] + bare_after["cpu_s"]
    extra = max(1, n - one["ocr_pages"])
    per_page_wall = (carnet["wall_s"] - one["wall_s"]) / extra
    fixed_wall = one["wall_s"] - per_page_wall * one["ocr_pages"]
    # Carnet's CPU with its tesseract processes and workers: the part that grows with pages.
    per_page_cpu = (carnet["cpu_s"] - one["cpu_s"]) / extra
    bare_s_per_page = bare_wall / len(pages)
    return {
        "carnet": {
            **carnet,
            "wall_pages_per_s": round(n / carnet["wall_s"], 2),
            "cpu_s_per_page": round(carnet["cpu_s"] / max(1, n), 3),
        },
        "carnet_one_scan": one,
        "carnet_costs": {
            # Read any batch size: wall(n) ~ fixed_wall_s + n * wall_s_per_page.
            "fixed_wall_s": round(fixed_wall, 2),
            "wall_s_per_page": round(per_page_wall, 3),
            "fixed_cpu_s": round(one["cpu_s"] - per_page_cpu * one["ocr_pages"], 2),
            "cpu_s_per_page": round(per_page_cpu, 3),
        },
        "bare_tesseract": {
            "pages": len(pages),
            "processes": workers,
            "wall_s": round(bare_wall, 2),
            "wall_pages_per_s": round(len(pages) / bare_wall, 2),
            "wall_s_per_page": round(bare_s_per_page, 3),
            "cpu_s_per_page": round(bare_cpu / len(pages), 3),
            "halves_wall_s": [round(bare_before["wall_s"], 2), round(bare_after["wall_s"], 2)],
            "page_extraction_cpu_s_per_page": round(extraction_cpu / len(pages), 3),
        },
        "bare_tesseract_lists": {
            "processes": workers,
            "wall_s": round(lists_wall, 2),
            "wall_pages_per_s": round(len(pages) / lists_wall, 2),
            "wall_s_per_page": round(lists_wall / len(pages), 3),
            "cpu_s_per_page": round(lists_cpu / len(pages), 3),
            "halves_wall_s": [round(lists_before["wall_s"], 2), round(lists_after["wall_s"], 2)],
        },
        "carnet_share_of_bare_pages_per_s": round(bare_wall / len(pages) * n / carnet["wall_s"], 2),
        "carnet_share_of_lists_pages_per_s": round(lists_wall / len(pages) * n / carnet["wall_s"], 2),
        # CPU per page, the fixed cost left out: Carnet's (tesseract included) over bare's.
        "carnet_over_bare_cpu_per_page": round(per_page_cpu / (bare_cpu / len(pages)), 2),
        # Without the fixed cost (a long batch): bare's wall per page over Carnet's.
        "carnet_share_per_page": round(bare_s_per_page / per_page_wall, 2) if per_page_wall > 0 else None,
        "carnet_share_of_lists_per_page": (
            round(lists_wall / len(pages) / per_page_wall, 2) if per_page_wall > 0 else None
        ),
    }


# -- Elasticsearch -------------------------------------------------------------------------


def es_rates(documents: int) -> dict[str, Any]:
    """The bulk helper alone vs Carnet's ``apply`` per flush (:mod:`benchmarks.bench_es_bulk`)."""
    from benchmarks import bench_es_bulk

    return bench_es_bulk.run(docs=documents)


# -- the run ---------------------------------------------------------------------------------


def non_scanned_rates(base: Path, documents: int) -> dict[str, Any]:
    """Carnet on a generated non-scanned feed of ``documents`` beside the bare parse of the
    same files, each in a fresh process (start-up included)."""
    from generator import generate_feed

    generate_feed(
        base / "text",
        seed=7,
        patients=max(20, documents // 10),
        documents=documents,
        include_bad=False,
        scans=0,
    )
    carnet = _carnet_ingest(base / "text", base / "carnet-text")
    bare_wall, bare_cpu, bare_out = _timed(
        [PYTHON, "-m", "benchmarks.bench_wallclock", "--bare", str(base / "text")], _env()
    )
    n = carnet["documents"]
    return {
        "carnet": {
            **carnet,
            "wall_docs_per_s": round(n / carnet["wall_s"], 1),
            "cpu_ms_per_doc": round(carnet["cpu_s"] / n * 1000, 2),
        },
        "bare_parse": {
            **json.loads(bare_out),
            "wall_s": round(bare_wall, 2),
            "cpu_s": round(bare_cpu, 2),
        },
        "carnet_over_bare_wall": round(carnet["wall_s"] / bare_wall, 2),
    }


def hl7_rates(base: Path, documents: int, rounds: int = HL7_ROUNDS) -> dict[str, Any]:
    """HL7 v2 through the whole pipeline, per core: ``carnet ingest`` of the HL7 files of a
    generated feed, and of one of them, each in a fresh process; CPU counts every process
    a run starts (parse workers, the quality gate's). The difference between the two runs
    is the CPU the messages cost, the run's fixed cost (start-up, GX's import) left out;
    beside the bare parse (hl7apy ``parse_message``) of the same files. The two runs are
    made ``rounds`` times, alternated, and the median round is reported: on a shared
    machine one round's CPU moves by a tenth or more with the load."""
    import statistics

    from benchmarks.bench_pipeline import _split_by_format
    from generator import generate_feed

    feed = generate_feed(
        base / "hl7-feed", seed=11, patients=max(20, documents // 10), documents=documents, include_bad=False
    )
    folder = _split_by_format(base / "hl7-feed", list(feed.documents), base / "hl7-by-format")["hl7v2"]
    first = sorted(p for p in folder.rglob("*.hl7"))[0]
    (base / "hl7-one").mkdir()
    shutil.copy(first, base / "hl7-one" / first.name)
    measured = []
    for n in range(rounds):
        carnet = _carnet_ingest(folder, base / f"carnet-hl7-{n}")
        one = _carnet_ingest(base / "hl7-one", base / f"carnet-hl7-one-{n}")
        per_message = (carnet["cpu_s"] - one["cpu_s"]) / max(1, carnet["documents"] - one["documents"])
        measured.append((per_message, carnet, one))
    per_message, carnet, one = sorted(measured, key=lambda m: m[0])[len(measured) // 2]
    costs = [m[0] for m in measured]
    bare_wall, bare_cpu, bare_out = _timed(
        [PYTHON, "-m", "benchmarks.bench_wallclock", "--bare", str(folder)], _env()
    )
    n = carnet["documents"]
    messages = json.loads(bare_out)["hl7_messages"]
    return {
        "carnet": {**carnet, "wall_messages_per_s": round(n / carnet["wall_s"], 1)},
        "carnet_one_file": one,
        "cpu_ms_per_message": round(per_message * 1000, 3),
        "messages_per_s_per_core": round(1 / per_message) if per_message > 0 else None,
        "rounds_cpu_ms_per_message": [round(c * 1000, 3) for c in costs],
        "rounds_spread": round(
            statistics.pstdev(m[0] for m in measured) / statistics.mean(m[0] for m in measured), 3
        ),
        "bare_parse": {
            "messages": messages,
            "wall_s": round(bare_wall, 2),
            "cpu_s": round(bare_cpu, 2),
            "messages_per_s_per_core": round(messages / bare_cpu),
        },
    }


def run(quick: bool = False) -> dict[str, Any]:
    documents = 300 if quick else 1000
    scans = 8 if quick else SCANNED_PAGES
    workers = available_cpus()
    results: dict[str, Any] = {"ocr_workers": workers, "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench_wallclock_") as tmp:
        base = Path(tmp)
        results["non_scanned"] = non_scanned_rates(base, documents)
        results["hl7"] = hl7_rates(base, 300 if quick else HL7_FEED_DOCUMENTS)
        if _up(ES_URL) and _up(S3_URL):
            bucket = f"carnet-bench-{uuid.uuid4().hex[:8]}"
            from pipeline.store.s3 import S3Store

            S3Store.from_url(f"s3://{bucket}", endpoint_url=S3_URL, region="us-east-1", create_bucket=True)
            served = _carnet_ingest(
                base / "text",
                base / "carnet-es",
                CARNET_INDEX_URL=ES_URL,
                CARNET_STORE_URL=f"s3://{bucket}/bench",
                CARNET_ES_ALIAS=f"carnet-bench-{uuid.uuid4().hex[:8]}",
            )
            results["non_scanned"]["carnet_es_s3"] = {
                **served,
                "wall_docs_per_s": round(served["documents"] / served["wall_s"], 1),
            }
            results["elasticsearch"] = es_rates(2000 if quick else 10_000)

        results["scanned"] = scanned_rates(base, workers, scans)

        from benchmarks import bench_memory

        results["peak_memory"] = bench_memory.measure(base / "big", quick)
    results["load_average_after"] = os.getloadavg()
    return results


def _scanned_rows(scan: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    bare, lists, costs = scan["bare_tesseract"], scan["bare_tesseract_lists"], scan["carnet_costs"]
    return [
        (
            f"{scan['carnet']['ocr_pages']} scanned pages",
            f"{scan['carnet']['wall_s']} s, {scan['carnet']['wall_pages_per_s']} pages/s",
            f"{bare['wall_s']} s, {bare['wall_pages_per_s']} pages/s "
            f"({bare['processes']} tesseract processes)",
            f"{scan['carnet_share_of_bare_pages_per_s']:.0%} of bare pages/s",
        ),
        (
            "  per page, without the run's fixed cost",
            f"{costs['wall_s_per_page']} s wall; {costs['cpu_s_per_page']} s CPU "
            f"({scan['carnet_over_bare_cpu_per_page']}x bare's), tesseract included",
            f"{bare['wall_s_per_page']} s wall; CPU {bare['cpu_s_per_page']} s tesseract",
            f"{scan['carnet_share_per_page']:.0%} of bare pages/s" if scan["carnet_share_per_page"] else "",
        ),
        (
            "  the same pages, tesseract given lists",
            "",
            f"{lists['wall_s']} s, {lists['wall_pages_per_s']} pages/s ({lists['processes']} processes, "
            f"one model load each); CPU {lists['cpu_s_per_page']} s a page",
            f"{scan['carnet_share_of_lists_pages_per_s']:.0%} of its pages/s; "
            f"{scan['carnet_share_of_lists_per_page']:.0%} per page",
        ),
        (
            "  fixed cost of a run (start-up, GX)",
            f"{costs['fixed_wall_s']} s wall, {costs['fixed_cpu_s']} s CPU",
            "",
            "",
        ),
    ]


def table(r: dict[str, Any]) -> str:
    """The figures a user compares, one line each: Carnet, bare reference, ratio."""
    rows = [("work", "Carnet (wall)", "bare reference (wall)", "ratio")]
    text = r.get("non_scanned")  # absent with --scanned alone
    if text is not None:
        rows.append(
            (
                f"{text['carnet']['documents']} non-scanned docs, embedded defaults",
                f"{text['carnet']['wall_s']} s, {text['carnet']['wall_docs_per_s']} docs/s",
                f"{text['bare_parse']['wall_s']} s (pypdf + ElementTree + hl7apy)",
                f"{text['carnet_over_bare_wall']}x the time",
            )
        )
        if "carnet_es_s3" in text:
            served = text["carnet_es_s3"]
            rows.append(
                (
                    "same docs, Elasticsearch + S3",
                    f"{served['wall_s']} s, {served['wall_docs_per_s']} docs/s",
                    "",
                    "",
                )
            )
    if "hl7" in r:
        hl7 = r["hl7"]
        rows.append(
            (
                f"{hl7['carnet']['documents']} HL7 messages, whole pipeline",
                f"{hl7['carnet']['wall_s']} s, {hl7['carnet']['wall_messages_per_s']} msgs/s; per core "
                f"{hl7['messages_per_s_per_core']} msgs/s ({hl7['cpu_ms_per_message']} ms CPU a message, "
                "every process, fixed cost left out; median of rounds costing "
                f"{hl7['rounds_cpu_ms_per_message']} ms)",
                f"hl7apy parse alone: {hl7['bare_parse']['messages_per_s_per_core']} msgs/s per core",
                "",
            )
        )
    if "scanned" in r:
        rows.extend(_scanned_rows(r["scanned"]))
    if "elasticsearch" in r:
        es = r["elasticsearch"]
        rows.append(
            (
                f"{es['documents']} records into Elasticsearch",
                f"{es['carnet_apply_docs_per_s']} docs/s (apply per flush)",
                f"{es['bare_bulk_docs_per_s']} docs/s (helpers.bulk)",
                f"{es['carnet_over_bare']}x the rate",
            )
        )
    for kind, m in r.get("peak_memory", {}).get("inputs", {}).items():
        rows.append(
            (
                f"peak memory, {kind} {m['input_mb']} MB",
                f"parse {m['peak_rss_mb']} MB RSS (+{m['above_imports_mb']} MB over imports); "
                f"carnet ingest {m['ingest_peak_rss_mb']} MB RSS "
                f"({m['k_per_input_mb']} x input over one small CDA's)",
                "",
                "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def run_alone(
    scanned: int | None = None, non_scanned: int | None = None, hl7: int | None = None
) -> dict[str, Any]:
    """One comparison alone: ``scanned`` generated scans, ``non_scanned`` documents, or the
    HL7 messages of a feed of ``hl7`` documents."""
    results: dict[str, Any] = {"ocr_workers": available_cpus(), "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench_wallclock_") as tmp:
        if scanned is not None:
            results["scanned"] = scanned_rates(Path(tmp), available_cpus(), scanned)
        if non_scanned is not None:
            results["non_scanned"] = non_scanned_rates(Path(tmp), non_scanned)
        if hl7 is not None:
            results["hl7"] = hl7_rates(Path(tmp), hl7)
    results["load_average_after"] = os.getloadavg()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_wallclock",
        description="Wall-clock throughput of `carnet ingest` beside bare references (see the module "
        "docstring); prints one JSON object and a table. Without an option: every comparison.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (300 documents, 8 scans)")
    alone = "this comparison alone"
    parser.add_argument("--scanned", nargs="?", type=int, const=SCANNED_PAGES, metavar="PAGES", help=alone)
    parser.add_argument("--non-scanned", nargs="?", type=int, const=1000, metavar="DOCS", help=alone)
    parser.add_argument("--hl7", nargs="?", type=int, const=HL7_FEED_DOCUMENTS, metavar="DOCS", help=alone)
    # The bare parse runs in a process of its own: this same script, given the folder.
    parser.add_argument("--bare", type=Path, metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare is not None:
        print(json.dumps(bare_parse(args.bare)))
        return
    if args.scanned is not None or args.non_scanned is not None or args.hl7 is not None:
        results = run_alone(args.scanned, args.non_scanned, args.hl7)
    else:
        results = run(quick=args.quick)
    print(json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
