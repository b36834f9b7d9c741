"""Inputs for the command line and the API: files, folders (a feed layout gives producer
and batch from paths) and ``s3://`` prefixes, each run through one ``Pipeline``, and the
JSON Lines run report (the command-line contract); a patient's upload is a batch of one."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from pipeline.errors import SourceError, UnreadableFileError, UnsafePathError
from pipeline.feeds import read_regular_file
from pipeline.index import DocumentIndex
from pipeline.ingest.run import Pipeline, open_backends
from pipeline.ingest.stages import InputFile
from pipeline.model import Contributor, Frozen, Outcome
from pipeline.quality import BatchThresholds, QualityGate
from pipeline.settings import Settings
from pipeline.store import KeyedStore


def _folder_inputs(root: Path, producer: str | None) -> Iterator[tuple[Path, str, str | None]]:
    """(file, producer, batch) for a folder: a feed layout gives producer/batch from paths."""
    from pipeline.feeds import iter_folder_files

    for path in iter_folder_files(root):
        rel = path.relative_to(root).parts
        if producer:
            yield path, producer, rel[0] if len(rel) > 1 else None
        elif len(rel) >= 3:
            yield path, rel[0], rel[1]
        elif len(rel) == 2:
            yield path, rel[0], None
        else:
            yield path, root.name or "local", None


def _local_input(root: Path, path: Path, *, producer: str, batch: str | None = None) -> InputFile:
    """A local file as an input; a link or special file is not read (``unsafe_path``), nor
    one Carnet may not read (``unreadable_file``)."""
    try:
        data = read_regular_file(root, path)
    except (UnsafePathError, UnreadableFileError) as exc:
        return InputFile.never_read(exc, source=str(path), producer=producer, batch=batch)
    return InputFile(data=data, source=str(path), producer=producer, batch=batch)


def iter_source_inputs(
    sources: Sequence[str], *, producer: str | None, settings: Settings
) -> Iterator[InputFile]:
    """Every raw input named by ``sources`` (files, folders recursively, s3:// prefixes)."""
    for source in sources:
        if source.startswith("s3://"):
            from pipeline.feeds.s3 import iter_s3_prefix

            for uri, data in iter_s3_prefix(
                source, endpoint_url=settings.s3.endpoint_url, region=settings.s3.region
            ):
                key_parts = uri.removeprefix(source.rstrip("/") + "/").split("/")
                prod = producer or (key_parts[0] if len(key_parts) > 1 else "s3")
                if data is None:
                    gone = UnreadableFileError("no such object (removed since it was listed)", source=uri)
                    yield InputFile.never_read(gone, source=uri, producer=prod, batch=None)
                    continue
                yield InputFile(data=data, source=uri, producer=prod)
            continue
        path = Path(source)
        if path.is_symlink() or path.is_file():
            yield _local_input(path.parent, path, producer=producer or path.parent.name or "local")
        elif path.is_dir():
            for file, prod, batch in _folder_inputs(path, producer):
                yield _local_input(path, file, producer=prod, batch=batch)
        else:
            raise SourceError("no such file or folder", source=source)


def count_source_files(sources: Sequence[str]) -> int | None:
    """How many files the local sources hold (for a progress bar); None for S3."""
    from pipeline.feeds import iter_folder_files

    total = 0
    for source in sources:
        if source.startswith("s3://"):
            return None
        path = Path(source)
        total += 1 if path.is_file() else sum(1 for _ in iter_folder_files(path)) if path.is_dir() else 0
    return total


class RunSummary(Frozen):
    run_id: str
    outcomes: tuple[Outcome, ...]
    metrics: dict[str, object]


def write_report(path: Path, outcomes: Iterable[Outcome]) -> None:
    """The run report: JSON Lines, one object per document (the command-line contract)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for o in outcomes:
            fh.write(json.dumps(o.report_line(), ensure_ascii=False) + "\n")


def ingest_sources(
    sources: Sequence[str],
    settings: Settings,
    *,
    producer: str | None = None,
    report_path: Path | None = None,
    progress: bool = False,
) -> RunSummary:
    """Ingest files, folders and S3 prefixes; write the JSONL report; return the summary."""
    for s in sources:
        if not s.startswith("s3://") and not Path(s).exists() and not Path(s).is_symlink():
            raise SourceError("no such file or folder", source=s)
    with Pipeline(settings) as pipe:
        run_id = pipe.start_run("ingest", " ".join(sources), exclusive=True)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=count_source_files(sources), unit="file", desc="ingest")
        for item in pipe.parse_ahead(iter_source_inputs(sources, producer=producer, settings=settings)):
            pipe.process(item)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        pipe.flush()
        metrics = pipe.metrics()
        pipe.ledger.finish_run(run_id, metrics, reported=report_path is None, took_over=pipe.took_over)
        outcomes = tuple(pipe.outcomes)
        if report_path is not None:
            pipe.sync()
            pipe.checkpoint("before_ack")
            write_report(report_path, outcomes)
            pipe.checkpoint("after_ack")
            pipe.ledger.mark_reported(run_id)
    return RunSummary(run_id=run_id, outcomes=outcomes, metrics=metrics)


UPLOAD_PRODUCER = "patient"  # the producer id of documents patients add themselves


def ingest_upload(
    data: bytes,
    settings: Settings,
    *,
    filename: str,
    patient_id: str,
    contributor: Contributor,
    index: DocumentIndex | None = None,
    store: KeyedStore | None = None,
    sees: Callable[[str, str], bool] | None = None,
) -> RunSummary:
    """A file a patient (or whoever acts for them) adds to their record: a batch of one
    through the same ``Pipeline`` as every feed (kept, encrypted, parsed with OCR, checked,
    classified, identified by ``identify_in_record``, indexed), recorded in the ledger.

    ``index``/``store`` are the caller's (the API's, shared by its requests) and stay open.
    ``sees(patient, doc_id)``: the filed documents the contributor may see; one they may not
    is not there for them (no duplicate of it, no overwrite: ``Pipeline._sender_ids``).
    """
    source = f"upload/{contributor.role}/{filename}"
    # Batch-level shares say nothing about a batch of one (a photo is 100 % OCR).
    gate = QualityGate(
        settings,
        thresholds={
            UPLOAD_PRODUCER: BatchThresholds(
                max_reject_rate=1.0, max_ocr_share=None, max_duplicate_share=None
            )
        },
    )
    backends = open_backends(settings, index=index, store=store)
    with Pipeline(settings, backends, batch_label="upload", gate=gate, sees=sees) as pipe:
        # No lease: one document, committed under the flush lock like any flush, and an
        # upload is not refused because a `carnet ingest` is running.
        run_id = pipe.start_run("upload", source, exclusive=None)
        pipe.batch_name = run_id
        pipe.process(
            InputFile(
                data=data,
                source=source,
                producer=UPLOAD_PRODUCER,
                batch=run_id,
                record_of=patient_id,
                contributor=contributor,
            )
        )
        pipe.flush()
        metrics = pipe.metrics()
        pipe.ledger.finish_run(run_id, metrics, reported=True)  # the API answers with it
        outcomes = tuple(pipe.outcomes)
    return RunSummary(run_id=run_id, outcomes=outcomes, metrics=metrics)
