"""Pareto sweeps: every point feasible, optimal at its own cost, none dominated."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from planner.pareto import plot, sweep, to_csv
from planner.problem import Problem
from tests.planner.test_solver import random_problem


def best_acc_at(problem: Problem, metric: str, value: float) -> float:
    best = float("inf")
    for combo in itertools.product(*(range(len(problem.choices[ly])) for ly in problem.layers)):
        t = problem.totals(dict(zip(problem.layers, combo, strict=True)))
        if problem.feasible(t) and t[metric] <= value + 1e-9:
            best = min(best, t["acc_loss"])
    return best


@pytest.mark.parametrize("seed", range(8))
def test_front_points_are_optimal_and_non_dominated(seed: int) -> None:
    problem = random_problem(400 + seed, n_layers=2 + seed % 4)
    problem = problem.without_limit("latency_ms")
    points = sweep(problem, ["latency_ms"], points=8)
    for p in points:
        assert problem.feasible(p.totals)
        assert p.totals["acc_loss"] == pytest.approx(
            best_acc_at(problem, "latency_ms", p.totals["latency_ms"]), abs=1e-9)
    for a, b in itertools.permutations(points, 2):
        assert not (a.totals["latency_ms"] <= b.totals["latency_ms"]
                    and a.totals["acc_loss"] <= b.totals["acc_loss"]
                    and (a.totals["latency_ms"], a.totals["acc_loss"])
                    != (b.totals["latency_ms"], b.totals["acc_loss"]))


def test_two_limit_front_csv_and_png(tmp_path: Path) -> None:
    problem = random_problem(7, n_layers=4)
    problem = problem.without_limit("latency_ms").without_limit("flash_bytes")
    points = sweep(problem, ["latency_ms", "flash_bytes"], points=8)
    assert points
    text = to_csv(points, ["latency_ms", "flash_bytes"])
    assert text.splitlines()[0].startswith("limit_latency_ms,limit_flash_bytes,latency_ms")
    assert len(text.splitlines()) == len(points) + 1
    png = tmp_path / "front.png"
    plot(points, ["latency_ms", "flash_bytes"], points[0].totals, png, "test", "nats")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_plan_at_its_own_limits_is_on_its_front(tmp_path: Path) -> None:
    from planner.solve import solve

    own = None
    for seed in range(40):  # the first random problem with a feasible latency limit
        problem = random_problem(11 + seed, n_layers=4)
        own = solve(problem)
        if own.feasible and "latency_ms" in problem.limits:
            break
    assert own is not None and own.feasible
    points = sweep(problem, ["latency_ms"], points=5)
    assert any(p.totals["acc_loss"] <= own.totals["acc_loss"] + 1e-9
               and p.totals["latency_ms"] <= own.totals["latency_ms"] + 1e-9 for p in points)
    png = tmp_path / "front.png"
    plot(points, ["latency_ms"], own.totals, png, "test", "nats", limits=problem.limits)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_figure_is_readable() -> None:
    """Issue #21 item 5: readable units, the limit as a line, a log axis when the costs span
    decades, the chosen plan on it, the estimate labelled as such."""
    import matplotlib.pyplot as plt

    from planner.pareto import FrontPoint, figure

    points = [FrontPoint({"latency_ms": 10.0}, {"latency_ms": lat, "flash_bytes": fl,
                                                 "acc_loss": loss}, {})
              for lat, fl, loss in ((2.0, 9e4, 0.5), (4.0, 2e5, 0.01), (8.0, 4e5, 1e-4))]
    fig = figure(points, ["latency_ms"], points[1].totals, "t", "nats",
                 limits={"latency_ms": 5.0})
    ax = fig.axes[0]
    assert ax.get_yscale() == "symlog" and ax.get_ylim()[0] == 0  # 1e-4 .. 0.5
    assert ax.get_xlabel() == "latency (ms)"
    assert ax.get_ylabel() == "estimated accuracy cost: nats"
    assert any(list(line.get_xdata()) == [5.0, 5.0] for line in ax.get_lines())  # the limit
    labels = ax.get_legend_handles_labels()[1]
    assert "chosen plan" in labels and "latency (ms) limit" in labels
    plt.close(fig)
    two = figure(points, ["flash_bytes", "latency_ms"], None, "t", "nats")
    assert two.axes[0].get_xlabel() == "flash (KB)"
    assert [p.get_offsets()[:, 0].tolist() for p in two.axes[0].collections][0] == [90, 200, 400]
    assert two.axes[1].get_ylabel() == "latency (ms)"  # the colour bar, in ms
    assert two.axes[0].get_yscale() == "symlog"
    plt.close(two)
    flat = figure(points[:2], ["latency_ms"], None, "t")
    assert flat.axes[0].get_yscale() == "linear"  # 0.01 .. 0.5: under two decades
    plt.close(flat)
