"""Every long step reports through edgefit_common.progress (issue #21 item 3): the Pareto sweep
one unit per point, Optuna one per trial, fine-tuning one per epoch; each step finishes ok."""

from __future__ import annotations

from pathlib import Path

from edgefit_common.progress import Reporter, Task, reporting
from planner.plan import Plan
from planner.resolve import problem_from_plan
from planner.result import SolverOptions

PLAN = Path(__file__).parents[1] / "review" / "data" / "plan.json"


class _Task(Task):
    def __init__(self, description: str, total: float | None) -> None:
        self.description, self.total, self.done = description, total, 0.0

    def advance(self, n: float = 1.0) -> None:
        self.done += n


class _Recorder(Reporter):
    def __init__(self) -> None:
        self.steps: list[tuple[_Task, bool]] = []

    def start(self, description: str, total: float | None) -> Task:
        return _Task(description, total)

    def finish(self, task: Task, *, ok: bool) -> None:
        assert isinstance(task, _Task)
        self.steps.append((task, ok))


def _step(rec: _Recorder, description: str) -> _Task:
    (task, ok), = [(t, ok) for t, ok in rec.steps if t.description == description]
    assert ok
    return task


def test_the_pareto_sweep_and_optuna_report_every_unit() -> None:
    from planner.bayes import search
    from planner.pareto import sweep

    problem = problem_from_plan(Plan.load(PLAN))
    rec = _Recorder()
    with reporting(rec):
        sweep(problem, ["latency_ms"], 5, SolverOptions(time_limit_s=2.0))
        search(problem, 12, None)
    pareto = _step(rec, "Pareto points")
    assert pareto.total == pareto.done == 5
    optuna = _step(rec, "Optuna trials")
    assert optuna.total == 12 and optuna.done == 12


def test_fine_tuning_reports_its_epochs() -> None:
    import numpy as np
    import torch
    from torch import nn

    from executors.distill import distill
    from techniques.distill import DistillConfig
    from workloads.data import Dataset

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    student = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    rng = np.random.default_rng(0)
    data = Dataset("toy", rng.random((64, 1, 4, 4), np.float32),
                   rng.integers(0, 4, 64).astype(np.int64), 4, "random")
    rec = _Recorder()
    with reporting(rec):
        distill(student, teacher, data, DistillConfig(epochs=3))
    epochs = _step(rec, "fine-tuning epochs")
    assert epochs.total == epochs.done == 3
