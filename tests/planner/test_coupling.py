"""Coupled channel groups: one width per group in CP-SAT, CBC and brute force alike; presolve
never compares options across widths."""

from __future__ import annotations

import itertools
import random

import pytest

from planner.bruteforce import brute_force
from planner.presolve import dominates, remove_dominated
from planner.problem import Choice, Problem
from planner.solve import solve
from tests.planner.test_backends import backends_match_brute_force, presolve_keeps_optimum

WIDTHS = (8, 16, 24)


def _choice(rng: random.Random, name: str, widths: tuple[tuple[str, int], ...],
            frac: float) -> Choice:
    """Costs that shrink with the kept fraction (as pruning does), plus noise; the model
    input (when this layer owns it) keeps its full size."""
    elem_bytes = rng.choice([1, 4])
    return Choice(option=name, latency_ms=round(rng.uniform(0.5, 5) * frac, 2),
                  flash_bytes=round(rng.randint(100, 4000) * frac),
                  energy_mj=round(rng.uniform(0.01, 1) * frac, 3),
                  act_bytes=elem_bytes * frac,
                  acc_loss=round(rng.uniform(0, 1) * (1.5 - frac), 3), widths=widths,
                  in_act_bytes=elem_bytes)


def random_coupled_problem(seed: int, n_layers: int) -> Problem:
    """A chain in which layers share output groups (a residual stream) and each layer's input
    follows the previous layer's output group."""
    rng = random.Random(seed)
    layers = tuple(f"l{i}" for i in range(n_layers))
    n_groups = rng.randint(1, max(1, n_layers - 1))
    out_group = {ly: f"g{rng.randrange(n_groups)}" for ly in layers[:-1]}  # last: the output
    offered = {f"g{k}": rng.sample(WIDTHS, rng.randint(1, 3)) for k in range(n_groups)}
    choices = {}
    for i, ly in enumerate(layers):
        groups = [g for g in (out_group.get(ly), out_group.get(layers[i - 1]) if i else None)
                  if g is not None]
        groups = list(dict.fromkeys(groups))
        opts = []
        for combo in itertools.product(*(offered[g] for g in groups)):
            widths = tuple(zip(groups, combo, strict=True))
            frac = 1.0
            for w in combo:
                frac *= w / max(WIDTHS)
            for p in range(rng.randint(1, 2)):
                name = "-".join(f"{g}w{w}" for g, w in widths) + f"-p{p}"
                opts.append(_choice(rng, name, widths, frac))
        choices[ly] = tuple(opts)
    steps = tuple(tuple((layers[k], rng.randint(10, 300)) for k in {max(0, i - 1), i})
                  for i in range(n_layers))
    steps = (((f"{layers[0]}:input", rng.randint(10, 300)), *steps[0]), *steps[1:])

    def total(metric: str, pick) -> float:
        return sum(pick(getattr(c, metric) for c in choices[ly]) for ly in layers)

    limits = {"latency_ms": rng.uniform(total("latency_ms", min), total("latency_ms", max)),
              "flash_bytes": rng.uniform(total("flash_bytes", min), total("flash_bytes", max)),
              "ram_bytes": rng.randint(200, 1200)}
    return Problem(layers, choices, limits, {"ram_bytes": 50}, steps)


def _widths_consistent(problem: Problem, picks: dict[str, str]) -> bool:
    chosen = {ly: next(c for c in problem.choices[ly] if c.option == o) for ly, o in picks.items()}
    return problem.coupling_violations(chosen) == 0


@pytest.mark.parametrize("seed", range(30))
def test_backends_agree_with_brute_force_on_coupled_instances(seed: int) -> None:
    problem = random_coupled_problem(300 + seed, n_layers=2 + seed % 5)
    assert problem.groups
    results = backends_match_brute_force(problem, explain=False)
    for backend, r in results.items():
        assert not r.feasible or _widths_consistent(problem, r.picks), backend


def _conflict() -> Problem:
    """Layer a is cheap at width 8, b is accurate only at width 16, and they share a group."""
    a = (Choice("a16", 10.0, 100, 0.1, 1, 0.0, (("g", 16),)),
         Choice("a8", 1.0, 50, 0.1, 0.5, 0.1, (("g", 8),)))
    b = (Choice("b16", 1.0, 100, 0.1, 1, 0.0, (("g", 16),)),
         Choice("b8", 1.0, 50, 0.1, 0.5, 1.0, (("g", 8),)))
    return Problem(("a", "b"), {"a": a, "b": b}, {"latency_ms": 5.0})


