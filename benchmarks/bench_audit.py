"""Audit appends per second on one chain, the one serial point of the state database: one
process, then several appending at once (each append locks the chain's head row), on
PostgreSQL (``CARNET_TEST_STATE_URL``, the cluster of ``scripts/postgres.sh``) and on the
embedded SQLite database. Wall-clock rates; the chain is verified after each run. Run:
``.venv/bin/python -m benchmarks.bench_audit [--quick]``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pipeline.audit import AuditLog
from pipeline.settings import Settings

KEY = b"carnet-bench-audit-key-0123456789"
PG_URL = os.environ.get("CARNET_TEST_STATE_URL", "postgresql://carnet:carnet@127.0.0.1:5434/carnet")
P = "284057512345672"


def _append(settings: Settings, appends: int, start: Any, done: Any) -> None:
    log = AuditLog(settings, key=KEY)
    start.wait()
    for n in range(appends):
        log.append(actor="10101234567", role="professional", action="read", patient_id=P, doc_ids=[f"d{n}"])
    log.close()
    done.put(os.getpid())


def _rate(settings: Settings, processes: int, appends: int) -> dict[str, Any]:
    spawn = multiprocessing.get_context("spawn")
    start, done = spawn.Barrier(processes + 1), spawn.Queue()
    workers = [spawn.Process(target=_append, args=(settings, appends, start, done)) for _ in range(processes)]
    for w in workers:
        w.start()
    start.wait()  # every process has its engine open: only the appends are timed
    began = time.perf_counter()
    for w in workers:
        w.join()
    wall = time.perf_counter() - began
    log = AuditLog(settings, key=KEY)
    check = log.verify()
    log.close()
    return {
        "processes": processes,
        "appends": processes * appends,
        "appends_per_s": round(processes * appends / wall),
        "verified": check.ok,
        "chain": check.entries,
    }


def _fresh_postgresql() -> tuple[str, Any]:
    from sqlalchemy import create_engine, text

    from pipeline.state import state_url

    admin = create_engine(state_url(PG_URL), isolation_level="AUTOCOMMIT")
    name = f"carnet_bench_audit_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return PG_URL.rsplit("/", 1)[0] + "/" + name, lambda: _drop(admin, name)


def _drop(admin: Any, name: str) -> None:
    from sqlalchemy import text

    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def run(quick: bool = False) -> dict[str, Any]:
    from pipeline.state import open_engine, upgrade

    appends = 100 if quick else 500
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="carnet-bench-audit-") as tmp:
        url, drop = _fresh_postgresql()
        try:
            settings = Settings(data_dir=Path(tmp) / "pg", state_url=url)
            engine = open_engine(settings)
            upgrade(engine)  # carnet db upgrade
            engine.dispose()
            out["postgresql"] = [_rate(settings, n, appends) for n in (1, 4)]
        finally:
            drop()
        out["sqlite"] = [_rate(Settings(data_dir=Path(tmp) / f"sqlite{n}"), n, appends) for n in (1, 4)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(args.quick), indent=2))


if __name__ == "__main__":
    main()
