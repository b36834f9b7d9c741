"""The batch quality gate: Great Expectations validates the records of one flush.

Each flush becomes two pandas frames — one row per document, one row per lab result —
of *derived* columns (flags, counts, ages in days, a keyed hash of the INS), never the
INS, names or result values. Expectation suites built in code decide which rows fail;
the suites are built from the record and result checks of ``pipeline.quality.checks``,
one expectation per check whose ``meta`` names it; failed rows come back by id column
(``unexpected_index_list``) and become that check's problem. GX is the only judge of
these checks: nothing re-runs them. Because the frames hold no patient data, the Data
Docs built from these validations hold none either.

Batch-level figures (reject rate, OCR share, duplicate share, document count) are
compared with per-producer thresholds and reported as ``batch_flags``; they never
change the verdict of a document.

GX takes seconds to import (~1.3 s of CPU; the whole package is imported whatever one
asks of it, less the two modules ``gx_import`` defers) and seconds to validate: it runs in this process on
first use (``_GxSession``), or, once ``QualityGate.start`` is called (a run with a core to
spare, at its first input), in a process of its own (``_GxWorker``, one per process,
shared by its gates), so that its import overlaps the run's start-up and parses and its
validations use another core than the pipeline's. The worker is handed the same columns
and runs the same ``_GxSession``: the verdicts do not depend on where GX runs.
"""

from __future__ import annotations

import atexit
import copy
import datetime as dt
import hashlib
import hmac
import logging
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pipeline.model import DocumentRecord, Frozen, PatientDemographics, Problem, Reason, Status
from pipeline.processes import can_start_processes, without_main_module
from pipeline.quality.checks import (
    CHECKS,
    RECORD_CHECKS,
    RESULT_CHECKS,
    Check,
    RecordFacts,
    ResultFacts,
    columns,
    problems,
    record_facts,
    result_facts,
)
from pipeline.quality.gx_import import import_great_expectations
from pipeline.settings import Settings

log = logging.getLogger(__name__)

_GX_LOGGERS = (
    "great_expectations",
    "great_expectations.core",
    "great_expectations.data_context",
    "posthog",
    "backoff",
)
# Where the Data Docs are published, beside the store's objects (file:// or s3://).
DATA_DOCS_PREFIX = "data-docs"


class GateItem(Frozen):
    """One candidate document about to be indexed."""

    record: DocumentRecord
    demographics: PatientDemographics | None = None


class GateResult(Frozen):
    problems: dict[str, tuple[Problem, ...]]  # doc_id -> problems (blocking => rejected)
    batch_flags: tuple[Problem, ...]
    data_docs_index: str | None = None

    def rejected(self) -> set[str]:
        """Doc ids with at least one blocking problem."""
        return {d for d, ps in self.problems.items() if any(p.blocking for p in ps)}


def reject_rate_flag(batch_label: str, rejected: int, total: int, threshold: float) -> str:
    """A batch flag for a reject rate above its threshold (``is_reject_rate_flag`` tells it)."""
    return f"{batch_label}: reject rate {rejected / total:.0%} above {threshold:.0%} ({rejected}/{total})"


def is_reject_rate_flag(message: str) -> bool:
    return ": reject rate " in message


@dataclass(frozen=True)
class BatchThresholds:
    """Above these shares a batch is flagged; ``None`` disables a check."""

    max_reject_rate: float = 0.5
    max_ocr_share: float | None = 0.8
    max_duplicate_share: float | None = 0.5
    min_documents: int | None = None
    max_documents: int | None = None


# Producers whose usual batches differ from the default (e.g. a scanning centre).
DEFAULT_PRODUCER_THRESHOLDS: dict[str, BatchThresholds] = {}


