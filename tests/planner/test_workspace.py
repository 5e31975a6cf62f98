"""Per-option RAM workspace (Problem.step_extra): every backend sees it, presolve respects it,
plan.json keeps it."""

from __future__ import annotations

import dataclasses
import random

import pytest

from planner.bruteforce import brute_force
from planner.presolve import remove_dominated
from planner.problem import Choice, Problem
from planner.solve import solve
from tests.planner.test_backends import backends_match_brute_force
from tests.planner.test_solver import random_problem


def with_workspace(problem: Problem, seed: int) -> Problem:
    """Random integer workspace bytes on some (layer, option) at some steps, some negative
    (a layout that frees a buffer), and a RAM limit that the workspace makes matter."""
    rng = random.Random(seed)
    extra = []
    for _ in problem.ram_steps:
        step = {}
        for layer in problem.layers:
            for c in problem.choices[layer]:
                if rng.random() < 0.3:
                    step[layer, c.option] = float(rng.choice([-50, 100, 400, 900]))
        extra.append(step)
    # latency and RAM only: with every random limit most instances are infeasible anyway
    limits = {"latency_ms": problem.limits["latency_ms"],
              "ram_bytes": problem.limits["ram_bytes"] + 300}
    return dataclasses.replace(problem, step_extra=tuple(extra), limits=limits)


def instance(seed: int) -> Problem:
    return with_workspace(random_problem(500 + seed, n_layers=1 + seed % 5,
                                         weights_in_ram=seed % 4 == 0), seed)


def test_the_random_workspace_matters() -> None:
    """The agreement test below would be weak if the term never moved the optimum."""
    changed = 0
    for seed in range(24):
        p = instance(seed)
        a, b = brute_force(p), brute_force(dataclasses.replace(p, step_extra=()))
        changed += (a is None) != (b is None) or bool(a and b and abs(a[0] - b[0]) > 1e-12)
    assert changed >= 5


@pytest.mark.parametrize("seed", range(24))
def test_backends_and_brute_force_agree_with_workspace(seed: int) -> None:
    backends_match_brute_force(instance(seed), explain=False)


def two_options() -> Problem:
    """int4 is the more accurate choice here, but its fp32 weight copy overflows the RAM."""
    fp = Choice("int8", 1.0, 1000, 0.1, 1, 0.5)
    q4 = Choice("int4", 1.0, 500, 0.1, 1, 0.2)
    return Problem(("a",), {"a": (fp, q4)}, {"ram_bytes": 1500}, {}, ((("a", 1000),),))


def test_workspace_changes_the_optimum() -> None:
    plain = two_options()
    copy = dataclasses.replace(plain, step_extra=({("a", "int4"): 4000.0},))
    assert solve(plain).picks == {"a": "int4"}
    assert plain.peak_ram({"a": plain.choices["a"][1]}) == 1000
    assert copy.peak_ram({"a": copy.choices["a"][1]}) == 5000
    for backend in ("cpsat", "cbc"):
        r = solve(copy, backend=backend, explain=False)
        assert r.picks == {"a": "int8"}, backend
        assert r.totals["ram_bytes"] == 1000, backend
    tight = copy.with_limits({"ram_bytes": 999})
    assert solve(tight, explain=False).status == "INFEASIBLE"
    assert solve(tight).minimum["ram_bytes"] == 1000


def test_presolve_keeps_an_option_whose_workspace_is_smaller() -> None:
    """int4 is better than int4-dq in every cost but needs a copy: neither dominates."""
    fast = Choice("int4", 1.0, 500, 0.1, 1, 0.2)
    slow = Choice("int4-direct", 2.0, 500, 0.2, 1, 0.2)
    p = Problem(("a",), {"a": (fast, slow)}, {"ram_bytes": 1500}, {}, ((("a", 1000),),),
                step_extra=({("a", "int4"): 4000.0},))
    reduced, removed = remove_dominated(p)
    assert removed == 0 and reduced.step_extra == p.step_extra
    assert solve(p).picks == {"a": "int4-direct"}
    plain, removed_plain = remove_dominated(dataclasses.replace(p, step_extra=()))
    assert removed_plain == 1 and [c.option for c in plain.choices["a"]] == ["int4"]


def test_step_extra_must_match_the_steps() -> None:
    p = two_options()
    with pytest.raises(ValueError, match="step_extra has 2 steps; the RAM steps have 1"):
        dataclasses.replace(p, step_extra=({}, {}))
    with pytest.raises(ValueError, match=r"unknown layers \['zz'\]"):
        dataclasses.replace(p, step_extra=({("zz", "int4"): 1.0},))


