"""Progress as the command line shows it (edgefit.feedback) for the library's loops: a rich bar on
a terminal, occasional plain lines otherwise, nothing with -q; the numbers never change."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from edgefit.feedback import PlainReporter, RichReporter, duration, reporter_for
from edgefit_common.progress import Reporter, Task, reporting, task, track


class Recorder(Reporter):
    def __init__(self) -> None:
        self.started: list[tuple[str, float | None]] = []
        self.done: dict[str, float] = {}

    def start(self, description: str, total: float | None) -> Task:
        self.started.append((description, total))
        recorder = self

        class Counted(Task):
            def advance(self, n: float = 1.0) -> None:
                recorder.done[description] = recorder.done.get(description, 0) + n

        return Counted()


def _tiny_model_and_options() -> tuple[Any, dict[str, dict[str, list[Any]]], np.ndarray]:
    import torch
    from torch import nn

    from techniques.quantize import QuantizeConfig

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    int8 = [QuantizeConfig(weights="int8", activations="int8")]
    int4 = [QuantizeConfig(weights="int4", activations="fp32")]
    options = {layer: {"fp32": [], "int8": int8, "int4": int4} for layer in ("1", "3")}
    x = np.random.default_rng(0).random((64, 1, 4, 4), dtype=np.float32)
    return net, options, x


def test_sensitivity_reports_one_unit_per_layer_and_option_and_changes_nothing() -> None:
    from cost_models.accuracy import SENSITIVITY, measured_output_kl

    net, options, x = _tiny_model_and_options()
    silent = measured_output_kl(net, options, x)
    rec = Recorder()
    with reporting(rec):
        reported = measured_output_kl(net, options, x)
    assert rec.started == [(SENSITIVITY, 6)]
    assert rec.done == {SENSITIVITY: 6}
    assert reported.loss == silent.loss


def test_the_sensitivity_bar_shows_its_total_on_a_terminal() -> None:
    """rich's console capture: the bar, its count out of the total, and the line it leaves."""
    from cost_models.accuracy import measured_output_kl

    net, options, x = _tiny_model_and_options()
    console = Console(record=True, force_terminal=True, width=120, file=io.StringIO())
    with reporting(RichReporter(console, linger=0.0)):
        measured_output_kl(net, options, x)
    text = console.export_text()
    assert "sensitivity (layer x option)" in text
    assert "/6" in text  # the bar's count: done out of its total
    assert "sensitivity (layer x option): 6/6 done in" in text


def test_a_short_step_leaves_no_line_unless_verbose() -> None:
    console = Console(record=True, force_terminal=True, width=120, file=io.StringIO())
    with reporting(RichReporter(console)):
        list(track(range(3), "quick"))
    assert "done in" not in console.export_text()
    console = Console(record=True, force_terminal=True, width=120, file=io.StringIO())
    with reporting(RichReporter(console, verbose=True)):
        list(track(range(3), "quick"))
    assert "quick: 3/3 done in" in console.export_text()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_only_for_long_steps_then_every_minute() -> None:
    lines: list[str] = []
    clock = Clock()
    rep = PlainReporter(lines.append, clock=clock, watch=False)
    with reporting(rep):
        with task("quick", 10) as t:
            clock.now = 5.0
            rep.tick()
            t.advance(10)
        assert lines == [], "a quick step says nothing"
        with task("sensitivity (layer x option)", 100) as t:
            t.advance(20)
            clock.now = 40.0
            rep.tick()
            rep.tick()  # nothing new within the minute
            t.advance(30)
            clock.now = 100.0
            rep.tick()
            t.advance(50)
            clock.now = 130.0
    assert lines == [
        "sensitivity (layer x option): 20/100 (20 %) after 35 s, about 2 min 20 s left",
        "sensitivity (layer x option): 50/100 (50 %) after 1 min 35 s, about 1 min 35 s left",
        "sensitivity (layer x option): 100/100 done in 2 min 05 s",
    ]


def test_plain_verbose_says_when_each_step_starts_and_ends() -> None:
    lines: list[str] = []
    clock = Clock()
    with reporting(PlainReporter(lines.append, verbose=True, clock=clock, watch=False)):
        with task("load model lenet5-mnist"):
            clock.now = 1.5
        list(track([1, 2], "Pareto points"))
    assert lines == ["load model lenet5-mnist: started", "load model lenet5-mnist: done in 1.5 s",
                     "Pareto points: started (2 to do)", "Pareto points: 2/2 done in 0.0 s"]


def test_a_failed_step_writes_no_end_line() -> None:
    lines: list[str] = []
    with reporting(PlainReporter(lines.append, verbose=True, watch=False)), \
            pytest.raises(KeyboardInterrupt), task("solve"):
        raise KeyboardInterrupt
    assert lines == ["solve: started"]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_reporter_follows_quiet_and_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TERM", raising=False)
    assert type(reporter_for(True, False, FakeTerminal())) is Reporter
    assert isinstance(reporter_for(False, False, FakeTerminal()), RichReporter)
    assert isinstance(reporter_for(False, True, io.StringIO()), PlainReporter)
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(reporter_for(False, False, FakeTerminal()), PlainReporter)


def test_durations_read_like_a_person_wrote_them() -> None:
    assert [duration(s) for s in (0.42, 31.4, 125, 3725)] == [
        "0.4 s", "31 s", "2 min 05 s", "1 h 02 min"]
