"""Two worker processes on one state database and one index end as one process would:
the same content sent twice (by two producers, or twice by one) is indexed once, and a
correction and its original never leave two live versions — whichever commits first.

Both workers decide every document before either flushes (a barrier between their
``process`` and ``flush``), the race that deciding against the index alone loses: the
flush, under the database's flush lock, decides again against what is committed."""

from __future__ import annotations

import base64
import multiprocessing as mp
import os
import queue
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline.index import open_index
from pipeline.ingest import InputFile, Pipeline
from pipeline.ledger import Ledger
from pipeline.model import Status
from pipeline.settings import Settings
from pipeline.state import open_engine, upgrade
from tests.conftest import SAMPLES, require_service

CDA = SAMPLES / "cda"
# worker 1: the original and a report; worker 2: the correction, the same report from
# another producer, and the original again.
INPUTS = (
    [("labo/cr-bio.xml", "cr-bio.xml", "labo"), ("labo/cr-imagerie.xml", "cr-imagerie.xml", "labo")],
    [
        ("labo/cr-bio-v2.xml", "cr-bio-v2.xml", "labo"),
        ("clinique/cr-imagerie.xml", "cr-imagerie.xml", "clinique"),
        ("labo/again/cr-bio.xml", "cr-bio.xml", "labo"),
    ],
)


def _worker(settings: Settings, inputs: list[tuple[str, str, str]], barrier: Any, results: Any) -> None:
    with Pipeline(settings) as pipe:
        run_id = pipe.start_run("batch", "concurrency", exclusive=False)  # lanes side by side
        for source, sample, producer in inputs:
            pipe.process(InputFile(data=(CDA / sample).read_bytes(), source=source, producer=producer))
        barrier.wait(timeout=300)  # both have decided everything; neither has flushed
        pipe.flush()
        pipe.ledger.finish_run(run_id, pipe.metrics(), reported=True)
        results.put([(o.source, o.status.value, o.doc_id, o.content_sha256) for o in pipe.outcomes])


def test_two_workers_end_as_one_process_would(state_settings: Settings) -> None:
    _race(state_settings)


@pytest.mark.elasticsearch
def test_two_workers_on_postgresql_and_elasticsearch(pg_state_url: str, tmp_path: Path) -> None:
    url = require_service(
        "Elasticsearch",
        os.environ.get("CARNET_TEST_ES_URL", "http://127.0.0.1:9200"),
        "scripts/elasticsearch.sh start",
    )
    settings = Settings(
        data_dir=tmp_path / "carnet",
        state_url=pg_state_url,
        index_url=url,
        es_index_alias=f"carnet-test-race-{uuid.uuid4().hex[:8]}",
    )
    engine = open_engine(settings)
    try:
        upgrade(engine)  # what `carnet db upgrade` does before workers start
    finally:
        engine.dispose()
    try:
        _race(settings)
    finally:
        index = open_index(settings.effective_index_url, alias=settings.index.es_alias)
        try:
            index.drop()  # type: ignore[attr-defined]
        finally:
            index.close()


def _race(state_settings: Settings) -> None:
    settings = state_settings.model_copy(
        update={"data_docs": False, "ocr_workers": 1, "master_key": base64.b64encode(b"k" * 32).decode()}
    )
    Ledger(settings).close()  # the embedded state database made before the workers race
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(settings, inputs, barrier, results)) for inputs in INPUTS]
    for w in workers:
        w.start()
    try:
        outcomes = [o for batch in _results(results, workers) for o in batch]
    except BaseException:
        for w in workers:
            w.kill()  # the survivor would wait at the barrier
        raise
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]

    statuses = Counter(status for _, status, _, _ in outcomes)
    accepted = [o for o in outcomes if o[1] in ("indexed", "replaced")]
    # Each content accepted once: the original, the correction, the report.
    assert sorted(Counter(sha for *_, sha in accepted).values()) == [1, 1, 1], outcomes
    assert statuses["duplicate"] == 2 and statuses["rejected"] == 0, outcomes

    index = open_index(settings.effective_index_url, alias=settings.index.es_alias)
    try:
        held = index.list_ids()
        records = [index.get(patient, doc_id) for patient, doc_id, _ in held]
    finally:
        index.close()
    assert len(held) == 3 and {d for _, d, _ in held} == {doc for _, _, doc, _ in accepted}
    live = [r for r in records if r and r.superseded_by is None and r.withdrawn_at is None]
    assert sorted(Counter(r.series_id for r in live).values()) == [1, 1], "one live version per series"
    series = {r.series_id for r in records if r and r.version == 2}
    assert [r.version for r in live if r.series_id in series] == [2]  # the correction is the live one


def _results(results: Any, workers: list[Any], wait_s: float = 600) -> list[Any]:
    """Each worker's outcomes; a worker that dies fails the test at once (its partner
    would otherwise wait at the barrier, and the test on the queue, for minutes)."""
    deadline, batches = time.monotonic() + wait_s, []
    while len(batches) < len(workers):
        try:
            batches.append(results.get(timeout=1))
        except queue.Empty:
            died = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
            assert not died, f"a worker died (exit codes {died}): its traceback is above"
            assert time.monotonic() < deadline, "the workers did not finish"
    return batches


FR = SAMPLES / "hl7" / "fr"


def test_a_withdrawal_committed_while_a_correction_waits_to_flush(state_settings: Settings) -> None:
    """A producer's deletion commits (under the flush lock, counted in the flush generation)
    between another worker's decision on a correction and its flush: that flush decides
    again, and ends as one process taking the deletion first would, the correction filed
    anew beside the withdrawn original (it replaces nothing withdrawn)."""
    settings = state_settings.model_copy(
        update={"data_docs": False, "ocr_workers": 1, "master_key": base64.b64encode(b"k" * 32).decode()}
    )

    def item(name: str) -> InputFile:
        return InputFile(data=(FR / name).read_bytes(), source=f"hopital/{name}", producer="hopital")

    with Pipeline(settings) as first:
        first.start_run("batch", "original", exclusive=False)
        [original] = first.process(item("01_mdm_t02_cda.hl7"))
    with Pipeline(settings) as correcting, Pipeline(settings) as deleting:
        correcting.start_run("batch", "correction", exclusive=False)
        deleting.start_run("batch", "deletion", exclusive=False)
        [decided] = correcting.process(item("04_mdm_t10_replacement.hl7"))
        assert decided.status is Status.REPLACED  # against the index as it stood
        original_message = (FR / "01_mdm_t02_cda.hl7").read_bytes()
        [withdrawn] = deleting.process(
            InputFile(
                data=original_message.replace(b"MDM^T02", b"MDM^T11"),
                source="hopital/deletion.hl7",
                producer="hopital",
            )
        )
        assert (withdrawn.status, withdrawn.doc_id) == (Status.WITHDRAWN, original.doc_id), withdrawn.reasons
        correcting.flush()
        [correction] = correcting.outcomes
        records = {
            doc_id: correcting.index.get(patient, doc_id)
            for patient, doc_id, _ in correcting.index.list_ids()
        }
    assert correction.status is Status.INDEXED
    v1, v2 = records[original.doc_id], records[correction.doc_id or ""]
    assert v1 is not None and v2 is not None
    assert (v1.withdrawn_at is not None, v1.superseded_by) == (True, None)
    assert (v2.withdrawn_at, v2.superseded_by) == (None, None)
