"""`edgefit cache info | export FILE | merge FILE`: the measurement rows planning reuses.

The rows (cost_models.row_cache) are content-addressed: an export from one machine merged into
another's cache makes that machine's plans skip every measurement the export holds, and the
plans are the same as if it had measured them. No torch is imported here.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cost_models.row_cache import RowCache, default_path, export_rows, read_export
from edgefit_common.units import fmt_bytes


def _file_bytes(path: Path) -> int:
    """The database with its write-ahead log (what the cache takes on disk)."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.is_file())


def print_info() -> None:
    path = default_path()
    with RowCache(path) as cache:
        counts = cache.counts()
    typer.echo(f"{path}: {sum(counts.values())} rows, {fmt_bytes(_file_bytes(path))}")
    for kind, n in counts.items():
        typer.echo(f"  {kind:<14} {n:>8}")


def export(file: Path) -> None:
    with RowCache() as cache:
        n = export_rows(cache, file)
    typer.echo(f"wrote {n} rows to {file}")


def merge(file: Path) -> None:
    rows = read_export(file)  # the whole file is checked before anything is written
    with RowCache() as cache:
        changed = cache.merge(rows)
        total = len(cache)
    typer.echo(f"merged {len(rows)} rows from {file}: {changed} new or changed, "
               f"{total} in the cache")
