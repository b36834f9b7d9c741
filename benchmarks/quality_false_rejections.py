"""The quality gate's false-rejection rate on a corpus of normal reports, and its detection rate.

Normal French biology and imaging reports (text PDF in five row layouts, HL7 v2.5, CDA R2,
scanned biology reports read by OCR; ``tests/samples/quality/corpus.py``) and defective
ones (µ read as p or m, a unit of the wrong kind, a ×10 slip beside its range, a negative
value, an exam before the birth) go through ``ingest_sources`` — the whole pipeline, gate
included. A normal report rejected for any reason is a false rejection; a defect counts as
detected when its document is rejected with the expected reason. Run:
``.venv/bin/python -m benchmarks.quality_false_rejections [--per-format N] [--scans N]``;
prints JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

from pipeline.model import Status
from tests.samples.quality.corpus import defect_corpus, ingest_corpus, normal_corpus


def measure(per_format: int, scans: int, work: Path) -> dict[str, object]:
    normal = ingest_corpus(normal_corpus(per_format=per_format, scans=scans), work / "normal")
    defects = ingest_corpus(defect_corpus(), work / "defects")
    rejected = [(s, o) for s, o in normal if o.status is Status.REJECTED]
    detected = [
        (s, o)
        for s, o in defects
        if o.status is Status.REJECTED and any(p.code is s.expected for p in o.reasons)
    ]
    warnings = Counter(p.code.value for _, o in normal for p in o.reasons if not p.blocking)
    return {
        "normal_documents": len(normal),
        "normal_by_format": dict(Counter(s.format for s, _ in normal)),
        "false_rejections": len(rejected),
        "false_rejection_rate": round(len(rejected) / len(normal), 4),
        "false_rejection_reasons": [f"{s.name}: {[p.render() for p in o.reasons]}" for s, o in rejected],
        "warnings_on_normal_documents": dict(warnings),
        "defective_documents": len(defects),
        "detected": len(detected),
        "detection_rate": round(len(detected) / len(defects), 4),
        "missed": [
            f"{s.name}: {o.status.value} {[p.render() for p in o.reasons]}"
            for s, o in defects
            if (s, o) not in detected
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-format", type=int, default=40)
    parser.add_argument("--scans", type=int, default=10, help="scanned biology reports (OCR)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(measure(args.per_format, args.scans, Path(tmp)), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
