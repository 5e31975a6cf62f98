"""Latency (and energy) that depends on two layers' choices at once (Problem.latency_pairs: a
precision boundary's QuantizeLinear / DequantizeLinear, issue #22): every backend sees it, the
LP bound and presolve respect it, the totals count it, plan.json keeps it."""

from __future__ import annotations

import dataclasses
import random

import pytest

from planner.bruteforce import brute_force
from planner.lp import relax
from planner.presolve import remove_dominated
from planner.problem import Choice, LatencyPair, Problem
from planner.solve import solve
from tests.planner.test_backends import backends_match_brute_force, presolve_keeps_optimum
from tests.planner.test_solver import random_problem


def with_boundaries(problem: Problem, seed: int) -> Problem:
    """Random boundary latencies between neighbouring layers (option subsets of each) and a
    latency limit they can make bind."""
    rng = random.Random(seed)
    layers = problem.layers
    terms = []
    for a, b in zip(layers, layers[1:], strict=False):
        if rng.random() < 0.8:
            ao = tuple(c.option for c in problem.choices[a] if rng.random() < 0.5)
            bo = tuple(c.option for c in problem.choices[b] if rng.random() < 0.5)
            if ao and bo:
                ms = rng.choice([0.1, 0.4, 1.0]) * problem.limits["latency_ms"] / len(layers)
                terms.append(LatencyPair(a, ao, b, bo, ms, ms * 0.5))
    # RAM left loose: the random RAM limits make most instances infeasible before latency binds
    limits = {**problem.limits, "ram_bytes": problem.limits["ram_bytes"] + 20000}
    return dataclasses.replace(problem, latency_pairs=tuple(terms), limits=limits)


def instance(seed: int) -> Problem:
    return with_boundaries(random_problem(900 + seed, n_layers=2 + seed % 5,
                                          weights_in_ram=seed % 4 == 0), seed)


def test_the_random_boundaries_matter() -> None:
    """The agreement tests below would be weak if the terms never moved the optimum."""
    changed = 0
    for seed in range(24):
        p = instance(seed)
        a, b = brute_force(p), brute_force(dataclasses.replace(p, latency_pairs=()))
        changed += (a is None) != (b is None) or bool(a and b and abs(a[0] - b[0]) > 1e-12)
    assert changed >= 4


@pytest.mark.parametrize("seed", range(24))
def test_backends_and_brute_force_agree_with_boundaries(seed: int) -> None:
    p = instance(seed)
    results = backends_match_brute_force(p, explain=False)
    for r in results.values():
        if r.feasible:  # the reported latency includes the boundaries the plan crosses
            picks = {ly: [c.option for c in p.choices[ly]].index(o) for ly, o in r.picks.items()}
            assert r.totals["latency_ms"] == pytest.approx(p.totals(picks)["latency_ms"])


@pytest.mark.parametrize("seed", range(24))
def test_presolve_keeps_the_optimum_with_boundaries(seed: int) -> None:
    presolve_keeps_optimum(instance(seed))


def boundary() -> Problem:
    """a=int8 then b=fp32 is the most accurate pair, but the DequantizeLinear between them
    breaks the latency limit; uniform plans cross no boundary."""
    a = (Choice("int8", 1.0, 100, 0.1, 1, 0.1), Choice("fp32", 1.0, 400, 0.1, 4, 0.3))
    b = (Choice("int8", 1.0, 100, 0.1, 1, 0.4), Choice("fp32", 1.0, 400, 0.1, 4, 0.0))
    dq = LatencyPair("a", ("int8",), "b", ("fp32",), 0.5, 0.05)
    return Problem(("a", "b"), {"a": a, "b": b}, {"latency_ms": 2.2}, {},
                   ((("a", 100),), (("a", 100), ("b", 100))), latency_pairs=(dq,))


def test_a_boundary_steers_the_plan() -> None:
    p = boundary()
    assert solve(dataclasses.replace(p, latency_pairs=())).picks == {"a": "int8", "b": "fp32"}
    for backend in ("cpsat", "cbc"):
        r = solve(p, backend=backend)
        assert r.status == "OPTIMAL", backend
        assert r.picks == {"a": "fp32", "b": "fp32"}, backend
    totals = p.totals({"a": 0, "b": 1})
    assert totals["latency_ms"] == pytest.approx(2.5)
    assert totals["energy_mj"] == pytest.approx(0.25)


def test_the_lp_bound_counts_the_boundary() -> None:
    """Minimising latency: the LP cannot hide the boundary (z >= x_a + x_b - 1)."""
    p = dataclasses.replace(boundary(), limits={})
    pinned = dataclasses.replace(p, choices={"a": p.choices["a"][:1], "b": p.choices["b"][1:]})
    with_dq = relax(pinned, "latency_ms").value  # solver units (planner.exact's resolution)
    without = relax(dataclasses.replace(pinned, latency_pairs=()), "latency_ms").value
    assert with_dq is not None and without is not None
    assert with_dq / without == pytest.approx(2.5 / 2.0, rel=1e-6)


def test_presolve_does_not_drop_an_option_that_avoids_a_boundary() -> None:
    """b=int8 is dominated by b=fp32 in its own costs only if accuracy and size were equal:
    make a=int8 beat a=fp32 in every own cost; only the boundary says otherwise."""
    p = boundary()
    a = (Choice("int8", 1.0, 100, 0.1, 1, 0.1), Choice("fp32", 1.0, 400, 0.1, 4, 0.1))
    p = dataclasses.replace(p, choices={**p.choices, "a": a},
                            latency_pairs=(LatencyPair("a", ("int8",), "b", ("fp32",), 0.5),))
    reduced, removed = remove_dominated(p)
    assert removed == 0 and reduced.choices == p.choices
    _, removed_plain = remove_dominated(dataclasses.replace(p, latency_pairs=()))
    assert removed_plain == 1


def test_boundaries_must_name_two_known_layers() -> None:
    with pytest.raises(ValueError, match="two different known layers"):
        dataclasses.replace(boundary(), latency_pairs=(
            LatencyPair("a", ("int8",), "zz", ("fp32",), 1.0),))
