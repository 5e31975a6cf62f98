"""The SQLite files edgefit caches in (cost_models.profile_cache, cost_models.row_cache): one
connection setup, one versioned-schema rule and one short-write-transaction helper.

Several processes may share a file: writes take ``BEGIN IMMEDIATE`` (one writer at a time,
readers go on in WAL mode) and a busy timeout instead of failing at once."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

BUSY_TIMEOUT_S = 30.0


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit: :func:`write`), waiting up
    to BUSY_TIMEOUT_S for another writer, WAL journal where the medium allows it."""
    db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    with contextlib.suppress(sqlite3.OperationalError):  # e.g. a read-only medium
        db.execute("PRAGMA journal_mode = WAL")
    return db


@contextlib.contextmanager
def write(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: committed at the end, rolled back on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def init_schema(db: sqlite3.Connection, table: str, create_table: str, version: int,
                newer: Callable[[int], Exception]) -> None:
    """The ``schema_version`` table guards ``table``: an older layout is dropped and created
    again (a cache holds nothing that cannot be measured again), a newer one is refused with
    ``newer(found_version)``."""
    with write(db):
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        found = row[0] if row else None
        if found is not None and found > version:
            raise newer(found)
        if found is not None and found < version:
            db.execute(f"DROP TABLE IF EXISTS {table}")
        if found != version:
            db.execute("DELETE FROM schema_version")
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        db.execute(create_table)
