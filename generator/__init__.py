"""Carnet's synthetic producer feed, for the demo, end-to-end tests and benchmarks.

``generate_feed(root, seed=…)`` writes ``root/<producer>/<batch>/<files>`` (PDFs, scans,
HL7 v2.5 ORU^R01, CDA R2) and returns a ``GeneratedFeed`` listing every document with
the outcome Carnet must give it. Modules: ``people`` (patients, professionals,
producers), ``documents`` (report contents), ``formats`` (bytes), ``feed`` (layout).
"""

from __future__ import annotations

from generator.feed import ExpectedDocument, GeneratedFeed, GeneratedPatient, generate_feed
from generator.people import DEFAULT_PRODUCERS, Producer, ProducerKind

__all__ = [
    "DEFAULT_PRODUCERS",
    "ExpectedDocument",
    "GeneratedFeed",
    "GeneratedPatient",
    "Producer",
    "ProducerKind",
    "generate_feed",
]
