"""How the command line shows progress (edgefit_common.progress is the seam the loops call).

On a terminal: a rich progress bar per running step on stderr (elapsed time, ETA), each
finished step that took a while left behind as one line. Otherwise (a pipe, a log file, CI):
occasional plain lines, only for steps that run long (the first after ``FIRST_LINE_S``, then
every ``EVERY_S``), so a quick command's stderr holds nothing but its errors. ``-q``: nothing;
``-v``: a line for every step, started and finished.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from edgefit_common.progress import Reporter, Task

LINGER_S = 2.0
"""On a terminal, a finished step that took at least this long stays as a line."""
FIRST_LINE_S = 30.0
"""Without a terminal, a step's first line comes once it has run this long ..."""
EVERY_S = 60.0
"""... and then one line per this many seconds while it runs."""


def duration(seconds: float) -> str:
    """`0.4 s`, `31 s`, `2 min 05 s`, `1 h 02 min`."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _count(done: float, total: float | None) -> str:
    """`46/46 ` (or `12 ` of an unknown total; nothing for a step that counts nothing)."""
    if total is not None:
        return f"{done:g}/{total:g} "
    return f"{done:g} " if done else ""


def reporter_for(quiet: bool, verbose: bool, stream: IO[str] | None = None) -> Reporter:
    """What the command line installs: nothing shown with -q; a rich bar when `stream`
    (default stderr) is a terminal; plain occasional lines otherwise."""
    if quiet:
        return Reporter()
    stream = stream if stream is not None else sys.stderr
    if _is_terminal(stream):
        from rich.console import Console

        return RichReporter(Console(file=stream, highlight=False, markup=False),
                            verbose=verbose)
    return PlainReporter(_writer(stream), verbose=verbose)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # a closed or odd stream
        return False


def _writer(stream: IO[str] | None) -> Callable[[str], None]:
    def write(line: str) -> None:
        out = stream if stream is not None else sys.stderr
        try:
            out.write(line + "\n")
            out.flush()
        except (OSError, ValueError):  # a closed pipe: progress is never worth a crash
            pass
    return write


class _RichTask(Task):
    def __init__(self, progress: Any, task_id: Any, description: str) -> None:
        self.progress, self.id, self.description = progress, task_id, description
        self.started = time.monotonic()

    def advance(self, n: float = 1.0) -> None:
        self.progress.advance(self.id, n)

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        if description is not None:
            self.description = description
        self.progress.update(self.id, description=description, total=total)


class RichReporter(Reporter):
    """A rich progress display on `console` while any step runs; each finished step that took
    `linger` seconds or more (every one with `verbose`) stays as one line."""

    def __init__(self, console: Any, *, verbose: bool = False, linger: float = LINGER_S) -> None:
        self.console, self.verbose, self.linger = console, verbose, linger
        self._progress: Any = None
        self._lock = threading.Lock()

    def _make(self) -> Any:
        from rich.progress import (
            BarColumn,
            Progress,
            ProgressColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.text import Text

        class Count(ProgressColumn):  # 12/46; nothing for a step of unknown length
            def render(self, task: Any) -> Text:
                return Text(_count(task.completed, task.total).strip())

        class Eta(ProgressColumn):  # eta 0:00:12 once the rate is known
            def render(self, task: Any) -> Text:
                if task.total is None or task.finished:
                    return Text("")
                left = task.time_remaining
                if left is None:
                    return Text("eta -:--")
                minutes, seconds = divmod(round(left), 60)
                return Text(f"eta {minutes // 60}:{minutes % 60:02d}:{seconds:02d}")

        return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                        Count(), TimeElapsedColumn(), Eta(), console=self.console,
                        transient=True, refresh_per_second=5)

    def start(self, description: str, total: float | None) -> Task:
        with self._lock:
            if self._progress is None:
                self._progress = self._make()
                self._progress.start()
            return _RichTask(self._progress, self._progress.add_task(description, total=total),
                             description)

    def finish(self, task: Task, *, ok: bool) -> None:
        assert isinstance(task, _RichTask)
        with self._lock:
            progress = self._progress
            if progress is None:
                return
            state = next((t for t in progress.tasks if t.id == task.id), None)
            took = time.monotonic() - task.started
            if ok and state is not None and (self.verbose or took >= self.linger):
                progress.console.print(f"  {task.description}: "
                                       f"{_count(state.completed, state.total)}done in "
                                       f"{duration(took)}", highlight=False, markup=False)
            progress.remove_task(task.id)
            if not progress.tasks:
                progress.stop()
                self._progress = None


@dataclass(eq=False)
class _PlainTask(Task):
    description: str
    total: float | None
    started: float
    done: float = 0.0
    last_line: float | None = None  # when its last progress line was written
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def advance(self, n: float = 1.0) -> None:
        with self.lock:
            self.done += n

    def update(self, *, description: str | None = None, total: float | None = None) -> None:
        with self.lock:
            if description is not None:
                self.description = description
            if total is not None:
                self.total = total


class PlainReporter(Reporter):
    """Plain lines for a pipe or a log: a step's first line once it has run `first_after`
    seconds, then one per `every` seconds, and its end if it had any (`verbose`: every step's
    start and end). A helper thread looks every second while steps run."""

    def __init__(self, write: Callable[[str], None], *, verbose: bool = False,
                 first_after: float = FIRST_LINE_S, every: float = EVERY_S,
                 clock: Callable[[], float] = time.monotonic, watch: bool = True) -> None:
        self.write, self.verbose = write, verbose
        self.first_after, self.every, self.clock, self.watch = first_after, every, clock, watch
        self._tasks: list[_PlainTask] = []
        self._lock = threading.Lock()
        self._stop: threading.Event | None = None

    def start(self, description: str, total: float | None) -> Task:
        task = _PlainTask(description, total, self.clock())
        with self._lock:
            self._tasks.append(task)
            if self.watch and self._stop is None:
                self._stop = threading.Event()
                threading.Thread(target=self._watch, args=(self._stop,), daemon=True,
                                 name="edgefit-progress").start()
        if self.verbose:
            self.write(f"{description}: started" + (f" ({total:g} to do)" if total else ""))
        return task

    def finish(self, task: Task, *, ok: bool) -> None:
        assert isinstance(task, _PlainTask)
        with self._lock:
            if task in self._tasks:
                self._tasks.remove(task)
            if not self._tasks and self._stop is not None:
                self._stop.set()
                self._stop = None
        if ok and (self.verbose or task.last_line is not None):
            self.write(f"{task.description}: {_count(task.done, task.total)}done in "
                       f"{duration(self.clock() - task.started)}")

    def _watch(self, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            self.tick()

    def tick(self) -> None:
        """Write the lines that are due (the helper thread calls this every second)."""
        now = self.clock()
        with self._lock:
            tasks = list(self._tasks)
        for task in tasks:
            with task.lock:
                ran = now - task.started
                due = (ran >= self.first_after if task.last_line is None
                       else now - task.last_line >= self.every)
                if not due:
                    continue
                task.last_line = now
                line = self._line(task, ran)
            self.write(line)

    @staticmethod
    def _line(task: _PlainTask, ran: float) -> str:
        if task.total:
            pct = 100 * task.done / task.total
            eta = (f", about {duration(ran / task.done * (task.total - task.done))} left"
                   if 0 < task.done < task.total else "")
            return (f"{task.description}: {_count(task.done, task.total)}({pct:.0f} %) "
                    f"after {duration(ran)}{eta}")
        return f"{task.description}: running for {duration(ran)}"
