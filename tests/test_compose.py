"""``docker-compose.yml`` shares no disk between Carnet's services: none mounts a volume
(its replicas would share it), and every one reaches the state, the store, the index and
the master key through the stack's own PostgreSQL, MinIO, Elasticsearch and KMS, as the
settings read them. ``docker compose config`` validates the file where Compose is
installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from pipeline.settings import Settings

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def _carnet_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run Carnet's code (their environment names CARNET_* settings)."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if any(k.startswith("CARNET_") for k in svc.get("environment") or {})
    }


def test_the_carnet_services_are_the_airflow_ones_and_the_api(compose: dict[str, Any]) -> None:
    assert set(_carnet_services(compose)) == {
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-worker",
        "carnet-api",
    }


def test_no_carnet_service_mounts_a_volume(compose: dict[str, Any]) -> None:
    mounted = {name: svc["volumes"] for name, svc in _carnet_services(compose).items() if svc.get("volumes")}
    assert mounted == {}
    assert "carnet-data" not in (compose.get("volumes") or {})


def test_no_volume_is_shared_between_services(compose: dict[str, Any]) -> None:
    users: dict[str, list[str]] = {}
    for name, svc in compose["services"].items():
        for mount in svc.get("volumes") or ():
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount["source"]
            users.setdefault(source, []).append(name)
    assert {v: names for v, names in users.items() if len(names) > 1} == {}


@pytest.mark.parametrize("service", ["airflow-worker", "carnet-api", "airflow-init"])
def test_every_piece_of_state_is_on_a_service_of_the_stack(compose: dict[str, Any], service: str) -> None:
    env = {k: str(v) for k, v in compose["services"][service]["environment"].items()}
    settings = Settings.from_env(env)
    services = set(compose["services"])
    state = urlparse(settings.effective_state_url)
    assert state.scheme == "postgresql" and state.hostname in services
    assert urlparse(settings.effective_index_url).hostname == "elasticsearch"
    assert settings.effective_store_url.startswith("s3://")
    assert urlparse(settings.s3.endpoint_url or "").hostname in services
    assert settings.kms.key_id and not settings.kms.master_key
    assert urlparse(settings.kms.endpoint_url or "").hostname in services
    assert not settings.effective_feed_url.startswith(str(settings.data_dir))
    # The state database the URL names is the one the cluster is created with.
    init = compose["configs"]["carnet-state-db"]["content"]
    assert f"CREATE DATABASE {state.path.lstrip('/')} OWNER {state.username}" in init
    assert f"ROLE {state.username} LOGIN PASSWORD '{state.password}'" in init
    # The KMS serves the key alias the services use.
    assert f"AliasName: {settings.kms.key_id}" in compose["configs"]["kms-seed"]["content"]


def test_the_schema_is_migrated_before_workers_and_api_start(compose: dict[str, Any]) -> None:
    assert "carnet db upgrade" in " ".join(compose["services"]["airflow-init"]["command"])
    for name in ("airflow-worker", "carnet-api"):
        after = compose["services"][name]["depends_on"]["airflow-init"]
        assert after == {"condition": "service_completed_successfully"}


def test_docker_compose_validates_the_file() -> None:
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode != 0
    ):
        pytest.skip("docker compose is not installed")
    done = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
