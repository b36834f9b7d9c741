"""The access rules, the keyring and the audit chain on the state database: one chain
extended by several OS processes at once, and the files of earlier versions (access.db,
keyring.db, audit.jsonl) imported with the chain still verifying against its anchors."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import multiprocessing
import os
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from pipeline.access import AccessRules, Principal, Role
from pipeline.audit import GENESIS, AuditHead, AuditLog, _mac
from pipeline.cli import main as carnet
from pipeline.crypto import audit_key, open_encrypted_store
from pipeline.keywrap import LocalKeyWrapper
from pipeline.settings import Settings
from pipeline.state import open_engine
from pipeline.state.imports import import_legacy_files
from pipeline.store import FileStore

P = "284057512345672"
NOW = dt.datetime(2026, 11, 29, 10, 0, tzinfo=dt.UTC)
KEY = b"audit-test-key-0123456789abcdef!"
APPENDS = 100


def _append_many(state_url: str, data_dir: str, actor: str, start: Any) -> None:
    """One process: wait for the others, then append ``APPENDS`` entries as fast as it can."""
    log = AuditLog(Settings(data_dir=Path(data_dir), state_url=state_url), key=KEY)
    start.wait(timeout=120)  # a barrier: every process has its engine open
    for n in range(APPENDS):
        log.append(actor=actor, role="professional", action="read", patient_id=P, doc_ids=[f"{actor}-{n}"])
    log.close()


def test_processes_appending_at_once_extend_one_chain(state_settings: Settings) -> None:
    AuditLog(state_settings, key=KEY).close()  # the schema in place (SQLite migrates on open)
    spawn = multiprocessing.get_context("spawn")  # fresh interpreters: nothing shared but the database
    start = spawn.Barrier(3)
    where = (state_settings.state.url, str(state_settings.data_dir))
    workers = [spawn.Process(target=_append_many, args=(*where, f"worker{i}", start)) for i in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    assert [w.exitcode for w in workers] == [0, 0, 0]

    log = AuditLog(state_settings, key=KEY)
    try:
        check = log.verify()
        assert check.ok and check.entries == 3 * APPENDS, check
        entries = list(log.entries())
        assert [e.seq for e in entries] == list(range(1, 3 * APPENDS + 1))
        # Every append appears once, in its own process's order.
        seen = Counter(d for e in entries for d in e.doc_ids)
        assert set(seen.values()) == {1} and len(seen) == 3 * APPENDS
        for i in range(3):
            mine = [int(e.doc_ids[0].rsplit("-", 1)[1]) for e in entries if e.actor == f"worker{i}"]
            assert mine == list(range(APPENDS))
        if state_settings.state.url:
            # The appends really interleaved (else this proves nothing about locking): the
            # head's row lock hands over in turn. SQLite's busy handler backs off instead, so
            # there one process may well append all its entries in a row.
            switches = sum(a.actor != b.actor for a, b in zip(entries, entries[1:], strict=False))
            assert switches > 2
    finally:
        log.close()


# -- files of earlier versions --------------------------------------------------------------


def _old_access_db(path: Path) -> None:
    """access.db as the first release wrote it (no upload / granted_by columns)."""
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE authorisations (patient_id TEXT NOT NULL, rpps TEXT NOT NULL,
                granted_at TEXT NOT NULL, revoked_at TEXT, PRIMARY KEY (patient_id, rpps));
            CREATE TABLE delegations (patient_id TEXT NOT NULL, caregiver_id TEXT NOT NULL, classes TEXT,
                granted_at TEXT NOT NULL, revoked_at TEXT, PRIMARY KEY (patient_id, caregiver_id));
            CREATE TABLE break_glass (patient_id TEXT NOT NULL, rpps TEXT NOT NULL, reason TEXT NOT NULL,
                opened_at TEXT NOT NULL, expires_at TEXT NOT NULL);
            CREATE TABLE closures (patient_ref TEXT PRIMARY KEY, reason TEXT NOT NULL,
                closed_at TEXT NOT NULL);
        """)
        conn.execute("INSERT INTO authorisations VALUES (?, '10101234567', ?, NULL)", (P, NOW.isoformat()))
        conn.execute(
            "INSERT INTO delegations VALUES (?, 'aidant-1', '[\"prescription\"]', ?, NULL)",
            (P, NOW.isoformat()),
        )
        conn.execute(
            "INSERT INTO break_glass VALUES (?, '10109999999', 'urgence vitale', ?, ?)",
            (P, NOW.isoformat(), (NOW + dt.timedelta(hours=4)).isoformat()),
        )
        conn.execute("INSERT INTO closures VALUES ('ref-of-someone', 'opposition', ?)", (NOW.isoformat(),))


