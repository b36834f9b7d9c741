"""Peak memory on big inputs: a 500-page text PDF, a 50 MB CDA, an HL7 file of 100,000
segments, generated here (never committed).

For each input, two fresh processes:
- the parse alone through the registry: peak RSS (``ru_maxrss``), the part above the
  parsers' imports, and tracemalloc's peak of Python allocations during the parse;
- ``carnet ingest`` of the file into the embedded defaults: the whole pipeline's peak RSS
  (store, parse, identify, classify, gate, index), read from ``RUSAGE_CHILDREN``, and how
  far above the peak of ingesting one small CDA (``ingest_baseline_mb``: the interpreter,
  the parsers, Great Expectations, the index) it goes, per megabyte of input: the ``k`` of
  "peak = baseline + k × input".

The HL7 file's messages each have their own control id and order number, so that every
one is a new document (repeated as they are, all but one would be duplicates and never
reach the index). Figures are megabytes (and seconds), never a pass/fail threshold.
Run: ``.venv/bin/python -m benchmarks.bench_memory [--quick]``; prints one JSON object.
``--hl7 100000 400000``: only the ingest of HL7 files of those many segments (12,501 and
50,001 messages), to see whether its peak grows with the messages.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.bench_wallclock import PYTHON, _env, _timed


def make_big_inputs(folder: Path, quick: bool) -> dict[str, Path]:
    """A 500-page text PDF, a 50 MB CDA and an HL7 file of 100,000 segments."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.pdfgen import canvas

    from benchmarks.bench_pdf_ocr import FONT, LINES

    pages, cda_mb, segments = (50, 5, 10_000) if quick else (500, 50, 100_000)
    pdfmetrics.registerFont(TTFont("DejaVuSans", str(FONT)))
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=A4)
    for page in range(pages):
        pdf.setFont("DejaVuSans", 10)
        for i in range(40):
            pdf.drawString(50, 800 - 18 * i, f"{page}.{i} {LINES[i % len(LINES)]}")
        pdf.showPage()
    pdf.save()
    paths = {
        "pdf": folder / "big.pdf",
        "cda": folder / "big.xml",
        "hl7": folder / "big.hl7",
        "small": folder / "small.xml",
    }
    paths["pdf"].write_bytes(buffer.getvalue())

    cda, hl7 = _samples(folder)
    paths["small"].write_bytes(cda.read_bytes())
    # The CDA's first <paragraph> repeated until the file weighs ``cda_mb``.
    text = cda.read_text(encoding="utf-8")
    start = text.index("<paragraph>")
    end = text.index("</paragraph>", start) + len("</paragraph>")
    block = text[start:end]
    repeat = cda_mb * 1_000_000 // len(block.encode()) + 1
    paths["cda"].write_text(text[:start] + block * repeat + text[end:], encoding="utf-8")
    write_hl7(hl7, paths["hl7"], segments)
    return paths


def _samples(folder: Path) -> tuple[Path, Path]:
    """A small CDA and an HL7 message of a generated feed."""
    from generator import generate_feed

    feed = generate_feed(folder / "seed-feed", seed=3, patients=4, documents=40, include_bad=False)
    sources = [folder / "seed-feed" / d.source_ref.split("#")[0] for d in feed.documents]
    cda = next(p for p in sources if p.read_bytes().lstrip().startswith(b"<"))
    hl7 = next(p for p in sources if p.read_bytes().lstrip(b"\x0b").startswith(b"MSH"))
    return cda, hl7


