"""The batch quality gate: Great Expectations validates the records of one flush.

Each flush becomes two pandas frames — one row per document, one row per lab result —
of *derived* columns (flags, counts, ages in days, a keyed hash of the INS), never the
INS, names or result values. Expectation suites built in code decide which rows fail;
each expectation's ``meta`` names its check, and failed rows come back by id column
(``unexpected_index_list``) and are turned into ``Problem``s with the messages of
``pipeline.quality``. Because the frames hold no patient data, the Data Docs built from
these validations hold none either.

Batch-level figures (reject rate, OCR share, duplicate share, document count) are
compared with per-producer thresholds and reported as ``batch_flags``; they never
change the verdict of a document.

GX takes seconds to import: it is imported in ``QualityGate._gx`` only, on first use.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.classification import TYPE_CODES
from pipeline.model import DocumentRecord, Frozen, PatientDemographics, Problem, Status
from pipeline.quality import (
    BATCH_THRESHOLD,
    MIN_OCR_CONFIDENCE,
    MIN_OCR_WORDS,
    MIN_TEXT_CHARS_BY_CLASS,
    OLDEST_DOCUMENT,
    RESULT_CHECKS,
    WARN_OCR_CONFIDENCE,
    birth_bounds,
    check_dates,
    check_identity,
    check_text,
    check_type_and_producer,
    count_words,
    declared_birth,
    describe_result,
    finess_ok,
    fully_ocr,
    identity_facts,
    observed_dates,
    result_facts,
    rpps_ok,
    type_consistent,
)
from pipeline.settings import Settings

log = logging.getLogger(__name__)

_GX_LOGGERS = ("great_expectations", "great_expectations.core", "great_expectations.data_context",
               "posthog", "backoff")
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


def _check(name: str, problems_of: str) -> dict[str, str]:
    return {"check": name, "problems_of": problems_of}


class QualityGate:
    """Validates candidate records with GX and reports problems per document and per batch."""

    def __init__(self, settings: Settings, *, known_producers: frozenset[str] | None = None,
                 build_data_docs: bool = False,
                 thresholds: Mapping[str, BatchThresholds] | None = None,
                 today: dt.date | None = None) -> None:
        self.settings = settings
        self.known_producers = known_producers
        self.build_data_docs = build_data_docs
        self.thresholds = dict(DEFAULT_PRODUCER_THRESHOLDS, **(thresholds or {}))
        self.today = today
        self._key: bytes | None = None  # the pseudonyms' key, fetched when first needed
        # GX renders the Data Docs here: private to this gate and temporary, since another
        # worker could not see it; ``publish_data_docs`` copies the site to the store.
        self.data_docs_site: Path | None = None
        self._ctx: Any = None
        self._docs_def: Any = None
        self._results_def: Any = None

    def close(self) -> None:
        """Delete the rendered Data Docs (publish them first)."""
        if self.data_docs_site is not None:
            shutil.rmtree(self.data_docs_site, ignore_errors=True)
            self.data_docs_site = None

    def __enter__(self) -> QualityGate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- GX setup ------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Import GX and build its context now: seconds once per process, which a stage
        timer must not count as the gate's work."""
        self._gx()

    def _gx(self) -> None:
        """Import GX and build the ephemeral context, assets and suites (once per gate)."""
        if self._ctx is not None:
            return
        for name in _GX_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(),
                                   analytics_enabled=False,
                                   progress_bars=ProgressBarsConfig(globally=False))
        ctx = gx.get_context(mode="ephemeral", project_config=config)
        source = ctx.data_sources.add_pandas("carnet")
        docs = source.add_dataframe_asset("documents").add_batch_definition_whole_dataframe("flush")
        results = source.add_dataframe_asset("lab_results").add_batch_definition_whole_dataframe("flush")
        docs_suite = ctx.suites.add(self._documents_suite(gx))
        results_suite = ctx.suites.add(self._results_suite(gx))
        self._docs_def = ctx.validation_definitions.add(
            gx.ValidationDefinition(name="carnet_documents", data=docs, suite=docs_suite))
        self._results_def = ctx.validation_definitions.add(
            gx.ValidationDefinition(name="carnet_lab_results", data=results, suite=results_suite))
        if self.build_data_docs:
            self.data_docs_site = Path(tempfile.mkdtemp(prefix="carnet-data-docs-"))
            ctx.add_data_docs_site("carnet", {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                  "base_directory": str(self.data_docs_site)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            })
        self._ctx = ctx

    def _documents_suite(self, gx: Any) -> Any:
        """One expectation per document check; ``meta.check`` names the check."""
        E = gx.expectations
        suite = gx.ExpectationSuite(name="carnet_documents", meta={"version": "1"})
        flag = ("sex_consistent", "birth_consistent", "finess_ok", "rpps_ok", "type_consistent")
        for column in flag:
            suite.add_expectation(E.ExpectColumnValuesToBeInSet(
                column=column, value_set=[True], meta=_check(column, "document")))
        suite.add_expectation(E.ExpectColumnValuesToBeInSet(
            column="type_code", value_set=sorted(TYPE_CODES), meta=_check("type_code", "document")))
        if self.known_producers is not None:
            suite.add_expectation(E.ExpectColumnValuesToBeInSet(
                column="producer", value_set=sorted(self.known_producers),
                meta=_check("producer", "document")))
        suite.add_expectation(E.ExpectColumnValuesToNotBeNull(
            column="document_age_days", meta=_check("date_present", "document")))
        max_age = ((self.today or dt.date.today()) - OLDEST_DOCUMENT).days
        suite.add_expectation(E.ExpectColumnValuesToBeBetween(
            column="document_age_days", min_value=0, max_value=max_age, meta=_check("date", "document")))
        suite.add_expectation(E.ExpectColumnValuesToBeBetween(
            column="days_after_birth", min_value=0, meta=_check("date", "document")))
        suite.add_expectation(E.ExpectColumnValuesToBeBetween(
            column="days_after_possible_birth", min_value=0, meta=_check("date", "document")))
        suite.add_expectation(E.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="text_chars", column_B="min_text_chars", or_equal=True,
            meta=_check("text", "document")))
        suite.add_expectation(E.ExpectColumnValuesToBeBetween(
            column="scan_words", min_value=MIN_OCR_WORDS, meta=_check("text", "document")))
        suite.add_expectation(E.ExpectColumnValuesToBeBetween(
            column="scan_confidence", min_value=MIN_OCR_CONFIDENCE, meta=_check("text", "document")))
        suite.add_expectation(E.ExpectColumnValuesToBeBetween(
            column="ocr_confidence", min_value=WARN_OCR_CONFIDENCE, meta=_check("text", "document")))
        return suite

    def _results_suite(self, gx: Any) -> Any:
        E = gx.expectations
        suite = gx.ExpectationSuite(name="carnet_lab_results", meta={"version": "1"})
        for column in RESULT_CHECKS:
            suite.add_expectation(E.ExpectColumnValuesToBeInSet(
                column=column, value_set=[True], meta=_check(column, "result")))
        return suite

    # -- frames --------------------------------------------------------------------------------

    def pseudonym(self, ins: str) -> str:
        """Keyed hash of an INS: stable within an install, meaningless outside it."""
        if self._key is None:
            self._key = _pseudonym_key(self.settings)
        return hmac.new(self._key, ins.encode(), hashlib.sha256).hexdigest()[:24]

    def _frames(self, items: Sequence[GateItem], today: dt.date) -> tuple[Any, Any]:
        import pandas as pd

        docs: dict[str, list[object]] = {k: [] for k in (
            "doc_id", "patient_key", "producer", "doc_class", "type_code", "type_consistent",
            "sex_consistent", "birth_consistent", "finess_ok", "rpps_ok", "document_age_days",
            "days_after_birth", "days_after_possible_birth", "text_chars", "min_text_chars",
            "scan_words", "scan_confidence", "ocr_confidence")}
        res: dict[str, list[object]] = {k: [] for k in ("doc_id", "result_no", *RESULT_CHECKS)}
        for item in items:
            r = item.record
            ident = identity_facts(r.patient_id, item.demographics)
            earliest, latest = birth_bounds(r.patient_id, declared_birth(item.demographics, r.text),
                                            today=today)
            dates = [d for d in (r.document_date, *observed_dates(r.results)) if d is not None]
            first = min(dates) if dates else None
            scan = fully_ocr(r.ocr_pages, r.page_count)
            docs["doc_id"].append(r.doc_id)
            docs["patient_key"].append(self.pseudonym(r.patient_id))
            docs["producer"].append(r.producer)
            docs["doc_class"].append(r.doc_class.value)
            docs["type_code"].append(r.type_code)
            docs["type_consistent"].append(type_consistent(r.doc_class, r.type_code))
            docs["sex_consistent"].append(ident.sex_consistent)
            docs["birth_consistent"].append(ident.birth_consistent)
            docs["finess_ok"].append(finess_ok(r.producer_finess))
            docs["rpps_ok"].append(rpps_ok(r.author_rpps))
            docs["document_age_days"].append((today - r.document_date).days if r.document_date else None)
            docs["days_after_birth"].append((first - earliest).days if first and earliest else None)
            docs["days_after_possible_birth"].append(
                (first - latest).days if first and latest and latest != earliest else None)
            docs["text_chars"].append(len(r.text.strip()))
            docs["min_text_chars"].append(MIN_TEXT_CHARS_BY_CLASS[r.doc_class])
            docs["scan_words"].append(count_words(r.text) if scan else None)
            docs["scan_confidence"].append((r.ocr_confidence or 0.0) if scan else None)
            docs["ocr_confidence"].append((r.ocr_confidence or 0.0) if r.ocr_pages else None)
            for n, result in enumerate(r.results):
                facts = result_facts(result, ocr=bool(r.ocr_pages))
                res["doc_id"].append(r.doc_id)
                res["result_no"].append(n)
                for c in RESULT_CHECKS:
                    res[c].append(getattr(facts, c))
        flag_cols = ("type_consistent", "sex_consistent", "birth_consistent", "finess_ok", "rpps_ok",
                     *RESULT_CHECKS)
        num_cols = ("document_age_days", "days_after_birth", "days_after_possible_birth", "scan_words",
                    "scan_confidence", "ocr_confidence")
        doc_frame = pd.DataFrame({k: pd.Series(v, dtype=object if k in flag_cols else
                                               "float64" if k in num_cols else None)
                                  for k, v in docs.items()})
        res_frame = pd.DataFrame({k: pd.Series(v, dtype=object if k in flag_cols else None)
                                  for k, v in res.items()})
        return doc_frame, res_frame

    # -- validation ----------------------------------------------------------------------------

    def validate(self, items: Sequence[GateItem], *, batch_label: str,
                 outcome_counts: Mapping[str, int] | None = None) -> GateResult:
        """Problems per doc id (GX decides which rows fail) and the batch's flags.

        ``outcome_counts``: the batch's outcomes so far by ``Status`` value, these items
        included (as indexed/replaced); without it the items are the whole batch.
        """
        today = self.today or dt.date.today()
        self._gx()
        by_id = {i.record.doc_id: i for i in items}
        failed: dict[str, set[str]] = {}  # doc_id -> failed document checks
        failed_results: dict[tuple[str, int], set[str]] = {}
        if items:
            doc_frame, res_frame = self._frames(items, today)
            fmt = {"result_format": "COMPLETE", "unexpected_index_column_names": ["doc_id"],
                   "partial_unexpected_count": 0, "include_unexpected_rows": False}
            run_id = self._run_id(batch_label)
            docs_run = self._docs_def.run(batch_parameters={"dataframe": doc_frame},
                                          result_format=fmt, run_id=run_id)
            for ids, check in _failures(docs_run, ("doc_id",)):
                failed.setdefault(str(ids[0]), set()).add(check)
            if len(res_frame):
                fmt_r = dict(fmt, unexpected_index_column_names=["doc_id", "result_no"])
                res_run = self._results_def.run(batch_parameters={"dataframe": res_frame},
                                                result_format=fmt_r, run_id=run_id)
                for ids, check in _failures(res_run, ("doc_id", "result_no")):
                    key = (str(ids[0]), int(str(ids[1])))
                    failed_results.setdefault(key, set()).add(check)

        problems: dict[str, tuple[Problem, ...]] = {}
        with_failures = set(failed) | {d for d, _ in failed_results}
        for doc_id in (d for d in by_id if d in with_failures):
            checks = failed.get(doc_id, set())
            found = self._describe(by_id[doc_id], checks, today) if checks else []
            for (d, n), result_checks in sorted(failed_results.items()):
                if d == doc_id:
                    result = by_id[d].record.results[n]
                    found += [describe_result(result, c) for c in RESULT_CHECKS if c in result_checks]
            # Warnings the per-document path already attached are not repeated.
            known = {(w.code, w.message) for w in by_id[doc_id].record.warnings}
            found = [p for p in dict.fromkeys(found) if (p.code, p.message) not in known]
            if found:
                problems[doc_id] = tuple(found)

        flags = self._batch_flags(items, problems, batch_label, outcome_counts)
        docs_index = self._build_docs() if self.build_data_docs and items else None
        return GateResult(problems=problems, batch_flags=flags, data_docs_index=docs_index)

    def _describe(self, item: GateItem, checks: set[str], today: dt.date) -> list[Problem]:
        """Problems (with messages) of the document checks GX reported as failed."""
        r = item.record
        out: list[Problem] = []
        if checks & {"sex_consistent", "birth_consistent"}:
            out += check_identity(r.patient_id, item.demographics)
        if checks & {"type_code", "type_consistent", "producer", "finess_ok", "rpps_ok"}:
            out += check_type_and_producer(
                r.doc_class, r.type_code, producer=r.producer, finess=r.producer_finess,
                rpps=r.author_rpps, known_producers=self.known_producers)
        if checks & {"date_present", "date"}:
            out += check_dates(r.document_date, declared_birth(item.demographics, r.text), today=today,
                               ins=r.patient_id, observed=observed_dates(r.results))
        if "text" in checks:
            out += check_text(r.text, r.doc_class, ocr_pages=r.ocr_pages, page_count=r.page_count,
                              ocr_confidence=r.ocr_confidence)
        if not out:
            # GX and the Python rules disagree: never let that pass silently.
            log.error("GX failed checks %s on %s but no rule explains it", sorted(checks), r.doc_id)
        return out

    def _batch_flags(self, items: Sequence[GateItem], problems: Mapping[str, tuple[Problem, ...]],
                     batch_label: str, outcome_counts: Mapping[str, int] | None) -> tuple[Problem, ...]:
        producers = {i.record.producer for i in items}
        producer = next(iter(producers)) if len(producers) == 1 else None
        t = self.thresholds.get(producer or "", BatchThresholds(
            max_reject_rate=self.settings.max_reject_rate))
        counts = dict(outcome_counts or {Status.INDEXED.value: len(items)})
        gate_rejects = sum(1 for ps in problems.values() if any(p.blocking for p in ps))
        total = sum(counts.values())
        if not total:
            return ()
        rejected = counts.get(Status.REJECTED.value, 0) + gate_rejects
        flags: list[Problem] = []

        def flag(message: str) -> None:
            flags.append(Problem(code=BATCH_THRESHOLD, blocking=False, message=f"{batch_label}: {message}"))

        rate = rejected / total
        if rate > t.max_reject_rate:
            flag(f"reject rate {rate:.0%} above {t.max_reject_rate:.0%} ({rejected}/{total})")
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

    def _run_id(self, batch_label: str) -> Any:
        from great_expectations.core.run_identifier import RunIdentifier

        # The label names the batch in Data Docs; keep it free of patient data (caller's contract).
        # Data Docs keys are path parts: no separators in the run name.
        name = re.sub(r"[^\w.-]+", "_", batch_label)
        return RunIdentifier(run_name=name, run_time=dt.datetime.now(dt.UTC))

    def _build_docs(self) -> str | None:
        """Build the Data Docs site from the validations stored in this context."""
        urls = self._ctx.build_data_docs(site_names=["carnet"])
        return urls.get("carnet")