def test_uncoupled_optimum_would_be_inconsistent() -> None:
    problem = _conflict()
    stripped = Problem(problem.layers, {ly: tuple(Choice(c.option, c.latency_ms, c.flash_bytes,
                                                         c.energy_mj, c.act_bytes, c.acc_loss)
                                                  for c in cs)
                                        for ly, cs in problem.choices.items()},
                       problem.limits)
    free = solve(stripped, explain=False)
    assert free.picks == {"a": "a8", "b": "b16"}  # two widths for one group: not a model
    assert free.totals["acc_loss"] == pytest.approx(0.1)
    for backend in ("cpsat", "cbc"):
        r = solve(problem, backend=backend, explain=False)
        assert r.picks == {"a": "a8", "b": "b8"}, backend
        assert r.totals["acc_loss"] == pytest.approx(1.1), backend
    best = brute_force(problem)
    assert best is not None and best[0] == pytest.approx(1.1)
    assert problem.totals({"a": 1, "b": 0})["coupling_violations"] == 1
    assert not problem.feasible(problem.totals({"a": 1, "b": 0}))


def test_presolve_never_compares_across_widths() -> None:
    """a8 beats a16 in every cost, but b only works at 16 under the limit: keep a16."""
    a = (Choice("a16", 2.0, 100, 0.1, 1, 0.2, (("g", 16),)),
         Choice("a8", 1.0, 50, 0.1, 0.5, 0.1, (("g", 8),)))
    b = (Choice("b16", 1.0, 100, 0.1, 1, 0.0, (("g", 16),)),
         Choice("b8", 9.0, 50, 0.1, 0.5, 0.0, (("g", 8),)))
    problem = Problem(("a", "b"), {"a": a, "b": b}, {"latency_ms": 5.0})
    assert not dominates(a[1], a[0])
    reduced, removed = remove_dominated(problem)
    assert removed == 0
    assert solve(problem, explain=False).picks == {"a": "a16", "b": "b16"}


def test_presolve_drops_widths_a_member_lacks() -> None:
    a = (Choice("a16", 1, 1, 1, 1, 0, (("g", 16),)), Choice("a8", 1, 1, 1, 1, 0, (("g", 8),)))
    b = (Choice("b16", 1, 1, 1, 1, 0, (("g", 16),)),)
    reduced, removed = remove_dominated(Problem(("a", "b"), {"a": a, "b": b}, {}))
    assert removed == 1 and [c.option for c in reduced.choices["a"]] == ["a16"]


@pytest.mark.parametrize("seed", range(15))
def test_presolve_keeps_the_coupled_optimum(seed: int) -> None:
    presolve_keeps_optimum(random_coupled_problem(500 + seed, n_layers=2 + seed % 4))


def test_a_group_without_a_common_width_is_infeasible_and_explained() -> None:
    a = (Choice("a8", 1, 1, 1, 1, 0, (("g", 8),)),)
    b = (Choice("b16", 1, 1, 1, 1, 0, (("g", 16),)),)
    problem = Problem(("a", "b"), {"a": a, "b": b}, {"latency_ms": 10.0})
    for backend in ("cpsat", "cbc"):
        assert solve(problem, backend=backend).status == "INFEASIBLE"
    assert brute_force(problem) is None


def test_options_of_one_layer_must_name_the_same_groups() -> None:
    bad = (Choice("x", 1, 1, 1, 1, 0, (("g", 8),)), Choice("y", 1, 1, 1, 1, 0))
    with pytest.raises(ValueError, match="layer a: its options name different channel groups"):
        Problem(("a",), {"a": bad}, {})


def test_groups_and_members_are_derived_from_the_choices() -> None:
    problem = _conflict()
    assert problem.groups == {"g": (8, 16)}
    assert problem.members() == {"g": ("a", "b")}
    assert problem.without_limit("latency_ms").groups == problem.groups


def test_the_model_input_is_not_shrunk_by_the_first_layers_pruning() -> None:
    a = (Choice("a16", 1, 1, 1, 4, 0.0, (("g", 16),), in_act_bytes=4),
         Choice("a8", 1, 1, 1, 2, 0.5, (("g", 8),), in_act_bytes=4))
    steps = ((("a:input", 100), ("a", 100)),)
    problem = Problem(("a",), {"a": a}, {"ram_bytes": 650}, {}, steps)
    assert problem.totals({"a": 1})["ram_bytes"] == 600  # 100 x 4 + 100 x 2
    for backend in ("cpsat", "cbc"):
        r = solve(problem, backend=backend, explain=False)
        assert r.picks == {"a": "a8"} and r.totals["ram_bytes"] == 600, backend
    tight = problem.with_limits({"ram_bytes": 550})
    assert solve(tight, explain=False).status == "INFEASIBLE"
    assert brute_force(tight) is None