class QualityGate:
    """Validates candidate records with GX and reports problems per document and per batch."""

    def __init__(
        self,
        settings: Settings,
        *,
        known_producers: frozenset[str] | None = None,
        build_data_docs: bool = False,
        thresholds: Mapping[str, BatchThresholds] | None = None,
        today: dt.date | None = None,
    ) -> None:
        self.settings = settings
        self.known_producers = known_producers
        self.build_data_docs = build_data_docs
        self.thresholds = dict(DEFAULT_PRODUCER_THRESHOLDS, **(thresholds or {}))
        self.today = today
        self._key: bytes | None = None  # the pseudonyms' key, fetched when first needed
        # GX renders the Data Docs here: private to this gate and temporary, since another
        # worker could not see it; ``publish_data_docs`` copies the site to the store.
        self.data_docs_site: Path | None = None
        self._session: _GxSession | _RemoteSession | None = None

    def close(self) -> None:
        """Delete the rendered Data Docs (publish them first)."""
        if isinstance(self._session, _RemoteSession):
            self._session.close()
        self._session = None
        if self.data_docs_site is not None:
            shutil.rmtree(self.data_docs_site, ignore_errors=True)
            self.data_docs_site = None

    def __enter__(self) -> QualityGate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- GX setup ------------------------------------------------------------------------------

    def start(self) -> None:
        """Have GX imported in a process of its own, from now on, without waiting for it:
        this gate validates there (``_GxWorker``). Once per gate, before its first use;
        nothing in a process that may not have children (it then validates here)."""
        if self._session is None and can_start_processes():
            self._session = _RemoteSession(_gx_worker(), self._site())

    def prepare(self) -> None:
        """Import GX and build its context now (or wait for the worker to have done it):
        seconds once per process, which a stage timer must not count as the gate's work."""
        self._gx().ready()

    def _gx(self) -> _GxSession | _RemoteSession:
        """GX's session: in this process unless ``start`` sent it to the worker."""
        if self._session is None:
            self._session = _GxSession(self._site())
        return self._session

    def _site(self) -> str | None:
        if not self.build_data_docs:
            return None
        self.data_docs_site = Path(tempfile.mkdtemp(prefix="carnet-data-docs-"))
        return str(self.data_docs_site)

    # -- frames --------------------------------------------------------------------------------

    def pseudonym(self, ins: str) -> str:
        """Keyed hash of an INS: stable within an install, meaningless outside it."""
        if self._key is None:
            self._key = _pseudonym_key(self.settings)
        return hmac.new(self._key, ins.encode(), hashlib.sha256).hexdigest()[:24]

    def _facts(
        self,
        items: Sequence[GateItem],
        today: dt.date,
    ) -> tuple[dict[str, RecordFacts], dict[tuple[str, int], ResultFacts]]:
        """The facts of every record and result, computed once: they fill GX's frames and
        word the problems of the rows GX reports failed."""
        records: dict[str, RecordFacts] = {}
        results: dict[tuple[str, int], ResultFacts] = {}
        for item in items:
            r = item.record
            records[r.doc_id] = record_facts(
                r, item.demographics, known_producers=self.known_producers, today=today
            )
            for n, result in enumerate(r.results):
                results[(r.doc_id, n)] = result_facts(result, ocr=bool(r.ocr_pages))
        return records, results

    def _columns(
        self, records: Mapping[str, RecordFacts], results: Mapping[tuple[str, int], ResultFacts]
    ) -> tuple[_Columns, _Columns]:
        """One row per record and one per result: ids, a pseudonym and the checks' facts only
        (as columns with their dtype: pandas frames are built where GX runs)."""
        docs: _Columns = {
            "doc_id": (list(records), "object"),
            "patient_key": ([self.pseudonym(f.record.patient_id) for f in records.values()], None),
            "producer": ([f.record.producer for f in records.values()], None),
            "doc_class": ([f.record.doc_class.value for f in records.values()], None),
        }
        docs.update(
            {
                fact: ([getattr(f, fact) for f in records.values()], expect.dtype)
                for fact, expect in columns(RECORD_CHECKS).items()
            }
        )
        res: _Columns = {
            "doc_id": ([d for d, _ in results], "object"),
            "result_no": ([n for _, n in results], "int64"),
        }
        res.update(
            {
                fact: ([getattr(f, fact) for f in results.values()], expect.dtype)
                for fact, expect in columns(RESULT_CHECKS).items()
            }
        )
        return docs, res

    # -- validation ----------------------------------------------------------------------------

    def validate(
        self, items: Sequence[GateItem], *, batch_label: str, outcome_counts: Mapping[str, int] | None = None
    ) -> GateResult:
        """Problems per doc id (GX decides which rows fail) and the batch's flags.

        ``outcome_counts``: the batch's outcomes so far by ``Status`` value, these items
        included (as indexed/replaced); without it the items are the whole batch.
        """
        today = self.today or dt.date.today()
        session = self._gx()
        failed: dict[str, set[str]] = {}  # doc_id -> failed record checks
        failed_results: dict[tuple[str, int], set[str]] = {}
        records, results = self._facts(items, today)
        if items:
            # The label names the batch in Data Docs; keep it free of patient data (caller's
            # contract). Data Docs keys are path parts: no separators in the run name.
            run_name = re.sub(r"[^\w.-]+", "_", batch_label)
            docs_failed, results_failed = session.validate(*self._columns(records, results), run_name)
            for ids, check in docs_failed:
                failed.setdefault(str(ids[0]), set()).add(check)
            for ids, check in results_failed:
                failed_results.setdefault((str(ids[0]), int(str(ids[1]))), set()).add(check)

        found: dict[str, tuple[Problem, ...]] = {}
        for doc_id, facts in records.items():
            names = failed.get(doc_id, set())
            out = problems(RECORD_CHECKS, facts, _named(names)) if names else []
            for key in sorted(k for k in failed_results if k[0] == doc_id):
                out += problems(RESULT_CHECKS, results[key], _named(failed_results[key]))
            if out:
                found[doc_id] = tuple(dict.fromkeys(out))

        flags = self._batch_flags(items, found, batch_label, outcome_counts)
        docs_index = session.build_docs() if self.build_data_docs and items else None
        return GateResult(problems=found, batch_flags=flags, data_docs_index=docs_index)

    def _batch_flags(
        self,
        items: Sequence[GateItem],
        found: Mapping[str, tuple[Problem, ...]],
        batch_label: str,
        outcome_counts: Mapping[str, int] | None,
    ) -> tuple[Problem, ...]:
        producers = {i.record.producer for i in items}
        producer = next(iter(producers)) if len(producers) == 1 else None
        t = self.thresholds.get(
            producer or "", BatchThresholds(max_reject_rate=self.settings.ingestion.max_reject_rate)
        )
        counts = dict(outcome_counts or {Status.INDEXED.value: len(items)})
        gate_rejects = sum(1 for ps in found.values() if any(p.blocking for p in ps))
        total = sum(counts.values())
        if not total:
            return ()
        rejected = counts.get(Status.REJECTED.value, 0) + gate_rejects
        flags: list[Problem] = []

        def flag(message: str) -> None:
            flags.append(
                Problem(code=Reason.BATCH_THRESHOLD, blocking=False, message=f"{batch_label}: {message}")
            )

        if rejected / total > t.max_reject_rate:
            message = reject_rate_flag(batch_label, rejected, total, t.max_reject_rate)
            flags.append(Problem(code=Reason.BATCH_THRESHOLD, blocking=False, message=message))
        if t.max_ocr_share is not None and items:
            share = sum(1 for i in items if i.record.ocr_pages) / len(items)
            if share > t.max_ocr_share:
                flag(f"OCR share {share:.0%} above {t.max_ocr_share:.0%}")
        if t.max_duplicate_share is not None:
            share = counts.get(Status.DUPLICATE.value, 0) / total
            if share > t.max_duplicate_share:
                flag(f"duplicate share {share:.0%} above {t.max_duplicate_share:.0%}")
        if t.min_documents is not None and total < t.min_documents:
            flag(f"{total} documents, fewer than the usual {t.min_documents}")
        if t.max_documents is not None and total > t.max_documents:
            flag(f"{total} documents, more than the usual {t.max_documents}")
        for f in flags:
            log.warning("quality gate flag: %s", f.message)
        return tuple(flags)