def write_hl7(sample: Path, out: Path, segments: int) -> None:
    """``sample``'s HL7 message repeated until ``out`` holds ``segments`` segments, each copy
    with its own MSH-10 control id and ORC/OBR order numbers (same lengths)."""
    raw = sample.read_bytes().replace(b"\n", b"\r").strip(b"\r\x0b\x1c")
    per_message = raw.count(b"\r") + 1
    fields = raw.split(b"\r")[0].split(b"|")
    control = fields[9]
    orders = {f for seg in raw.split(b"\r") if seg[:3] in {b"ORC", b"OBR"} for f in seg.split(b"|")[2:4] if f}
    with out.open("wb") as file:
        for n in range(segments // per_message + 1):
            message = raw.replace(control, b"C%0*d" % (len(control) - 1, n))
            for order in orders:
                message = message.replace(order, b"9%0*d" % (len(order) - 1, n))
            file.write(message + b"\r")


def peak_memory(path: Path) -> dict[str, Any]:
    """Peak RSS of a fresh process parsing ``path`` through Carnet's registry, and the peak
    of Python allocations during the parse (tracemalloc, which slows the parse down)."""
    code = (
        "import resource, sys, time, tracemalloc\n"
        "from parsers.registry import default_registry\n"
        "registry = default_registry()\n"
        "import pypdf, hl7apy.v2_5.segments  # imports counted in the baseline, not the file\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t = time.perf_counter()\n"
        "tracemalloc.start()\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "docs = registry.choose(data).parse(data, source=sys.argv[1])\n"
        "traced = tracemalloc.get_traced_memory()[1]\n"
        "wall = time.perf_counter() - t\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(base, peak, traced, len(docs), sum(len(d.text) for d in docs), wall)\n"
    )
    _, _, out = _timed([PYTHON, "-c", code, str(path)], _env())
    base, peak, traced, docs, chars, wall = out.split()
    return {
        "input_mb": round(path.stat().st_size / 1e6, 1),
        "documents": int(docs),
        "text_mb": round(int(chars) / 1e6, 1),
        "parse_s": round(float(wall), 1),
        "peak_rss_mb": round(int(peak) / 1024),
        "above_imports_mb": round((int(peak) - int(base)) / 1024),
        "python_peak_mb": round(int(traced) / 1e6),
    }


def ingest_peak(path: Path, data_dir: Path) -> dict[str, Any]:
    """Peak RSS of ``carnet ingest path`` in a fresh process (embedded defaults)."""
    code = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(done.returncode, usage.ru_maxrss, usage.ru_utime + usage.ru_stime)\n"
        "sys.stderr.write(done.stderr[-2000:])\n"
    )
    folder = data_dir / "in"
    folder.mkdir(parents=True)
    (folder / path.name).write_bytes(path.read_bytes())
    report = data_dir / "report.jsonl"
    wall, _, out = _timed(
        [
            PYTHON,
            "-c",
            code,
            PYTHON,
            "-m",
            "pipeline.cli",
            "ingest",
            str(folder),
            "--quiet",
            "--report",
            str(report),
        ],
        _env(CARNET_DATA_DIR=str(data_dir / "carnet")),
    )
    code_rc, peak, cpu = out.split()
    statuses: dict[str, int] = {}
    for line in report.read_text().splitlines() if report.exists() else ():
        status = json.loads(line)["status"]
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "ingest_exit": int(code_rc),
        "ingest_peak_rss_mb": round(int(peak) / 1024),
        "ingest_wall_s": round(wall, 1),
        "ingest_cpu_s": round(float(cpu), 1),
        "ingest_by_status": statuses,
    }


def measure(folder: Path, quick: bool = False) -> dict[str, Any]:
    """Both peaks for each big input, generated under ``folder``, and the ingest of one
    small CDA they are compared with."""
    folder.mkdir(parents=True, exist_ok=True)
    big = make_big_inputs(folder, quick)
    baseline = ingest_peak(big.pop("small"), folder / "ingest-small")["ingest_peak_rss_mb"]
    inputs = {}
    for kind, path in big.items():
        figures = {**peak_memory(path), **ingest_peak(path, folder / f"ingest-{kind}")}
        above = figures["ingest_peak_rss_mb"] - baseline
        figures["ingest_above_baseline_mb"] = above
        figures["k_per_input_mb"] = round(above / max(figures["input_mb"], 0.1), 1)
        inputs[kind] = figures
    return {"ingest_baseline_mb": baseline, "inputs": inputs}


def measure_hl7(folder: Path, segments: list[int]) -> dict[str, Any]:
    """The ingest peak of HL7 files of each number of ``segments`` (the big file's message
    repeated), and of the small CDA they are compared with."""
    folder.mkdir(parents=True, exist_ok=True)
    cda, hl7 = _samples(folder)
    baseline = ingest_peak(cda, folder / "ingest-small")["ingest_peak_rss_mb"]
    inputs = {}
    for n in segments:
        path = folder / f"big-{n}.hl7"
        write_hl7(hl7, path, n)
        figures = {"input_mb": round(path.stat().st_size / 1e6, 1)}
        figures.update(ingest_peak(path, folder / f"ingest-{n}"))
        figures["ingest_above_baseline_mb"] = figures["ingest_peak_rss_mb"] - baseline
        inputs[f"hl7-{n}-segments"] = figures
    return {"ingest_baseline_mb": baseline, "inputs": inputs}


def run(quick: bool = False, hl7_segments: list[int] | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        if hl7_segments:
            return measure_hl7(Path(tmp), hl7_segments)
        return {"quick": quick, **measure(Path(tmp), quick)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_memory", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small inputs (50 pages, 5 MB, 10,000 segments)")
    parser.add_argument(
        "--hl7", nargs="+", type=int, metavar="SEGMENTS", help="only the ingest of HL7 files of these sizes"
    )
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick, hl7_segments=args.hl7), indent=2))