def _old_keyring_db(path: Path, master: bytes) -> tuple[bytes, bytes]:
    """keyring.db as before: meta (no 'wrapper' row: local), patient_keys, objects; returns
    (P's data key, the wrapped key of an object whose owner is unknown)."""
    wrapper = LocalKeyWrapper(master)
    _, check = wrapper.generate("check")
    key, wrapped = wrapper.generate(f"patient:{P}")
    obj_key, obj_wrapped = wrapper.generate("object:" + "b" * 64)
    with sqlite3.connect(path) as conn:
        conn.executescript("""
            CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
            CREATE TABLE patient_keys (patient_id TEXT PRIMARY KEY, wrapped BLOB NOT NULL,
                created_at TEXT NOT NULL);
            CREATE TABLE objects (sha256 TEXT PRIMARY KEY, cipher_sha256 TEXT NOT NULL, owner TEXT,
                wrapped_key BLOB);
        """)
        conn.execute("INSERT INTO meta VALUES ('check', ?)", (check,))
        conn.execute("INSERT INTO patient_keys VALUES (?, ?, ?)", (P, wrapped, NOW.isoformat()))
        conn.execute("INSERT INTO objects VALUES (?, ?, ?, NULL)", ("a" * 64, "c" * 64, P))
        conn.execute("INSERT INTO objects VALUES (?, ?, NULL, ?)", ("b" * 64, "d" * 64, obj_wrapped))
    return key, obj_key


