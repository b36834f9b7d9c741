"""HL7 v2 ORU^R01 parsing throughput: ``Hl7Parser.parse`` against hl7apy's full parse.

Generates ~2,000 synthetic ORU^R01 messages (10 OBX each, values and patients varied),
grouped 50 to a file as a lab's batch drop would be, and prints JSON: messages/s per core
(this process's CPU time, best of 3, so other load on the machine does not count) for
``Hl7Parser.parse``, and for hl7apy's ``parse_message(..., find_groups=True)`` on a subset.

    .venv/bin/python -m benchmarks.bench_hl7 [--quick]
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable, Sequence

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from parsers.hl7 import Hl7Parser
from parsers.registry import document_registry
from tests.samples.hl7.make_samples import ins, oru_message, pid

ANALYTES = [
    ("718-7", "Hémoglobine", "g/dL", 12.0, 16.0),
    ("4544-3", "Hématocrite", "%", 36.0, 46.0),
    ("6690-2", "Leucocytes", "10*9/L", 4.0, 10.0),
    ("777-3", "Plaquettes", "10*9/L", 150.0, 400.0),
    ("2345-7", "Glucose", "mmol/L", 3.9, 5.8),
    ("2160-0", "Créatinine", "umol/L", 45.0, 90.0),
    ("2951-2", "Sodium", "mmol/L", 136.0, 145.0),
    ("2823-3", "Potassium", "mmol/L", 3.5, 5.1),
    ("2093-3", "Cholestérol total", "mmol/L", 3.0, 5.2),
    ("1988-5", "Protéine C réactive", "mg/L", 0.0, 5.0),
]
FILE_SIZE = 50


def make_messages(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    messages = []
    for n in range(count):
        born = f"{rng.choice('12')}{rng.randint(40, 99):02d}{rng.randint(1, 12):02d}"
        nir = f"{born}75{n % 1000:03d}{n // 1000:03d}"
        results = []
        for code, text, unit, low, high in ANALYTES:
            value = round(rng.uniform(low * 0.8, high * 1.2), 1)
            flag = "H" if value > high else "L" if value < low else "N"
            results.append((code, text, "NM", str(value), unit, f"{low}-{high}", flag))
        patient = pid(ins(nir), f"IPP{n:06d}", f"NOM{n}", "Prénom", "19800115", "F")
        messages.append(oru_message(f"MSG{n:06d}", patient, results))
    return messages


def cpu_best_of(repeats: int, work: Sequence[object], fn: Callable[[object], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.process_time()
        for item in work:
            fn(item)
        times.append(time.process_time() - start)
    return min(times)


def run(quick: bool = False) -> dict[str, object]:
    count = 200 if quick else 2000
    subset = 10 if quick else 50
    messages = make_messages(count)
    files = ["\r".join(messages[i : i + FILE_SIZE]).encode() for i in range(0, count, FILE_SIZE)]
    parser = Hl7Parser(embedded=document_registry())
    docs = [d for f in files for d in parser.parse(f, source="bench")]
    assert len(docs) == count and all(len(d.results) == len(ANALYTES) for d in docs)

    parser_cpu = cpu_best_of(3, files, lambda f: parser.parse(f, source="bench"))  # type: ignore[arg-type]
    full = messages[:subset]
    hl7apy_cpu = cpu_best_of(
        1, full,
        lambda m: parse_message(m, validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=True),
    )  # fmt: skip
    parser_rate = count / parser_cpu
    hl7apy_rate = subset / hl7apy_cpu
    return {
        "messages": count,
        "obx_per_message": len(ANALYTES),
        "messages_per_file": FILE_SIZE,
        "parser_messages_per_s_per_core": round(parser_rate, 1),
        "parser_ms_per_message": round(1000 * parser_cpu / count, 3),
        "hl7apy_full_parse_messages": subset,
        "hl7apy_full_parse_messages_per_s_per_core": round(hl7apy_rate, 1),
        "speedup_over_hl7apy_full_parse": round(parser_rate / hl7apy_rate, 1),
        "meets_1000_per_s": parser_rate >= 1000,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
