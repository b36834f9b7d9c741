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
from sqlalchemy import select

from pipeline import cli_access
from pipeline.access import AccessRules, Principal, Role
from pipeline.audit import open_audit_log
from pipeline.crypto import (
    MAGIC,
    NONCE_BYTES,
    EncryptedStore,
    open_encrypted_store,
    patient_ref,
    patient_ref_key,
)
from pipeline.index import DocumentIndex, open_index
from pipeline.model import DocClass, Problem, Reason, SearchQuery
from pipeline.settings import Settings
from pipeline.state import open_engine, tables
from pipeline.store import QuarantineRecord, sha256_hex
from tests.index.conftest import make_record
from tests.test_access import chain_lines, write_chain

A = "185057800608491"
B = "279126902300169"
NOW = dt.datetime(2026, 11, 29, 10, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", pytest.param("elasticsearch", marks=pytest.mark.elasticsearch)])
def settings(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    env = {
        "CARNET_DATA_DIR": str(tmp_path / "carnet"),
        "CARNET_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    if request.param == "elasticsearch":
        from tests.conftest import require_service

        env["CARNET_INDEX_URL"] = require_service(
            "Elasticsearch",
            os.environ.get("CARNET_TEST_ES_URL", "http://127.0.0.1:9200"),
            "scripts/elasticsearch.sh start",
        )
        env["CARNET_ES_ALIAS"] = f"carnet-test-erase-{uuid4().hex[:8]}"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    s = Settings.from_env()
    yield s
    if request.param == "elasticsearch":
        index = open_index(s.effective_index_url, alias=s.index.es_alias)
        drop = getattr(index, "drop", None)
        if callable(drop):
            drop()
        index.close()


def _file(
    index: DocumentIndex,
    store: EncryptedStore,
    patient: str,
    doc_id: str,
    raw: bytes,
    doc_class: DocClass = DocClass.BIOLOGY,
) -> str:
    sha = store.put(raw)
    store.assign(sha, patient)
    record = make_record(doc_id, patient_id=patient, doc_class=doc_class, text=raw.decode())
    assert index.upsert([record.model_copy(update={"content_sha256": sha})]) == []
    return sha


def _quarantine(store: EncryptedStore, patient: str | None, raw: bytes, source: str) -> QuarantineRecord:
    sha = store.put(raw)  # rejected before or after identification: never assigned
    record = QuarantineRecord(
        quarantine_id=QuarantineRecord.make_id("labo", source, sha),
        source=source,
        producer="labo",
        content_sha256=sha,
        patient_id=patient,
        reasons=(Problem(code=Reason.MISSING_DATE, message="no date"),),
        first_quarantined_at=NOW,
    )
    store.put_quarantine(record)
    return record


def test_erase_removes_everything_of_the_patient_and_only_theirs(
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    index = open_index(settings.effective_index_url, alias=settings.index.es_alias)
    store = open_encrypted_store(settings)
    rules = AccessRules(settings)
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
    assert receipt["access_rules"] == 2 and receipt["key_destroyed"] is True and receipt["account_closed"]
    assert receipt["audit_head"]["seq"] == receipt["audit_seq"]  # anchored outside the log
    assert receipt["actor"].startswith("cli:")

    index = open_index(settings.effective_index_url, alias=settings.index.es_alias)
    store = open_encrypted_store(settings)
    rules = AccessRules(settings)
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
            [qb.quarantine_id, q_unknown.quarantine_id]
        )
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
            body = sealed[len(MAGIC) :]
            with pytest.raises(InvalidTag):
                AESGCM(b_key).decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], sha.encode())
    finally:
        rules.close()
        store.close()
        index.close()

    # The erasure is audited; the chain holds.
    log = open_audit_log(settings)
    assert [(e.action, e.doc_ids) for e in log.for_patient(A)] == [("erase", ("a-bio", "a-bio-v2", "a-img"))]
    assert log.verify().ok


def test_erase_rejects_an_invalid_patient_id(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_access.main(["erase", "185057800608400"]) == 2
    assert "erase: error" in capsys.readouterr().err


def test_audit_verify_and_history_commands(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    log = open_audit_log(settings)
    for n in range(4):
        log.append(
            actor="10101234567",
            actor_name="Dr Test",
            role="professional",
            action="read",
            patient_id=A,
            doc_ids=[f"d{n}"],
            reason="authorisation",
        )
    log.append(actor=A, role="patient", action="search", patient_id=B)
    assert cli_access.main(["audit", "verify"]) == 0
    assert "intact: 5 entries" in capsys.readouterr().out

    assert cli_access.main(["audit", "history", A, "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["doc_ids"] for x in lines] == [["d0"], ["d1"], ["d2"], ["d3"]]
    assert "hash" not in lines[0] and lines[0]["actor_name"] == "Dr Test"

    engine = open_engine(settings)
    entries = chain_lines(engine)
    forged = json.loads(entries[1])
    forged["doc_ids"] = []  # someone hides what was read
    write_chain(engine, [entries[0], json.dumps(forged), *entries[2:]])
    assert cli_access.main(["audit", "verify"]) == 1
    assert "TAMPERED: entry 2: entry modified" in capsys.readouterr().out

    write_chain(engine, [entries[0], *entries[2:]])  # an entry removed
    engine.dispose()
    log.close()
    assert cli_access.main(["audit", "verify"]) == 1
    assert "TAMPERED: entry 2" in capsys.readouterr().out


# -- what erasure must leave nowhere: index files, ledger, quarantine; and the closed account --


def _oru(
    ins: str, control_id: str, *, surname: str, words: str, printed: str = "", birth: str | None = None
) -> bytes:
    """One ORU^R01 message for ``ins`` (structured, with a birth date and sex that agree with
    it), with ``printed`` text in an NTE."""
    birth = birth or f"19{ins[1:5]}12"
    segments = [
        f"MSH|^~\\&|SIL-LABO|LABO EXEMPLE^690000123^FINESS|CARNET|CARNET|20240312083000||ORU^R01^ORU_R01"
        f"|{control_id}|P|2.5|||||FRA|UNICODE UTF-8",
        f"PID|1||{ins}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS||{surname}^Camille||{birth}"
        f"|{'M' if ins[0] == '1' else 'F'}",
        f"ORC|RE|CMD-{control_id}|DOS-{control_id}",
        f"OBR|1|CMD-{control_id}|DOS-{control_id}|58410-2^Numération formule sanguine^LN|||20240312083000",
        "OBX|1|NM|718-7^Hémoglobine^LN||13.5|g/dL^g/dL^UCUM|12.0-16.0|N|||F|||20240312083000",
        f"NTE|1||Patiente {surname}. {words} {printed}",
    ]
    return ("\r".join(segments) + "\r").encode()


C = "160022A12345646"
A_SURNAME, A_WORDS = "ZYGOMORPHESQUE", "xanthogranulomateuses quintessentiellement"


def _index_bytes(settings: Settings) -> bytes:
    files = sorted(settings.data_dir.glob("index.db*"))
    return b"".join(p.read_bytes() for p in files)


def test_erasure_leaves_no_byte_of_the_patient_in_the_index_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.analysis import analyze
    from pipeline.ingest import ingest_sources

    monkeypatch.setenv("CARNET_DATA_DIR", str(tmp_path / "carnet"))
    monkeypatch.setenv("CARNET_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    settings = Settings.from_env()
    feed = tmp_path / "feed" / "labo"
    feed.mkdir(parents=True)
    for n in range(3):  # several flushes: several FTS5 segments, as in a real index
        (feed / f"a{n}.hl7").write_bytes(_oru(A, f"A{n}", surname=A_SURNAME, words=f"{A_WORDS} {n}"))
        ingest_sources([str(feed / f"a{n}.hl7")], settings)
    (feed / "b.hl7").write_bytes(_oru(B, "B1", surname="BERNADOTTE", words="hépatosplénomégalie"))
    ingest_sources([str(feed / "b.hl7")], settings)
    markers = [
        A.encode(),
        f"p{A.lower()}".encode(),
        A_SURNAME.encode(),
        *{t.encode() for t in analyze(f"{A_SURNAME} {A_WORDS}")},
    ]
    before = _index_bytes(settings)
    assert all(m in before for m in markers)  # the grep can see them: the test can fail

    assert cli_access.main(["erase", A]) == 0
    capsys.readouterr()
    after = _index_bytes(settings)
    assert [m for m in markers if m in after] == []
    assert b"BERNADOTTE" in after and B.encode() in after  # others are untouched
    index = open_index(settings.effective_index_url)
    try:
        assert index.search(SearchQuery(patient_id=B, text="hépatosplénomégalie")).total == 1
        assert index.search(SearchQuery(patient_id=B, text="bernad")).total == 1  # prefixes still expand
    finally:
        index.close()


@pytest.mark.elasticsearch
def test_erasure_expunges_deleted_documents_from_the_elasticsearch_shard(tmp_path: Path) -> None:
    from tests.conftest import require_service

    url = require_service(
        "Elasticsearch",
        os.environ.get("CARNET_TEST_ES_URL", "http://127.0.0.1:9200"),
        "scripts/elasticsearch.sh start",
    )
    index = open_index(url, alias=f"carnet-test-expunge-{uuid4().hex[:8]}")
    try:
        records = [make_record(f"a{n}", patient_id=A, text=f"{A_SURNAME} {A_WORDS}") for n in range(5)]
        records.append(make_record("b1", patient_id=B, text="hépatosplénomégalie"))
        assert index.upsert(records) == []
        es = index.client  # type: ignore[attr-defined]
        es.indices.flush(index=index.alias)  # segments on disk, as after any real load
        assert sorted(index.delete_patient(A)) == [f"a{n}" for n in range(5)]
        stats = es.indices.stats(index=index.alias, metric="docs")["_all"]["primaries"]["docs"]
        assert stats == {
            "count": 1,
            "deleted": 0,
            **{k: v for k, v in stats.items() if k not in ("count", "deleted")},
        }
        found = es.search(index=index.alias, query={"match": {"body_tokens": A_SURNAME.lower()}})
        assert found["hits"]["total"]["value"] == 0
    finally:
        index.drop()  # type: ignore[attr-defined]
        index.close()


def test_quarantined_documents_naming_the_patient_in_any_identifier_are_erased(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.crypto import open_encrypted_store
    from pipeline.ingest import ingest_sources

    feed = settings.data_dir.parent / "feed" / "labo"
    feed.mkdir(parents=True)
    # Structured A, another INS printed; structured C, A printed: both identity_conflict.
    (feed / "conflict-1.hl7").write_bytes(
        _oru(A, "Q1", surname=A_SURNAME, words="contrôle", printed=f"INS : {C}")
    )
    (feed / "conflict-2.hl7").write_bytes(
        _oru(C, "Q2", surname="AUTRE", words="contrôle", printed=f"INS : {A}")
    )
    (feed / "unrelated.hl7").write_bytes(
        _oru(C, "Q3", surname="AUTRE", words="contrôle", printed=f"INS : {B}")
    )
    summary = ingest_sources([str(feed)], settings)
    assert [o.reasons[0].code for o in summary.outcomes] == [Reason.IDENTITY_CONFLICT] * 3
    store = open_encrypted_store(settings)
    try:
        quarantined = {q.source.rsplit("/", 1)[-1].removesuffix("#1"): q for q in store.list_quarantine()}
        assert all(q.patient_id is None for q in quarantined.values())
        raw = {name: store.get(q.content_sha256) for name, q in quarantined.items()}
        # One kept before quarantine records named anyone: found by reading its bytes again.
        legacy = _quarantine(
            store, None, _oru(B, "Q4", surname="X", words="y", printed=f"NIR {A}"), "legacy.hl7"
        )
        for path in (settings.data_dir / "store" / "quarantine").glob("*.json"):
            assert A.encode() not in path.read_bytes()  # keyed hashes, not the INS
    finally:
        store.close()

    assert cli_access.main(["erase", A]) == 0
    receipt = json.loads(capsys.readouterr().out)
    assert receipt["quarantine_records"] == 3 and receipt["objects"] == 3
    store = open_encrypted_store(settings)
    try:
        left = [q.source.rsplit("/", 1)[-1] for q in store.list_quarantine()]
        assert left == ["unrelated.hl7#1"]
        for name in ("conflict-1.hl7", "conflict-2.hl7"):
            with pytest.raises(KeyError):
                store.get(quarantined[name].content_sha256)
        with pytest.raises(KeyError):
            store.get(legacy.content_sha256)
        assert store.get(quarantined["unrelated.hl7"].content_sha256) == raw["unrelated.hl7"]
    finally:
        store.close()
    import sqlite3

    with sqlite3.connect(settings.data_dir / "state.db") as conn:
        lines = [r[0] for r in conn.execute("SELECT source || line FROM outcomes")]
    assert len(lines) == 3 and sum("conflict-" in x for x in lines) == 0
    assert sum("[erased]" in x for x in lines) == 2


def _batch(root: Path, name: str, files: dict[str, bytes]) -> str:
    folder = root / "labo" / name
    folder.mkdir(parents=True)
    for file, data in files.items():
        (folder / file).write_bytes(data)
    (folder / "_READY").write_text("")
    return f"labo/{name}"


def test_a_closed_account_refuses_new_documents_until_an_operator_reopens_it(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.ingest import process_batch

    feed = settings.data_dir.parent / "feed"
    first = process_batch(
        settings, str(feed), _batch(feed, "b1", {"a.hl7": _oru(A, "A1", surname="X", words="ferritine")})
    )
    assert first.by_status == {"indexed": 1}
    rules = AccessRules(settings)
    try:  # the identity traits of the document gave the day the INS does not carry
        assert rules.birth_date(A, NOW.date()) == dt.date(1985, 5, 12)
    finally:
        rules.close()
    assert cli_access.main(["erase", A]) == 0
    capsys.readouterr()

    key = _batch(
        feed,
        "b2",
        {
            "a.hl7": _oru(A, "A2", surname="X", words="ferritine"),
            "b.hl7": _oru(B, "B2", surname="Y", words="ferritine"),
        },
    )
    summary = process_batch(settings, str(feed), key)
    assert summary.by_status == {"rejected": 1, "indexed": 1}
    assert summary.rejected_by_reason == {"account_closed": 1}
    report = json.loads((feed / key / "_report.json").read_text())
    refused = [f for f in report["files"] if f["status"] == "rejected"]
    assert [r["code"] for r in refused[0]["reasons"]] == ["account_closed"]
    assert "account is closed" in refused[0]["reasons"][0]["detail"]
    assert "compte du patient est clos" in refused[0]["reasons"][0]["message"]
    ack = (feed / key / "_ack" / "A2.hl7").read_text()
    assert "MSA|AR|A2|" in ack and "account_closed" in ack
    for path in (settings.data_dir / "store" / "quarantine").glob("*"):
        assert A.encode() not in path.read_bytes()  # the refusal holds no INS
    rules = AccessRules(settings)
    try:  # nor does the tombstone: a keyed hash
        closures = rules._rows(select(tables.closures.c.patient_ref, tables.closures.c.reason))
        assert closures == [(patient_ref(patient_ref_key(settings), A), "account_closed")]
    finally:
        rules.close()

    assert cli_access.main(["account", "status", A]) == 0
    assert "account_closed" in capsys.readouterr().out
    assert cli_access.main(["account", "reopen", A, "--why", "the patient asked"]) == 0
    assert "reopened" in capsys.readouterr().out
    again = process_batch(
        settings, str(feed), _batch(feed, "b3", {"a.hl7": _oru(A, "A3", surname="X", words="ferritine")})
    )
    assert again.by_status == {"indexed": 1}

    # An opposition refuses documents the same way, with its own reason, until reopened.
    assert cli_access.main(["account", "oppose", B]) == 0
    opposed = process_batch(
        settings, str(feed), _batch(feed, "b4", {"b.hl7": _oru(B, "B4", surname="Y", words="ferritine")})
    )
    assert opposed.rejected_by_reason == {"opposition": 1}
    assert "MSA|AR|B4|" in (feed / "labo" / "b4" / "_ack" / "B4.hl7").read_text()
    assert cli_access.main(["account", "reopen", B]) == 0
    actions = [e.action for e in open_audit_log(settings).for_patient(B)]
    assert actions == ["account_oppose", "account_reopen"]
    assert cli_access.main(["account", "status", "185057800608400"]) == 2


def test_an_input_filed_again_after_a_bare_shredding_is_kept_readable_then_erased(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A's key destroyed on its own (crypto-shredding, no erasure); the same file comes
    again: it ends in one state, its bytes kept and readable under A's new key (the copy
    under the destroyed key goes), and an erasure then removes them with the rest."""
    from pipeline.ingest import process_batch

    feed = settings.data_dir.parent / "feed"
    objects_dir = settings.data_dir / "store" / "objects"
    message = _oru(A, "A1", surname="X", words="ferritine")
    first = process_batch(settings, str(feed), _batch(feed, "b1", {"a.hl7": message}))
    assert first.by_status == {"indexed": 1}
    files = len([p for p in objects_dir.rglob("*") if p.is_file()])
    store = open_encrypted_store(settings)
    try:
        objects = store.objects_of(A)  # what the first batch kept under A's key
        assert objects and all(store.exists(sha) for sha in objects)
        assert store.destroy_patient_key(A)
        assert not any(store.exists(sha) for sha in objects)
    finally:
        store.close()

    again = process_batch(settings, str(feed), _batch(feed, "b2", {"a.hl7": message}))
    assert again.by_status == {"duplicate": 1}  # the index holds it: one state
    assert len([p for p in objects_dir.rglob("*") if p.is_file()]) == files
    store = open_encrypted_store(settings)
    try:
        assert store.objects_of(A) == objects
        assert all(store.get(sha).startswith(b"MSH|") for sha in objects)
    finally:
        store.close()

    assert cli_access.main(["erase", A]) == 0
    assert json.loads(capsys.readouterr().out)["objects"] == len(objects)
    store = open_encrypted_store(settings)
    try:
        assert store.objects_of(A) == [] and not any(store.exists(sha) for sha in objects)
        assert len([p for p in objects_dir.rglob("*") if p.is_file()]) == files - len(objects)
    finally:
        store.close()


# -- raw inputs that are not their document's own bytes: an HL7 file, a batch of patients --

FR_SAMPLES = Path(__file__).parent / "samples" / "hl7" / "fr"


def _readable(store: EncryptedStore) -> dict[str, bytes]:
    """Every object the store still opens, by hash."""
    readable = {}
    for sha in store.iter_hashes():
        try:
            readable[sha] = store.get(sha)
        except KeyError:
            continue
    return readable


def test_an_hl7_message_with_an_embedded_cda_leaves_neither_its_document_nor_its_file(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """The message's document is kept apart from the file it came in (the message's bytes,
    the embedded CDA read from them); erasure takes both: the file used to stay, under a key
    of its own and no owner, with the INS, the name and the results readable."""
    from pipeline.ingest import ingest_sources

    ins = "277064410905255"
    raw = (FR_SAMPLES / "01_mdm_t02_cda.hl7").read_bytes()
    cda = raw.split(b"^Base64^", 1)[1][:60]  # the embedded document, as it travels
    summary = ingest_sources([str(FR_SAMPLES / "01_mdm_t02_cda.hl7")], settings)
    assert [(o.status.value, o.patient_id) for o in summary.outcomes] == [("indexed", ins)]
    content_sha = summary.outcomes[0].content_sha256
    assert content_sha is not None and content_sha != sha256_hex(raw)  # apart from the file
    store = open_encrypted_store(settings)
    try:
        assert store.owner_of(sha256_hex(raw)) == ins  # under the patient's key
        kept = _readable(store)
        assert {sha256_hex(raw), content_sha} <= set(kept) and cda in kept[sha256_hex(raw)]
    finally:
        store.close()

    assert cli_access.main(["erase", ins]) == 0
    assert json.loads(capsys.readouterr().out)["objects"] == 2
    store = open_encrypted_store(settings)
    try:
        for sha in (sha256_hex(raw), content_sha):
            with pytest.raises(KeyError):
                store.get(sha)
        left = _readable(store)
        assert [s for s, data in left.items() if ins.encode() in data or b"ROUX" in data or cda in data] == []
        assert store.objects_of(ins) == [] and store.linked_to(ins) == []
    finally:
        store.close()


def _keys_left(store: EncryptedStore) -> list[bytes]:
    """Every key the keyring still holds: the patients' and the objects' own."""
    ring = store.keyring
    with ring._engine.connect() as conn:
        patients = [str(p) for (p,) in conn.execute(select(tables.patient_keys.c.patient_id))]
        own = [
            (str(sha), bytes(w))
            for sha, w in conn.execute(
                select(tables.keyring_objects.c.sha256, tables.keyring_objects.c.wrapped_key).where(
                    tables.keyring_objects.c.wrapped_key.is_not(None)
                )
            )
        ]
    return [k for p in patients if (k := ring.existing_patient_key(p)) is not None] + [
        ring.object_key(sha, wrapped) for sha, wrapped in own
    ]


def _opened_by_any(keys: list[bytes], sha: str, sealed: bytes) -> bool:
    """Whether one of ``keys`` decrypts a copy of the ciphertext of the object ``sha``."""
    body = sealed[len(MAGIC) :]
    for key in keys:
        try:
            AESGCM(key).decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], sha.encode())
        except InvalidTag:
            continue
        return True
    return False


@pytest.mark.parametrize("erased", ["first", "second"])
def test_erasing_one_patient_of_a_batch_shreds_the_file_and_keeps_the_others_documents(
    settings: Settings, capsys: pytest.CaptureFixture[str], erased: str
) -> None:
    """A batch file of two patients' messages is kept under a key of its own, not under
    the first one named's: the erasure of either one leaves the file unreadable, its
    backup copies included (no key left opens them: under the first patient's key, they
    would open as long as that patient is not erased), and their message gone; the
    other's document, kept apart under their own key, stays readable and searchable."""
    from pipeline.ingest import ingest_sources

    feed = settings.data_dir.parent / "feed" / "labo"
    feed.mkdir(parents=True)
    batch = _oru(A, "A1", surname=A_SURNAME, words=A_WORDS) + _oru(
        B, "B1", surname="BERNADOTTE", words="hépatosplénomégalie"
    )
    (feed / "batch.hl7").write_bytes(batch)
    summary = ingest_sources([str(feed / "batch.hl7")], settings)
    assert [(o.status.value, o.patient_id) for o in summary.outcomes] == [("indexed", A), ("indexed", B)]
    content = {o.patient_id: o.content_sha256 for o in summary.outcomes}
    gone, kept = (A, B) if erased == "first" else (B, A)
    gone_marker = (A_SURNAME if gone == A else "BERNADOTTE").encode()
    objects_dir = settings.data_dir / "store" / "objects"
    store = open_encrypted_store(settings)
    try:
        assert store.owner_of(sha256_hex(batch)) is None  # a key of its own
        assert store.linked_to(A) == store.linked_to(B) == [sha256_hex(batch)]
        cipher = store.keyring.lookup(sha256_hex(batch))[0]  # type: ignore[index]
        backup = (objects_dir / cipher[:2] / cipher[2:]).read_bytes()  # a backup copy of it
        assert _opened_by_any(_keys_left(store), sha256_hex(batch), backup)
    finally:
        store.close()

    assert cli_access.main(["erase", gone]) == 0
    receipt = json.loads(capsys.readouterr().out)
    assert receipt["objects"] == 2 and receipt["shared_inputs"] == 1
    store = open_encrypted_store(settings)
    index = open_index(settings.effective_index_url, alias=settings.index.es_alias)
    try:
        for sha in (sha256_hex(batch), content[gone]):
            with pytest.raises(KeyError):
                store.get(sha)
        assert not _opened_by_any(_keys_left(store), sha256_hex(batch), backup)
        left = _readable(store)
        assert [s for s, data in left.items() if gone.encode() in data or gone_marker in data] == []
        assert set(left) == {content[kept]} and kept.encode() in left[content[kept]]
        words = "xanthogranulomateuses" if kept == A else "hépatosplénomégalie"
        assert index.search(SearchQuery(patient_id=kept, text=words)).total == 1
        assert index.search(SearchQuery(patient_id=gone, include_superseded=True)).total == 0
        assert store.linked_to(gone) == [] and store.linked_to(kept) == []  # the file went
    finally:
        index.close()
        store.close()


@pytest.mark.parametrize("second", [B, A])
def test_a_batch_flushed_in_its_middle_is_never_kept_under_one_patients_key_unless_it_is_theirs(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, second: str
) -> None:
    """A batch flushed before all of it is read (more messages than a flush holds) is kept
    under a key of its own until its patients are all known: a backup taken meanwhile never
    holds a copy under the first patient's key. A file of one patient's messages is then
    put under their key, the interim copy gone."""
    from pipeline.crypto import KeyRing
    from pipeline.ingest import ingest_sources

    monkeypatch.setenv("CARNET_FLUSH_EVERY", "1")
    settings = Settings.from_env()
    feed = settings.data_dir.parent / "feed" / "labo"
    feed.mkdir(parents=True)
    batch = (
        _oru(A, "A1", surname=A_SURNAME, words=A_WORDS)
        + _oru(A, "A2", surname=A_SURNAME, words="rate")
        + _oru(second, "X3", surname="BERNADOTTE" if second == B else A_SURNAME, words="foie")
    )
    (feed / "batch.hl7").write_bytes(batch)
    owners: list[str | None] = []
    record = KeyRing.record

    def spy(ring: KeyRing, sha: str, cipher: str, owner: str | None, *args: object) -> None:
        if sha == sha256_hex(batch):
            owners.append(owner)
        record(ring, sha, cipher, owner, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(KeyRing, "record", spy)
    summary = ingest_sources([str(feed / "batch.hl7")], settings)
    assert [o.status.value for o in summary.outcomes] == ["indexed"] * 3
    assert owners == ([None] if second == B else [None, A])
    store = open_encrypted_store(settings)
    try:
        assert store.owner_of(sha256_hex(batch)) == (None if second == B else A)
        assert store.get(sha256_hex(batch)) == batch
        files = [f for f in (settings.data_dir / "store" / "objects").rglob("*") if f.is_file()]
        assert len(files) == len(list(store.iter_hashes())) == 4  # the file and three messages
    finally:
        store.close()


@pytest.mark.parametrize("kept_under", [None, A])
def test_a_batch_kept_before_the_links_is_linked_and_under_its_own_key_when_filed_again(
    settings: Settings, capsys: pytest.CaptureFixture[str], kept_under: str | None
) -> None:
    """What an operator can do for inputs stored before (under a key of their own, found by
    no erasure; or under the first patient's key, which opens its backup copies after
    another one's erasure): file them again; the input is then linked to each patient,
    under a key of its own, and shredded with any of them."""
    from pipeline.ingest import ingest_sources

    feed = settings.data_dir.parent / "feed" / "labo"
    feed.mkdir(parents=True)
    batch = _oru(A, "A1", surname=A_SURNAME, words=A_WORDS) + _oru(
        B, "B1", surname="BERNADOTTE", words="rate"
    )
    (feed / "batch.hl7").write_bytes(batch)
    store = open_encrypted_store(settings)
    try:
        store.put(batch, owner=kept_under)  # as kept before: no link
    finally:
        store.close()
    summary = ingest_sources([str(feed / "batch.hl7")], settings)
    assert [o.status.value for o in summary.outcomes] == ["indexed", "indexed"]
    objects_dir = settings.data_dir / "store" / "objects"
    store = open_encrypted_store(settings)
    try:
        assert store.owner_of(sha256_hex(batch)) is None
        assert store.linked_to(A) == store.linked_to(B) == [sha256_hex(batch)]
        # The copy under A's key is gone from the store, not left beside the new one.
        assert len([f for f in objects_dir.rglob("*") if f.is_file()]) == len(list(store.iter_hashes())) == 3
        cipher = store.keyring.lookup(sha256_hex(batch))[0]  # type: ignore[index]
        backup = (objects_dir / cipher[:2] / cipher[2:]).read_bytes()
    finally:
        store.close()
    assert cli_access.main(["erase", B]) == 0
    assert json.loads(capsys.readouterr().out)["shared_inputs"] == 1
    store = open_encrypted_store(settings)
    try:
        with pytest.raises(KeyError):
            store.get(sha256_hex(batch))
        assert not _opened_by_any(_keys_left(store), sha256_hex(batch), backup)
    finally:
        store.close()


def test_a_batch_input_quarantined_naming_the_patient_is_shredded_under_another_patients_key(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A's message indexed (the file under A's key), C's refused for naming B too (identity
    conflict: B named only by keyed hashes, nothing links B): B's erasure shreds the file."""
    from pipeline.ingest import ingest_sources

    feed = settings.data_dir.parent / "feed" / "labo"
    feed.mkdir(parents=True)
    batch = _oru(A, "A1", surname=A_SURNAME, words=A_WORDS) + _oru(
        C, "C1", surname="AUTRE", words="contrôle", printed=f"INS : {B}"
    )
    (feed / "batch.hl7").write_bytes(batch)
    summary = ingest_sources([str(feed / "batch.hl7")], settings)
    assert [o.status.value for o in summary.outcomes] == ["indexed", "rejected"]
    assert cli_access.main(["erase", B]) == 0
    receipt = json.loads(capsys.readouterr().out)
    assert receipt["quarantine_records"] == 1 and receipt["shared_inputs"] == 1
    store = open_encrypted_store(settings)
    try:
        with pytest.raises(KeyError):
            store.get(sha256_hex(batch))
        assert A_SURNAME.encode() in store.get(summary.outcomes[0].content_sha256 or "")
    finally:
        store.close()


def test_a_destroyed_data_key_leaves_no_byte_in_the_state_database(settings: Settings) -> None:
    """Crypto-shredding holds only if the wrapped key is gone from the file, not just
    unlinked from its table: the state database zeroes what it deletes (``secure_delete``,
    set on every connection rather than left to the SQLite build's default) and the
    erasure's checkpoint empties the write-ahead log."""
    store = open_encrypted_store(settings)
    try:
        for n in range(20):
            store.keyring.patient_key(f"2850575{n:06d}00")
        store.keyring.patient_key(A)
        with store.keyring._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1
            wrapped = conn.execute(
                select(tables.patient_keys.c.wrapped).where(tables.patient_keys.c.patient_id == A)
            ).scalar_one()
    finally:
        store.close()
    assert cli_access.main(["erase", A]) == 0
    state_files = sorted(settings.data_dir.glob("state.db*"))
    assert state_files and not any(bytes(wrapped) in f.read_bytes() for f in state_files)
