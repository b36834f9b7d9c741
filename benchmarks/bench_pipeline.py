"""Whole-pipeline throughput per core: text PDFs, HL7 messages and CDA documents through
``ingest_sources`` (store, parse, identify, classify, checks, quality gate, index), next to
bare pypdf on the same PDFs.

CPU time of this process is reported (a per-core rate that holds on a busy machine), as
well as wall time. Inputs come from Carnet's generator. Run:
``.venv/bin/python -m benchmarks.bench_pipeline [--quick]``; prints one JSON object.

On ext4, every file created in the ~30 s after a mass deletion (another benchmark's or a
test's temporary folders removed) costs the kernel a scan of the recently deleted inodes:
the store's writes then take the HL7 rate down by a quarter. Run it apart to compare rates.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tempfile
import time
from pathlib import Path

from pypdf import PdfReader

from generator import generate_feed
from pipeline.ingest import ingest_sources
from pipeline.model import Status
from pipeline.settings import Settings


def _cpu() -> float:
    return time.process_time()


def _split_by_format(root: Path, feed_docs: list, out: Path) -> dict[str, Path]:
    """Copy each format's files into its own folder (feed layout kept)."""
    folders: dict[str, Path] = {}
    for d in feed_docs:
        fmt = d.format or "other"
        rel = Path(d.source_ref.split("#")[0])
        dest = out / fmt / rel
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, dest)
        folders[fmt] = out / fmt
    return folders


def run(quick: bool = False) -> dict[str, object]:
    documents = 300 if quick else 1500
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        feed = generate_feed(
            base / "feed", seed=11, patients=max(20, documents // 10), documents=documents, include_bad=False
        )
        folders = _split_by_format(base / "feed", list(feed.documents), base / "by_format")

        # Warm-up: imports (GX ~2–3 s), tesseract probe, index creation are one-offs per process.
        warm = Settings(data_dir=base / "warm")
        ingest_sources([str(next(iter(folders.values())))], warm)

        results: dict[str, object] = {"documents_generated": documents}
        for fmt, folder in sorted(folders.items()):
            settings = Settings(data_dir=base / f"carnet-{fmt}")
            c0, w0 = _cpu(), time.perf_counter()
            summary = ingest_sources([str(folder)], settings)
            cpu, wall = _cpu() - c0, time.perf_counter() - w0
            n = len(summary.outcomes)
            entry: dict[str, object] = {
                "documents": n,
                "indexed": sum(o.status is Status.INDEXED for o in summary.outcomes),
                "docs_per_s_per_core": round(n / cpu, 1),
                "wall_docs_per_s": round(n / wall, 1),
                "seconds_per_stage": summary.metrics["seconds_per_stage"],
            }
            if fmt == "pdf":
                files = sorted(p for p in folder.rglob("*") if p.is_file())
                c0 = _cpu()
                pages = 0
                for f in files:
                    reader = PdfReader(io.BytesIO(f.read_bytes()))
                    for page in reader.pages:
                        page.extract_text()
                        pages += 1
                bare = _cpu() - c0
                entry["pages"] = pages
                entry["pipeline_pages_per_s_per_core"] = round(pages / cpu, 1)
                entry["bare_pypdf_pages_per_s_per_core"] = round(pages / bare, 1)
                entry["pipeline_vs_bare_pypdf"] = round((pages / cpu) / (pages / bare), 3)
            results[fmt] = entry
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(quick=parser.parse_args().quick), indent=2))


if __name__ == "__main__":
    main()