def _old_audit_log(path: Path, key: bytes) -> list[dict[str, object]]:
    """audit.jsonl: a legacy unkeyed entry, then keyed ones (one with a name, one with a
    long list), written as the file-based log wrote them."""
    lines: list[dict[str, object]] = []
    legacy = {
        "seq": 1,
        "at": NOW.isoformat(),
        "actor": "a",
        "role": "patient",
        "action": "search",
        "patient_id": P,
        "doc_ids": [],
        "reason": None,
        "prev_hash": GENESIS,
    }
    digest = hashlib.sha256(
        json.dumps(legacy, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    ).hexdigest()
    lines.append({**legacy, "hash": digest})
    for seq, extra in ((2, {"actor_name": "Dr Éloïse"}), (3, {}), (4, {})):
        fields: dict[str, object] = {
            "v": 2,
            "seq": seq,
            "at": (NOW + dt.timedelta(minutes=seq)).isoformat(),
            "actor": "10101234567",
            "role": "professional",
            "action": "read",
            "patient_id": P,
            "doc_ids": [f"doc-{n}" for n in range(seq * 100)],
            "reason": "autorisation",
            "prev_hash": lines[-1]["hash"],
            **extra,
        }
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        lines.append({**fields, "hash": hmac.new(key, canonical, hashlib.sha256).hexdigest()})
        assert lines[-1]["hash"] == _mac(key, fields)
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    return lines


@pytest.fixture
def old_install(tmp_path: Path) -> tuple[Path, bytes, list[dict[str, object]], bytes, bytes]:
    data = tmp_path / "carnet"
    data.mkdir()
    master = os.urandom(32)
    _old_access_db(data / "access.db")
    key, obj_key = _old_keyring_db(data / "keyring.db", master)
    settings = Settings(data_dir=data, master_key=base64.b64encode(master).decode())
    lines = _old_audit_log(data / "audit.jsonl", audit_key(settings))
    # The head anchored in the store, as the file-based log did on erasures.
    head = AuditHead(seq=3, hash=str(lines[2]["hash"]), at=dt.datetime.fromisoformat(str(lines[2]["at"])))
    FileStore(data / "store").put_anchor("audit", 3, head.model_dump_json().encode())
    return data, master, lines, key, obj_key


def _check_imported(settings: Settings, lines: list[dict[str, object]], key: bytes, obj_key: bytes) -> None:
    log = AuditLog(settings, key=audit_key(settings), anchors=FileStore(settings.data_dir / "store"))
    rules = AccessRules(settings)
    store = open_encrypted_store(settings)
    try:
        # The chain verifies as the file did: legacy prefix only when asked, anchor found.
        assert not log.verify().ok
        check = log.verify(accept_legacy=True)
        assert check.ok and check.entries == 4 and check.legacy_entries == 1 and check.anchored_seq == 3
        assert [e.hash for e in log.entries()] == [x["hash"] for x in lines]
        assert log.for_patient(P)[1].actor_name == "Dr Éloïse"
        # And it goes on from where the file ended.
        after = log.append(actor=P, role="patient", action="search", patient_id=P)
        assert after.seq == 5 and after.prev_hash == lines[-1]["hash"] and log.verify(accept_legacy=True).ok

        pro = Principal(role=Role.PROFESSIONAL, subject="10101234567")
        assert rules.decide(pro, P, NOW).via == "authorisation"
        emergency = Principal(role=Role.PROFESSIONAL, subject="10109999999")
        assert rules.decide(emergency, P, NOW).via == "break_glass"
        aidant = rules.decide(Principal(role=Role.CAREGIVER, subject="aidant-1"), P, NOW)
        assert aidant.allowed and not aidant.may_upload
        assert [c.value for c in aidant.allowed_classes or ()] == ["prescription"]
        assert rules.closure("ref-of-someone") is not None

        assert store.keyring.existing_patient_key(P) == key
        assert store.keyring.object_key("b" * 64, store.keyring.lookup("b" * 64)[2] or b"") == obj_key
        assert store.objects_of(P) == ["a" * 64]
    finally:
        store.close()
        rules.close()
        log.close()
    # Nothing left behind that an erasure or a crypto-shredding could not reach.
    assert not (settings.data_dir / "access.db").exists() and not (settings.data_dir / "keyring.db").exists()
    assert (settings.data_dir / "audit.jsonl.imported").exists()


def test_the_embedded_state_imports_an_older_install_when_opened(old_install) -> None:  # type: ignore[no-untyped-def]
    data, master, lines, key, obj_key = old_install
    settings = Settings(data_dir=data, master_key=base64.b64encode(master).decode())
    _check_imported(settings, lines, key, obj_key)
    engine = open_engine(settings)
    try:  # once: a second open finds nothing to import
        assert import_legacy_files(data, engine) == {}
    finally:
        engine.dispose()


def test_carnet_db_upgrade_imports_an_older_install_into_postgresql(
    old_install,
    pg_state_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # type: ignore[no-untyped-def]
    data, master, lines, key, obj_key = old_install
    monkeypatch.setenv("CARNET_DATA_DIR", str(data))
    monkeypatch.setenv("CARNET_STATE_URL", pg_state_url)
    monkeypatch.setenv("CARNET_MASTER_KEY", base64.b64encode(master).decode())
    assert carnet(["db", "upgrade"]) == 0
    out = capsys.readouterr().out
    assert "imported" in out and "audit.jsonl (4 rows)" in out
    _check_imported(Settings.from_env(), lines, key, obj_key)
    assert carnet(["db", "upgrade"]) == 0 and "imported" not in capsys.readouterr().out


def test_a_keyring_is_not_imported_over_keys_already_in_use(old_install, pg_state_url: str) -> None:  # type: ignore[no-untyped-def]
    from pipeline.errors import ConfigurationError
    from pipeline.state import upgrade

    data, master, _, _, _ = old_install
    settings = Settings(data_dir=data, state_url=pg_state_url, master_key=base64.b64encode(master).decode())
    engine = open_engine(settings)
    try:
        upgrade(engine)
        store = open_encrypted_store(settings)
        store.assign(store.put(b"a document filed before the import"), P)
        store.close()
        with pytest.raises(ConfigurationError, match="already holds keys"):
            import_legacy_files(data, engine)
    finally:
        engine.dispose()
    assert (data / "keyring.db").exists()  # left as it was
