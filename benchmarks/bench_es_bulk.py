"""Carnet's Elasticsearch write path beside the bare bulk helper, same records, same run.

- bare reference: ``elasticsearch.helpers.bulk`` of ready documents (their ``_source``
  built before the clock starts), one refresh at the end;
- the same, refreshed after every flush (what "searchable once a flush returns" costs the
  node, shown for reading the gap; not the reference);
- Carnet: ``ElasticsearchIndex.apply`` as the pipeline calls it, one call per flush of
  ``Settings.ingestion.flush_every`` records, every flush after the first also superseding 5 % of
  the previous flush's documents by new versions; analysis, serialisation, the read of
  the current versions and the per-flush refresh are all inside the clock.

Each side writes into a fresh index. A warm-up round (a few flushes of each side, not
counted) comes first; then the sides alternate for ``rounds`` rounds, and the figures are
medians over the rounds: wall-clock docs/s, the ratio of Carnet to the bare helper *within*
each round (the two measured seconds apart, so under the same load: the comparable figure
on a shared machine), the client's CPU per document, and the node's CPU per document (its
process CPU from ``_nodes/_local/stats``: the node's other work at that moment is in it,
and merges that finish after the clock stops are not). Never a pass/fail threshold.

    .venv/bin/python -m benchmarks.bench_es_bulk [--quick] [--docs N] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks.bench_search import synthetic_record
from pipeline.index.base import Supersede
from pipeline.model import DocumentRecord
from pipeline.settings import Settings

ES_URL = os.environ.get("CARNET_TEST_ES_URL", "http://127.0.0.1:9200")
SUPERSEDE_SHARE = 0.05
WARM_UP_FLUSHES = 4

Flush = tuple[list[DocumentRecord], list[Supersede]]


def _records(documents: int) -> list[DocumentRecord]:
    rng = random.Random(5)
    return [synthetic_record(i, max(10, documents // 10), rng) for i in range(documents)]


def _flushes(records: list[DocumentRecord], flush: int) -> list[Flush]:
    """Flushes of ``flush`` records; after the first, the last ``SUPERSEDE_SHARE`` of each
    flush are new versions of documents of the previous flush (same patient)."""
    out: list[Flush] = []
    previous: list[DocumentRecord] = []
    for start in range(0, len(records), flush):
        chunk = list(records[start : start + flush])
        supersedes: list[Supersede] = []
        if previous:
            for k in range(int(len(chunk) * SUPERSEDE_SHARE)):
                old = previous[k]
                new = chunk[-1 - k].model_copy(
                    update={"patient_id": old.patient_id, "series_id": old.series_id}
                )
                chunk[-1 - k] = new
                supersedes.append(
                    Supersede(patient_id=old.patient_id, doc_id=old.doc_id, by_doc_id=new.doc_id)
                )
        out.append((chunk, supersedes))
        previous = chunk
    return out


class Measure:
    """Wall clock, this process's CPU and the node's CPU over one side's writes."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def _node_cpu_s(self) -> float:
        stats = self._client.nodes.stats(node_id="_local", metric="process")
        return int(next(iter(stats["nodes"].values()))["process"]["cpu"]["total_in_millis"]) / 1000

    def run(self, documents: int, write: Callable[[], None]) -> dict[str, float]:
        node0 = self._node_cpu_s()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        write()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        node = self._node_cpu_s() - node0
        return {
            "docs_per_s": documents / wall,
            "client_cpu_ms_per_doc": cpu / documents * 1000,
            "node_cpu_ms_per_doc": node / documents * 1000,
        }


def bare_bulk(records: list[DocumentRecord], flush: int, *, refresh_each: bool = False) -> dict[str, float]:
    """``helpers.bulk`` alone, documents ready; one refresh, or one per flush."""
    from elasticsearch import helpers

    from pipeline.index.elasticsearch import ElasticsearchIndex, _source

    index = ElasticsearchIndex(ES_URL, alias=f"carnet-bench-bare-{uuid.uuid4().hex[:8]}")
    try:
        ready = [
            {"_index": index.alias, "_id": r.doc_id, "_routing": r.patient_id, "_source": _source(r)}
            for r in records
        ]

        def write() -> None:
            step = flush if refresh_each else len(ready)
            for start in range(0, len(ready), step):
                helpers.bulk(index.client, ready[start : start + step], chunk_size=flush, refresh=False)
                index.client.indices.refresh(index=index.alias)

        return Measure(index.client).run(len(records), write)
    finally:
        index.drop()
        index.close()


