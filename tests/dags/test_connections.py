"""The Airflow Connections ``carnet_index``, ``carnet_store`` and ``carnet_state`` become the
settings a DAG task runs with (``dags/carnet_settings.py``), read through Airflow's own
mechanism (``AIRFLOW_CONN_*`` variables, in URI and JSON form); without them the
environment's settings apply unchanged. One ingestion run goes to a real Elasticsearch
node named only by the Connection."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from pipeline.errors import ConfigurationError
from pipeline.settings import Settings
from tests.conftest import require_service
from tests.dags.conftest import run_dag

pytestmark = [pytest.mark.airflow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

CONN_VARS = ("AIRFLOW_CONN_CARNET_INDEX", "AIRFLOW_CONN_CARNET_STORE", "AIRFLOW_CONN_CARNET_STATE")


@pytest.fixture
def env(airflow_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A Carnet environment of its own and no Carnet Connection defined."""
    monkeypatch.setenv("CARNET_DATA_DIR", str(tmp_path / "carnet"))
    for name in (
        *CONN_VARS,
        "CARNET_INDEX_URL",
        "CARNET_STORE_URL",
        "CARNET_STATE_URL",
        "CARNET_ES_ALIAS",
        "CARNET_FEED_URL",
        "CARNET_FEEDS_FILE",
        "CARNET_ALERT_WEBHOOK",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def settings() -> Settings:
    from carnet_settings import task_settings

    return task_settings()


def test_without_connections_the_environment_applies(env: pytest.MonkeyPatch) -> None:
    env.setenv("CARNET_INDEX_URL", "http://es.internal:9200")
    env.setenv("CARNET_STORE_URL", "s3://raw/carnet")
    env.setenv("AWS_ENDPOINT_URL", "http://s3.internal:9000")
    assert settings() == Settings.from_env()
    assert settings().index.url == "http://es.internal:9200"


def test_index_connection_in_json_form(env: pytest.MonkeyPatch) -> None:
    env.setenv("CARNET_INDEX_URL", "http://es.internal:9200")  # the Connection wins
    env.setenv(
        "AIRFLOW_CONN_CARNET_INDEX",
        json.dumps(
            {
                "conn_type": "elasticsearch",
                "host": "es.example",
                "port": 9243,
                "schema": "https",
                "login": "carnet",
                "password": "p@ss:w/rd",
                "extra": {"alias": "carnet-prod"},
            }
        ),
    )
    s = settings()
    url = urlsplit(s.index.url)
    assert (url.scheme, url.hostname, url.port) == ("https", "es.example", 9243)
    assert (unquote(url.username or ""), unquote(url.password or "")) == ("carnet", "p@ss:w/rd")
    assert s.index.es_alias == "carnet-prod"
    # Only what the Connection names changes.
    assert s.store.url == Settings.from_env().store.url


def test_index_connection_in_uri_form(env: pytest.MonkeyPatch) -> None:
    env.setenv("AIRFLOW_CONN_CARNET_INDEX", "elasticsearch://es.example:9200")
    assert settings().index.url == "http://es.example:9200"
    env.setenv("AIRFLOW_CONN_CARNET_INDEX", "elasticsearch://es.example:9243?scheme=ftp")
    with pytest.raises(ConfigurationError, match="http or https"):
        settings()


def test_store_connection(env: pytest.MonkeyPatch) -> None:
    env.setenv("AWS_DEFAULT_REGION", "us-east-1")
    env.setenv(
        "AIRFLOW_CONN_CARNET_STORE",
        json.dumps(
            {
                "conn_type": "aws",
                "extra": {
                    "endpoint_url": "http://minio.internal:9000",
                    "region_name": "eu-west-3",
                    "store_url": "s3://carnet-raw/prod",
                },
            }
        ),
    )
    s = settings()
    assert (s.s3.endpoint_url, s.s3.region, s.store.url) == (
        "http://minio.internal:9000",
        "eu-west-3",
        "s3://carnet-raw/prod",
    )
    env.setenv(
        "AIRFLOW_CONN_CARNET_STORE",
        json.dumps({"conn_type": "aws", "login": "AKIA1234", "password": "secret-key"}),
    )
    with pytest.raises(ConfigurationError, match="access keys"):
        settings()
    env.setenv(
        "AIRFLOW_CONN_CARNET_STORE", json.dumps({"conn_type": "aws", "extra": {"store_url": "/var/carnet"}})
    )
    with pytest.raises(ConfigurationError, match="s3://"):
        settings()


def test_state_connection(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("AIRFLOW_CONN_CARNET_STATE", "postgres://carnet:p%40ss@pg.example:5432/carnet")
    assert settings().state.url == "postgresql://carnet:p%40ss@pg.example:5432/carnet"
    env.setenv(
        "AIRFLOW_CONN_CARNET_STATE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "state.db")})
    )
    assert settings().effective_state_url == f"sqlite:///{tmp_path / 'state.db'}"
    env.setenv("AIRFLOW_CONN_CARNET_STATE", "mysql://carnet@db.example/carnet")
    with pytest.raises(ConfigurationError, match="postgres or sqlite"):
        settings()


@pytest.mark.elasticsearch
def test_an_ingestion_run_indexes_where_the_connection_says(
    env: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The environment names no index (the embedded one would be used); the Connection
    names a real Elasticsearch node, and that is where the run's documents go."""
    from generator import generate_feed
    from pipeline.index import open_index
    from pipeline.model import SearchQuery, Status

    url = urlsplit(
        require_service(
            "Elasticsearch",
            os.environ.get("CARNET_TEST_ES_URL", "http://127.0.0.1:9200"),
            "scripts/elasticsearch.sh start",
        )
    )
    alias = f"carnet-test-{uuid.uuid4().hex[:8]}"
    env.setenv("OMP_THREAD_LIMIT", "1")
    env.setenv(
        "AIRFLOW_CONN_CARNET_INDEX",
        json.dumps(
            {
                "conn_type": "elasticsearch",
                "host": url.hostname,
                "port": url.port,
                "schema": url.scheme,
                "extra": {"alias": alias},
            }
        ),
    )
    feed = generate_feed(tmp_path / "feed", seed=3, patients=2, documents=5, include_bad=False, scans=0)
    indexed = {d.patient_id for d in feed.documents if d.expected_status is Status.INDEXED and d.patient_id}
    assert indexed

    run = run_dag.run_dag("carnet_ingest", {"feed_url": str(tmp_path / "feed")}, retries=0)
    assert str(run.state) == "success"
    index = open_index(f"{url.scheme}://{url.netloc}", alias=alias)
    try:
        for patient in indexed:
            assert index.search(SearchQuery(patient_id=patient)).total > 0, patient
    finally:
        index.drop()  # type: ignore[attr-defined]
        index.close()
    assert not (Settings.from_env().data_dir / "index.db").exists()
