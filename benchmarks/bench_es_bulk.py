"""Carnet's Elasticsearch write path beside the bare bulk helper, same records, same run.

- bare reference: ``elasticsearch.helpers.bulk`` of ready documents (their ``_source``
  built before the clock starts), one refresh at the end;
- Carnet: ``ElasticsearchIndex.apply`` as the pipeline calls it, one call per flush of
  ``Settings.ingestion.flush_every`` records, every flush after the first also superseding 5 % of
  the previous flush's documents by new versions; analysis, serialisation, the read of
  the current versions and the per-flush refresh are all inside the clock.

Each side writes into a fresh index; the two sides alternate for ``rounds`` rounds and the
best round of each is kept (the machine may be shared). Figures are wall-clock docs/s and
their ratio, plus the client's CPU per document; never a pass/fail threshold.

    .venv/bin/python -m benchmarks.bench_es_bulk [--quick] [--docs N]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
import uuid
from typing import Any

from benchmarks.bench_search import synthetic_record
from pipeline.index.base import Supersede
from pipeline.model import DocumentRecord
from pipeline.settings import Settings

ES_URL = os.environ.get("CARNET_TEST_ES_URL", "http://127.0.0.1:9200")
SUPERSEDE_SHARE = 0.05


def _records(documents: int) -> list[DocumentRecord]:
    rng = random.Random(5)
    return [synthetic_record(i, max(10, documents // 10), rng) for i in range(documents)]


def _flushes(records: list[DocumentRecord], flush: int) -> list[tuple[list[DocumentRecord], list[Supersede]]]:
    """Flushes of ``flush`` records; after the first, the last ``SUPERSEDE_SHARE`` of each
    flush are new versions of documents of the previous flush (same patient)."""
    out: list[tuple[list[DocumentRecord], list[Supersede]]] = []
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


def bare_bulk(records: list[DocumentRecord], flush: int) -> float:
    """docs/s of ``helpers.bulk`` alone, documents ready, one refresh."""
    from elasticsearch import helpers

    from pipeline.index.elasticsearch import ElasticsearchIndex, _source

    index = ElasticsearchIndex(ES_URL, alias=f"carnet-bench-bare-{uuid.uuid4().hex[:8]}")
    try:
        ready = [
            {"_index": index.alias, "_id": r.doc_id, "_routing": r.patient_id, "_source": _source(r)}
            for r in records
        ]
        wall0 = time.perf_counter()
        helpers.bulk(index.client, ready, chunk_size=flush, refresh=False)
        index.client.indices.refresh(index=index.alias)
        return len(records) / (time.perf_counter() - wall0)
    finally:
        index.drop()


def carnet_apply(flushes: list[tuple[list[DocumentRecord], list[Supersede]]]) -> tuple[float, float]:
    """(docs/s, client CPU ms per document) of ``ElasticsearchIndex.apply`` per flush."""
    from pipeline.index.elasticsearch import ElasticsearchIndex

    index = ElasticsearchIndex(ES_URL, alias=f"carnet-bench-{uuid.uuid4().hex[:8]}")
    documents = sum(len(records) for records, _ in flushes)
    try:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for records, supersedes in flushes:
            if index.apply(records, supersedes):
                raise RuntimeError("the index refused benchmark records")
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        last, supersedes = flushes[-1]
        if supersedes and index.get(supersedes[0].patient_id, supersedes[0].doc_id).superseded_by is None:
            raise RuntimeError("a supersede was not applied")
        return documents / wall, cpu / documents * 1000
    finally:
        index.drop()


def run(quick: bool = False, *, docs: int | None = None, rounds: int = 2) -> dict[str, Any]:
    documents = docs or (2000 if quick else 10_000)
    flush = Settings().ingestion.flush_every
    records = _records(documents)
    flushes = _flushes(records, flush)
    bare, carnet, cpu = [], [], []
    for _ in range(rounds):
        bare.append(bare_bulk(records, flush))
        rate, cpu_ms = carnet_apply(flushes)
        carnet.append(rate)
        cpu.append(cpu_ms)
    best_bare, best_carnet = max(bare), max(carnet)
    return {
        "documents": documents,
        "flush": flush,
        "rounds": rounds,
        "supersedes_per_flush": int(flush * SUPERSEDE_SHARE),
        "bare_bulk_docs_per_s": round(best_bare),
        "carnet_apply_docs_per_s": round(best_carnet),
        "carnet_apply_client_cpu_ms_per_doc": round(min(cpu), 3),
        "carnet_over_bare": round(best_carnet / best_bare, 2),
        "all_rounds": {"bare": [round(x) for x in bare], "carnet": [round(x) for x in carnet]},
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 documents")
    parser.add_argument("--docs", type=int, default=None, help="documents (default 10000)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(run(args.quick, docs=args.docs, rounds=args.rounds), indent=2))


if __name__ == "__main__":
    main()
