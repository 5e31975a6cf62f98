"""RAM bytes that depend on two layers' choices at once (Problem.step_pairs: precision-boundary
copies): every backend sees them, presolve respects them, plan.json keeps them, and the cost
model's boundary copies reach the solver."""

from __future__ import annotations

import dataclasses
import random

import pytest

from planner.bruteforce import brute_force
from planner.presolve import remove_dominated
from planner.problem import Choice, PairTerm, Problem
from planner.solve import solve
from tests.planner.test_backends import backends_match_brute_force, presolve_keeps_optimum
from tests.planner.test_solver import random_problem


def with_pairs(problem: Problem, seed: int) -> Problem:
    """Random pair terms between neighbouring layers (some option subsets of each), and a RAM
    limit they can make bind."""
    rng = random.Random(seed)
    layers = problem.layers
    steps: list[tuple[PairTerm, ...]] = []
    for t in range(len(problem.ram_steps)):
        terms = []
        if t > 0 and rng.random() < 0.8:
            a, b = layers[t - 1], layers[t]
            for _ in range(rng.randint(1, 2)):
                ao = tuple(c.option for c in problem.choices[a] if rng.random() < 0.5)
                bo = tuple(c.option for c in problem.choices[b] if rng.random() < 0.5)
                if ao and bo:
                    terms.append(PairTerm(a, ao, b, bo, float(rng.choice([400, 1500, 3000]))))
        steps.append(tuple(terms))
    limits = {"latency_ms": problem.limits["latency_ms"],
              "ram_bytes": problem.limits["ram_bytes"] + 300}
    return dataclasses.replace(problem, step_pairs=tuple(steps), limits=limits)


def instance(seed: int) -> Problem:
    return with_pairs(random_problem(700 + seed, n_layers=2 + seed % 5,
                                     weights_in_ram=seed % 4 == 0), seed)


def test_the_random_pairs_matter() -> None:
    """The agreement tests below would be weak if the terms never moved the optimum."""
    changed = 0
    for seed in range(24):
        p = instance(seed)
        a, b = brute_force(p), brute_force(dataclasses.replace(p, step_pairs=()))
        changed += (a is None) != (b is None) or bool(a and b and abs(a[0] - b[0]) > 1e-12)
    assert changed >= 5


@pytest.mark.parametrize("seed", range(24))
def test_backends_and_brute_force_agree_with_pairs(seed: int) -> None:
    backends_match_brute_force(instance(seed), explain=False)


@pytest.mark.parametrize("seed", range(24))
def test_presolve_keeps_the_optimum_with_pairs(seed: int) -> None:
    presolve_keeps_optimum(instance(seed))


def boundary() -> Problem:
    """int8 -> fp32 is the most accurate pair, but the fp32 reader's copy of the int8 codes
    overflows the RAM; uniform plans have no copy."""
    a = (Choice("int8", 1.0, 100, 0.1, 1, 0.1), Choice("fp32", 1.0, 400, 0.1, 4, 0.3))
    b = (Choice("int8", 1.0, 100, 0.1, 1, 0.4), Choice("fp32", 1.0, 400, 0.1, 4, 0.0))
    copy = PairTerm("a", ("int8",), "b", ("fp32",), 5000.0)
    return Problem(("a", "b"), {"a": a, "b": b}, {"ram_bytes": 3000}, {},
                   ((("a", 100),), (("a", 100), ("b", 100))), step_pairs=((), (copy,)))


def test_a_boundary_copy_steers_the_plan() -> None:
    p = boundary()
    assert solve(dataclasses.replace(p, step_pairs=())).picks == {"a": "int8", "b": "fp32"}
    for backend in ("cpsat", "cbc"):
        r = solve(p, backend=backend)
        assert r.status == "OPTIMAL", backend
        assert r.picks == {"a": "fp32", "b": "fp32"}, backend
    chosen = {ly: p.choices[ly][0] for ly in p.layers}  # int8, int8: no copy
    assert p.peak_ram(chosen) == 100 + 100
    chosen["b"] = p.choices["b"][1]  # int8 -> fp32
    assert p.peak_ram(chosen) == 100 + 400 + 5000
    assert p.step_ram(chosen, workspace=False) == [100, 500]


def test_presolve_does_not_drop_an_option_that_avoids_a_copy() -> None:
    """a=int8 beats a=fp32 in every own cost; only the pair term says otherwise."""
    p = boundary()
    reduced, removed = remove_dominated(p)
    assert removed == 0 and reduced.choices == p.choices
    plain, removed_plain = remove_dominated(dataclasses.replace(p, step_pairs=()))
    assert removed_plain == 1


def test_pairs_must_name_two_known_layers_and_match_the_steps() -> None:
    p = boundary()
    with pytest.raises(ValueError, match="step_pairs has 1 steps; the RAM steps have 2"):
        dataclasses.replace(p, step_pairs=((),))
    with pytest.raises(ValueError, match="two different known layers"):
        dataclasses.replace(p, step_pairs=((), (PairTerm("a", ("int8",), "zz", ("fp32",), 1.0),)))


def test_plan_json_keeps_the_pairs(tmp_path) -> None:
    from planner.plan import Plan
    from planner.resolve import problem_from_plan, resolve
    from tests.planner.test_workspace import _plan_of

    p = boundary()
    plan = _plan_of(p)
    steps = [plan.ram_steps[0], plan.ram_steps[1].model_copy(update={
        "pairs": [("a", ["int8"], "b", ["fp32"], 5000.0)]})]
    plan = plan.model_copy(update={"ram_steps": steps})
    plan.save(tmp_path / "plan.json")
    loaded = Plan.load(tmp_path / "plan.json")
    assert problem_from_plan(loaded).step_pairs == p.step_pairs
    assert resolve(loaded).options() == {"a": "fp32", "b": "fp32"}


def test_build_problem_carries_the_boundary_copies() -> None:
    """edgefit.planning.build_problem turns cost_models.ram_terms.boundary_terms into
    Problem.step_pairs: the peak RAM of a mixed plan is the liveness peak + workspace + the
    copy, as the cost model's boundary_copies says."""
    from cost_models.analytical import build_cost_table
    from cost_models.ram_terms import boundary_copies, option_workspace
    from edgefit.planning import build_problem
    from tests.cost_models.test_runtime_memory import (
        HOST_FIELDS,
        INT8_PATHS,
        spec_with,
        weighted_graph,
    )

    g = weighted_graph()
    table = build_cost_table(g, spec_with({**HOST_FIELDS, **INT8_PATHS}))
    problem = build_problem(g, table, {})
    assert any(problem.step_pairs)
    for picks in ({"conv": "int8", "fc": "fp32"}, {"conv": "fp32", "fc": "int8"},
                  {"conv": "int8", "fc": "int8"}):
        chosen = {n: next(c for c in problem.choices[n] if c.option == o)
                  for n, o in picks.items()}
        ws = option_workspace(g, table)
        expected = [live + sum(b for (n, o), b in w.items() if picks[n] == o) + edge
                    for live, w, edge in zip(problem.step_ram(chosen, workspace=False), ws,
                                             boundary_copies(g, table, picks), strict=True)]
        assert problem.step_ram(chosen) == pytest.approx(expected)