def _failures(run: Any, id_columns: tuple[str, ...]) -> list[tuple[tuple[object, ...], str]]:
    """(id values, check name) for every unexpected row of every failed expectation."""
    out: list[tuple[tuple[object, ...], str]] = []
    for er in run.results:
        if er.success:
            continue
        if er.exception_info and er.exception_info.get("raised_exception"):
            raise RuntimeError(f"GX expectation {er.expectation_config.type} raised: "
                               f"{er.exception_info.get('exception_message')}")
        check = er.expectation_config.meta["check"]
        for row in er.result.get("unexpected_index_list") or ():
            out.append((tuple(row[c] for c in id_columns), check))
    return out


def _pseudonym_key(settings: Settings) -> bytes:
    """The key of the INS pseudonyms, never a file of its own: from the local master key
    (``CARNET_MASTER_KEY``, else the embedded default's key file), or, with the master key
    in a KMS, a key of its own kept wrapped in the keyring, which every worker shares.
    """
    if settings.master_key:
        return hashlib.sha256(b"carnet-quality\x00" + settings.master_key.encode()).digest()
    if settings.kms_key_id:
        from pipeline.crypto import KeyRing, keyring_path
        from pipeline.keywrap import open_key_wrapper

        ring = KeyRing(keyring_path(settings), open_key_wrapper(settings))
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
        bucket = Bucket(make_client(endpoint_url=settings.s3_endpoint_url,
                                    region=settings.s3_region), name)
        present = set(bucket.keys(f"{base}static/"))
        for key, path in files.items():
            if key.startswith("static/") and base + key in present:
                continue
            bucket.put(base + key, path.read_bytes(),
                       "text/html" if path.suffix == ".html" else "application/octet-stream")
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
