"""Bytes per document, for the capacity model (``docs/capacity.md``).

1. Elasticsearch: synthetic records (``bench_search``'s generator) indexed into a fresh
   index, refreshed and force-merged to one segment; primary store bytes per document.
2. Carnet's own state: a generated producer feed (text PDFs, HL7, CDA; no scans) ingested
   with the embedded backends; bytes per document of the state database (in all and by
   part: ledger, keyring, access rules, audit), the encrypted store and the SQLite index,
   and the raw input bytes per format.
3. S3 requests per document: the same kind of feed ingested into an S3 store (the server
   of ``scripts/s3.sh``), each request the store's client sends counted by operation, then
   every document read back once.

Synthetic documents are shorter than many real reports: the figures are per document of
this corpus, and the model scales them by text length where it matters. Run:
``.venv/bin/python -m benchmarks.bench_footprint [--quick]``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any
from uuid import uuid4

from benchmarks.bench_search import synthetic_record
from generator import generate_feed
from pipeline.ingest import ingest_sources
from pipeline.settings import Settings

ES_URL = os.environ.get("CARNET_TEST_ES_URL", "http://127.0.0.1:9200")


def _es_bytes_per_doc(docs: int) -> dict[str, Any]:
    from pipeline.index.elasticsearch import ElasticsearchIndex

    index = ElasticsearchIndex(ES_URL, alias=f"carnet-bench-size-{uuid4().hex[:8]}")
    rng = random.Random(11)
    patients = max(1, docs // 10)
    text_chars = 0
    try:
        for first in range(0, docs, 1000):
            records = [synthetic_record(i, patients, rng) for i in range(first, min(docs, first + 1000))]
            text_chars += sum(len(r.text) for r in records)
            if failures := index.upsert(records):
                raise RuntimeError(f"index refused {len(failures)} records: {failures[0]}")
        es = index.client
        es.indices.refresh(index=index.alias)
        es.indices.forcemerge(index=index.alias, max_num_segments=1)
        stats = es.indices.stats(index=index.alias, metric="store,docs")["_all"]["primaries"]
        size = int(stats["store"]["size_in_bytes"])
        return {
            "docs": docs,
            "store_bytes": size,
            "bytes_per_doc": round(size / docs),
            "text_chars_per_doc": round(text_chars / docs),
        }
    finally:
        index.drop()
        index.close()


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _state_bytes_per_doc(documents: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="carnet-bench-footprint-") as tmp:
        root = Path(tmp)
        feed = generate_feed(
            root / "feed",
            seed=5,
            patients=max(10, documents // 4),
            documents=documents,
            include_bad=False,
            scans=0,
        )
        raw: dict[str, list[int]] = defaultdict(list)
        for path in (root / "feed").rglob("*"):
            if path.is_file() and not path.name.startswith(("_", ".")):
                raw[path.suffix.lstrip(".") or "none"].append(path.stat().st_size)
        settings = Settings(data_dir=root / "carnet", data_docs=False)
        summary = ingest_sources([str(root / "feed")], settings, progress=False)
        by_status = dict(summary.metrics.get("by_status") or {})  # type: ignore[call-overload]
        n = sum(by_status.values())
        data = settings.data_dir
        for db in ("state.db", "index.db"):
            with sqlite3.connect(data / db) as conn:  # sizes after VACUUM: no free pages counted
                conn.execute("VACUUM")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the pages in the file, not its WAL
        out: dict[str, Any] = {"documents": n, "by_status": by_status, "generated": len(feed.documents)}
        for name in ("state.db", "index.db", "store"):
            out[f"{name}_bytes_per_doc"] = round(_size(data / name) / n)
        parts = _state_parts(data)
        out["state_bytes_per_doc_by_part"] = {part: round(size / n) for part, size in parts.items()}
        out["raw_bytes_mean_by_extension"] = {ext: round(sum(v) / len(v)) for ext, v in sorted(raw.items())}
        return out


# The state database's tables (with their indexes), by the part of Carnet that owns them.
_STATE_PARTS = {
    "ledger": ("runs", "outcomes", "flushes", "batches"),
    "keyring": ("keyring_meta", "patient_keys", "keyring_objects"),
    "access_rules": (
        "authorisations",
        "blocks",
        "delegations",
        "representatives",
        "break_glass",
        "closures",
        "patient_birth_dates",
    ),
    "audit": ("audit_entries", "audit_head"),
}


def _state_parts(data: Path) -> dict[str, int]:
    """Bytes of ``state.db`` by part (SQLite's dbstat: pages of each table and its indexes)."""
    with sqlite3.connect(data / "state.db") as conn:
        tables = dict(
            conn.execute("SELECT name, tbl_name FROM sqlite_schema WHERE tbl_name NOT LIKE 'sqlite_%'")
        )
        pages = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    owner = {table: part for part, names in _STATE_PARTS.items() for table in names}
    sizes: dict[str, int] = defaultdict(int)
    for name, size in pages:
        sizes[owner.get(tables.get(name, name), "other")] += int(size)
    return dict(sizes)


def _s3_requests_per_doc(documents: int) -> dict[str, Any]:
    from collections import Counter

    from pipeline.crypto import open_encrypted_store
    from pipeline.ingest import Pipeline, iter_source_inputs, open_backends
    from pipeline.store.s3 import S3Store

    bucket = f"carnet-bench-{uuid4().hex[:10]}"
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    S3Store.from_url(f"s3://{bucket}", endpoint_url=endpoint, region="us-east-1", create_bucket=True)
    with tempfile.TemporaryDirectory(prefix="carnet-bench-s3-") as tmp:
        root = Path(tmp)
        generate_feed(
            root / "feed",
            seed=6,
            patients=max(10, documents // 4),
            documents=documents,
            include_bad=False,
            scans=0,
        )
        settings = Settings(
            data_dir=root / "carnet",
            store_url=f"s3://{bucket}/raw",
            s3_endpoint_url=endpoint,
            data_docs=False,
        )
        store = open_encrypted_store(settings)
        client = store.base.bucket.client  # type: ignore[attr-defined]
        calls: Counter[str] = Counter()
        client.meta.events.register("before-call.s3", lambda model, **_: calls.update([model.name]))
        with Pipeline(settings, open_backends(settings, store=store)) as pipe:
            for item in iter_source_inputs([str(root / "feed")], producer=None, settings=settings):
                pipe.process(item)
            pipe.flush()
            n = len(pipe.outcomes)
            ingest = dict(calls)
            calls.clear()
            for sha in store.iter_hashes():
                store.get(sha)
            read = dict(calls)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", ())]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=bucket)
    return {
        "documents": n,
        "ingest_requests_per_doc": {op: round(c / n, 2) for op, c in sorted(ingest.items())},
        "read_requests_per_doc": {op: round(c / n, 2) for op, c in sorted(read.items())},
    }


def run(quick: bool = False) -> dict[str, Any]:
    return {
        "elasticsearch": _es_bytes_per_doc(2_000 if quick else 20_000),
        "state": _state_bytes_per_doc(100 if quick else 400),
        "s3": _s3_requests_per_doc(50 if quick else 200),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(args.quick), indent=2))


if __name__ == "__main__":
    main()
