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