# A frame as plain columns: name -> (values, pandas dtype or None to infer).
_Columns = dict[str, tuple[list[Any], str | None]]
# (id values of a failed row, name of the check that failed it)
_Failures = list[tuple[tuple[object, ...], str]]
# A validation definition, the columns of its frame, and the id columns naming its rows.
_Frame = tuple[Any, _Columns, tuple[str, ...]]


class _GxSession:
    """GX's ephemeral context with Carnet's suites: the validations of one gate, run where
    it lives (this process, or the GX worker)."""

    def __init__(self, data_docs_site: str | None) -> None:
        for name in _GX_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        gx = import_great_expectations()
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        )
        ctx = gx.get_context(mode="ephemeral", project_config=config)
        source = ctx.data_sources.add_pandas("carnet")
        docs = source.add_dataframe_asset("documents").add_batch_definition_whole_dataframe("flush")
        results = source.add_dataframe_asset("lab_results").add_batch_definition_whole_dataframe("flush")
        # One expectation per record check; ``meta.check`` names the check.
        docs_suite = ctx.suites.add(_suite(gx, "carnet_documents", RECORD_CHECKS, "document"))
        results_suite = ctx.suites.add(_suite(gx, "carnet_lab_results", RESULT_CHECKS, "result"))
        self._docs_def = ctx.validation_definitions.add(
            gx.ValidationDefinition(name="carnet_documents", data=docs, suite=docs_suite)
        )
        self._results_def = ctx.validation_definitions.add(
            gx.ValidationDefinition(name="carnet_lab_results", data=results, suite=results_suite)
        )
        self._gx = gx
        self._keep_results = data_docs_site is not None
        if data_docs_site is not None:
            ctx.add_data_docs_site(
                "carnet",
                {
                    "class_name": "SiteBuilder",
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": data_docs_site,
                    },
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
        self._ctx = ctx

    def ready(self) -> None:
        """Built in ``__init__``: nothing to wait for."""

    def validate(self, docs: _Columns, results: _Columns, run_name: str) -> tuple[_Failures, _Failures]:
        """The failed rows of each frame, by id columns and check."""
        frames: list[_Frame] = [(self._docs_def, docs, ("doc_id",))]
        if results["doc_id"][0]:
            frames.append((self._results_def, results, ("doc_id", "result_no")))
        if self._keep_results:
            failed = self._runs_kept(frames, run_name)
        else:
            failed = [self._failed_rows(definition, values, ids) for definition, values, ids in frames]
        return failed[0], failed[1] if len(failed) > 1 else []

    def _runs_kept(self, frames: list[_Frame], run_name: str) -> list[_Failures]:
        """The validation definitions' own runs, every row's result kept in the context's
        store for the Data Docs site (``build_docs``)."""
        from great_expectations.core.run_identifier import RunIdentifier

        run_id = RunIdentifier(run_name=run_name, run_time=dt.datetime.now(dt.UTC))
        out = []
        for definition, values, ids in frames:
            run = definition.run(
                batch_parameters={"dataframe": _frame(values)}, result_format=_naming(ids), run_id=run_id
            )
            out.append(_failures(run.results, ids))
        return out

    def _failed_rows(self, definition: Any, values: _Columns, ids: tuple[str, ...]) -> _Failures:
        """The suite run for its verdicts alone (``BOOLEAN_ONLY``: about half the metrics
        and half the CPU of a run that names rows); the expectations that failed are run
        again, together, to name their rows. A flush where all holds, the usual one, costs
        one light run; nothing is stored, as no Data Docs are built from it."""
        batch = definition.batch_definition.get_batch(batch_parameters={"dataframe": _frame(values)})
        verdicts = batch.validate(definition.suite, result_format="BOOLEAN_ONLY").results
        _raise_failed_runs(verdicts)
        checks = {r.expectation_config.meta["check"] for r in verdicts if not r.success}
        if not checks:
            return []
        # Copies: an expectation belongs to one suite.
        failed = [copy.copy(e) for e in definition.suite.expectations if e.meta["check"] in checks]
        suite = self._gx.ExpectationSuite(name=f"{definition.suite.name}_failed", expectations=failed)
        return _failures(batch.validate(suite, result_format=_naming(ids)).results, ids)

    def build_docs(self) -> str | None:
        """Build the Data Docs site from the validations stored in this context."""
        urls = self._ctx.build_data_docs(site_names=["carnet"])
        return urls.get("carnet")


def _frame(columns: _Columns) -> Any:
    import pandas as pd

    return pd.DataFrame({name: pd.Series(values, dtype=dtype) for name, (values, dtype) in columns.items()})


class _GxWorker:
    """A process running GX for every gate of this process (``_serve_gx``), one request at
    a time. Spawned (not forked: the parent may hold threads and sockets), daemonic (it
    ends with this process, even amid its import), and it ends when its pipe closes."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, theirs = context.Pipe()
        self._process = context.Process(target=_serve_gx, args=(theirs,), name="carnet-gx", daemon=True)
        with without_main_module():  # under Airflow, ``__main__`` is the airflow script
            self._process.start()
        theirs.close()
        self._lock = threading.Lock()
        self._sessions = 0
        self._answered = False  # GX imported there: it can end cleanly at once
        atexit.register(self.stop)

    def stop(self) -> None:
        """End the worker: cleanly (its pipe closed, it returns) once it has answered;
        else it is still importing GX, and terminated like any daemonic process."""
        with self._lock:
            self._conn.close()
            if self._answered:
                self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(timeout=10)

    def session_key(self) -> int:
        with self._lock:
            self._sessions += 1
            return self._sessions

    def call(self, *request: object) -> Any:
        """Send ``request``, return its answer; what failed there is raised here."""
        with self._lock:
            try:
                self._conn.send(request)
                ok, answer = self._conn.recv()
                self._answered = True
            except (EOFError, OSError) as exc:
                raise RuntimeError(
                    f"the quality gate's GX process (pid {self._process.pid}) died: "
                    f"exit code {self._process.exitcode}"
                ) from exc
        if not ok:
            raise RuntimeError(f"the quality gate's GX process failed: {answer}")
        return answer


_worker: _GxWorker | None = None
_worker_lock = threading.Lock()


def _gx_worker() -> _GxWorker:
    """This process's GX worker, started on first use: GX is imported once per process."""
    global _worker
    with _worker_lock:
        if _worker is None or not _worker._process.is_alive():
            _worker = _GxWorker()
        return _worker


def _serve_gx(conn: Connection) -> None:
    """The GX worker's loop: GX imported first (what ``QualityGate.start`` overlaps with
    the pipeline's work), then one request at a time, each answered ``(ok, answer)``."""
    for name in _GX_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    import_great_expectations()  # the point: done before any request
    from tqdm import tqdm

    # GX's validations make (disabled) tqdm bars, and tqdm's first bar creates a
    # multiprocessing lock: a named semaphore that ``os._exit`` below would leave for the
    # resource tracker to report as leaked on the run's stderr. One process, one thread
    # at a time: a thread lock is all tqdm needs here.
    tqdm.set_lock(threading.RLock())

    sessions: dict[int, _GxSession] = {}
    while True:
        try:
            op, key, *args = conn.recv()
        except EOFError:  # the parent closed its end, or died
            # Ended without the interpreter's teardown: freeing GX's many objects one by
            # one took 0.3-0.8 s, which the pipeline waited for at its exit (``stop``).
            # Nothing here needs it: GX's contexts are in memory, no file is open.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        try:
            if op == "validate":
                site, docs, results, run_name = args
                if key not in sessions:
                    sessions[key] = _GxSession(site)
                answer: Any = sessions[key].validate(docs, results, run_name)
            elif op == "docs":
                answer = sessions[key].build_docs()
            elif op == "close":
                answer = sessions.pop(key, None) is not None
            else:  # "ready": answered once GX is imported
                answer = None
        except Exception as exc:  # noqa: BLE001 — GX's failure goes back to the gate, raised there
            conn.send((False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        else:
            conn.send((True, answer))


class _RemoteSession:
    """A gate's ``_GxSession`` in the GX worker (created there at its first validation)."""

    def __init__(self, worker: _GxWorker, data_docs_site: str | None) -> None:
        self._worker = worker
        self._key = worker.session_key()
        self._site = data_docs_site
        self._validated = False  # the worker has this session (made at its first validation)

    def ready(self) -> None:
        """Wait until the worker has imported GX."""
        self._worker.call("ready", self._key)

    def validate(self, docs: _Columns, results: _Columns, run_name: str) -> tuple[_Failures, _Failures]:
        self._validated = True
        answer: tuple[_Failures, _Failures] = self._worker.call(
            "validate", self._key, self._site, docs, results, run_name
        )
        return answer

    def build_docs(self) -> str | None:
        url: str | None = self._worker.call("docs", self._key)
        return url

    def close(self) -> None:
        # Nothing to close there before a validation: a run that gated nothing (all its
        # inputs duplicates or rejected) does not wait for GX's import to end.
        if self._validated and self._worker._process.is_alive():
            self._worker.call("close", self._key)


def _suite(gx: Any, name: str, checks: Sequence[Check[Any]], problems_of: str) -> Any:
    """A GX suite with one expectation per check of the table."""
    suite = gx.ExpectationSuite(name=name, meta={"version": "2"})
    for check in checks:
        meta = {"check": check.name, "problems_of": problems_of}
        suite.add_expectation(check.expect.gx(gx.expectations, check.fact, meta))
    return suite


def _named(names: set[str]) -> Callable[[Check[Any]], bool]:
    """Whether a check is one of those GX reported failed for a row."""
    unknown = names - set(CHECKS)
    if unknown:
        raise RuntimeError(f"GX reported checks the table does not have: {sorted(unknown)}")
    return lambda check: check.name in names


def _naming(id_columns: tuple[str, ...]) -> dict[str, Any]:
    """A result format naming every failed row by its id columns."""
    return {
        "result_format": "COMPLETE",
        "unexpected_index_column_names": list(id_columns),
        "partial_unexpected_count": 0,
        "include_unexpected_rows": False,
    }


def _raise_failed_runs(results: Sequence[Any]) -> None:
    """An expectation that raised is a defect of the suite or of GX, never a verdict."""
    for er in results:
        if not er.success and er.exception_info and er.exception_info.get("raised_exception"):
            raise RuntimeError(
                f"GX expectation {er.expectation_config.type} raised: "
                f"{er.exception_info.get('exception_message')}"
            )


def _failures(results: Sequence[Any], id_columns: tuple[str, ...]) -> _Failures:
    """(id values, check name) for every unexpected row of every failed expectation."""
    _raise_failed_runs(results)
    out: _Failures = []
    for er in results:
        if er.success:
            continue
        check = er.expectation_config.meta["check"]
        for row in er.result.get("unexpected_index_list") or ():
            out.append((tuple(row[c] for c in id_columns), check))
    return out


def _pseudonym_key(settings: Settings) -> bytes:
    """The key of the INS pseudonyms, never a file of its own: from the local master key
    (``CARNET_MASTER_KEY``, else the embedded default's key file), or, with the master key
    in a KMS, a key of its own kept wrapped in the keyring, which every worker shares.
    """
    if settings.kms.master_key:
        return hashlib.sha256(b"carnet-quality\x00" + settings.kms.master_key.encode()).digest()
    if settings.kms.key_id:
        from pipeline.crypto import open_keyring

        ring = open_keyring(settings)
        try:
            return ring.named_key("quality-pseudonyms")
        finally:
            ring.close()
    from pipeline.keywrap import load_master_key

    return hashlib.sha256(b"carnet-quality\x00" + load_master_key(settings)).digest()


def publish_data_docs(settings: Settings, site: Path, run_id: str) -> str | None:
    """Copy a gate's rendered Data Docs beside the store's objects, under ``data-docs/``,
    where every worker's batches end up in one site; return the URL of this run's index.

    The validation pages have unique names (batch and time); the static assets are the
    same for every run and copied once; the run's index is kept as ``index-<run>.html``
    (same folder, so its relative links hold) and as ``index.html``, the latest. The pages
    hold no patient data (pseudonymised frames).
    """
    if not (site / "index.html").exists():
        return None
    files = {p.relative_to(site).as_posix(): p for p in sorted(site.rglob("*")) if p.is_file()}
    files[f"index-{run_id}.html"] = files["index.html"]
    url = settings.effective_store_url
    if url.startswith("s3://"):
        from pipeline.s3 import Bucket, make_client, parse_s3_url

        name, prefix = parse_s3_url(url)
        base = f"{prefix}{DATA_DOCS_PREFIX}/"
        bucket = Bucket(make_client(endpoint_url=settings.s3.endpoint_url, region=settings.s3.region), name)
        present = set(bucket.keys(f"{base}static/"))
        for key, path in files.items():
            if key.startswith("static/") and base + key in present:
                continue
            bucket.put(
                base + key,
                path.read_bytes(),
                "text/html" if path.suffix == ".html" else "application/octet-stream",
            )
        return f"s3://{name}/{base}index-{run_id}.html"
    root = Path(url.removeprefix("file://")) / DATA_DOCS_PREFIX
    for key, path in files.items():
        target = root / key
        if key.startswith("static/") and target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".tmp-{run_id}-{target.name}")
        shutil.copyfile(path, tmp)
        tmp.replace(target)
    return (root / f"index-{run_id}.html").as_uri()
