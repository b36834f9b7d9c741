"""The ingestion pipeline (``pipeline.ingest.run`` for now; split by concern next)."""

from __future__ import annotations

from .run import (
    UPLOAD_PRODUCER,
    BatchSummary,
    InputFile,
    Pipeline,
    RunSummary,
    StageClock,
    count_source_files,
    discover_batches,
    ingest_sources,
    ingest_upload,
    iter_source_inputs,
    process_batch,
    summarize_batches,
    write_report,
)

__all__ = [
    "UPLOAD_PRODUCER",
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
    "process_batch",
    "summarize_batches",
    "write_report",
]
