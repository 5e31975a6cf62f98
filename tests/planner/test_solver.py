"""CP-SAT against brute force on random small instances, and the infeasibility explanation."""

from __future__ import annotations

import itertools
import random

import pytest

from planner.bruteforce import brute_force
from planner.cpsat import _tie_break_costs, minimize_metric, separable_optimum, solve
from planner.formulation import scaled_up
from planner.problem import Choice, Problem


def random_problem(seed: int, n_layers: int, weights_in_ram: bool = False) -> Problem:
    rng = random.Random(seed)
    layers = tuple(f"l{i}" for i in range(n_layers))
    choices = {}
    for layer in layers:
        choices[layer] = tuple(
            Choice(option=f"o{j}", latency_ms=rng.randint(1, 50) / 10,
                   flash_bytes=rng.randint(100, 5000), energy_mj=rng.randint(1, 100) / 100,
                   act_bytes=rng.choice([1, 2, 4]), acc_loss=rng.randint(0, 1000) / 1000)
            for j in range(rng.randint(1, 4))
        )
    # a chain: step i holds layer i-1's output (input) and layer i's output
    ram_steps = tuple(
        tuple((layers[k], rng.randint(10, 300)) for k in {max(0, i - 1), i})
        for i in range(n_layers)
    )
    def total(metric: str, pick) -> float:
        return sum(pick(getattr(c, metric) for c in choices[ly]) for ly in layers)
    limits = {
        "latency_ms": round(rng.uniform(total("latency_ms", min), total("latency_ms", max)), 1),
        "flash_bytes": rng.randint(int(total("flash_bytes", min)), int(total("flash_bytes", max))),
        "ram_bytes": rng.randint(200, 2000) + (10000 if weights_in_ram else 0),
    }
    if rng.random() < 0.5:
        low, high = total("energy_mj", min), total("energy_mj", max)
        limits["energy_mj"] = round(rng.uniform(low, high), 2)
    return Problem(layers, choices, limits, {"ram_bytes": 100, "flash_bytes": 50}, ram_steps,
                   weights_in_ram)


@pytest.mark.parametrize("seed", range(40))
def test_cpsat_matches_brute_force(seed: int) -> None:
    problem = random_problem(seed, n_layers=1 + seed % 6, weights_in_ram=seed % 3 == 0)
    reference = brute_force(problem)
    result = solve(problem)
    if reference is None:
        assert result.status == "INFEASIBLE"
        assert result.relaxations, "an infeasible answer names what is reachable"
        return
    assert result.status == "OPTIMAL"
    assert result.totals["acc_loss"] == pytest.approx(reference[0], abs=1e-9)
    assert problem.feasible(result.totals)


def test_infeasible_explains_each_limit() -> None:
    c = (Choice("fp32", 4.0, 4000, 1.0, 4, 0.0), Choice("int8", 1.0, 1000, 0.25, 1, 0.5))
    problem = Problem(("a", "b"), {"a": c, "b": c},
                      {"latency_ms": 1.0, "flash_bytes": 10_000}, {}, ((("a", 10),),))
    result = solve(problem)
    assert result.status == "INFEASIBLE"
    by_limit = {r.limit: r for r in result.relaxations}
    # both layers at int8 is the fastest: 2 ms, and that meets the flash limit
    assert by_limit["latency_ms"].best_reachable == pytest.approx(2.0)
    assert by_limit["flash_bytes"].best_reachable is None  # flash is not the problem
    assert result.minimum["latency_ms"] == pytest.approx(2.0)


def test_loose_budget_prefers_cheapest_among_equally_accurate() -> None:
    c = (Choice("fp32", 4.0, 4000, 1.0, 4, 0.0), Choice("fp16", 2.0, 2000, 0.5, 2, 0.0))
    problem = Problem(("a",), {"a": c}, {"latency_ms": 100.0})
    assert solve(problem).picks == {"a": "fp16"}


