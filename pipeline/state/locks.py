"""Locks held by the state database, not by a process: the run lease and the flush lock.

- SQLite: an open transaction on a small lock database beside the state database (a
  read transaction holds SHARED, ``BEGIN EXCLUSIVE`` holds EXCLUSIVE), so they work
  across processes of one machine and vanish with a killed process.
- PostgreSQL: session advisory locks (``pg_advisory_lock`` and its shared and ``try``
  forms) on a connection kept for the block, so they work across hosts and vanish with
  a killed process's session.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from pipeline.errors import LockLost
from pipeline.state.engine import sqlite_path

log = logging.getLogger(__name__)

# This session's advisory lock with a bigint key: pg_locks splits the key into classid
# (high 32 bits) and objid (low 32 bits), objsubid 1.
_STILL_HELD = text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1"
    " AND pid = pg_backend_pid() AND granted AND mode = :mode"
    " AND ((classid::bigint << 32) | objid::bigint) = :k)"
)


@dataclass(frozen=True)
class HeldLock:
    """A lock this process holds; ``verify`` before committing what it protects."""

    name: str
    _holds: Callable[[], bool]

    def verify(self) -> None:
        """Raise :class:`LockLost` if the database no longer holds the lock for this process."""
        if not self._holds():
            raise LockLost(
                f"the state database's {self.name} lock was lost (its connection "
                f"dropped): nothing it protects was committed",
                lock=self.name,
            )


def lock_key(name: str) -> int:
    """The advisory-lock key of a named lock (a signed 64-bit int, stable across versions)."""
    return int.from_bytes(hashlib.sha256(f"carnet:lock:{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def held(engine: Engine, name: str, *, exclusive: bool, wait_s: float) -> Iterator[HeldLock | None]:
    """Hold the lock ``name`` (shared or exclusive) while the block runs.

    Yields None when it could not be had within ``wait_s`` (0: do not wait).
    """
    path = sqlite_path(engine)
    if path is not None:
        with _held_sqlite(path.with_name(f"{path.stem}.{name}.lock"), exclusive, wait_s) as got:
            # The lock is this process's own open file: it lasts as long as the process.
            yield HeldLock(name, lambda: True) if got else None
    else:
        with _held_advisory(engine, lock_key(name), exclusive, wait_s) as conn:
            yield HeldLock(name, lambda: _still_held(conn, lock_key(name), exclusive)) if conn else None


def _still_held(conn: Connection, key: int, exclusive: bool) -> bool:
    mode = "ExclusiveLock" if exclusive else "ShareLock"
    if conn.invalidated:  # found dropped before
        return False
    try:
        return bool(conn.execute(_STILL_HELD, {"k": key, "mode": mode}).scalar())
    except DBAPIError as exc:
        if not (exc.connection_invalidated or conn.invalidated or conn.closed):
            raise
        log.error("state: the connection holding lock %d dropped: %s", key, exc.orig)
        return False


@contextmanager
def _held_sqlite(lock_db: Path, exclusive: bool, wait_s: float) -> Iterator[bool]:
    conn = sqlite3.connect(lock_db, timeout=wait_s, isolation_level=None, check_same_thread=False)
    try:
        try:
            if exclusive:
                conn.execute("BEGIN EXCLUSIVE")
            else:
                conn.execute("BEGIN")
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            yield False
            return
        try:
            yield True
        finally:
            conn.execute("ROLLBACK")
    finally:
        conn.close()


@contextmanager
def _held_advisory(engine: Engine, key: int, exclusive: bool, wait_s: float) -> Iterator[Connection | None]:
    suffix = "" if exclusive else "_shared"
    # Autocommit: the lock belongs to the session, no transaction stays open meanwhile.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if wait_s <= 0:
            got = bool(conn.execute(text(f"SELECT pg_try_advisory_lock{suffix}(:k)"), {"k": key}).scalar())
        else:
            conn.execute(text(f"SET lock_timeout = '{int(wait_s * 1000)}ms'"))
            try:
                conn.execute(text(f"SELECT pg_advisory_lock{suffix}(:k)"), {"k": key})
                got = True
            except OperationalError as exc:
                if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                    raise
                got = False
            conn.execute(text("RESET lock_timeout"))
        if not got:
            yield None
            return
        try:
            yield conn
        finally:
            if conn.invalidated:  # a dropped session has released the lock already
                log.warning("state: lock %d went with its connection before its release", key)
            else:
                conn.execute(text(f"SELECT pg_advisory_unlock{suffix}(:k)"), {"k": key})
