"""Test-only fault injection: the crash tests' way to kill a real run at a commit point.

``CARNET_FAULT_POINT=<point>`` (read once into ``Settings.ingestion.fault_point``) makes the process
send itself SIGKILL when it reaches that point: no ``finally``, no ``atexit``, no flush —
what a power cut or the OOM killer does. Production never sets it. The points, in the
order a flush and a run reach them (see ``pipeline.ledger`` for the unit of commit):

``before_journal``        a flush's records are gated, nothing of it is recorded yet
``after_journal``         its write-ahead record is in the ledger, the index untouched
``after_index_write``     new versions written (SQLite: inside the flush's transaction)
``after_supersede``       old versions marked superseded (SQLite: still before COMMIT)
``before_ledger_record``  the index holds the flush, the ledger does not know it
``after_ledger_record``   the flush is done in the ledger
``before_ack``            the run / batch is decided in the ledger, no report or ack written
``after_ack``             the report or acknowledgement is written, not yet marked so

``<point>:<n>`` kills at the n-th time the point is reached (``after_supersede`` is only
reached by a flush that supersedes something).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

from pipeline.errors import ConfigurationError

FAULT_POINTS = (
    "before_journal",
    "after_journal",
    "after_index_write",
    "after_supersede",
    "before_ledger_record",
    "after_ledger_record",
    "before_ack",
    "after_ack",
)


def check_fault_point(name: str | None) -> str | None:
    """``name`` if it is a known point (a typo must not make a crash test pass silently)."""
    if name is not None:
        point, _, nth = name.partition(":")
        if point not in FAULT_POINTS or not (nth.isdigit() or nth == ""):
            raise ConfigurationError(
                f"unknown CARNET_FAULT_POINT {name!r} (one of {', '.join(FAULT_POINTS)}, optionally :N)"
            )
    return name


_reached: Counter[str] = Counter()  # per process: a run may open several pipelines


def reach(configured: str | None, point: str) -> None:
    """Kill this process now if ``point`` is the configured fault point (its n-th time)."""
    if configured is None:
        return
    name, _, nth = configured.partition(":")
    if name == point:
        _reached[point] += 1
        if _reached[point] >= int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