def test_peak_ram_is_a_max_not_a_sum() -> None:
    c = (Choice("fp32", 1.0, 10, 1.0, 4, 0.0), Choice("int8", 1.0, 10, 1.0, 1, 1.0))
    steps = ((("a", 100),), (("b", 100),))  # never live together
    problem = Problem(("a", "b"), {"a": c, "b": c}, {"ram_bytes": 400}, {}, steps)
    result = solve(problem)
    assert result.picks == {"a": "fp32", "b": "fp32"}
    assert result.totals["ram_bytes"] == 400
    value, _ = minimize_metric(problem.without_limit("ram_bytes"), "ram_bytes")
    assert value == 100


@pytest.mark.parametrize("seed", range(15))
def test_joint_relaxation_admits_a_plan(seed: int) -> None:
    from planner.cpsat import smallest_joint_relaxation

    problem = random_problem(300 + seed, n_layers=1 + seed % 5)
    if brute_force(problem) is not None:
        return
    slack = smallest_joint_relaxation(problem)
    assert set(slack) == set(problem.limits) and all(v >= 0 for v in slack.values())
    relaxed = Problem(problem.layers, problem.choices,
                      {m: v + slack[m] for m, v in problem.limits.items()}, problem.fixed,
                      problem.ram_steps, problem.weights_in_ram)
    assert brute_force(relaxed) is not None, "the relaxation it reports is enough"


def test_binding_limits_are_the_ones_worth_loosening() -> None:
    from planner.solve import solve as solve_any

    c = (Choice("fp32", 4.0, 4000, 1.0, 4, 0.0), Choice("int8", 1.0, 1000, 0.25, 1, 0.5))
    problem = Problem(("a", "b"), {"a": c, "b": c},
                      {"latency_ms": 7.5, "flash_bytes": 100_000})
    result = solve_any(problem)
    assert result.binding == ("latency_ms",)  # 8.25 ms allows both at fp32; flash is slack
    assert result.sensitivity["latency_ms"] < result.totals["acc_loss"]


@pytest.mark.parametrize("seed", range(20))
def test_a_loose_budget_is_solved_layer_by_layer_exactly(seed: int) -> None:
    """With every limit loosened until the least-loss plan meets it, the shortcut answers,
    and its answer is the lexicographic (loss, then latency + flash) optimum of brute force."""
    base = random_problem(seed, n_layers=1 + seed % 6)
    problem = base.with_limits({m: 10 * v + 1e5 for m, v in base.limits.items()})
    picks = separable_optimum(problem)
    assert picks is not None
    costs = _tie_break_costs(problem)
    best = min(
        (sum(scaled_up(problem.choices[ly][i].acc_loss, "acc_loss")
             for ly, i in zip(problem.layers, p, strict=True)),
         sum(costs[ly, i] for ly, i in zip(problem.layers, p, strict=True)))
        for p in itertools.product(*(range(len(problem.choices[ly])) for ly in problem.layers)))
    got = (sum(scaled_up(problem.choices[ly][i].acc_loss, "acc_loss") for ly, i in picks.items()),
           sum(costs[ly, i] for ly, i in picks.items()))
    assert got == best
    result = solve(problem)
    assert result.status == "OPTIMAL" and result.gap == 0.0
    assert result.picks == {ly: problem.choices[ly][i].option for ly, i in picks.items()}


def test_a_binding_limit_is_not_shortcut() -> None:
    c = (Choice("fp32", 4.0, 4000, 1.0, 4, 0.0), Choice("int8", 1.0, 1000, 0.25, 1, 0.5))
    problem = Problem(("a", "b"), {"a": c, "b": c}, {"latency_ms": 5.0}, {}, ((("a", 10),),))
    assert separable_optimum(problem) is None  # fp32 + fp32 = 8 ms breaks the limit
    result = solve(problem)
    assert result.status == "OPTIMAL" and sorted(result.picks.values()) == ["fp32", "int8"]
