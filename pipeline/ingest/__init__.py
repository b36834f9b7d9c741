"""The ingestion: raw bytes → parse → identify → classify → check → keep → index.

- ``stages``: the per-document stages, pure (parsed document → record or rejection);
- ``dedup``: duplicates and versions; ``quarantine``: rejected documents kept, released;
- ``run``: the ``Pipeline`` (opened ``Backends``, per-run state, the journaled flush);
- ``batch``: batches of a producer feed, as the Airflow DAG processes them
  (``discover_batches`` / ``process_batch``: manifest, acknowledgement, HL7 ACKs, ledger);
- ``sources``: files, folders and ``s3://`` prefixes, as ``carnet ingest`` reads them
  (``ingest_sources``), and a patient's upload (``ingest_upload``).

The names callers use are re-exported here.
"""

from __future__ import annotations

from .batch import BatchSummary, discover_batches, process_batch, summarize_batches
from .run import Backends, Pipeline, open_backends
from .sources import (
    UPLOAD_PRODUCER,
    RunSummary,
    count_source_files,
    ingest_sources,
    ingest_upload,
    iter_source_inputs,
    write_report,
)
from .stages import InputFile, StageClock

__all__ = [
    "UPLOAD_PRODUCER",
    "Backends",
    "BatchSummary",
    "InputFile",
    "Pipeline",
    "RunSummary",
    "StageClock",
    "count_source_files",
    "discover_batches",
    "ingest_sources",
    "ingest_upload",
    "iter_source_inputs",
    "open_backends",
    "process_batch",
    "summarize_batches",
    "write_report",
]
