"""Two `carnet serve` processes, each with its own empty data directory, on one PostgreSQL
state database (and one Elasticsearch index, one S3 store): requests sent to both in turn
extend one audit chain, which `carnet audit verify` holds, every access in it once; a
grant made through one replica decides on the other."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import pytest

from pipeline.access import Principal, Role
from pipeline.api.auth import issue_token
from pipeline.index import open_index
from pipeline.settings import Settings
from pipeline.state import open_engine, upgrade
from tests.api.conftest import carnet_serve, make_ins
from tests.conftest import require_service
from tests.test_s3 import s3_bucket, s3_endpoint  # noqa: F401  (session fixtures)

ROOT = Path(__file__).resolve().parents[2]
JWT_KEY = "carnet-tests-only-hs256-key-replicas-0123456789"
ROUNDS = 30  # requests to each replica, interleaved
PRO = "10101234567"


def _bearer(who: Principal) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(JWT_KEY, who)}"}


@pytest.mark.elasticsearch
@pytest.mark.s3
def test_two_api_replicas_extend_one_verifiable_audit_chain(
    tmp_path: Path,
    pg_state_url: str,
    s3_endpoint: str,  # noqa: F811
    s3_bucket: str,  # noqa: F811
) -> None:
    es = require_service(
        "Elasticsearch",
        os.environ.get("CARNET_TEST_ES_URL", "http://127.0.0.1:9200"),
        "scripts/elasticsearch.sh start",
    )
    alias = f"carnet-test-replicas-{uuid.uuid4().hex[:8]}"
    shared = {
        "CARNET_STATE_URL": pg_state_url,
        "CARNET_INDEX_URL": es,
        "CARNET_ES_ALIAS": alias,
        "CARNET_STORE_URL": f"s3://{s3_bucket}/replicas-{uuid.uuid4().hex[:8]}",
        "CARNET_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "CARNET_API_JWT_KEY": JWT_KEY,
        "AWS_ENDPOINT_URL": s3_endpoint,
        "CARNET_DATA_DOCS": "0",
        "PYTHONPATH": str(ROOT),
    }
    engine = open_engine(Settings(data_dir=tmp_path / "operator", state_url=pg_state_url))
    try:
        upgrade(engine)  # carnet db upgrade, once, before the replicas start
    finally:
        engine.dispose()

    def env(name: str) -> dict[str, str]:  # a private, empty data directory for each process
        (tmp_path / name).mkdir()
        return {**os.environ, **shared, "CARNET_DATA_DIR": str(tmp_path / name)}

    patients = [make_ins(900 + n) for n in range(2 * ROUNDS)]
    with ExitStack() as stack:
        stack.callback(lambda: open_index(es, alias=alias).drop())  # type: ignore[attr-defined]
        replicas = [stack.enter_context(carnet_serve(env(f"replica{i}"), ROOT)) for i in (1, 2)]
        for n, ins in enumerate(patients):  # A, B, A, B…: each patient searches their record once
            r = replicas[n % 2].get(
                f"/patients/{ins}/documents", headers=_bearer(Principal(role=Role.PATIENT, subject=ins))
            )
            assert r.status_code == 200, r.text
        # A grant made through one replica decides on the other: the rules are shared too.
        owner = patients[0]
        as_owner = _bearer(Principal(role=Role.PATIENT, subject=owner))
        as_pro = _bearer(Principal(role=Role.PROFESSIONAL, subject=PRO))
        assert replicas[1].get(f"/patients/{owner}/documents", headers=as_pro).status_code == 403
        assert replicas[0].put(f"/patients/{owner}/authorisations/{PRO}", headers=as_owner).status_code == 200
        assert replicas[1].get(f"/patients/{owner}/documents", headers=as_pro).status_code == 200

    cli_env = env("operator-cli")
    verify = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "audit", "verify"],
        env=cli_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"intact: {2 * ROUNDS + 3} entries" in verify.stdout  # 60 searches, a refusal, a grant, a read

    history = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "audit", "history", owner, "--json"],
        env=cli_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert history.returncode == 0, history.stderr
    assert [json.loads(x)["action"] for x in history.stdout.splitlines()] == [
        "search",
        "denied",
        "grant",
        "search",
    ]
    engine = open_engine(Settings(data_dir=tmp_path / "operator", state_url=pg_state_url))
    try:
        from pipeline.audit import AuditLog

        log = AuditLog(engine, key=b"unused: entries are read, not verified")
        searches = Counter(e.patient_id for e in log.entries() if (e.action, e.role) == ("search", "patient"))
    finally:
        engine.dispose()
    assert searches == Counter({ins: 1 for ins in patients})  # every access once
