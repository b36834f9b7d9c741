"""What keys from a KMS cost: KMS requests per document, their latency, and the encrypted
store's time per document with the local master key and with the KMS (cache on and off).

Runs against the KMS-compatible server of ``scripts/kms.sh`` (``CARNET_TEST_KMS_URL``,
``CARNET_TEST_KMS_KEY_ID``). local-kms answers on this machine, so its latency is a floor:
AWS KMS adds a network round trip (a few ms in-region). Run:
``.venv/bin/python -m benchmarks.bench_kms [--quick]``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.crypto import open_encrypted_store
from pipeline.keywrap import KmsKeyWrapper
from pipeline.settings import Settings

KMS_URL = os.environ.get("CARNET_TEST_KMS_URL", "http://127.0.0.1:4599")
KMS_KEY = os.environ.get("CARNET_TEST_KMS_KEY_ID", "alias/carnet-test")
_OPS = ("GenerateDataKey", "Decrypt")


def _percentile(sorted_ms: list[float], q: float) -> float:
    return round(sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))], 2)


def _kms_latency(requests: int) -> dict[str, Any]:
    """Wall ms per GenerateDataKey and per Decrypt (cache off), and this process's CPU per request."""
    wrapper = KmsKeyWrapper(KMS_KEY, endpoint_url=KMS_URL)
    out: dict[str, Any] = {}
    wrapped = []
    for op in _OPS:
        wall: list[float] = []
        c0 = time.process_time()
        for i in range(requests):
            t0 = time.perf_counter()
            if op == "GenerateDataKey":
                wrapped.append(wrapper.generate(f"object:{i}")[1])
            else:
                wrapper.unwrap(wrapped[i], f"object:{i}")
            wall.append((time.perf_counter() - t0) * 1000)
        cpu_ms = (time.process_time() - c0) * 1000 / requests
        wall.sort()
        out[op] = {
            "requests": requests,
            "wall_ms_p50": _percentile(wall, 0.5),
            "wall_ms_p95": _percentile(wall, 0.95),
            "client_cpu_ms": round(cpu_ms, 2),
            "per_s_one_client": round(1000 / statistics.fmean(wall), 1),
        }
    return out


def _store_run(settings: Settings, docs: int, patients: int, reads: int) -> dict[str, Any]:
    """put + assign every document, then read each patient's documents ``reads`` times."""
    store = open_encrypted_store(settings)
    counts = dict.fromkeys(_OPS, 0)
    wrapper = store.keyring.wrapper
    client = getattr(wrapper, "_client", None)
    if client is not None:
        for op in _OPS:
            client.meta.events.register(
                f"before-call.kms.{op}", lambda op=op, **_: counts.__setitem__(op, counts[op] + 1)
            )
    body = os.urandom(2048)
    t0, c0 = time.perf_counter(), time.process_time()
    shas = []
    for i in range(docs):
        sha = store.put(body + i.to_bytes(4, "big"))
        store.assign(sha, f"patient-{i % patients}")
        shas.append(sha)
    ingest_wall, ingest_cpu = time.perf_counter() - t0, time.process_time() - c0
    ingest_counts = dict(counts)
    t0 = time.perf_counter()
    for _ in range(reads):
        for sha in shas:
            store.get(sha)
    read_wall = time.perf_counter() - t0
    store.close()
    return {
        "docs": docs,
        "patients": patients,
        "ingest_ms_per_doc_wall": round(ingest_wall * 1000 / docs, 3),
        "ingest_cpu_ms_per_doc": round(ingest_cpu * 1000 / docs, 3),
        "read_ms_per_doc_wall": round(read_wall * 1000 / (docs * reads), 3) if reads else None,
        "kms_requests_ingest": ingest_counts,
        "kms_requests_reads": {op: counts[op] - ingest_counts[op] for op in _OPS},
    }


def run(quick: bool = False) -> dict[str, Any]:
    requests = 100 if quick else 500
    docs, patients = (200, 20) if quick else (1000, 100)
    results: dict[str, Any] = {"kms_url": KMS_URL, "kms_latency": _kms_latency(requests)}
    with tempfile.TemporaryDirectory(prefix="carnet-bench-kms-") as tmp:
        master = base64.b64encode(os.urandom(32)).decode()
        runs = {
            "local": Settings(data_dir=Path(tmp) / "local", master_key=master),
            "kms_cached": Settings(data_dir=Path(tmp) / "kms", kms_key_id=KMS_KEY, kms_endpoint_url=KMS_URL),
            "kms_uncached": Settings(
                data_dir=Path(tmp) / "kms0", kms_key_id=KMS_KEY, kms_endpoint_url=KMS_URL, kms_cache_ttl_s=0
            ),
        }
        results["store"] = {name: _store_run(s, docs, patients, reads=2) for name, s in runs.items()}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run(args.quick), indent=2))


if __name__ == "__main__":
    main()
