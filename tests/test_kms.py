"""Keys from a KMS: data keys made and opened by a real KMS-compatible server
(local-kms from ``scripts/kms.sh``), bound to their patient, cached briefly, shredded on
erasure; no key file; an unreachable KMS is a one-line error. Plus the key cache's bounds
and the wrapper choice, which need no server."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import select

from pipeline.crypto import EncryptedStore, open_encrypted_store, open_keyring
from pipeline.erasure import erase_patient
from pipeline.errors import BackendUnavailable, ConfigurationError
from pipeline.keywrap import (
    MASTER_KEY_FILE,
    KeyCache,
    KmsKeyWrapper,
    LocalKeyWrapper,
    encryption_context,
    open_key_wrapper,
)
from pipeline.quality import QualityGate
from pipeline.settings import Settings
from pipeline.state import tables
from pipeline.state.opening import open_state
from tests.conftest import SAMPLES, require_service

REPO = Path(__file__).resolve().parents[1]
P = "284057512345672"
OTHER = "192016900100212"
REPORT = "Compte rendu de biologie — Hémoglobine 13,5 g/dL — patient DUPONT Jeanne".encode()
# The credentials boto3 signs with; local-kms accepts any, AWS would check them.
TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "carnet-test",
    "AWS_SECRET_ACCESS_KEY": "carnet-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the key cache and the wrapper choice (no server) ---------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cached_keys_expire_after_their_ttl() -> None:
    clock = _Clock()
    cache = KeyCache(ttl_s=60, max_entries=10, clock=clock)
    cache.put("patient:a", b"wrapped-a", b"k" * 32)
    clock.now += 59.9
    assert cache.get("patient:a", b"wrapped-a") == b"k" * 32
    clock.now += 0.2
    assert cache.get("patient:a", b"wrapped-a") is None and len(cache) == 0


def test_the_cache_keeps_at_most_its_size_dropping_the_least_recently_used() -> None:
    cache = KeyCache(ttl_s=60, max_entries=2, clock=_Clock())
    cache.put("patient:a", b"wa", b"a" * 32)
    cache.put("patient:b", b"wb", b"b" * 32)
    assert cache.get("patient:a", b"wa") is not None  # a is now the most recent
    cache.put("patient:c", b"wc", b"c" * 32)
    assert len(cache) == 2
    assert cache.get("patient:b", b"wb") is None
    assert cache.get("patient:a", b"wa") is not None and cache.get("patient:c", b"wc") is not None


def test_a_cached_key_answers_only_for_its_own_label_and_wrapped_form() -> None:
    cache = KeyCache(ttl_s=60, max_entries=10, clock=_Clock())
    cache.put("patient:a", b"wa", b"a" * 32)
    assert cache.get("patient:b", b"wa") is None and cache.get("patient:a", b"other") is None
    cache.forget("patient:a")
    assert cache.get("patient:a", b"wa") is None


def test_a_zero_ttl_or_size_turns_the_cache_off() -> None:
    for cache in (KeyCache(ttl_s=0, max_entries=10), KeyCache(ttl_s=60, max_entries=0)):
        cache.put("patient:a", b"wa", b"a" * 32)
        assert len(cache) == 0


def test_the_encryption_context_names_the_key_without_the_ins() -> None:
    ctx = encryption_context(f"patient:{P}")
    assert ctx["carnet:key"] == "patient" and P not in "".join(ctx.values())
    assert ctx != encryption_context(f"patient:{OTHER}")


def test_settings_choose_the_wrapper(tmp_path: Path) -> None:
    local = open_key_wrapper(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalKeyWrapper) and (tmp_path / MASTER_KEY_FILE).exists()
    kms = open_key_wrapper(
        Settings(data_dir=tmp_path / "k", kms_key_id="alias/x", kms_endpoint_url="http://127.0.0.1:1")
    )
    assert isinstance(kms, KmsKeyWrapper) and not (tmp_path / "k").exists()
    master = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(ConfigurationError, match="choose one"):
        open_key_wrapper(Settings(data_dir=tmp_path, master_key=master, kms_key_id="alias/x"))


def test_kms_settings_from_the_environment(tmp_path: Path) -> None:
    s = Settings.from_env(
        {
            "CARNET_DATA_DIR": str(tmp_path),
            "CARNET_KMS_KEY_ID": "alias/carnet",
            "AWS_ENDPOINT_URL": "http://s3.example",
            "AWS_ENDPOINT_URL_KMS": "http://kms.example",
            "AWS_REGION": "eu-west-3",
            "CARNET_KMS_CACHE_TTL_S": "30",
            "CARNET_KMS_CACHE_SIZE": "500",
        }
    )
    assert (s.kms.key_id, s.kms.endpoint_url, s.kms.region) == (
        "alias/carnet",
        "http://kms.example",
        "eu-west-3",
    )
    assert s.s3.endpoint_url == "http://s3.example"  # S3's endpoint never becomes the KMS's
    assert (s.kms.cache_ttl_s, s.kms.cache_size) == (30.0, 500)
    with pytest.raises(ConfigurationError, match="CARNET_KMS_CACHE_SIZE"):
        Settings.from_env({"CARNET_KMS_CACHE_SIZE": "lots"})


# -- against a real KMS-compatible server ----------------------------------------------------------


@pytest.fixture(scope="module")
def kms_url() -> Iterator[str]:
    url = require_service(
        "KMS", os.environ.get("CARNET_TEST_KMS_URL", "http://127.0.0.1:4599"), "scripts/kms.sh start"
    )
    with pytest.MonkeyPatch.context() as mp:
        for name, value in TEST_CREDENTIALS.items():
            mp.setenv(name, os.environ.get(name, value))
        yield url


@pytest.fixture(scope="module")
def kms_key(kms_url: str) -> str:
    return os.environ.get("CARNET_TEST_KMS_KEY_ID", "alias/carnet-test")


@pytest.fixture
def kms_settings(tmp_path: Path, kms_url: str, kms_key: str) -> Settings:
    return Settings(data_dir=tmp_path / "carnet", kms_key_id=kms_key, kms_endpoint_url=kms_url)


def _kms_client(url: str) -> Any:
    return boto3.session.Session().client("kms", endpoint_url=url, region_name="us-east-1")


def _count(store: EncryptedStore, operation: str) -> list[str]:
    """Record each ``operation`` request the wrapper sends (a listener, not a stub)."""
    calls: list[str] = []
    client = store.keyring.wrapper._client  # type: ignore[attr-defined]
    client.meta.events.register(f"before-call.kms.{operation}", lambda **_: calls.append(operation))
    return calls


def _keyring_row(settings: Settings, query: Any) -> bytes:
    engine = open_state(settings)
    try:
        with engine.connect() as conn:
            return bytes(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


def _wrapped_patient_key(settings: Settings, patient_id: str) -> bytes:
    k = tables.patient_keys.c
    return _keyring_row(settings, select(k.wrapped).where(k.patient_id == patient_id))


def _key_files(root: Path) -> list[Path]:
    """Secrets written in clear in the data folder: the master key file, the pseudonyms'
    salt file of earlier versions."""
    return [p for p in root.rglob("*") if p.name in (MASTER_KEY_FILE, "quality-salt") or p.suffix == ".key"]


@pytest.mark.kms
def test_data_keys_are_generated_and_wrapped_by_the_kms(kms_settings: Settings, kms_url: str) -> None:
    store = open_encrypted_store(kms_settings)
    generated = _count(store, "GenerateDataKey")
    sha = store.put(REPORT)
    store.assign(sha, P)
    assert len(generated) == 2  # the object's own key, then the patient's key
    key = store.keyring.existing_patient_key(P)
    store.close()

    # The wrapped key in the keyring is a KMS ciphertext: the KMS itself opens it, with the
    # patient's context, to the very key the store used.
    wrapped = _wrapped_patient_key(kms_settings, P)
    answer = _kms_client(kms_url).decrypt(
        CiphertextBlob=wrapped, EncryptionContext=encryption_context(f"patient:{P}")
    )
    assert answer["Plaintext"] == key
    assert key is not None and key not in wrapped
    assert _key_files(kms_settings.data_dir) == []


@pytest.mark.kms
def test_the_encrypted_store_round_trips_through_the_kms(kms_settings: Settings) -> None:
    store = open_encrypted_store(kms_settings)
    shas = [store.put(REPORT + bytes([i])) for i in range(5)]
    for sha in shas:
        store.assign(sha, P)
    store.close()

    # A new process: an empty cache, so the patient's key must come back from the KMS —
    # once, then from the cache for every other object of the patient.
    again = open_encrypted_store(kms_settings)
    decrypts = _count(again, "Decrypt")
    assert [again.get(sha) for sha in shas] == [REPORT + bytes([i]) for i in range(5)]
    assert len(decrypts) == 1
    again.close()


@pytest.mark.kms
def test_the_quality_pseudonyms_key_is_kept_wrapped_by_the_kms(kms_settings: Settings, kms_url: str) -> None:
    gate = QualityGate(kms_settings)
    first = gate.pseudonym(P)
    # Another process (a second worker) gets the same pseudonyms from the keyring.
    assert QualityGate(kms_settings).pseudonym(P) == first != QualityGate(kms_settings).pseudonym(OTHER)
    assert _key_files(kms_settings.data_dir) == []
    m = tables.keyring_meta.c
    wrapped = _keyring_row(kms_settings, select(m.value).where(m.name == "named:quality-pseudonyms"))
    label = "named:quality-pseudonyms"
    answer = _kms_client(kms_url).decrypt(CiphertextBlob=wrapped, EncryptionContext=encryption_context(label))
    assert answer["Plaintext"] == gate._key  # the KMS alone opens it


@pytest.mark.kms
def test_a_wrapped_key_moved_to_another_patient_does_not_open(kms_settings: Settings) -> None:
    store = open_encrypted_store(kms_settings)
    mine = store.put(REPORT)
    theirs = store.put(b"another patient's report")
    store.assign(mine, P)
    store.assign(theirs, OTHER)
    store.close()
    # Someone with write access to the keyring gives P's row OTHER's wrapped key.
    stolen = _wrapped_patient_key(kms_settings, OTHER)
    engine = open_state(kms_settings)
    with engine.begin() as conn:
        conn.execute(
            tables.patient_keys.update().where(tables.patient_keys.c.patient_id == P).values(wrapped=stolen)
        )
    engine.dispose()

    again = open_encrypted_store(kms_settings)
    with pytest.raises(ConfigurationError, match="does not open with the KMS key"):
        again.get(mine)
    assert again.get(theirs) == b"another patient's report"
    again.close()


@pytest.mark.kms
def test_a_keyring_opens_only_with_its_own_kind_of_master_key(
    kms_settings: Settings,
    kms_url: str,
    tmp_path: Path,
) -> None:
    open_encrypted_store(kms_settings).close()
    created = _kms_client(kms_url).create_key(Description="carnet test: another key")
    other_key = created["KeyMetadata"]["KeyId"]
    with pytest.raises(ConfigurationError, match="does not open the keyring"):
        open_keyring(kms_settings, KmsKeyWrapper(other_key, endpoint_url=kms_url))
    with pytest.raises(ConfigurationError, match="wrapped by a kms master key"):
        open_keyring(kms_settings, LocalKeyWrapper(os.urandom(32)))

    local = Settings(data_dir=tmp_path / "local")
    open_keyring(local, LocalKeyWrapper(os.urandom(32))).close()
    with pytest.raises(ConfigurationError, match="wrapped by a local master key"):
        open_keyring(local, KmsKeyWrapper(other_key, endpoint_url=kms_url))


@pytest.mark.kms
def test_erasure_shreds_a_kms_wrapped_key(kms_settings: Settings) -> None:
    store = open_encrypted_store(kms_settings)
    sha = store.put(REPORT)
    store.assign(sha, P)
    keep = store.put(b"someone else's report")
    store.assign(keep, OTHER)
    wrapper = store.keyring.wrapper
    assert store.get(sha) == REPORT  # P's key is now in this process's cache
    cipher_sha = store.keyring.lookup(sha)[0]  # type: ignore[index]
    backup = store.base.get(cipher_sha)

    # The erasure runs through its own store (another process, as `carnet erase` would).
    receipt = erase_patient(kms_settings, P, actor="ops")
    assert receipt.key_destroyed and receipt.objects == 1
    # This process forgets P's key too once it destroys it itself (the erasure above
    # ran elsewhere: there, the TTL bounds how long any copy stays in memory).
    store.destroy_patient_key(P)
    assert wrapper._cache.get(f"patient:{P}", b"") is None  # type: ignore[attr-defined]
    assert all(label != f"patient:{P}" for label, _ in wrapper._cache._entries)  # type: ignore[attr-defined]
    store.close()

    again = open_encrypted_store(kms_settings)
    with pytest.raises(KeyError):
        again.get(sha)
    # A backup copy of the ciphertext put back in the store is unreadable too.
    again.base.put(backup)
    again.keyring.record(sha, cipher_sha, P, None)
    with pytest.raises(KeyError):
        again.get(sha)
    assert again.get(keep) == b"someone else's report"
    again.close()
    assert _key_files(kms_settings.data_dir) == []


@pytest.mark.kms
def test_a_kms_key_shredded_elsewhere_and_made_again_does_not_pass_for_the_old_one(
    kms_settings: Settings,
) -> None:
    """This process holds P's first key in its cache; another destroys it (no erasure) and
    gives P a new one. The same bytes filed here again are written under the new key, and
    what the first key encrypted is not read with either."""
    assert kms_settings.kms.cache_ttl_s > 0  # keys are cached (the default)
    store = open_encrypted_store(kms_settings)
    elsewhere = open_encrypted_store(kms_settings)
    try:
        (sha,) = store.put_many([(REPORT, P)])
        assert store.get(sha) == REPORT  # P's first key now cached here
        assert elsewhere.destroy_patient_key(P)
        elsewhere.put(b"a later report", owner=P)
        with pytest.raises(KeyError):
            store.get(sha)
        assert store.put_many([(REPORT, P)]) == [sha]
        assert store.get(sha) == REPORT and elsewhere.get(sha) == REPORT
    finally:
        elsewhere.close()
        store.close()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    full.pop("CARNET_MASTER_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=full,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.kms
def test_the_cli_ingests_and_searches_with_keys_from_the_kms(
    kms_url: str,
    kms_key: str,
    tmp_path: Path,
) -> None:
    data = tmp_path / "carnet"
    env = {"CARNET_DATA_DIR": str(data), "CARNET_KMS_KEY_ID": kms_key, "AWS_ENDPOINT_URL_KMS": kms_url}
    ingest = _cli(
        env, "ingest", str(SAMPLES / "hl7" / "oru_single.hl7"), "--report", str(tmp_path / "r.jsonl")
    )
    assert ingest.returncode == 0, ingest.stderr
    assert '"status": "indexed"' in (tmp_path / "r.jsonl").read_text()
    found = _cli(env, "search", "280017512345610", "--json")
    assert found.returncode == 0 and '"total": 1' in found.stdout
    assert not (data / MASTER_KEY_FILE).exists() and _key_files(data) == []
    assert "master key" not in ingest.stderr  # no warning about a missing local key


@pytest.mark.kms
@pytest.mark.parametrize("command", [["ingest", str(SAMPLES / "hl7" / "oru_single.hl7")], ["status"]])
def test_an_unreachable_kms_is_one_clear_line_from_the_cli(
    kms_key: str,
    tmp_path: Path,
    command: list[str],
) -> None:
    data = tmp_path / "carnet"
    data.mkdir()  # `status` refuses a data directory that does not exist before any key
    env = {
        "CARNET_DATA_DIR": str(data),
        "CARNET_KMS_KEY_ID": kms_key,
        "AWS_ENDPOINT_URL_KMS": f"http://127.0.0.1:{_free_port()}",
    }
    run = _cli(env, *command)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert lines[0].startswith(f"carnet {command[0]}: error: KMS unreachable at http://127.0.0.1:")
    assert not (data / MASTER_KEY_FILE).exists()


@pytest.mark.kms
def test_missing_aws_credentials_are_one_clear_line_from_the_cli(
    kms_url: str,
    kms_key: str,
    tmp_path: Path,
) -> None:
    env = {
        "CARNET_DATA_DIR": str(tmp_path / "carnet"),
        "CARNET_KMS_KEY_ID": kms_key,
        "AWS_ENDPOINT_URL_KMS": kms_url,
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        # Nowhere else to find credentials: no files, no instance metadata.
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    run = _cli(env, "ingest", str(SAMPLES / "hl7" / "oru_single.hl7"))
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip() == (
        f"carnet ingest: error: no AWS credentials for the KMS at {kms_url} (AWS_ACCESS_KEY_ID… or a profile)"
    )


@pytest.mark.kms
def test_an_install_moves_from_its_local_master_key_to_the_kms(
    kms_url: str,
    kms_key: str,
    tmp_path: Path,
) -> None:
    data = tmp_path / "carnet"
    local = Settings(data_dir=data)  # the embedded default: the install's master.key file
    store = open_encrypted_store(local)
    owned = store.put(REPORT)
    store.assign(owned, P)
    pending = store.put(b"raw input whose patient is not known yet")
    store.close()

    env = {"CARNET_DATA_DIR": str(data), "CARNET_KMS_KEY_ID": kms_key, "AWS_ENDPOINT_URL_KMS": kms_url}
    moved = _cli(env, "rewrap-keys")
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.startswith("re-wrapped 3 keys")  # the check key, P's key, the pending object's

    kms = Settings(data_dir=data, kms_key_id=kms_key, kms_endpoint_url=kms_url)
    again = open_encrypted_store(kms)
    assert again.get(owned) == REPORT
    assert again.get(pending) == b"raw input whose patient is not known yet"
    again.close()
    with pytest.raises(ConfigurationError, match="wrapped by a kms master key"):
        open_encrypted_store(local)
    twice = _cli(env, "rewrap-keys")
    assert twice.returncode == 1 and len(twice.stderr.strip().splitlines()) == 1, twice.stderr
    assert "wrapped by a kms master key" in twice.stderr


@pytest.mark.kms
def test_an_unknown_kms_key_is_a_configuration_error(kms_url: str, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "carnet", kms_key_id="alias/carnet-no-such-key", kms_endpoint_url=kms_url
    )
    with pytest.raises(ConfigurationError, match="NotFoundException"):
        open_encrypted_store(settings)
    unreachable = Settings(
        data_dir=tmp_path / "c2",
        kms_key_id="alias/carnet-test",
        kms_endpoint_url=f"http://127.0.0.1:{_free_port()}",
    )
    with pytest.raises(BackendUnavailable, match="KMS unreachable"):
        open_encrypted_store(unreachable)


class PrivateKms:
    """A second KMS server of this test's own, started and stopped by ``scripts/kms.sh``."""

    def __init__(self) -> None:
        self.env = {**os.environ, "CARNET_KMS_PORT": str(_free_port())}
        self.exports: dict[str, str] = {}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(REPO / "scripts" / "kms.sh"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def start(self) -> subprocess.CompletedProcess[str]:
        started = self.run("start")
        assert started.returncode == 0, started.stderr
        lines = started.stdout.splitlines()
        self.exports = dict(line.removeprefix("export ").split("=", 1) for line in lines)
        return started

    def wrapper(self) -> KmsKeyWrapper:
        return KmsKeyWrapper(
            self.exports["CARNET_TEST_KMS_KEY_ID"], endpoint_url=self.exports["CARNET_TEST_KMS_URL"]
        )


@pytest.fixture
def private_kms(kms_url: str) -> Iterator[PrivateKms]:
    server = PrivateKms()
    try:
        yield server
    finally:
        server.run("stop")
    assert server.run("status").returncode == 3


@pytest.mark.kms
def test_the_kms_script_is_idempotent_and_seeds_fresh_key_material_each_start(
    private_kms: PrivateKms,
) -> None:
    first = private_kms.start()
    assert private_kms.run("status").returncode == 0
    again = private_kms.run("start")  # already running: same server, same env
    assert again.returncode == 0 and again.stdout == first.stdout and "already running" in again.stderr
    key, wrapped = private_kms.wrapper().generate("object:x")
    assert private_kms.wrapper().unwrap(wrapped, "object:x") == key

    assert private_kms.run("stop").returncode == 0 and private_kms.run("status").returncode == 3
    private_kms.start()
    # Same key id and alias, new key material: what the last server wrapped is gone.
    with pytest.raises(ConfigurationError, match="does not open"):
        private_kms.wrapper().unwrap(wrapped, "object:x")


@pytest.mark.kms
def test_a_kms_lost_mid_run_stops_the_run_instead_of_rejecting_documents(
    private_kms: PrivateKms,
    tmp_path: Path,
) -> None:
    from pipeline.ingest import Pipeline, iter_source_inputs

    private_kms.start()
    settings = Settings(
        data_dir=tmp_path / "carnet",
        data_docs=False,
        kms_key_id=private_kms.exports["CARNET_TEST_KMS_KEY_ID"],
        kms_endpoint_url=private_kms.exports["CARNET_TEST_KMS_URL"],
    )
    first, second = iter_source_inputs(
        [str(SAMPLES / "hl7" / "oru_single.hl7"), str(SAMPLES / "cda" / "cr-bio.xml")],
        producer="labo",
        settings=settings,
    )
    # An infrastructure failure: the run (the Airflow task) fails and is retried; the
    # document is not turned into a rejection it does not deserve.
    with pytest.raises(BackendUnavailable, match="KMS unreachable"), Pipeline(settings) as pipe:
        assert [o.status.value for o in pipe.process(first)] == ["indexed"]
        pipe.flush()
        assert private_kms.run("stop").returncode == 0
        # Parsed and judged first, its bytes kept (under its patient's key, which the KMS
        # wraps) with the flush's, before anything names it: the flush is where it fails.
        pipe.process(second)
        pipe.flush()
    assert pipe.outcomes[0].source == first.source + "#1"
    assert "rejected" not in {o.status.value for o in pipe.outcomes}
