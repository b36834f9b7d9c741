"""Files of earlier versions copied into the state database, once each.

Before the state database, an install kept its access rules in ``access.db``, its
wrapped keys in ``keyring.db`` (both SQLite) and its audit chain in ``audit.jsonl``, in
the data directory. ``import_legacy_files`` copies each file found there in one
transaction, recorded in ``state_imports`` so it is never copied twice, then removes
``access.db`` and ``keyring.db`` (an erasure or a crypto-shredding could not reach a
copy left behind) and renames ``audit.jsonl`` to ``audit.jsonl.imported``.

The embedded SQLite default does it when the state is opened; with PostgreSQL it is
part of ``carnet db upgrade``, run where the files are, before the workers start.
The audit chain keeps verifying across the import: its MACs cover the fields, not the
storage (``pipeline.state.audit_rows``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, Engine, Table, func, select, text

from pipeline.errors import ConfigurationError
from pipeline.state import tables as t
from pipeline.state.audit_rows import GENESIS, HEAD_ROW, entry_fields, entry_row
from pipeline.state.engine import engine_name, insert_new
from pipeline.state.locks import lock_key

log = logging.getLogger(__name__)

ACCESS_DB, KEYRING_DB, AUDIT_LOG = "access.db", "keyring.db", "audit.jsonl"

# access.db's tables, copied row by row (a column an older file lacks takes its default).
_ACCESS_TABLES: tuple[tuple[Table, dict[str, object]], ...] = (
    (t.authorisations, {}),
    (t.blocks, {}),
    (t.representatives, {}),
    (t.break_glass, {}),
    (t.closures, {}),
    (t.patient_birth_dates, {}),
    (t.delegations, {"granted_by": None, "granted_by_role": None, "upload": False}),
)


def _sqlite_rows(path: Path, table: str) -> list[dict[str, object]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)
        ).fetchone()
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table}")] if exists else []  # noqa: S608
    finally:
        conn.close()


def _import_access(conn: Connection, path: Path) -> int:
    copied = 0
    for table, defaults in _ACCESS_TABLES:
        columns = {c.name for c in table.columns} - {"id"}
        for row in _sqlite_rows(path, table.name):
            values = {**defaults, **{k: v for k, v in row.items() if k in columns}}
            if "upload" in values:
                values["upload"] = bool(values["upload"])
            if table is t.break_glass:  # no key: the import's record keeps it from running twice
                copied += conn.execute(table.insert().values(values)).rowcount
            else:  # rows written to the state database already are newer: they stay
                copied += insert_new(conn, table, values)
    return copied


def _import_keyring(conn: Connection, path: Path) -> int:
    keys = conn.execute(select(func.count()).select_from(t.patient_keys)).scalar_one()
    objects = conn.execute(select(func.count()).select_from(t.keyring_objects)).scalar_one()
    named = conn.execute(
        select(func.count()).select_from(t.keyring_meta).where(t.keyring_meta.c.name.like("named:%"))
    ).scalar_one()
    if keys or objects or named:
        raise ConfigurationError(
            f"the state database {engine_name(conn.engine)} already holds keys of its own: {path} cannot "
            "be imported into it (import it into a new state database, before any worker runs)"
        )
    # A keyring the state database made for itself (a check key, nothing it opens) gives way.
    conn.execute(t.keyring_meta.delete())
    meta = [
        {"name": r["name"], "value": r["value"].encode() if isinstance(r["value"], str) else r["value"]}
        for r in _sqlite_rows(path, "meta")
    ]
    if not any(m["name"] == "wrapper" for m in meta):  # keyrings from before KMS wrapping: local
        meta.append({"name": "wrapper", "value": b"local"})
    # Key ids as revision 0006 gives the keys it finds: the file's objects are under the
    # keys it holds, and an object whose owner has none stays unreadable.
    rows = [{**r, "key_id": f"legacy:{r['created_at']}"} for r in _sqlite_rows(path, "patient_keys")]
    key_ids = {r["patient_id"]: r["key_id"] for r in rows}
    objs = [{**o, "key_id": key_ids.get(o["owner"])} for o in _sqlite_rows(path, "objects")]
    for table, values in ((t.keyring_meta, meta), (t.patient_keys, rows), (t.keyring_objects, objs)):
        if values:
            conn.execute(table.insert(), values)
    return len(meta) + len(rows) + len(objs)


def _import_audit(conn: Connection, path: Path) -> int:
    """Copy the entries of an audit log file (``audit.jsonl`` of earlier versions) into an
    empty chain, as they are, in the caller's transaction; the number of entries.

    The MACs cover the fields, not the storage: the chain verifies (or fails, when the file
    was tampered with) exactly as the file did, against the same anchors. No key is needed.
    Refused (``ValueError``) when the chain already has entries or a line is unreadable,
    repeats a sequence number or holds fields the table does not keep.
    """
    if conn.execute(select(t.audit_head.c.seq)).first() is not None:
        raise ValueError(
            f"the audit chain in {engine_name(conn.engine)} already has entries; {path} not imported"
        )
    rows: dict[int, dict[str, object]] = {}
    with path.open(encoding="utf-8") as lines:
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                fields = {k: v for k, v in raw.items() if k != "hash"}
                row = entry_row(fields, str(raw["hash"]))
                seq = int(raw["seq"])
                fits = entry_fields(row) == fields
            except (ValueError, KeyError, AttributeError, TypeError):
                raise ValueError(f"{path}: line {n} is not an audit entry; not imported") from None
            if not fits or seq in rows:
                raise ValueError(
                    f"{path}: line {n} does not fit the audit table (a field it does not "
                    "keep, or a repeated sequence number); not imported"
                )
            rows[seq] = row
    if rows:
        conn.execute(t.audit_entries.insert(), list(rows.values()))
    last = rows[max(rows)] if rows else None
    conn.execute(
        t.audit_head.insert().values(
            id=HEAD_ROW, seq=max(rows, default=0), hash=last["hash"] if last else GENESIS
        )
    )
    return len(rows)


_IMPORTS: tuple[tuple[str, Callable[[Connection, Path], int]], ...] = (
    (ACCESS_DB, _import_access),
    (KEYRING_DB, _import_keyring),
    (AUDIT_LOG, _import_audit),
)


def import_legacy_files(data_dir: Path, engine: Engine) -> dict[str, int]:
    """Copy the files of earlier versions found in ``data_dir`` into the state database
    (see the module docstring); the rows copied, by file name. Files copied before, by
    this process or another, are only tidied away."""
    imported: dict[str, int] = {}
    for name, copy in _IMPORTS:
        path = data_dir / name
        if not path.exists():
            continue
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # two upgrades at once: the second finds it done
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key("import")})
            done = conn.execute(select(t.state_imports.c.name).where(t.state_imports.c.name == name)).first()
            if done is None:
                try:
                    rows = copy(conn, path)
                except FileNotFoundError:  # another process imported it and tidied it away meanwhile
                    continue
                conn.execute(
                    t.state_imports.insert().values(
                        name=name, imported_at=dt.datetime.now(dt.UTC).isoformat(), rows=rows
                    )
                )
                imported[name] = rows
                log.warning("state: imported %s (%d rows) into %s", path, rows, engine_name(engine))
        _tidy(path)
    return imported


def _tidy(path: Path) -> None:
    if path.name == AUDIT_LOG:
        try:
            path.replace(path.with_name(f"{path.name}.imported"))
        except FileNotFoundError:  # another process tidied it first
            pass
        path.with_suffix(".lock").unlink(missing_ok=True)
        return
    for leftover in (
        path,
        path.with_name(f"{path.name}-wal"),
        path.with_name(f"{path.name}-shm"),
        path.with_name(f"{path.name}-journal"),
    ):
        leftover.unlink(missing_ok=True)
