"""The progress seam: loops report to the context's reporter; the default shows nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgefit_common import progress
from edgefit_common.progress import Reporter, Task, reporting, task, track


class Recorded(Task):
    def __init__(self, log: list[tuple], description: str, total: float | None) -> None:
        self.log, self.description, self.total, self.done = log, description, total, 0.0

    def advance(self, n: float = 1.0) -> None:
        self.done += n

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        self.log.append(("update", description, total))


class Recorder(Reporter):
    def __init__(self) -> None:
        self.log: list[tuple] = []

    def start(self, description: str, total: float | None) -> Task:
        self.log.append(("start", description, total))
        return Recorded(self.log, description, total)

    def finish(self, task: Task, *, ok: bool) -> None:
        assert isinstance(task, Recorded)
        self.log.append(("finish", task.description, task.done, ok))


def test_track_yields_the_items_and_reports_one_unit_per_item() -> None:
    rec = Recorder()
    with reporting(rec):
        assert list(track([3, 1, 2], "sort")) == [3, 1, 2]
        assert list(track(iter("ab"), "letters")) == ["a", "b"]  # no len: total unknown
    assert rec.log == [("start", "sort", 3), ("finish", "sort", 3, True),
                       ("start", "letters", None), ("finish", "letters", 2, True)]


def test_the_default_reporter_does_nothing_and_a_block_restores_it() -> None:
    assert type(progress.current()) is Reporter
    assert list(track(range(3), "x")) == [0, 1, 2]
    rec = Recorder()
    with reporting(rec):
        assert progress.current() is rec
    assert type(progress.current()) is Reporter


def test_a_failed_step_finishes_not_ok_and_an_early_break_finishes_ok() -> None:
    rec = Recorder()
    with reporting(rec):
        with pytest.raises(ValueError), task("solve", 2) as t:
            t.advance()
            raise ValueError("boom")
        for item in track(range(10), "first two"):
            if item == 1:
                break
    assert ("finish", "solve", 1.0, False) in rec.log
    assert ("finish", "first two", 1.0, True) in rec.log


def test_importing_the_seam_imports_nothing_heavy() -> None:
    code = ("import sys\nimport edgefit_common.progress\n"
            "heavy = [m for m in ('rich', 'torch', 'numpy', 'typer') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