def carnet_apply(flushes: list[Flush]) -> dict[str, float]:
    """``ElasticsearchIndex.apply`` per flush."""
    from pipeline.index.elasticsearch import ElasticsearchIndex

    index = ElasticsearchIndex(ES_URL, alias=f"carnet-bench-{uuid.uuid4().hex[:8]}")
    documents = sum(len(records) for records, _ in flushes)

    def write() -> None:
        for records, supersedes in flushes:
            if index.apply(records, supersedes):
                raise RuntimeError("the index refused benchmark records")

    try:
        figures = Measure(index.client).run(documents, write)
        _, supersedes = flushes[-1]
        if supersedes:
            old = index.get(supersedes[0].patient_id, supersedes[0].doc_id)
            if old is None or old.superseded_by != supersedes[0].by_doc_id:
                raise RuntimeError("a supersede was not applied")
        return figures
    finally:
        index.drop()
        index.close()


def _median(rounds: list[dict[str, float]], key: str, digits: int = 0) -> float:
    return round(statistics.median(r[key] for r in rounds), digits or None)


def run(quick: bool = False, *, docs: int | None = None, rounds: int | None = None) -> dict[str, Any]:
    documents = docs or (2000 if quick else 10_000)
    rounds = rounds or (3 if quick else 5)
    flush = Settings().ingestion.flush_every
    records = _records(documents)
    flushes = _flushes(records, flush)
    load_before = os.getloadavg()
    # Warm-up (not counted): the node's JIT and caches, the client's connections and
    # its word cache (a long ingest runs with it warm: most words recur).
    bare_bulk(records[: WARM_UP_FLUSHES * flush], flush)
    carnet_apply(flushes[:WARM_UP_FLUSHES])
    bare, bare_refreshed, carnet = [], [], []
    for _ in range(rounds):
        bare.append(bare_bulk(records, flush))
        carnet.append(carnet_apply(flushes))
        bare_refreshed.append(bare_bulk(records, flush, refresh_each=True))
    ratios = [c["docs_per_s"] / b["docs_per_s"] for b, c in zip(bare, carnet, strict=True)]
    return {
        "documents": documents,
        "flush": flush,
        "rounds": rounds,
        "supersedes_per_flush": int(flush * SUPERSEDE_SHARE),
        "bare_bulk_docs_per_s": _median(bare, "docs_per_s"),
        "carnet_apply_docs_per_s": _median(carnet, "docs_per_s"),
        "carnet_over_bare": round(statistics.median(ratios), 2),
        "bare_bulk_refresh_per_flush_docs_per_s": _median(bare_refreshed, "docs_per_s"),
        "client_cpu_ms_per_doc": {
            "carnet_apply": _median(carnet, "client_cpu_ms_per_doc", 3),
            "bare_bulk": _median(bare, "client_cpu_ms_per_doc", 3),
        },
        "node_cpu_ms_per_doc": {
            "carnet_apply": _median(carnet, "node_cpu_ms_per_doc", 3),
            "bare_bulk": _median(bare, "node_cpu_ms_per_doc", 3),
            "bare_bulk_refresh_per_flush": _median(bare_refreshed, "node_cpu_ms_per_doc", 3),
        },
        "all_rounds_docs_per_s": {
            "bare": [round(r["docs_per_s"]) for r in bare],
            "carnet": [round(r["docs_per_s"]) for r in carnet],
            "ratio": [round(r, 2) for r in ratios],
        },
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 documents, 3 rounds")
    parser.add_argument("--docs", type=int, default=None, help="documents (default 10000)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5)")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, docs=args.docs, rounds=args.rounds), indent=2))


if __name__ == "__main__":
    main()
