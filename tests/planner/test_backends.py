"""Both backends from one problem description: same optimum as each other and as brute force;
presolve never changes the optimum."""

from __future__ import annotations

import pytest

from planner.bruteforce import brute_force
from planner.presolve import dominates, remove_dominated
from planner.problem import Choice, Problem
from planner.result import SolveResult
from planner.solve import solve
from tests.planner.test_solver import random_problem


def backends_match_brute_force(problem: Problem, explain: bool = True) -> dict[str, SolveResult]:
    """CP-SAT and CBC both reach brute force's optimum (or both say INFEASIBLE when it finds
    nothing); the shared check of every random-instance test."""
    reference = brute_force(problem)
    results = {b: solve(problem, backend=b, explain=explain) for b in ("cpsat", "cbc")}
    if reference is None:
        assert {r.status for r in results.values()} == {"INFEASIBLE"}
        return results
    for backend, r in results.items():
        assert r.status == "OPTIMAL", backend
        assert r.totals["acc_loss"] == pytest.approx(reference[0], abs=1e-9), backend
        assert problem.feasible(r.totals), backend
    return results


def presolve_keeps_optimum(problem: Problem) -> tuple[Problem, int]:
    """Removing dominated options never changes brute force's optimum (or feasibility)."""
    reduced, removed = remove_dominated(problem)
    full, small = brute_force(problem), brute_force(reduced)
    assert (full is None) == (small is None)
    if full is not None and small is not None:
        assert small[0] == pytest.approx(full[0])
    return reduced, removed


@pytest.mark.parametrize("seed", range(30))
def test_cpsat_and_cbc_agree_and_match_brute_force(seed: int) -> None:
    problem = random_problem(100 + seed, n_layers=1 + seed % 6, weights_in_ram=seed % 4 == 0)
    results = backends_match_brute_force(problem)
    if all(r.feasible for r in results.values()):
        assert all(r.gap == 0.0 for r in results.values())
    assert results["cbc"].backend == "cbc" and results["cpsat"].backend == "cp-sat"


@pytest.mark.parametrize("seed", range(20))
def test_presolve_keeps_the_optimum(seed: int) -> None:
    problem = random_problem(200 + seed, n_layers=1 + seed % 5)
    reduced, removed = presolve_keeps_optimum(problem)
    assert removed == sum(len(c) for c in problem.choices.values()) - sum(
        len(c) for c in reduced.choices.values())


def test_dominance_is_strict_and_counted() -> None:
    good = Choice("int8", 1.0, 100, 0.1, 1, 0.5)
    worse = Choice("int4-slow", 2.0, 100, 0.2, 1, 0.6)
    same = Choice("copy", 1.0, 100, 0.1, 1, 0.5)
    assert dominates(good, worse) and not dominates(worse, good)
    assert not dominates(good, same)  # equal options are both kept
    problem = Problem(("a",), {"a": (good, worse, same)}, {"latency_ms": 10.0})
    reduced, removed = remove_dominated(problem)
    assert removed == 1 and [c.option for c in reduced.choices["a"]] == ["int8", "copy"]
    assert solve(problem).dominated_removed == 1


def test_unknown_backend_is_a_clear_error() -> None:
    from edgefit_common.errors import PlanError

    with pytest.raises(PlanError, match="cpsat, cbc"):
        solve(Problem(("a",), {"a": (Choice("x", 1, 1, 1, 1, 0),)}, {}), backend="gurobi")


def test_cbc_proves_an_infeasible_budget_through_the_lp() -> None:
    """The LP relaxation's proof does not depend on CBC's search: a budget below the fastest
    plan is INFEASIBLE even with no time to search."""
    from planner.result import SolverOptions

    c = (Choice("fp32", 4.0, 4000, 1.0, 4, 0.0), Choice("int8", 1.0, 1000, 0.25, 1, 0.5))
    problem = Problem(("a", "b"), {"a": c, "b": c}, {"latency_ms": 1.5}, {}, ((("a", 10),),))
    result = solve(problem, backend="cbc", options=SolverOptions(time_limit_s=0.001),
                   explain=False)
    assert result.status == "INFEASIBLE" and result.backend == "cbc"
