"""Content-addressed rows of planning's measurements, in one SQLite file, merged idempotently.

A row is one small measurement: the accuracy cost of one (layer, technique config), the stored
bytes of one (layer, config), the pruning KL of one (channel group, width). Its key is a hash of
everything its value depends on (:func:`row_key`: the weights, the calibration data, the layer,
the technique config, the source of the code that computes it), never of the option set it was
asked for with: planning the same model for another profile, budget or option set measures
only the rows it has not seen. A key names its value, so rows from anywhere can be merged
(``edgefit cache export`` / ``merge``): merging twice, or A into B and B into A, gives the same
rows (two values under one key, which only a non-deterministic computation could write, are
settled by keeping the smaller JSON text: merge order cannot change the result).

Like :mod:`cost_models.profile_cache`: WAL mode (readers never block), one writer at a time
(``BEGIN IMMEDIATE``, a busy timeout), every write one short transaction; an older schema is
dropped (it is a cache), a newer one is refused. No torch here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from edgefit_common import sqlite_store
from edgefit_common.errors import SpecError

SCHEMA_VERSION = 1
FILE_NAME = "rows.sqlite"
EXPORT_FORMAT = "edgefit-cache-rows"
EXPORT_VERSION = 1
MAX_EXPORT_BYTES = 1 << 30

Row = tuple[str, str, Any]  # (kind, key, value: any JSON value)


class RowCacheError(SpecError):
    """The cache or an export file cannot be used (newer schema, not a database, bad rows)."""


def canonical(obj: Any) -> str:
    """One text per JSON value (a KL of inf is kept as JSON's non-standard Infinity)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def row_key(*parts: Any) -> str:
    """The hash of a row's inputs (JSON-able parts, order significant)."""
    return hashlib.sha256(canonical(list(parts)).encode()).hexdigest()


def default_path() -> Path:
    from edgefit_common.paths import cache_dir

    return cache_dir() / FILE_NAME


_CREATE = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS rows (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (kind, key)
    ) WITHOUT ROWID""",
)
# content-addressed: an existing row is kept unless the incoming one is smaller (see above)
_UPSERT = ("INSERT INTO rows (kind, key, value) VALUES (?, ?, ?) ON CONFLICT (kind, key) "
           "DO UPDATE SET value = excluded.value WHERE excluded.value < rows.value")


class RowCache:
    """``RowCache(path)`` (default: ``$EDGEFIT_CACHE/rows.sqlite``); a context manager."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite_store.connect(self.path)
            self._init_schema()
        except (sqlite3.DatabaseError, OSError) as exc:
            raise RowCacheError(f"row cache {self.path}: {exc}") from None

    def _init_schema(self) -> None:
        def newer(found: int) -> Exception:
            return RowCacheError(f"row cache {self.path} has schema {found}, newer than "
                                 f"this edgefit ({SCHEMA_VERSION}); use another "
                                 "EDGEFIT_CACHE or upgrade edgefit")

        sqlite_store.init_schema(self._db, "rows", _CREATE[1], SCHEMA_VERSION, newer)

    def _write(self) -> contextlib.AbstractContextManager[None]:
        return sqlite_store.write(self._db)

    # -- reads -----------------------------------------------------------------------------

    def get_many(self, kind: str, keys: Iterable[str]) -> dict[str, Any]:
        """key -> value of the keys present (absent keys are misses)."""
        wanted = list(dict.fromkeys(keys))
        out: dict[str, Any] = {}
        for start in range(0, len(wanted), 500):  # SQLite's bound-parameter limit
            chunk = wanted[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in self._db.execute(
                    f"SELECT key, value FROM rows WHERE kind = ? AND key IN ({marks})",
                    (kind, *chunk)):
                out[key] = json.loads(value)
        return out

    def rows(self) -> Iterator[Row]:
        """Every row, ordered by kind and key (an export is the same text for the same rows)."""
        for kind, key, value in self._db.execute(
                "SELECT kind, key, value FROM rows ORDER BY kind, key"):
            yield kind, key, json.loads(value)

    def counts(self) -> dict[str, int]:
        return {kind: int(n) for kind, n in self._db.execute(
            "SELECT kind, COUNT(*) FROM rows GROUP BY kind ORDER BY kind")}

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM rows").fetchone()[0])

    # -- writes ----------------------------------------------------------------------------

    def put_many(self, kind: str, values: Mapping[str, Any]) -> None:
        """Store rows of one kind, in one transaction."""
        self.merge((kind, key, value) for key, value in values.items())

    def merge(self, rows: Iterable[Row]) -> int:
        """Add rows (one transaction); the number of rows new or changed."""
        values = [(kind, key, canonical(value)) for kind, key, value in rows]
        if not values:
            return 0
        with self._write():
            before = self._db.total_changes
            self._db.executemany(_UPSERT, values)
            return self._db.total_changes - before

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RowCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- export / merge


def export_rows(cache: RowCache, path: Path) -> int:
    """Write every row to a JSON file (atomically); the number of rows."""
    from edgefit_common.fsutil import atomic_write_text

    rows = [[kind, key, value] for kind, key, value in cache.rows()]
    atomic_write_text(path, json.dumps({"format": EXPORT_FORMAT,
                                        "format_version": EXPORT_VERSION, "rows": rows},
                                       separators=(",", ":")) + "\n")
    return len(rows)


def read_export(path: Path) -> list[Row]:
    """The rows of an export file, or one RowCacheError/SpecError line saying what is wrong."""
    from edgefit_common.fsutil import read_text, shown
    from edgefit_common.yamlio import check_format

    text = read_text(path, "cache export", MAX_EXPORT_BYTES)
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise RowCacheError(f"{shown(path)}: not JSON ({exc})") from None
    check_format(doc, shown(path), EXPORT_FORMAT, EXPORT_VERSION, "an edgefit cache export")
    rows = doc.get("rows")
    if not isinstance(rows, list):
        raise RowCacheError(f"{shown(path)}: 'rows' must be a list")
    out: list[Row] = []
    for i, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 3 and isinstance(row[0], str)
                and isinstance(row[1], str) and len(row[1]) == 64
                and all(c in "0123456789abcdef" for c in row[1])):
            raise RowCacheError(f"{shown(path)}: row {i} is not [kind, 64-hex key, value]")
        out.append((row[0], row[1], row[2]))
    return out


__all__ = ["RowCache", "RowCacheError", "default_path", "export_rows", "read_export",
           "row_key"]
