"""Search latency benchmark for any index backend (``sqlite:///…`` or ``http://…``).

Builds an index of synthetic French biology, imaging and prescription reports for
about ``docs / 10`` patients, then times per-patient searches of 1-3 words on one
thread and prints JSON: indexing docs/s and search p50/p95/p99 in ms, both wall
clock and this process's CPU time (the latter is what a lone core would see when
the machine is shared; for Elasticsearch only wall clock is meaningful).

    .venv/bin/python -m benchmarks.bench_search --docs 100000 --patients 10000
    .venv/bin/python -m benchmarks.bench_search --quick --index http://127.0.0.1:9200
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

from pipeline.index import DocumentIndex, open_index
from pipeline.model import DocClass, DocumentRecord, Format, LabResult, SearchQuery

ANALYTES = [
    ("Hémoglobine", "718-7", "g/dL"),
    ("Hématocrite", "4544-3", "%"),
    ("Leucocytes", "6690-2", "G/L"),
    ("Plaquettes", "777-3", "G/L"),
    ("Glucose", "2345-7", "mmol/L"),
    ("Créatinine", "2160-0", "µmol/L"),
    ("Urée", "3094-0", "mmol/L"),
    ("Sodium", "2951-2", "mmol/L"),
    ("Potassium", "2823-3", "mmol/L"),
    ("Cholestérol total", "2093-3", "g/L"),
    ("Triglycérides", "2571-8", "g/L"),
    ("Ferritine", "2276-4", "µg/L"),
    ("TSH", "3016-3", "mUI/L"),
    ("Hémoglobine glyquée", "4548-4", "%"),
    ("Protéine C réactive", "1988-5", "mg/L"),
    ("Vitamine D", "1989-3", "ng/mL"),
    ("Gamma-glutamyl transférase", "2324-2", "UI/L"),
    ("Transaminases ASAT", "1920-8", "UI/L"),
]
BIOLOGY_WORDS = (
    "compte rendu biologie prélèvement sanguin à jeun résultat valeurs de référence "
    "interprétation contrôle recommandé anémie carence martiale inflammation bilan "
    "lipidique rénal hépatique thyroïdien numération formule sanguine normal élevé bas"
).split()
IMAGING_WORDS = (
    "radiographie thoracique scanner abdominal IRM cérébrale échographie mammographie "
    "incidence face profil opacité nodule épanchement pleural fracture absence anomalie "
    "injection produit de contraste conclusion examen comparé antérieur lésion kyste"
).split()
PRESCRIPTION_WORDS = (
    "ordonnance prescription paracétamol amoxicilline ibuprofène metformine lévothyroxine "
    "comprimé gélule matin soir pendant jours renouvelable fois posologie traitement "
    "dose sachet sirop kinésithérapie séances infirmier soins pansement"
).split()
COMMON_WORDS = "patient docteur date examen le la les de du des et avec pour sur au".split()
CLASSES = {
    DocClass.BIOLOGY: ("11502-2", "Compte rendu de biologie", BIOLOGY_WORDS),
    DocClass.IMAGING: ("18748-4", "Compte rendu d'imagerie", IMAGING_WORDS),
    DocClass.PRESCRIPTION: ("57833-6", "Ordonnance", PRESCRIPTION_WORDS),
}
QUERY_WORDS = (
    [a.split()[0] for a, _, _ in ANALYTES]
    + [code for _, code, _ in ANALYTES[:6]]
    + BIOLOGY_WORDS[:20]
    + IMAGING_WORDS[:20]
    + PRESCRIPTION_WORDS[:20]
    + ["hemoglobine", "creatinine", "radio", "thorax", "cholest", "glyc"]
)


def ins(n: int) -> str:
    """A valid synthetic INS (13-char NIR + 2-digit key) for patient number ``n``."""
    nir = f"{1 + n % 2}{80 + n % 20:02d}{1 + n % 12:02d}{75:02d}{n % 1000:03d}{n // 1000 % 1000:03d}"
    return f"{nir}{97 - int(nir) % 97:02d}"


def synthetic_record(i: int, patients: int, rng: random.Random) -> DocumentRecord:
    doc_class = rng.choice(list(CLASSES))
    type_code, title, words = CLASSES[doc_class]
    results: tuple[LabResult, ...] = ()
    lines = [title, f"Dr {rng.choice(['Martin', 'Bernard', 'Durand', 'Petit', 'Leroy'])}"]
    if doc_class is DocClass.BIOLOGY:
        picked = rng.sample(ANALYTES, rng.randint(3, 10))
        results = tuple(
            LabResult(analyte=a, loinc=code, value=f"{rng.uniform(0.5, 150):.1f}", unit=unit)
            for a, code, unit in picked
        )
        lines += [f"{r.analyte} : {r.value} {r.unit} ({r.loinc})" for r in results]
    lines.append(" ".join(rng.choices(words + COMMON_WORDS, k=rng.randint(40, 140))))
    text = "\n".join(lines)
    return DocumentRecord(
        doc_id=f"bench-{i}",
        series_id=f"bench-{i}",
        patient_id=ins(i % patients),
        doc_class=doc_class,
        type_code=type_code,
        classification_rule="bench",
        classification_confidence=1.0,
        title=title,
        document_date=dt.date(2015, 1, 1) + dt.timedelta(days=rng.randrange(3650)),
        producer=rng.choice(["labo-a", "labo-b", "radio-c", "pharma-d"]),
        source=f"bench/{i}",
        format=Format.HL7V2,
        content_sha256=hashlib.sha256(text.encode()).hexdigest(),
        text=text,
        results=results,
        ingested_at=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    )


def _percentile(sorted_ms: list[float], q: float) -> float:
    return round(sorted_ms[min(len(sorted_ms) - 1, int(q * len(sorted_ms)))], 3)


def run(
    quick: bool = False,
    index_url: str | None = None,
    *,
    docs: int | None = None,
    patients: int | None = None,
    searches: int = 1000,
    batch: int = 1000,
    seed: int = 7,
) -> dict[str, Any]:
    """Build the index, time the searches, and return the figures."""
    docs = docs or (5_000 if quick else 100_000)
    patients = patients or max(1, docs // 10)
    rng = random.Random(seed)
    tmp = None
    if index_url is None:
        tmp = tempfile.TemporaryDirectory(prefix="carnet-bench-")
        index_url = f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    index: DocumentIndex = open_index(index_url, alias=f"carnet-bench-{uuid4().hex[:8]}")
    try:
        started = time.perf_counter()
        generated = 0.0
        for first in range(0, docs, batch):
            t0 = time.perf_counter()
            records = [synthetic_record(i, patients, rng) for i in range(first, min(docs, first + batch))]
            generated += time.perf_counter() - t0
            failures = index.upsert(records)
            if failures:
                raise RuntimeError(f"index refused {len(failures)} records: {failures[0]}")
        index_seconds = time.perf_counter() - started - generated

        queries = [
            SearchQuery(
                patient_id=ins(rng.randrange(patients)),
                text=" ".join(rng.sample(QUERY_WORDS, rng.randint(1, 3))),
            )
            for _ in range(searches)
        ]
        for query in queries[:50]:  # warm caches and connections
            index.search(query)
        latencies: list[float] = []
        cpu: list[float] = []  # this process's CPU time: steady on a busy shared machine
        with_hits: list[float] = []  # the searches that found something (snippets built)
        hits = 0
        search_started = time.perf_counter()
        for query in queries:
            t0, c0 = time.perf_counter(), time.process_time()
            result = index.search(query)
            latencies.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
            hits += result.total > 0
            if result.total:
                with_hits.append(latencies[-1])
        search_seconds = time.perf_counter() - search_started
        latencies.sort()
        cpu.sort()
        with_hits.sort()
        return {
            "index_url": index_url if tmp is None else "sqlite:///<tmp>",
            "docs": docs,
            "patients": patients,
            "indexing_docs_per_s": round(docs / index_seconds, 1),
            "searches": searches,
            "searches_with_hits": hits,
            "search_ms_p50": _percentile(latencies, 0.50),
            "search_ms_p95": _percentile(latencies, 0.95),
            "search_ms_p99": _percentile(latencies, 0.99),
            "search_ms_mean": round(statistics.fmean(latencies), 3),
            "search_with_hits_ms_p95": _percentile(with_hits, 0.95) if with_hits else None,
            "search_cpu_ms_p50": _percentile(cpu, 0.50),
            "search_cpu_ms_p95": _percentile(cpu, 0.95),
            "search_cpu_ms_p99": _percentile(cpu, 0.99),
            "searches_per_s": round(searches / search_seconds, 1),
        }
    finally:
        drop = getattr(index, "drop", None)
        if callable(drop):
            drop()
        index.close()
        if tmp is not None:
            tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=None, help="documents (default 100000)")
    parser.add_argument("--patients", type=int, default=None, help="patients (default docs/10)")
    parser.add_argument("--searches", type=int, default=1000)
    parser.add_argument("--index", default=None, help="index URL (default: a temporary SQLite file)")
    parser.add_argument("--quick", action="store_true", help="5,000 documents")
    args = parser.parse_args()
    figures = run(args.quick, args.index, docs=args.docs, patients=args.patients, searches=args.searches)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
