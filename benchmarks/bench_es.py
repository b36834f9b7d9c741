"""Elasticsearch vs the embedded SQLite index on the same synthetic documents.

Runs :func:`benchmarks.bench_search.run` (same generator, same seed, so the same
documents and queries) once against an Elasticsearch node and once against a temporary
SQLite file, and prints both side by side as JSON: bulk indexing docs/s and per-patient
search latency p50/p95 (wall clock; the ES figures include the HTTP round trip).

    scripts/elasticsearch.sh start
    .venv/bin/python -m benchmarks.bench_es            # 100,000 documents
    .venv/bin/python -m benchmarks.bench_es --quick    # 5,000 documents
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from benchmarks import bench_search

DEFAULT_URL = os.environ.get("CARNET_TEST_ES_URL", "http://127.0.0.1:9200")
_COMPARED = ("indexing_docs_per_s", "search_ms_p50", "search_ms_p95", "search_ms_p99")


def run(
    quick: bool = False,
    url: str = DEFAULT_URL,
    *,
    docs: int | None = None,
    searches: int = 1000,
) -> dict[str, Any]:
    """Both backends' figures on the same data, and Elasticsearch / SQLite ratios."""
    es = bench_search.run(quick, url, docs=docs, searches=searches)
    sqlite = bench_search.run(quick, None, docs=docs, searches=searches)
    return {
        "docs": es["docs"],
        "patients": es["patients"],
        "searches": searches,
        "elasticsearch": es,
        "sqlite": sqlite,
        "es_over_sqlite": {
            key: round(es[key] / sqlite[key], 2) if sqlite[key] else None for key in _COMPARED
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 documents")
    parser.add_argument("--url", default=DEFAULT_URL, help="Elasticsearch URL")
    parser.add_argument("--docs", type=int, default=None, help="documents (default 100000)")
    parser.add_argument("--searches", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.url, docs=args.docs, searches=args.searches), indent=2))


if __name__ == "__main__":
    main()
