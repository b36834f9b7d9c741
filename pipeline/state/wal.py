"""SQLite's write-ahead log, switched on safely when several processes open one file."""

from __future__ import annotations

import sqlite3
import time


def enable_wal(conn: sqlite3.Connection, wait_s: float) -> None:
    """Put ``conn``'s database in WAL mode, waiting up to ``wait_s`` for other processes.

    SQLite answers a journal-mode change that meets another connection's lock with
    SQLITE_BUSY at once, without its busy handler: two workers creating the same
    database together (the first run on a fresh data directory) would otherwise see one
    of them fail with "database is locked". Once the file is in WAL mode the change is a
    no-op that takes no lock, so this only ever waits on a fresh file.
    """
    deadline = time.monotonic() + wait_s
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
