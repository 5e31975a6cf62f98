"""An embedded SQLite cache of measured per-layer latencies, reused across runs and models.

A row is one measurement: *device fingerprint* (CPU model, cores, onnxruntime version,
threads, optimisation level) x *layer signature* (what determines a layer's cost: op type,
input/output shapes, kernel/stride/padding/dilation/groups for convolutions, weight shape,
bias, the ops charged to the layer, the measuring method) x *option* (fp32, int8, ...). It
stores the median latency in ms, the number of profiled runs, a UTC timestamp and the
``edgefit_measure`` format version that produced it. Two layers of different models with the
same signature share a row: that is the point of the cache.

The file is opened in WAL mode (concurrent readers never block, and are never blocked by one
writer), with a busy timeout for writers; every write is one short transaction. A
``schema_version`` table guards the layout: an older schema is dropped and recreated (it is a
cache), a newer one raises :class:`ProfileCacheError` instead of being overwritten.

The caller chooses the location (edgefit uses
``edgefit_common.paths.cache_dir() / "profiles.sqlite"``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgefit_common import sqlite_store

SCHEMA_VERSION = 1


class ProfileCacheError(Exception):
    """The cache file cannot be used (newer schema, not a database, ...)."""


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class DeviceFingerprint:
    """What makes two machines' measurements interchangeable."""

    cpu_model: str
    cores: int
    ort_version: str
    threads: int
    opt_level: str

    def canonical(self) -> str:
        return _canonical(asdict(self))

    def key(self) -> str:
        return _digest(self.canonical())


@dataclass(frozen=True)
class LayerSignature:
    """What determines one layer's measured cost, independent of its name and its model.

    Shapes are full tensor shapes with the batch dimension (batch 1). ``conv`` holds kernel,
    stride, padding, dilation and groups (empty for other ops). ``charged`` lists the other ops
    whose time is charged to the layer, as ``"kind:op:numel"`` strings in execution order
    (a conv followed by a max-pool costs more than the same conv alone). ``method`` names how
    the number was obtained (a different method never reuses a row).
    """

    op_type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    bias: bool
    conv: tuple[tuple[str, str], ...] = ()  # (attribute, its value as text)
    charged: tuple[str, ...] = ()
    method: str = "uniform-model"

    def canonical(self) -> str:
        d = asdict(self)
        d["conv"] = dict(self.conv)
        return _canonical(d)

    def key(self) -> str:
        return _digest(self.canonical())


@dataclass(frozen=True)
class CachedProfile:
    fingerprint: DeviceFingerprint
    signature_key: str
    option: str
    median_ms: float
    runs: int
    measured_at: str  # ISO 8601, UTC
    format_version: int  # edgefit_measure.FORMAT_VERSION of the measurement
    extra: dict[str, Any] = field(default_factory=dict)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


_CREATE = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS measurements (
        fingerprint_key TEXT NOT NULL,
        signature_key TEXT NOT NULL,
        option TEXT NOT NULL,
        median_ms REAL NOT NULL,
        runs INTEGER NOT NULL,
        measured_at TEXT NOT NULL,
        format_version INTEGER NOT NULL,
        fingerprint TEXT NOT NULL,
        signature TEXT NOT NULL,
        extra TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (fingerprint_key, signature_key, option)
    )""",
)


class ProfileCache:
    """``ProfileCache(path)``; use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite_store.connect(self.path)
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            raise ProfileCacheError(f"profile cache {self.path}: {exc}") from None

    # -- schema ----------------------------------------------------------------------------

    def _init_schema(self) -> None:
        def newer(found: int) -> Exception:
            return ProfileCacheError(f"profile cache {self.path} has schema {found}, newer "
                                     f"than this edgefit ({SCHEMA_VERSION}); use another "
                                     "cache file or upgrade edgefit")

        sqlite_store.init_schema(self._db, "measurements", _CREATE[1], SCHEMA_VERSION, newer)

    def schema_version(self) -> int:
        row = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0])

    def _write(self) -> contextlib.AbstractContextManager[None]:
        return sqlite_store.write(self._db)

    # -- reads -----------------------------------------------------------------------------

    def get(self, fingerprint: DeviceFingerprint, signature: LayerSignature,
            option: str) -> CachedProfile | None:
        row = self._db.execute(
            "SELECT signature_key, option, median_ms, runs, measured_at, format_version, extra "
            "FROM measurements WHERE fingerprint_key = ? AND signature_key = ? AND option = ?",
            (fingerprint.key(), signature.key(), option),
        ).fetchone()
        if row is None:
            return None
        return CachedProfile(fingerprint, row[0], row[1], float(row[2]), int(row[3]), row[4],
                             int(row[5]), json.loads(row[6]))

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0])

    def count(self, fingerprint: DeviceFingerprint | None = None) -> int:
        if fingerprint is None:
            return len(self)
        return int(self._db.execute(
            "SELECT COUNT(*) FROM measurements WHERE fingerprint_key = ?",
            (fingerprint.key(),)).fetchone()[0])

    # -- writes ----------------------------------------------------------------------------

    def put(self, fingerprint: DeviceFingerprint, signature: LayerSignature, option: str,
            median_ms: float, runs: int, format_version: int,
            extra: Mapping[str, Any] | None = None, measured_at: str | None = None) -> None:
        self.put_many([(fingerprint, signature, option, median_ms, runs, format_version,
                        extra, measured_at)])

    def put_many(
        self,
        rows: Iterable[tuple[DeviceFingerprint, LayerSignature, str, float, int, int,
                             Mapping[str, Any] | None, str | None]],
    ) -> None:
        """Insert or replace measurements, all in one transaction."""
        values = [
            (fp.key(), sig.key(), option, float(median_ms), int(runs), measured_at or _now(),
             int(fmt), fp.canonical(), sig.canonical(), _canonical(dict(extra or {})))
            for fp, sig, option, median_ms, runs, fmt, extra, measured_at in rows
        ]
        for v in values:
            if not v[3] >= 0.0:  # also rejects NaN
                raise ValueError(f"median_ms must be a non-negative number, got {v[3]}")
        with self._write():
            self._db.executemany(
                "INSERT OR REPLACE INTO measurements (fingerprint_key, signature_key, option, "
                "median_ms, runs, measured_at, format_version, fingerprint, signature, extra) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ProfileCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "SCHEMA_VERSION",
    "CachedProfile",
    "DeviceFingerprint",
    "LayerSignature",
    "ProfileCache",
    "ProfileCacheError",
]
