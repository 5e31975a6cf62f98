"""The content-addressed row store: reads, writes, idempotent and order-free merges, exports
read back, and bad export files refused with one line."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from cost_models.row_cache import (
    EXPORT_FORMAT,
    RowCache,
    RowCacheError,
    export_rows,
    read_export,
    row_key,
)
from edgefit_common.errors import SpecError

A = row_key("a")
B = row_key("b")
C = row_key("c")


def test_rows_read_back_and_misses_are_absent(tmp_path: Path) -> None:
    with RowCache(tmp_path / "rows.sqlite") as cache:
        cache.put_many("output-kl", {A: 0.25, B: None})
        assert cache.get_many("output-kl", [A, B, C]) == {A: 0.25, B: None}
        assert cache.get_many("prune-kl", [A]) == {}  # kinds are apart
        assert cache.counts() == {"output-kl": 2}


def test_row_key_depends_on_every_part_and_their_order() -> None:
    assert row_key(1, "x", [1, 2]) == row_key(1, "x", [1, 2])
    assert row_key(1, "x", [1, 2]) != row_key(1, "x", [2, 1])
    assert row_key({"a": 1, "b": 2}) == row_key({"b": 2, "a": 1})  # a mapping's order is not


def _rows(cache: RowCache) -> list[tuple[str, str, object]]:
    return list(cache.rows())


def test_merge_is_idempotent_and_order_free(tmp_path: Path) -> None:
    # B holds a conflicting value under A's key: only a non-deterministic computation could
    # write one, and merge order must not decide which survives
    with RowCache(tmp_path / "a.sqlite") as a, RowCache(tmp_path / "b.sqlite") as b:
        a.put_many("output-kl", {A: 0.5, B: 1.0})
        b.put_many("output-kl", {A: 0.25, C: 2.0})
        b.put_many("stored-bytes", {C: 123})
        rows_a, rows_b = _rows(a), _rows(b)
    with RowCache(tmp_path / "ab.sqlite") as ab, RowCache(tmp_path / "ba.sqlite") as ba:
        assert ab.merge(rows_a) == 2 and ab.merge(rows_b) == 3  # C, C bytes, A's smaller value
        ba.merge(rows_b)
        ba.merge(rows_a)
        assert _rows(ab) == _rows(ba)
        before = _rows(ab)
        assert ab.merge(rows_a) == 0 and ab.merge(rows_b) == 0  # twice: nothing changes
        assert _rows(ab) == before
        assert ab.get_many("output-kl", [A]) == {A: 0.25}


def test_export_reads_back_and_merges_into_an_empty_cache(tmp_path: Path) -> None:
    with RowCache(tmp_path / "a.sqlite") as a:
        a.put_many("output-kl", {A: 0.125, B: float("inf")})
        a.put_many("prune-kl", {C: None})
        assert export_rows(a, tmp_path / "rows.json") == 3
        rows = _rows(a)
    assert read_export(tmp_path / "rows.json") == rows
    with RowCache(tmp_path / "b.sqlite") as b:
        b.merge(read_export(tmp_path / "rows.json"))
        assert _rows(b) == rows


@pytest.mark.parametrize("text, words", [
    ("not json", "not JSON"),
    ('{"format": "edgefit-timing", "format_version": 1}', "not an edgefit cache export"),
    (json.dumps({"format": EXPORT_FORMAT, "format_version": 99, "rows": []}), "format_version"),
    (json.dumps({"format": EXPORT_FORMAT, "format_version": 1, "rows": {}}), "must be a list"),
    (json.dumps({"format": EXPORT_FORMAT, "format_version": 1, "rows": [["k", "short", 1]]}),
     "row 0"),
])
def test_bad_export_files_are_one_line(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        read_export(path)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_missing_export_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not found"):
        read_export(tmp_path / "absent.json")


def test_newer_schema_is_refused_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "rows.sqlite"
    RowCache(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = 99")
    db.commit()
    db.close()
    with pytest.raises(RowCacheError, match="newer"):
        RowCache(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rows.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RowCacheError, match="rows.sqlite"):
        RowCache(path)