def test_plan_json_keeps_the_workspace(tmp_path) -> None:
    from planner.plan import Plan
    from planner.resolve import problem_from_plan, resolve

    plan = _plan_of(two_options())
    steps = [s.model_copy(update={"workspace": [("a", "int4", 4000.0)]})
             for s in plan.ram_steps]
    plan = plan.model_copy(update={"ram_steps": steps})
    plan.save(tmp_path / "plan.json")
    loaded = Plan.load(tmp_path / "plan.json")
    problem = problem_from_plan(loaded)
    assert problem.step_extra == ({("a", "int4"): 4000.0},)
    assert resolve(loaded).options() == {"a": "int8"}
    without = loaded.model_copy(update={"ram_steps": [s.model_copy(update={"workspace": []})
                                                      for s in loaded.ram_steps]})
    assert problem_from_plan(without).step_extra == ()
    assert resolve(without).options() == {"a": "int4"}


def _plan_of(problem: Problem):
    """A minimal unsolved plan.json for a one-layer problem (RAM limit only)."""
    from device_specs.budget import Limits
    from planner import plan as ps

    layers = {ly: ps.LayerPlan(
        option=None, op_type="Linear", op_class="linear", params=1, macs=1, predicted=None,
        alternatives=[ps.Alternative(option=c.option, kernel=c.option, latency_ms=c.latency_ms,
                                     flash_bytes=c.flash_bytes, energy_mj=c.energy_mj,
                                     acc_loss=c.acc_loss, act_bytes=c.act_bytes)
                      for c in problem.choices[ly]]) for ly in problem.layers}
    return ps.Plan(
        edgefit_version="test", model=ps.ModelRef(name="m", kind="zoo", input_shape=[1],
                                                  origin="flag", weights_sha256="0" * 64),
        data=None, calibration_sha256=None, target=ps.TargetRef(device="d", profile="p"),
        limits=Limits.model_validate({"ram": f"{problem.limits['ram_bytes']:g}B"}),
        status="UNSOLVED",
        layers=layers, fixed={}, totals=None,
        solver=ps.SolverInfo(backend="none", status="UNSOLVED", wall_time_s=0.0,
                             options_considered=0, resolution={}),
        provenance={}, accuracy_unit="kl",
        ram_steps=[ps.RamStep(owner=ly, live=list(step))
                   for ly, step in zip(problem.layers, problem.ram_steps, strict=True)])


def test_build_problem_carries_the_cost_models_workspace() -> None:
    """edgefit.planning.build_problem feeds option_workspace into the Problem: the peak RAM
    with the workspace is the liveness peak plus the chosen options' terms, step by step, and
    the solver steers away from the all-int4 plan (the conv's weight copy and working buffer)
    when the RAM limit says so."""
    from cost_models.analytical import build_cost_table
    from cost_models.ram_terms import option_workspace
    from edgefit.planning import build_problem
    from tests.cost_models.test_runtime_memory import HOST_FIELDS, spec_with, tiny_graph

    g = tiny_graph(flatten=True)
    spec = spec_with({k: HOST_FIELDS[k] for k in
                      ("dequantized_weight_copies", "conv_workspace_bytes")})
    table = build_cost_table(g, spec)
    problem = build_problem(g, table, {})
    ws = option_workspace(g, table)
    assert problem.step_extra == tuple(ws) and any(ws)
    picks = {"conv": "int4", "fc": "int4"}
    chosen = {n: next(c for c in problem.choices[n] if c.option == o) for n, o in picks.items()}
    full, live = problem.step_ram(chosen), problem.step_ram(chosen, workspace=False)
    assert [a - b for a, b in zip(full, live, strict=True)] == [
        sum(v for (n, o), v in w.items() if picks[n] == o) for w in ws]
    conv_int8 = {"conv": "int8", "fc": "int4"}
    cheaper = problem.peak_ram({n: next(c for c in problem.choices[n] if c.option == o)
                                for n, o in conv_int8.items()})
    assert cheaper < max(full)
    capped = problem.with_limits({"ram_bytes": cheaper})
    r = solve(capped, explain=False)
    assert r.feasible and r.picks != picks and r.totals["ram_bytes"] <= cheaper
    assert r.totals["ram_bytes"] == max(capped.step_ram(
        {n: next(c for c in problem.choices[n] if c.option == o) for n, o in r.picks.items()}))
