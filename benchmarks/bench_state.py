"""What the PostgreSQL state database takes per document: the flush's unit of commit (flush
lock, generation reads, journal row, lock check, outcomes and generation counter), its
rate under the one flush lock and its bytes; and the bytes of an audit entry (the rate of
appends is ``bench_audit``'s).

Runs against the PostgreSQL of ``scripts/postgres.sh`` (``CARNET_TEST_STATE_URL``), in a
throwaway database of its own. The server is on this machine (no network round trip) and
shares its 2 cores with everything else: rates are a floor for latency-bound work and
say nothing of a tuned server's disk. The server's durability settings are printed with
the figures (``fsync``, ``synchronous_commit``): with fsync off, a commit costs no disk
flush. Run: ``.venv/bin/python -m benchmarks.bench_state [--quick]``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

from sqlalchemy import Engine, text

from benchmarks.bench_audit import _fresh_postgresql
from pipeline.audit import AuditLog
from pipeline.ledger import Ledger
from pipeline.model import Outcome, Status
from pipeline.settings import Settings
from pipeline.state import open_engine, upgrade

AUDIT_KEY = b"carnet-bench-state-key-0123456789"
PATIENT = "279126902300169"


def _engine(url: str) -> Engine:
    return open_engine(Settings(state_url=url))


def _bytes(engine: Engine, *tables: str) -> int:
    """Bytes of ``tables``, their indexes and TOAST included."""
    with engine.connect() as conn:
        return sum(
            int(conn.execute(text("SELECT pg_total_relation_size(:t)"), {"t": t}).scalar_one())
            for t in tables
        )


def _flushes(url: str, flushes: int, per_flush: int) -> dict[str, Any]:
    """The ingestion's unit of commit as ``Pipeline.flush`` runs it, without the index:
    flush lock, generation read, journal row, lock check, outcomes + done + generation."""
    engine = _engine(url)
    ledger = Ledger(engine)
    run = ledger.start_run("batch", "bench_state")
    key = f"bench#{per_flush}"
    tables = ("outcomes", "flushes", "flush_generations")
    before = _bytes(engine, *tables)
    t0 = time.perf_counter()
    for f in range(flushes):
        outs = [
            Outcome(
                source=f"labo/{per_flush}/{f}/{i}.hl7#1",
                status=Status.INDEXED,
                doc_id=uuid.uuid4().hex,
                patient_id=PATIENT,
                content_sha256=uuid.uuid4().hex * 2,
                producer="labo",
            )
            for i in range(per_flush)
        ]
        with ledger.flush_lock() as lock:
            ledger.flush_generation(key)
            flush_id = ledger.journal_flush(run, key, None, '{"items": []}', outs)
            lock.verify()
            ledger.complete_flush(flush_id, run, None, outs)
            ledger.flush_generation(key)
    wall = time.perf_counter() - t0
    docs = flushes * per_flush
    size = _bytes(engine, *tables) - before
    ledger.close()
    engine.dispose()
    return {
        "flushes": flushes,
        "outcomes_per_flush": per_flush,
        "flush_commit_ms": round(wall * 1000 / flushes, 2),
        "flushes_per_s": round(flushes / wall, 1),
        "outcome_rows_per_s": round(docs / wall),
        "ledger_bytes_per_document": round(size / docs),
    }


def _audit_bytes(url: str, appends: int) -> dict[str, Any]:
    """Bytes per audit entry in PostgreSQL (table and indexes), ``appends`` appended in turn."""
    engine = _engine(url)
    log = AuditLog(engine, key=AUDIT_KEY)
    for i in range(appends):
        log.append(
            actor=f"8{i % 1000:010d}",
            role="professional",
            action="read",
            patient_id=PATIENT,
            doc_ids=[uuid.uuid4().hex],
        )
    size = _bytes(engine, "audit_entries")
    engine.dispose()
    return {"appends": appends, "bytes_per_entry": round(size / appends)}


def _server(url: str) -> dict[str, str]:
    engine = _engine(url)
    with engine.connect() as conn:
        out = {
            s: str(conn.execute(text(f"SHOW {s}")).scalar_one())
            for s in ("server_version", "fsync", "synchronous_commit", "shared_buffers")
        }
    engine.dispose()
    return out


def run(quick: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    url, drop = _fresh_postgresql()
    try:
        engine = _engine(url)
        upgrade(engine)  # carnet db upgrade
        engine.dispose()
        out["server"] = _server(url)
        out["flush"] = [_flushes(url, 20 if quick else 200, n) for n in (1, 100, 500)]
        out["audit"] = _audit_bytes(url, 100 if quick else 2000)
    finally:
        drop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    print(json.dumps(run(parser.parse_args().quick), indent=2))


if __name__ == "__main__":
    main()
