"""The update's transfer bytes as a solver limit (planner.problem's transfer_bytes): it changes
the plan when it binds, CP-SAT and CBC agree on it, presolve keeps the options it needs, and
an infeasible update limit is explained on that limit."""

from __future__ import annotations

import pytest

from planner.presolve import remove_dominated
from planner.problem import Choice, Problem
from planner.result import SolverOptions
from planner.solve import solve

OPTIONS = SolverOptions(time_limit_s=10.0)


def _choice(option: str, flash: float, transfer: float, loss: float) -> Choice:
    return Choice(option, latency_ms=1.0, flash_bytes=flash, energy_mj=0.1, act_bytes=1.0,
                  acc_loss=loss, transfer_bytes=transfer)


def _problem(limits: dict[str, float]) -> Problem:
    """Three layers; the fp32 option compresses worse than its flash bytes suggest relative to
    int8 (fp32 1000 B flash -> 930 B sent; int8 260 B -> 240 B; int4 140 B -> 110 B)."""
    layers = ("a", "b", "c")
    choices = {ly: (_choice("fp32", 1000 * k, 930 * k, 0.0),
                    _choice("int8", 260 * k, 240 * k, 0.01 * k),
                    _choice("int4", 140 * k, 110 * k, 0.05 * k))
               for ly, k in zip(layers, (1, 2, 3), strict=True)}
    return Problem(layers=layers, choices=choices, limits=limits,
                   fixed={"flash_bytes": 5000.0, "transfer_bytes": 100.0})


def test_the_update_limit_changes_the_plan_when_it_binds() -> None:
    free = solve(_problem({"flash_bytes": 20_000.0}), OPTIONS)
    assert free.picks == {"a": "fp32", "b": "fp32", "c": "fp32"}
    assert free.totals["transfer_bytes"] == pytest.approx(100 + 930 * 6)
    limited = solve(_problem({"flash_bytes": 20_000.0, "transfer_bytes": 2700.0}), OPTIONS)
    assert limited.feasible and limited.picks != free.picks
    assert limited.totals["transfer_bytes"] <= 2700.0
    assert "transfer_bytes" in limited.binding  # 10 % more would buy accuracy


def test_cpsat_and_cbc_agree_with_the_update_limit() -> None:
    for cap in (2000.0, 3000.0, 4500.0):
        problem = _problem({"transfer_bytes": cap})
        a = solve(problem, OPTIONS, backend="cpsat")
        b = solve(problem, OPTIONS, backend="cbc")
        assert a.picks == b.picks
        assert a.totals["acc_loss"] == pytest.approx(b.totals["acc_loss"])


def test_presolve_keeps_an_option_that_only_sends_fewer_bytes() -> None:
    layers = ("a",)
    same_but_smaller_update = (_choice("x", 100.0, 90.0, 0.0), _choice("y", 100.0, 50.0, 0.0))
    problem = Problem(layers=layers, choices={"a": same_but_smaller_update},
                      limits={"transfer_bytes": 60.0})
    reduced, removed = remove_dominated(problem)
    assert [c.option for c in reduced.choices["a"]] == ["y"] and removed == 1
    assert solve(problem, OPTIONS).picks == {"a": "y"}


def test_an_unreachable_update_limit_is_infeasible_and_explained() -> None:
    result = solve(_problem({"transfer_bytes": 500.0}), OPTIONS)
    assert not result.feasible
    smallest = 100 + 110 * 6  # every layer int4
    assert result.minimum["transfer_bytes"] == pytest.approx(smallest)
    assert [r.limit for r in result.relaxations] == ["transfer_bytes"]
