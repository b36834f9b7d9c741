"""Run every Carnet benchmark and write their figures to ``benchmarks/results.json``.

``make bench`` runs the full sizes (about 20–30 minutes on 2 cores, more on a loaded
machine); ``--quick`` runs small sizes for a smoke check. ``bench_wallclock`` comes first:
Carnet's wall-clock documents/s and pages/s, start-up included, beside the bare
libraries on the same files, printed as a table. Benchmarks that need a server
(Elasticsearch, S3, KMS, PostgreSQL) run only when it answers (``scripts/elasticsearch.sh``, ``s3.sh``,
``kms.sh start``). Figures are rates and ratios, never pass/fail thresholds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import socket
import time
from pathlib import Path
from urllib.parse import urlparse

BENCHES = (
    "bench_wallclock",
    "bench_pipeline",
    "bench_pdf_ocr",
    "bench_hl7",
    "bench_search",
    "bench_quality",
    "bench_es",
    "bench_kms",
    "bench_footprint",
    "bench_audit",
    "bench_state",
)
# Benchmarks that need a server: (its URL variable, default URL, the command that starts it).
_NEEDS = {
    "bench_es": (("CARNET_TEST_ES_URL", "http://127.0.0.1:9200", "scripts/elasticsearch.sh start"),),
    "bench_kms": (("CARNET_TEST_KMS_URL", "http://127.0.0.1:4599", "scripts/kms.sh start"),),
    "bench_footprint": (
        ("CARNET_TEST_ES_URL", "http://127.0.0.1:9200", "scripts/elasticsearch.sh start"),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000", "scripts/s3.sh start"),
    ),
    "bench_audit": (
        (
            "CARNET_TEST_STATE_URL",
            "postgresql://carnet:carnet@127.0.0.1:5434/carnet",
            "scripts/postgres.sh start",
        ),
    ),
    "bench_state": (
        (
            "CARNET_TEST_STATE_URL",
            "postgresql://carnet:carnet@127.0.0.1:5434/carnet",
            "scripts/postgres.sh start",
        ),
    ),
}


def _up(variable: str, default: str) -> bool:
    url = urlparse(os.environ.get(variable, default))
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=1):
            return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", choices=BENCHES)
    parser.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = parser.parse_args()
    results: dict[str, object] = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "load_average": os.getloadavg(),
            "when": time.strftime("%Y-%m-%d"),
        },
        "quick": args.quick,
    }
    for name in args.only or BENCHES:
        missing = [start for variable, default, start in _NEEDS.get(name, ()) if not _up(variable, default)]
        if missing:
            results[name] = {"skipped": f"a server is not running ({', '.join(missing)})"}
            continue
        module = importlib.import_module(f"benchmarks.{name}")
        t0 = time.perf_counter()
        results[name] = module.run(quick=args.quick)
        print(f"{name}: done in {time.perf_counter() - t0:.0f} s", flush=True)
        if name == "bench_wallclock":
            print(module.table(results[name]), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
