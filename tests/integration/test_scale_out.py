"""The proof that Carnet's workers need nothing but its engines (issue 13, item 5).

``scripts/airflow_celery.sh`` starts PostgreSQL and Redis from Debian's packages, an
Airflow API server, scheduler, DAG processor and two Celery workers, each in its own
process group and each with its own empty data folder (``CARNET_WORKER_DATA_ROOT``), as on
two hosts. All of Carnet's shared state is in PostgreSQL (the ``carnet`` database of the
same cluster), documents in MinIO, the index in Elasticsearch, the master key in the KMS.
The ingestion DAG runs over a generated feed on S3 with duplicates (also re-sent by a
second producer), corrections and bad inputs. Then:

(a) task instances ran on both workers;
(b) every document's outcome, as its batch's acknowledgement reports it, is the one a
    single-process reference run (``process_batch`` in this process, embedded defaults)
    gives on the same feed. A document two producers sent may be kept from either, as
    lanes of different producers run side by side: such copies are compared as a group
    (one accepted, the others duplicates), everything else one by one;
(c) ``carnet_maintenance``'s integrity check, run from a third empty folder, finds the
    index, the store and the state in agreement, and ``carnet status`` there shows every
    batch, with its Data Docs on S3;
(d) the workers' folders hold no file afterwards: nothing was kept on a worker's disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.feeds import REPORT
from tests.conftest import require_service
from tests.integration.conftest import AirflowApi, free_port, unavailable

pytestmark = [
    pytest.mark.slow,
    pytest.mark.airflow,
    pytest.mark.elasticsearch,
    pytest.mark.s3,
    pytest.mark.kms,
    pytest.mark.timeout(720),
]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "airflow_celery.sh"
SERVICES = ("postgres", "redis", "api-server", "scheduler", "dag-processor", "worker1", "worker2")
WORKERS = ("worker1", "worker2")
# What one document's outcome is compared on: status and reason codes (messages may name
# the other copy of a duplicate).
Key = tuple[str, str, int | None]  # batch key, file in the batch, HL7 message position
Outcome = tuple[str, tuple[str, ...]]


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _feed(root: Path) -> None:
    """The generated feed, plus a copy of one PDF and one CDA re-sent by another producer
    in its first batch (as a hospital forwards a lab's report)."""
    from generator import generate_feed
    from pipeline.model import Status

    generated = generate_feed(root, seed=7, patients=6, documents=28, include_bad=True, scans=0)
    producers = sorted({d.producer for d in generated.documents})
    for fmt in ("pdf", "cda"):
        doc = next(
            d
            for d in generated.documents
            if d.format is not None
            and d.format.value == fmt
            and d.expected_status is Status.INDEXED
            and d.replaced_by is None
        )
        other = producers[(producers.index(doc.producer) + 1) % len(producers)]
        first = min(p.name for p in (root / other).iterdir() if p.is_dir())
        name = Path(doc.source_ref).name
        shutil.copyfile(root / doc.source_ref, root / other / first / f"RENVOI-{doc.producer}_{name}")


def _race_groups(root: Path) -> dict[tuple[str, str], str]:
    """(batch key, file) → content digest, for files whose bytes two producers sent."""
    by_digest: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for path in root.glob("*/*/*"):
        if path.is_file() and not path.name.startswith("_"):
            batch = path.parent.relative_to(root).as_posix()
            by_digest[hashlib.sha256(path.read_bytes()).hexdigest()].append((batch, path.name))
    return {
        where: digest
        for digest, places in by_digest.items()
        if len({b.split("/")[0] for b, _ in places}) > 1
        for where in places
    }


def _outcomes(reports: dict[str, bytes]) -> dict[Key, Outcome]:
    found: dict[Key, Outcome] = {}
    for batch, body in reports.items():
        for f in json.loads(body)["files"]:
            found[(batch, f["file"], f["position"])] = (f["status"], tuple(r["code"] for r in f["reasons"]))
    return found


def _compared(
    outcomes: dict[Key, Outcome], races: dict[tuple[str, str], str]
) -> tuple[dict[Key, Outcome], dict[str, Counter[str]]]:
    """Outcomes one by one outside the race groups, and each group's statuses as a multiset."""
    single = {k: o for k, o in outcomes.items() if (k[0], k[1]) not in races}
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    for k, (status, _) in outcomes.items():
        if (k[0], k[1]) in races:
            groups[races[(k[0], k[1])]][status] += 1
    return single, dict(groups)


def _reference(feed: Path, data_dir: Path) -> tuple[dict[Key, Outcome], set[tuple[str, str]]]:
    """Outcomes and indexed (patient, content) pairs of one process on embedded defaults."""
    from pipeline.index import open_index
    from pipeline.ingest import discover_batches, process_batch
    from pipeline.settings import Settings

    settings = Settings(data_dir=data_dir, data_docs=False)
    keys = discover_batches(settings, str(feed))
    for key in keys:
        process_batch(settings, str(feed), key)
    index = open_index(settings.effective_index_url)
    try:
        held = {(p, sha) for p, _, sha in index.list_ids()}
    finally:
        index.close()
    return _outcomes({k: (feed / k / REPORT).read_bytes() for k in keys}), held


def _s3_endpoint() -> str:
    return require_service(
        "S3", os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"), "scripts/s3.sh start"
    )


@pytest.fixture
def bucket() -> Iterator[Any]:
    from pipeline.s3 import Bucket, make_client

    b = Bucket(
        make_client(endpoint_url=_s3_endpoint(), region="us-east-1"), f"carnet-proof-{uuid.uuid4().hex[:10]}"
    )
    b.ensure_exists("us-east-1")
    try:
        yield b
    finally:
        for key in list(b.keys("")):
            b.delete(key)
        b.client.delete_bucket(Bucket=b.name)


def test_two_workers_with_private_folders_give_the_single_process_outcomes(
    tmp_path: Path, bucket: Any
) -> None:
    from pipeline.index.elasticsearch import ElasticsearchIndex
    from pipeline.maintenance import check_integrity
    from pipeline.monitoring import format_producer_status, load_metrics
    from pipeline.settings import Settings

    if shutil.which("apt-get") is None and shutil.which("redis-server") is None:
        unavailable("neither redis-server nor apt-get to install it")
    es_url = require_service(
        "Elasticsearch",
        os.environ.get("CARNET_TEST_ES_URL", "http://127.0.0.1:9200"),
        "scripts/elasticsearch.sh start",
    )
    kms_url = require_service(
        "KMS", os.environ.get("CARNET_TEST_KMS_URL", "http://127.0.0.1:4599"), "scripts/kms.sh start"
    )
    feed = tmp_path / "feed"
    _feed(feed)
    races = _race_groups(feed)
    assert len(set(races.values())) == 2, races
    shutil.copytree(feed, tmp_path / "reference-feed")
    for path in (p for p in feed.rglob("*") if p.is_file()):
        bucket.put(f"feed/{path.relative_to(feed).as_posix()}", path.read_bytes(), "application/octet-stream")
    feed_url = f"s3://{bucket.name}/feed"

    state = tmp_path / "celery"
    port, pg_port = free_port(), free_port()
    alias = f"carnet-proof-{uuid.uuid4().hex[:8]}"
    carnet = {
        "CARNET_STATE_URL": f"postgresql://carnet:carnet@127.0.0.1:{pg_port}/carnet",
        "CARNET_INDEX_URL": es_url,
        "CARNET_ES_ALIAS": alias,
        "CARNET_STORE_URL": f"s3://{bucket.name}/store",
        "AWS_ENDPOINT_URL": _s3_endpoint(),
        "CARNET_KMS_KEY_ID": os.environ.get("CARNET_TEST_KMS_KEY_ID", "alias/carnet-test"),
        "AWS_ENDPOINT_URL_KMS": kms_url,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CARNET_"))}
    env.update(
        carnet,
        CARNET_CELERY_HOME=str(state),
        CARNET_AIRFLOW_PORT=str(port),
        CARNET_PG_PORT=str(pg_port),
        CARNET_REDIS_PORT=str(free_port()),
        # The scheduler, API server and DAG processor: an empty folder too.
        CARNET_DATA_DIR=str(tmp_path / "control"),
        CARNET_WORKER_DATA_ROOT=str(tmp_path / "workers"),
    )
    started = time.monotonic()
    pgids: dict[str, int] = {}
    try:
        done = subprocess.run(
            [str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=240, check=False
        )
        pgids = {
            s: int((state / f"{s}.pgid").read_text()) for s in SERVICES if (state / f"{s}.pgid").exists()
        }
        if done.returncode != 0:
            logs = {p.name: p.read_text(errors="replace")[-1500:] for p in state.glob("*.log")}
            raise AssertionError(f"{done.stdout}{done.stderr}\n{json.dumps(logs, indent=1)}")
        assert set(pgids) == set(SERVICES), pgids
        # The reference run, while Airflow settles (this process, its own folder).
        reference, reference_held = _reference(tmp_path / "reference-feed", tmp_path / "reference")
        api = AirflowApi(f"http://127.0.0.1:{port}")
        deadline = started + 600
        api.wait_ready(deadline, alive=lambda: _alive(pgids["api-server"]))
        api.wait_dag("carnet_ingest", deadline)
        run_id = api.trigger("carnet_ingest", {"feed_url": feed_url})
        run_state = api.wait_run("carnet_ingest", run_id, deadline)
        tis = api.task_instances("carnet_ingest", run_id)
        if run_state != "success":
            logs = {p.name: p.read_text(errors="replace")[-3000:] for p in state.glob("worker*.log")}
            # The tasks' own logs say why they failed (the workers' only that they did).
            logs.update(
                (str(p.relative_to(state)), p.read_text(errors="replace")[-4000:])
                for p in state.rglob("attempt=*.log")
            )
            raise AssertionError(json.dumps(tis, indent=1)[-3000:] + json.dumps(logs, indent=1))

        # (c) from a third, empty folder: the integrity check and carnet status.
        auditor = Settings.from_env({**carnet, "CARNET_DATA_DIR": str(tmp_path / "auditor")})
        integrity = check_integrity(auditor)
        status = format_producer_status(auditor)
        metrics = load_metrics(auditor)
    finally:
        subprocess.run([str(SCRIPT), "purge"], env=env, capture_output=True, timeout=120, check=False)
        es = ElasticsearchIndex(es_url, alias=alias)
        es.drop()
        es.close()
    assert not [s for s, g in pgids.items() if _alive(g)], "a service group survived stop"

    # (a) both workers ran tasks.
    ran = [t for t in tis if t["state"] == "success"]
    assert {t["hostname"] for t in ran} == set(WORKERS), [
        (t["task_id"], t["map_index"], t["hostname"]) for t in ran
    ]

    # (b) the outcomes of one process, document by document (race groups as groups).
    reports = {
        k.removeprefix("feed/").removesuffix(f"/{REPORT}"): bucket.get(k)
        for k in bucket.keys("feed/")
        if k.endswith(f"/{REPORT}")
    }
    got = _outcomes(reports)
    assert set(got) == set(reference)
    got_single, got_groups = _compared(got, races)
    want_single, want_groups = _compared(reference, races)
    assert got_single == want_single
    assert got_groups == want_groups
    for statuses in want_groups.values():  # one copy kept, every other one a duplicate
        assert statuses["indexed"] == 1 and statuses["duplicate"] == sum(statuses.values()) - 1

    # (c) index, store and state agree, and hold what the reference holds.
    assert integrity.ok, (Counter(d.kind for d in integrity.discrepancies), integrity.discrepancies[:3])
    assert integrity.indexed == len(reference_held) == integrity.accepted_in_ledger
    assert sorted(m.batch_key for m in metrics) == sorted(reports)
    for key in reports:
        assert key in status
    # Each batch that accepted a document has its Data Docs on S3, whichever worker ran it.
    for m in metrics:
        assert m.data_docs or not (m.by_status.get("indexed") or m.by_status.get("replaced")), m
        if m.data_docs:
            assert m.data_docs.startswith(f"s3://{bucket.name}/store/data-docs/index-"), m.data_docs
            assert bucket.head(m.data_docs.removeprefix(f"s3://{bucket.name}/")), m.data_docs

    # (d) nothing on any worker's disk (nor on the other services' or the auditor's).
    kept = [
        p.relative_to(tmp_path).as_posix()
        for folder in ("workers", "control", "auditor")
        for p in (tmp_path / folder).rglob("*")
        if p.is_file()
    ]
    assert kept == []
