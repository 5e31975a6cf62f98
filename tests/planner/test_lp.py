"""The LP relaxation (planner.lp) and what CP-SAT does with it: a sound bound, sound
infeasibility proofs, a feasible LP-and-fix plan, honest gaps; the vectorised presolve."""

from __future__ import annotations

import dataclasses
import random

import pytest

from planner import lp
from planner.bruteforce import brute_force
from planner.cpsat import _lp_start
from planner.formulation import RESOLUTION
from planner.presolve import _vector, dominates, remove_dominated
from planner.problem import Choice, Problem
from planner.result import SolverOptions
from planner.solve import solve
from tests.planner.test_solver import random_problem
from tests.planner.test_workspace import instance as workspace_instance


def problems() -> list[Problem]:
    return ([random_problem(700 + s, n_layers=1 + s % 6, weights_in_ram=s % 3 == 0)
             for s in range(30)] + [workspace_instance(s) for s in range(10)])


@pytest.mark.parametrize("k", range(40))
def test_lp_bound_and_infeasibility_proof_are_sound(k: int) -> None:
    problem = problems()[k]
    reference = brute_force(problem)
    relaxation = lp.relax(problem)
    if reference is None:
        assert solve(problem, explain=False, explain_infeasible=False).status == "INFEASIBLE"
        return
    assert not lp.proven_infeasible(problem)  # never "proves" a feasible budget infeasible
    assert relaxation.status == "OPTIMAL"
    assert relaxation.value is not None
    assert relaxation.value <= reference[0] / RESOLUTION["acc_loss"] + 1e-3
    bound, plan = _lp_start(problem, SolverOptions(time_limit_s=2))
    assert bound == relaxation.value
    if plan is not None:  # LP-and-fix: a real plan, no better than the optimum
        totals = problem.totals(plan)
        assert problem.feasible(totals)
        assert totals["acc_loss"] >= reference[0] - 1e-9


def test_an_lp_proof_ends_the_solve() -> None:
    """Both layers need 4 ms at the least; 7 ms cannot be met, and the LP says so."""
    c = (Choice("fp32", 4.0, 4000, 1.0, 4, 0.0), Choice("int8", 4.0, 1000, 0.25, 1, 0.5))
    problem = Problem(("a", "b"), {"a": c, "b": c}, {"latency_ms": 7.0})
    assert lp.relax(problem).status == "INFEASIBLE"
    assert lp.proven_infeasible(problem)
    bare = solve(problem, explain_infeasible=False)
    assert bare.status == "INFEASIBLE" and not bare.relaxations
    explained = solve(problem)
    assert explained.status == "INFEASIBLE" and explained.minimum["latency_ms"] == 8.0
    assert not lp.proven_infeasible(problem.with_limits({"latency_ms": 8.0}))


@pytest.mark.parametrize("k", range(30))
def test_gap_mode_is_honest(k: int) -> None:
    """With a 50 % gap asked: the plan is within it of the optimum, the reported gap is never
    smaller than the true one, and OPTIMAL means the optimum."""
    problem = problems()[k]
    reference = brute_force(problem)
    if reference is None:
        return
    r = solve(problem, SolverOptions(relative_gap=0.5, tie_break_time_s=1.0), explain=False)
    assert r.feasible and problem.feasible(r.totals)
    loss, best = r.totals["acc_loss"], reference[0]
    assert r.gap is not None and r.gap <= 0.5 + 1e-9
    true_gap = (loss - best) / loss if loss > 0 else 0.0
    assert r.gap >= true_gap - 1e-6
    if r.status == "OPTIMAL":
        assert loss == pytest.approx(best, abs=1e-9)


@pytest.mark.parametrize("seed", range(15))
def test_vectorised_presolve_matches_pairwise_dominance(seed: int) -> None:
    """Random options with ties, two coupling signatures and a workspace on some steps."""
    rng = random.Random(seed)
    opts = tuple(Choice(f"o{j}", rng.choice([1.0, 2.0]), rng.choice([10, 20]),
                        rng.choice([0.1, 0.2]), rng.choice([1, 2]), rng.choice([0.0, 0.5]),
                        (("g", rng.choice([4, 8])),)) for j in range(12))
    extra: tuple[dict[tuple[str, str], float], ...] = (
        {("a", f"o{j}"): float(rng.choice([0, 5])) for j in range(12)}, {})
    problem = Problem(("a",), {"a": opts}, {}, {}, ((("a", 10),), (("a", 3),)),
                      step_extra=extra)
    reduced, _ = remove_dominated(problem)
    ws = {c.option: (extra[0][("a", c.option)],) for c in opts}
    expected = [c.option for c in opts
                if not any(dominates(o, c, ws[o.option], ws[c.option]) for o in opts)]
    assert [c.option for c in reduced.choices["a"]] == expected
    plain, _ = remove_dominated(dataclasses.replace(problem, step_extra=()))
    assert [c.option for c in plain.choices["a"]] == [
        c.option for c in opts if not any(dominates(o, c) for o in opts)]
    assert len(_vector(opts[0])) == 7  # latency, flash, energy, acc, act, transfer, input act
