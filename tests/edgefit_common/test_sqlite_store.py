"""edgefit_common.sqlite_store: the versioned schema and the write transaction both caches use."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefit_common import sqlite_store

CREATE = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v TEXT)"


class Newer(Exception):
    pass


def _open(path: Path, version: int):
    db = sqlite_store.connect(path)
    sqlite_store.init_schema(db, "t", CREATE, version, lambda found: Newer(str(found)))
    return db


def test_an_older_layout_is_dropped_and_a_newer_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    db = _open(path, 1)
    with sqlite_store.write(db):
        db.execute("INSERT INTO t VALUES ('a', '1')")
    db.close()
    db = _open(path, 1)  # same version: rows kept
    assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 1
    db.close()
    db = _open(path, 2)  # newer code: the old rows go
    assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
    db.close()
    with pytest.raises(Newer, match="2"):
        _open(path, 1)  # older code on a newer file: refused


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    db = _open(tmp_path / "c.sqlite", 1)
    with pytest.raises(RuntimeError), sqlite_store.write(db):
        db.execute("INSERT INTO t VALUES ('a', '1')")
        raise RuntimeError("interrupted")
    assert db.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
