"""Progress of long steps, as one seam: a library loop says what it is doing, the caller decides
whether and how that is shown.

A loop wraps its iterable in :func:`track` (or a step in :func:`task`); both report to the
:class:`Reporter` of the current context (a ``ContextVar``), which by default shows nothing and
costs next to nothing, so library calls (the Python API, tests) stay silent. The command line
installs one with :func:`reporting` (``edgefit.feedback``: a rich progress bar on a terminal,
occasional plain lines otherwise, nothing with ``-q``). Reporting never changes what a loop
computes: ``track`` yields exactly the items of its iterable, in order.

Imports nothing beyond the standard library.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import TypeVar

T = TypeVar("T")


class Task:
    """One step being reported. This one is the default reporter's: it does nothing."""

    def advance(self, n: float = 1.0) -> None:
        """`n` more units of the step are done."""

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        """A new description (what the step does now) or total (its units, once known)."""


class Reporter:
    """Shows nothing: the default, and what library calls get unless a caller installs one."""

    def start(self, description: str, total: float | None) -> Task:
        """A step begins: `description` says what it does, `total` how many units (None:
        unknown, e.g. loading a model)."""
        return _NULL_TASK

    def finish(self, task: Task, *, ok: bool) -> None:
        """The step `task` ended: completed (`ok`), or left by an exception."""


_NULL_TASK = Task()
_SILENT = Reporter()
_CURRENT: ContextVar[Reporter | None] = ContextVar("edgefit_progress", default=None)


def current() -> Reporter:
    """The reporter of the current context."""
    return _CURRENT.get() or _SILENT


@contextlib.contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """Within the block, steps are reported to `reporter`."""
    token = _CURRENT.set(reporter)
    try:
        yield reporter
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def task(description: str, total: float | None = None) -> Iterator[Task]:
    """Report the block as one step of `total` units (advance it with ``.advance()``)."""
    reporter = current()
    handle = reporter.start(description, total)
    ok = False
    try:
        yield handle
        ok = True
    except GeneratorExit:  # a consumer of track() stopped early: not a failure
        ok = True
        raise
    finally:
        reporter.finish(handle, ok=ok)


def track(iterable: Iterable[T], description: str, total: float | None = None) -> Iterator[T]:
    """The items of `iterable`, unchanged, reported as one step of `total` units (default:
    ``len(iterable)`` where it has one), one unit per item the loop has finished."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with task(description, total) as handle:
        for item in iterable:
            yield item
            handle.advance()
