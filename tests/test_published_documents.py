"""`carnet ingest` on a folder of documents as French producers publish them — CDA
auto-presentable, signed, level 1 with a PDF, a scan or text, national type codes; text PDFs
whose INS is printed with the whitespace text layers produce, a child's report with the
insured parent's number — gives one report line per document with the right status, INS,
class and type.

The samples are Carnet's own (``tests/samples/cda/make_samples.py``,
``tests/samples/identity/make_samples.py``); the expected values
below are written out, not read from the generator, so that a generator change that
breaks a sample shows here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).parent / "samples"

pytestmark = pytest.mark.tesseract

# file -> (status, INS, class, type code, reason of a rejection)
EXPECTED: dict[str, tuple[str, str | None, str | None, str | None, str | None]] = {
    # Auto-presentable (data first, stylesheet first) and signed documents.
    "cda/cr-bio-auto.xml": ("indexed", "291106912304591", "biology", "11502-2", None),
    "cda/cr-img-auto.xml": ("indexed", "178064410908721", "imaging", "18748-4", None),
    "cda/cr-signed.xml": ("indexed", "265011305512339", "prescription", "57833-6", None),
    # Level 1: a text-layer PDF, a scanned PDF (OCR), a PNG scan (OCR), inline text, RTF.
    "cda/cr-pdf-text-layer.xml": ("indexed", "291106912304591", "biology", "11502-2", None),
    "cda/cr-pdf-scan.xml": ("indexed", "102023306307139", "biology", "11502-2", None),
    "cda/presc-png.xml": ("indexed", "265011305512339", "prescription", "57832-8", None),
    "cda/presc-kine-text.xml": ("indexed", "299057511223384", "prescription", "PRESC-KINE", None),
    "cda/cr-img-rtf.xml": ("indexed", "291106912304591", "imaging", "18748-4", None),
    "cda/cr-pdf-bad-base64.xml": ("rejected", None, None, None, "parse_error"),
    # The document's own code wins over the words in it.
    "cda/cr-imagerie.xml": ("indexed", "102023306307139", "imaging", "18748-4", None),
    "cda/remb.xml": ("indexed", "299057511223384", "other", "REMB", None),
    "cda/synthesis.xml": ("indexed", "178064410908721", "other", "SYNTH", None),
    "cda/vital-signs.xml": ("indexed", "265011305512339", "other", "29274-8", None),
    # Level 3 as before.
    "cda/cr-bio.xml": ("indexed", "284037512345640", "biology", "11502-2", None),
    # Text PDFs: the INS as text layers print it, and the insured parent beside the child.
    **{
        f"identity/{name}": ("indexed", "167015313088966", "biology", "11502-2", None)
        for name in [
            "ins-two-spaces.pdf",
            "ins-narrow-nbsp.pdf",
            "ins-thin-figure-spaces.pdf",
            "ins-key-next-line.pdf",
            "ins-label-above.pdf",
            "ins-positioned-groups.pdf",
            "ins-table-columns.pdf",
            "decoys.pdf",
        ]
    },
    "identity/parent-child-lines.pdf": ("indexed", "215067512300441", "biology", "11502-2", None),
    "identity/parent-child-block.pdf": ("indexed", "215067512300441", "biology", "11502-2", None),
    "identity/two-patient-ins.pdf": ("rejected", None, None, None, "identity_conflict"),
    "identity/insured-only.pdf": ("rejected", None, None, None, "missing_ins"),
}


def run_carnet(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The `carnet` command line, in a fresh interpreter, with this checkout's code."""
    root = str(Path(__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_carnet_ingest_reads_published_documents(tmp_path: Path) -> None:
    feed = tmp_path / "feed" / "producer-fr"
    for name in EXPECTED:
        (feed / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / name, feed / name)
    report = tmp_path / "report.jsonl"
    done = run_carnet(
        "ingest",
        str(feed.parent),
        "--index",
        f"sqlite:///{tmp_path / 'index.db'}",
        "--store",
        f"file://{tmp_path / 'store'}",
        "--report",
        str(report),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]

    lines = [json.loads(line) for line in report.read_text().splitlines()]
    got = {str(Path(line["source"]).relative_to(feed)): line for line in lines}
    assert sorted(got) == sorted(EXPECTED), "one report line per document"
    wrong = {}
    for name, (status, ins, doc_class, type_code, reason) in EXPECTED.items():
        line = got[name]
        reasons = [r.split(":")[0] for r in line["reasons"]]
        actual = (
            line["status"],
            line["patient_id"],
            line["doc_class"],
            line["type_code"],
            reasons[0] if line["status"] == "rejected" else None,
        )
        if actual != (status, ins, doc_class, type_code, reason):
            wrong[name] = (actual, line["reasons"])
    assert not wrong, wrong
