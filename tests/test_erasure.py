"""Erasure (``carnet erase``): afterwards nothing of the patient is findable or readable —
index, encrypted store, quarantine, access rules, key — and the audit commands."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline import cli_access
from pipeline.access import AccessRules, Principal, Role, access_db_path
from pipeline.audit import AuditLog, audit_log_path
from pipeline.crypto import MAGIC, NONCE_BYTES, EncryptedStore, open_encrypted_store
from pipeline.index import DocumentIndex, open_index
from pipeline.model import DocClass, Problem, Reason, SearchQuery
from pipeline.settings import Settings
from pipeline.store import QuarantineRecord
from tests.index.conftest import make_record

A = "185057800608491"
B = "279126902300169"
NOW = dt.datetime(2026, 11, 29, 10, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", pytest.param("elasticsearch", marks=pytest.mark.elasticsearch)])
def settings(request: pytest.FixtureRequest, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    env = {"CARNET_DATA_DIR": str(tmp_path / "carnet"),
           "CARNET_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
    if request.param == "elasticsearch":
        from tests.conftest import require_service

        env["CARNET_INDEX_URL"] = require_service(
            "Elasticsearch", os.environ.get("CARNET_TEST_ES_URL", "http://127.0.0.1:9200"),
            "scripts/elasticsearch.sh start")
        env["CARNET_ES_ALIAS"] = f"carnet-test-erase-{uuid4().hex[:8]}"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings.from_env()
    yield s
    if request.param == "elasticsearch":
        index = open_index(s.effective_index_url, alias=s.es_index_alias)
        drop = getattr(index, "drop", None)
        if callable(drop):
            drop()
        index.close()


def _file(index: DocumentIndex, store: EncryptedStore, patient: str, doc_id: str, raw: bytes,
          doc_class: DocClass = DocClass.BIOLOGY) -> str:
    sha = store.put(raw)
    store.assign(sha, patient)
    record = make_record(doc_id, patient_id=patient, doc_class=doc_class, text=raw.decode())
    assert index.upsert([record.model_copy(update={"content_sha256": sha})]) == []
    return sha


def _quarantine(store: EncryptedStore, patient: str | None, raw: bytes, source: str) -> QuarantineRecord:
    sha = store.put(raw)  # rejected before or after identification: never assigned
    record = QuarantineRecord(
        quarantine_id=QuarantineRecord.make_id("labo", source, sha), source=source, producer="labo",
        content_sha256=sha, patient_id=patient,
        reasons=(Problem(code=Reason.MISSING_DATE, message="no date"),), first_quarantined_at=NOW)
    store.put_quarantine(record)
    return record


def test_erase_removes_everything_of_the_patient_and_only_theirs(
    settings: Settings, capsys: pytest.CaptureFixture[str],
) -> None:
    index = open_index(settings.effective_index_url, alias=settings.es_index_alias)
    store = open_encrypted_store(settings)
    rules = AccessRules(access_db_path(settings.data_dir))
    try:
        a1 = _file(index, store, A, "a-bio", "Hémoglobine de A: 13,5 g/dL".encode())
        a2 = _file(index, store, A, "a-img", b"Radio thorax de A", DocClass.IMAGING)
        a3 = _file(index, store, A, "a-bio-v2", "Hémoglobine de A (corrigé)".encode())
        index.supersede(A, "a-bio", "a-bio-v2")  # superseded versions go too
        qa = _quarantine(store, A, b"compte rendu de A sans date", "a-undated.hl7")
        b1 = _file(index, store, B, "b-bio", "Hémoglobine de B: 12,1 g/dL".encode())
        qb = _quarantine(store, B, b"compte rendu de B sans date", "b-undated.hl7")
        q_unknown = _quarantine(store, None, b"illisible", "unknown.pdf")
        rules.authorise(A, "10101234567", NOW)
        rules.delegate(A, "aidant-1", None, NOW)
        rules.authorise(B, "10101234567", NOW)
        objects_dir = settings.data_dir / "store" / "objects"
        backup = {p: p.read_bytes() for p in objects_dir.rglob("*") if p.is_file()}
        assert len(backup) == 7
        a_copies = {}  # plaintext hash -> the backup copy of its ciphertext
        for sha in (a1, a2, a3, qa.content_sha256):
            cipher_sha = store.keyring.lookup(sha)[0]  # type: ignore[index]
            a_copies[sha] = backup[objects_dir / cipher_sha[:2] / cipher_sha[2:]]
    finally:
        rules.close()
        store.close()
        index.close()

    assert cli_access.main(["erase", A]) == 0
    receipt = json.loads(capsys.readouterr().out)
    assert receipt["patient_id"] == A and receipt["doc_ids"] == ["a-bio", "a-bio-v2", "a-img"]
    assert receipt["documents"] == 3 and receipt["objects"] == 4 and receipt["quarantine_records"] == 1
    assert receipt["access_rules"] == 2 and receipt["key_destroyed"] is True
    assert receipt["actor"].startswith("cli:")

    index = open_index(settings.effective_index_url, alias=settings.es_index_alias)
    store = open_encrypted_store(settings)
    rules = AccessRules(access_db_path(settings.data_dir))
    try:
        # Index: nothing findable, by id, by search or by listing.
        for doc_id in ("a-bio", "a-img", "a-bio-v2"):
            assert index.get(A, doc_id) is None
        assert index.search(SearchQuery(patient_id=A, include_superseded=True)).total == 0
        assert index.search(SearchQuery(patient_id=A, text="hémoglobine")).total == 0
        assert all(p != A for p, _, _ in index.list_ids())
        # Store: the objects and the quarantine record are gone; B's and the unknown one stay.
        for sha in (a1, a2, qa.content_sha256):
            assert not store.exists(sha)
            with pytest.raises(KeyError):
                store.get(sha)
        assert store.get(b1) == "Hémoglobine de B: 12,1 g/dL".encode()
        assert [q.quarantine_id for q in store.list_quarantine()] == sorted(
            [qb.quarantine_id, q_unknown.quarantine_id])
        assert store.get(qb.content_sha256) == b"compte rendu de B sans date"
        assert store.objects_of(A) == [] and store.keyring.existing_patient_key(A) is None
        # Rules: no grant or delegation survives.
        pro = Principal(role=Role.PROFESSIONAL, subject="10101234567")
        assert rules.decide(pro, A, NOW).via == "not_authorised"
        assert rules.delegations(A) == [] and rules.decide(pro, B, NOW).allowed
        # A backup copy of the store: A's ciphertexts are off disk, and no key left in the
        # keyring opens the copies (A's key is gone; B's is B's).
        remaining = {p for p in objects_dir.rglob("*") if p.is_file()}
        assert len(remaining) == 3 and not set(a_copies.values()) & {p.read_bytes() for p in remaining}
        b_key = store.keyring.existing_patient_key(B)
        assert b_key is not None
        for sha, sealed in a_copies.items():
            assert sealed.startswith(MAGIC) and b"de A" not in sealed
            body = sealed[len(MAGIC):]
            with pytest.raises(InvalidTag):
                AESGCM(b_key).decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], sha.encode())
    finally:
        rules.close()
        store.close()
        index.close()

    # The erasure is audited; the chain holds.
    log = AuditLog(audit_log_path(settings.data_dir))
    assert [(e.action, e.doc_ids) for e in log.for_patient(A)] == [
        ("erase", ("a-bio", "a-bio-v2", "a-img"))]
    assert log.verify().ok


def test_erase_rejects_an_invalid_patient_id(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_access.main(["erase", "185057800608400"]) == 2
    assert "erase: error" in capsys.readouterr().err


def test_audit_verify_and_history_commands(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    log = AuditLog(audit_log_path(settings.data_dir))
    for n in range(4):
        log.append(actor="10101234567", actor_name="Dr Test", role="professional", action="read",
                   patient_id=A, doc_ids=[f"d{n}"], reason="authorisation")
    log.append(actor=A, role="patient", action="search", patient_id=B)
    assert cli_access.main(["audit", "verify"]) == 0
    assert "intact: 5 entries" in capsys.readouterr().out

    assert cli_access.main(["audit", "history", A, "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["doc_ids"] for x in lines] == [["d0"], ["d1"], ["d2"], ["d3"]]
    assert "hash" not in lines[0] and lines[0]["actor_name"] == "Dr Test"

    entries = log.path.read_text().splitlines()
    forged = json.loads(entries[1])
    forged["doc_ids"] = []  # someone hides what was read
    log.path.write_text("\n".join([entries[0], json.dumps(forged), *entries[2:]]) + "\n")
    assert cli_access.main(["audit", "verify"]) == 1
    assert "TAMPERED: entry 2: entry modified" in capsys.readouterr().out

    log.path.write_text("\n".join([entries[0], *entries[2:]]) + "\n")  # an entry removed
    assert cli_access.main(["audit", "verify"]) == 1
    assert "TAMPERED: entry 2" in capsys.readouterr().out
