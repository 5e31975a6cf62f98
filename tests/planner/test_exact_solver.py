"""Issue #18: the solvers never answer worse than a plan they hold, never read a time-out as
"not binding", and their claims hold for the costs as measured, not only for the costs rounded
to the solver's integers (planner.exact). Small instances, brute force as the reference."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import random

import pytest
from ortools.sat.python import cp_model

from planner import cbc, cpsat, exact
from planner.bruteforce import brute_force
from planner.exact import (
    LOOSE,
    SAFE,
    Attempt,
    Pool,
    Rounding,
    breaks,
    exact_totals,
    holds,
    resolution_for,
)
from planner.problem import Choice, PairTerm, Problem
from planner.result import DOWNGRADED, VERIFIED, SolverOptions
from planner.solve import solve, with_sensitivity
from tests.planner.test_pairs import instance as pairs_instance
from tests.planner.test_solver import random_problem
from tests.planner.test_workspace import instance as workspace_instance

BACKENDS = ("cpsat", "cbc")


def assignments(problem: Problem) -> list[dict[str, int]]:
    return [dict(zip(problem.layers, combo, strict=True)) for combo in itertools.product(
        *(range(len(problem.choices[ly])) for ly in problem.layers))]


def integer_feasible(problem: Problem, picks: dict[str, int], rounding: Rounding) -> bool:
    """The plan meets every limit on `rounding`'s integers, as the backends' models read them
    (`rounding` at the resolution it carries: .at(problem) for the backends' own)."""
    chosen = {ly: problem.choices[ly][i] for ly, i in picks.items()}
    if problem.coupling_violations(chosen):
        return False
    for metric, limit in problem.limits.items():
        room = rounding.room(problem, metric, limit)
        if metric != "ram_bytes":
            if sum(rounding.cost(c.metric(metric), metric) for c in chosen.values()) > room:
                return False
            continue
        weights = sum(rounding.cost(c.flash_bytes, "flash_bytes") for c in chosen.values()
                      ) if problem.weights_in_ram else 0
        for t, step in enumerate(problem.ram_steps or ((),)):
            coef = rounding.step_coefficients(problem, t, step)
            pairs = sum(k for (a, ia, b, ib), k in rounding.pair_coefficients(problem, t)
                        if picks[a] in ia and picks[b] in ib)
            if sum(coef.get(key, 0) for key in picks.items()) + pairs + weights > room:
                return False
    return True


def fine_problem(seed: int) -> Problem:
    """Costs with many digits (fractional bytes too), workspace and pair terms, and limits set
    at a random plan's exact totals give or take less than the rounding: the case where
    rounding decides."""
    rng = random.Random(seed)
    n = 2 + seed % 3
    layers = tuple(f"l{i}" for i in range(n))
    choices = {ly: tuple(Choice(f"o{j}", rng.uniform(0.1, 3.0), rng.uniform(50, 900),
                                rng.uniform(0.001, 0.2), rng.uniform(0.3, 4.0),
                                rng.uniform(0, 1)) for j in range(rng.randint(2, 4)))
               for ly in layers}
    steps = tuple(tuple((layers[k], rng.randint(10, 300)) for k in {max(0, i - 1), i})
                  for i in range(n))
    extra = tuple({(ly, c.option): rng.uniform(-20, 200) for ly in layers
                   for c in choices[ly] if rng.random() < 0.3} for _ in steps)
    pairs = tuple((PairTerm(layers[t - 1], (choices[layers[t - 1]][0].option,), layers[t],
                            (choices[layers[t]][-1].option,), rng.uniform(10, 400)),)
                  if t and rng.random() < 0.5 else () for t in range(n))
    base = Problem(layers, choices, {}, {"ram_bytes": 64.5, "flash_bytes": 10.25}, steps,
                   seed % 2 == 0, extra, pairs)
    anchor = exact_totals(base, {ly: rng.randrange(len(choices[ly])) for ly in layers})
    offsets = resolution_for(base)
    limits = {m: anchor[m] + rng.choice([-2.0, -0.6, -0.2, 0.0, 0.3]) * offsets[m] * n
              for m in rng.sample(sorted(set(offsets) - {"acc_loss"}), rng.randint(1, 3))}
    return base.with_limits(limits)


FINE = [fine_problem(s) for s in range(60)]


@pytest.mark.parametrize("k", range(len(FINE)))
def test_loose_is_a_relaxation_and_safe_a_restriction(k: int) -> None:
    """Every plan that holds exactly is LOOSE-feasible; every SAFE-feasible plan holds."""
    problem = FINE[k]
    loose, safe = LOOSE.at(problem), SAFE.at(problem)
    for picks in assignments(problem):
        if holds(problem, picks):
            assert integer_feasible(problem, picks, loose), picks
        if integer_feasible(problem, picks, safe):
            assert holds(problem, picks), picks


@pytest.mark.parametrize("rounding", ["fixed", "instance"])
def test_the_fine_instances_are_ones_where_rounding_decides(rounding: str) -> None:
    """Rounding costs up and limits down gets at least some of them wrong, at the fixed
    resolution (the old model) and at the instance's finer one."""
    wrong = 0
    for problem in FINE:
        reference = brute_force(problem)
        up = SAFE if rounding == "fixed" else SAFE.at(problem)
        safe = [p for p in assignments(problem) if integer_feasible(problem, p, up)]
        safe_best = min((exact_totals(problem, p)["acc_loss"] for p in safe), default=None)
        wrong += (reference is None) != (safe_best is None) or bool(
            reference and safe_best is not None and safe_best > reference[0] + 1e-9)
    assert wrong >= 5


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", range(len(FINE)))
def test_claims_hold_for_the_measured_costs(k: int, backend: str) -> None:
    """OPTIMAL is brute force's optimum, INFEASIBLE means no plan holds, a returned plan holds
    exactly; anything the rounding decided is said (FEASIBLE or UNKNOWN with a note)."""
    problem = FINE[k]
    reference = brute_force(problem)
    r = solve(problem, backend=backend, explain=False, explain_infeasible=False)
    assert r.exact_check in (VERIFIED, DOWNGRADED)
    assert (r.exact_check == DOWNGRADED) <= bool(r.note)
    if r.feasible:
        picks = {ly: [c.option for c in problem.choices[ly]].index(o) for ly, o in r.picks.items()}
        assert holds(problem, picks)
        assert reference is not None and r.totals["acc_loss"] >= reference[0] - 1e-9
    if r.status == "OPTIMAL":
        assert reference is not None
        assert r.totals["acc_loss"] == pytest.approx(reference[0], abs=1e-8)
    if r.status == "INFEASIBLE":
        assert reference is None
    if reference is None:
        assert r.status in ("INFEASIBLE", "UNKNOWN")


# The latency unit of every ladder instance (its worst total is 6 x 2 ms).
UNIT = 1e-8


def ladder(units: float, n: int = 6, int4: bool = True, twin: bool = False) -> Problem:
    """n layers; int8 costs 1 ms + half a latency unit, so all at int8 costs n ms + 3 units,
    and a limit of n ms + `units` units near that is within the rounding of the all-int8 plan.
    twin: a second int8 kernel at 1 ms + 0.4 units, so 2^n plans sit in that band, not one."""
    opts = [Choice("fp32", 2.0, 400, 0.2, 4, 0.0),
            Choice("int8", 1 + 0.5 * UNIT, 100, 0.1, 1, 1.0)]
    if twin:
        opts.append(Choice("int8b", 1 + 0.4 * UNIT, 101, 0.1, 1, 1.0 + 1e-6))
    if int4:
        opts.append(Choice("int4", 0.5, 50, 0.05, 1, 3.0))
    layers = tuple(f"l{i}" for i in range(n))
    problem = Problem(layers, {ly: tuple(opts) for ly in layers},
                      {"latency_ms": n + units * UNIT})
    assert resolution_for(problem)["latency_ms"] == UNIT
    return problem


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_limit_met_exactly_is_not_lost_to_rounding(backend: str) -> None:
    """All int8 costs the limit, 6 ms + 3 units: rounded up per layer it would cost 6 ms + 6
    units, and rounding up (the old model) answers OPTIMAL with two more loss units."""
    problem = ladder(3)
    assert not integer_feasible(problem, dict.fromkeys(problem.layers, 1), SAFE.at(problem))
    r = solve(problem, backend=backend)
    assert r.status == "OPTIMAL" and r.exact_check == VERIFIED and not r.note
    assert r.totals["acc_loss"] == pytest.approx(6.0) == brute_force(problem)[0]  # type: ignore[index]
    assert r.binding == r.binding_unknown == ()  # 10 % more buys no fp32 layer: proven


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_limit_just_below_is_not_met_by_rounding(backend: str) -> None:
    """6 ms + 2 units: all int8 rounds down under it but breaks it exactly; that plan is cut
    off and the next one (five int8, one int4) is the optimum, proven."""
    problem = ladder(2)
    assert integer_feasible(problem, dict.fromkeys(problem.layers, 1), LOOSE.at(problem))
    r = solve(problem, backend=backend)
    assert r.status == "OPTIMAL" and r.exact_check == VERIFIED
    assert r.totals["acc_loss"] == pytest.approx(8.0) == brute_force(problem)[0]  # type: ignore[index]


@pytest.mark.parametrize("backend", BACKENDS)
def test_infeasible_by_less_than_the_rounding_is_proven_when_few_plans_are_close(
        backend: str) -> None:
    """Without int4 the only plan near 6 ms + 2 units is all int8, one unit over: INFEASIBLE,
    for the measured costs (the band holds one plan, cut off)."""
    r = solve(ladder(2, int4=False), backend=backend)
    assert r.status == "INFEASIBLE" and r.exact_check == VERIFIED
    assert r.relaxations[0].status == "OPTIMAL"
    assert r.relaxations[0].best_reachable == pytest.approx(6 + 3 * UNIT, abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_plans_within_the_rounding_downgrade_the_claim(backend: str) -> None:
    """With two int8 kernels, 64 plans sit within the rounding of 6 ms + 2 units, all over it:
    the answer is a plan that holds, FEASIBLE, saying the rounding may hide a better one (brute
    force agrees it is the best); without int4, UNKNOWN, never INFEASIBLE."""
    problem = ladder(2, twin=True)
    r = solve(problem, backend=backend)
    assert r.status == "FEASIBLE" and r.exact_check == DOWNGRADED
    assert "latency_ms" in r.note and "rounding" in r.note
    assert r.gap is not None and r.gap > 0
    assert r.totals["acc_loss"] == pytest.approx(brute_force(problem)[0])  # type: ignore[index]
    bare = solve(ladder(2, int4=False, twin=True), backend=backend,
                 explain_infeasible=False)
    assert bare.status == "UNKNOWN" and bare.exact_check == DOWNGRADED
    assert "only the rounding decides" in bare.note


def _feasible_plans(problem: Problem) -> list[dict[str, int]]:
    return sorted((p for p in assignments(problem) if holds(problem, p)),
                  key=lambda p: exact_totals(problem, p)["acc_loss"])


def _names(problem: Problem, picks: dict[str, int]) -> dict[str, str]:
    return {ly: problem.choices[ly][i].option for ly, i in picks.items()}


def _binding_instance() -> Problem:
    c = (Choice("fp32", 4.0, 4000, 1.0, 4, 0.0), Choice("int8", 1.0, 1000, 0.25, 1, 0.5),
         Choice("int4", 0.6, 600, 0.15, 1, 0.9))
    return Problem(("a", "b", "c"), {"a": c, "b": c, "c": c},
                   {"latency_ms": 8.5, "flash_bytes": 100_000, "energy_mj": 5.0})


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hint_better_than_the_search_is_kept(backend: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The search times out on a poor plan (as CP-SAT did on BERT-24) and the LP gives nothing:
    the caller's better warm start is the answer, FEASIBLE (nothing proved it best)."""
    problem = _binding_instance()
    plans = _feasible_plans(problem)
    best, worst = plans[0], plans[-1]
    assert exact_totals(problem, worst)["acc_loss"] > exact_totals(problem, best)["acc_loss"]
    monkeypatch.setattr(cpsat, "_lp_start", lambda p, o: (-math.inf, None))
    module = cpsat if backend == "cpsat" else cbc
    monkeypatch.setattr(module, "_attempt", lambda *a, **k: Attempt("FEASIBLE", worst))
    r = solve(problem, hint=_names(problem, best), backend=backend, explain=False)
    assert r.status == "FEASIBLE"
    assert r.totals["acc_loss"] == pytest.approx(exact_totals(problem, best)["acc_loss"])
    without = solve(problem, backend=backend, explain=False)
    assert without.totals["acc_loss"] == pytest.approx(exact_totals(problem, worst)["acc_loss"])


def test_the_lp_and_fix_plan_is_kept_when_the_search_ends_worse(
        monkeypatch: pytest.MonkeyPatch) -> None:
    problem = random_problem(3, n_layers=5)
    bound, incumbent = cpsat._lp_start(problem, SolverOptions(time_limit_s=2))
    assert incumbent is not None and math.isfinite(bound)
    worse = max(_feasible_plans(problem), key=lambda p: exact_totals(problem, p)["acc_loss"])
    monkeypatch.setattr(cpsat, "_attempt", lambda *a, **k: Attempt("FEASIBLE", worse))
    r = solve(problem, explain=False, presolve=False)  # the indices above are the problem's
    assert r.totals["acc_loss"] <= exact_totals(problem, incumbent)["acc_loss"] + 1e-12
    assert r.totals["acc_loss"] < exact_totals(problem, worse)["acc_loss"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_plan_that_breaks_a_limit_is_never_returned(backend: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A search that claims OPTIMAL for a plan breaking a limit (whatever the cause): the plan
    is checked exactly and not returned; the answer is UNKNOWN, saying so."""
    problem = _binding_instance()
    bad = dict.fromkeys(problem.layers, 0)  # all fp32: 12 ms > 8.5 ms
    assert breaks(problem, bad)
    module = cpsat if backend == "cpsat" else cbc
    monkeypatch.setattr(module, "_attempt", lambda *a, **k: Attempt("OPTIMAL", bad, 0.0))
    monkeypatch.setattr(cpsat, "_lp_start", lambda p, o: (-math.inf, None))
    r = solve(problem, backend=backend, explain=False, explain_infeasible=False)
    assert not r.feasible and not r.picks and r.status == "UNKNOWN"
    assert r.exact_check == DOWNGRADED and "latency_ms" in r.note
    guarded = cpsat.Run(problem, SolverOptions()).result(bad, "OPTIMAL", 0.0)
    assert guarded.status == "UNKNOWN" and not guarded.picks


CHECKED = ([random_problem(900 + s, n_layers=1 + s % 5, weights_in_ram=s % 3 == 0)
            for s in range(12)] + [workspace_instance(s) for s in range(6)]
           + [pairs_instance(s) for s in range(6)] + FINE[:12])


@pytest.mark.parametrize("k", range(len(CHECKED)))
def test_every_returned_plan_holds_exactly(k: int) -> None:
    """Both backends, with the binding-limit re-solves and the explanations: every plan
    returned meets every limit in exact arithmetic, and the totals are the exact ones."""
    problem = CHECKED[k]
    for backend in BACKENDS:
        r = solve(problem, backend=backend)
        if not r.feasible:
            continue
        picks = {ly: [c.option for c in problem.choices[ly]].index(o) for ly, o in r.picks.items()}
        assert not breaks(problem, picks), backend
        assert r.totals == exact_totals(problem, picks)
        assert set(r.binding) | set(r.binding_unknown) <= set(problem.limits)


def test_exact_totals_are_the_problems_totals() -> None:
    for problem in CHECKED:
        for picks in assignments(problem)[:50]:
            mine, theirs = exact_totals(problem, picks), problem.totals(picks)
            assert mine.keys() == theirs.keys()
            for key, value in theirs.items():
                assert mine[key] == pytest.approx(value, rel=1e-12, abs=1e-9), key


def test_binding_limits_are_found_and_warm_started(monkeypatch: pytest.MonkeyPatch) -> None:
    problem = _binding_instance()
    r = solve(problem)
    assert r.status == "OPTIMAL" and r.binding == ("latency_ms",) and not r.binding_unknown
    assert r.sensitivity["latency_ms"] < r.totals["acc_loss"]
    hints = []
    real = cpsat._attempt

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        hints.append(args[4])
        return real(*args, **kwargs)

    monkeypatch.setattr(cpsat, "_attempt", spy)
    again = with_sensitivity(problem, dataclasses.replace(r, binding=(), sensitivity={}), None)
    assert again.binding == ("latency_ms",)
    current = {ly: [c.option for c in problem.choices[ly]].index(o) for ly, o in r.picks.items()}
    assert hints and all(h == current for h in hints)  # every re-solve starts from the plan


@pytest.mark.parametrize("timed_out", [Attempt("UNKNOWN"), "current"])
def test_a_timed_out_binding_check_is_unknown_not_slack(
        timed_out: Attempt | str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The 10 %-looser re-solves time out: with no plan, or with the warm start only and no
    bound. Neither proves the limit slack: every limit is unknown, none is 'not binding'."""
    problem = _binding_instance()
    r = solve(problem, explain=False)

    def fake(*args, **kwargs):  # type: ignore[no-untyped-def]
        return timed_out if isinstance(timed_out, Attempt) else Attempt("FEASIBLE", args[4])

    monkeypatch.setattr(cpsat, "_attempt", fake)
    checked = with_sensitivity(problem, r, SolverOptions(time_limit_s=0.01))
    assert checked.binding == () and checked.sensitivity == {}
    assert checked.binding_unknown == tuple(problem.limits)


def test_a_timed_out_relaxation_is_unknown_not_infeasible(
        monkeypatch: pytest.MonkeyPatch) -> None:
    c = (Choice("fp32", 4.0, 4000, 1.0, 4, 0.0), Choice("int8", 1.0, 1000, 0.25, 1, 0.5))
    problem = Problem(("a", "b"), {"a": c, "b": c}, {"latency_ms": 1.0, "flash_bytes": 10_000})
    honest = solve(problem)
    assert {r.limit: r.status for r in honest.relaxations} == {
        "latency_ms": "OPTIMAL", "flash_bytes": "INFEASIBLE"}
    assert honest.joint_relaxation_status == "OPTIMAL"
    monkeypatch.setattr(cpsat, "_attempt", lambda *a, **k: Attempt("UNKNOWN"))
    timed_out = cpsat.explain(problem, "INFEASIBLE", SolverOptions(), 0.0, 4)
    assert all(r.status == "UNKNOWN" and r.best_reachable is None
               for r in timed_out.relaxations)


def test_every_explaining_solve_is_warm_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """On an infeasible budget, each per-limit relaxation, each minimum and the joint
    (elastic) relaxation start from the caller's plan; the amounts still admit a plan."""
    c = (Choice("fp32", 4.0, 4000, 1.0, 4, 0.0), Choice("int8", 1.0, 1000, 0.25, 1, 0.5))
    problem = Problem(("a", "b"), {"a": c, "b": c}, {"latency_ms": 1.0, "flash_bytes": 10_000})
    hints: list[tuple[bool, dict[str, int] | None]] = []
    real = cpsat._Model.solve

    def spy(self, options, hint=None):  # type: ignore[no-untyped-def]
        hints.append((bool(self.slack), hint))
        return real(self, options, hint)

    monkeypatch.setattr(cpsat._Model, "solve", spy)
    plan = {"a": 1, "b": 1}
    r = cpsat.explain(problem, "INFEASIBLE", SolverOptions(), 0.0, 4, hint=plan)
    assert hints and all(h == plan for _, h in hints)
    assert [elastic for elastic, _ in hints].count(True) == 1
    looser = {m: v + r.joint_relaxation.get(m, 0.0) for m, v in problem.limits.items()}
    assert r.joint_relaxation_status == "OPTIMAL" and brute_force(
        problem.with_limits(looser)) is not None


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_unfinished_tie_break_keeps_a_proven_optimum(backend: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The tie-break phase times out: the accuracy optimum is still proven, so OPTIMAL (gap 0),
    with a note that the tie-break is not proven."""
    problem = _binding_instance()
    sentinel = 0.123456
    if backend == "cpsat":
        real_solve = cpsat._Model.solve

        def fake(self, options, hint=None):  # type: ignore[no-untyped-def]
            if options.time_limit_s == sentinel:
                return cp_model.UNKNOWN, cp_model.CpSolver()
            return real_solve(self, options, hint)

        monkeypatch.setattr(cpsat._Model, "solve", fake)
    else:
        real_cbc = cbc._Model.solve

        def fake_cbc(self, options, start=None):  # type: ignore[no-untyped-def]
            return "UNKNOWN" if options.time_limit_s == sentinel else real_cbc(self, options,
                                                                               start)

        monkeypatch.setattr(cbc._Model, "solve", fake_cbc)
    r = solve(problem, SolverOptions(tie_break_time_s=sentinel), backend=backend, explain=False)
    assert r.status == "OPTIMAL" and r.gap == 0.0 and "tie-break" in r.note
    assert r.totals["acc_loss"] == pytest.approx(brute_force(problem)[0])  # type: ignore[index]


def test_the_tie_break_gets_a_slice_not_a_second_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []
    real_solve = cpsat._Model.solve

    def spy(self, options, hint=None):  # type: ignore[no-untyped-def]
        seen.append(options.time_limit_s)
        return real_solve(self, options, hint)

    monkeypatch.setattr(cpsat._Model, "solve", spy)
    solve(_binding_instance(), SolverOptions(time_limit_s=5.0), explain=False)
    assert 0.5 in seen and max(seen) <= 5.0


def test_workers_default_to_the_cores_available() -> None:
    assert SolverOptions().workers == len(os.sched_getaffinity(0)) >= 1
    assert SolverOptions(workers=3).workers == 3


def test_the_pool_keeps_the_best_plan_that_holds() -> None:
    problem = _binding_instance()
    plans = _feasible_plans(problem)
    pool = Pool(problem)
    assert not pool.offer(dict.fromkeys(problem.layers, 0), "breaks a limit")
    assert not pool.offer({"a": 1}, "partial")
    assert pool.offer(plans[-1], "poor") and pool.offer(plans[0], "best")
    assert not pool.offer(plans[-1], "poor again")
    assert pool.best == plans[0] and pool.source == "best"


def test_search_cuts_plans_broken_by_rounding_then_falls_back() -> None:
    """exact.search on a stub backend: LOOSE plans that break are cut off one by one; after
    MAX_CUTS, SAFE's plan is the answer, downgraded."""
    problem = ladder(1)
    broken = dict.fromkeys(problem.layers, 1)  # 6 ms + 3 units
    good = {**broken, "l5": 2}  # int4 on one layer
    assert breaks(problem, broken) and holds(problem, good)
    calls: list[tuple[str, int]] = []

    def stub(rounding: Rounding, hint, cuts):  # type: ignore[no-untyped-def]
        calls.append((rounding.name, len(cuts)))
        return Attempt("OPTIMAL", good if rounding is SAFE else broken, 3.0)

    out = exact.search(problem, stub, None)
    assert out.status == "FEASIBLE" and out.picks == good and out.downgraded
    assert [n for _, n in calls] == [*range(exact.MAX_CUTS + 1), 0]
    assert calls[-1][0] == SAFE.name


def test_latency_and_energy_units_are_the_instances_own() -> None:
    """Fine enough that the largest total is about 1e9 units (1e6 for CBC, whose tolerances
    are absolute), never coarser than the fixed resolution; the result states the units."""
    from planner.exact import CBC_UNITS_PER_TOTAL
    from planner.formulation import RESOLUTION

    problem = ladder(3)
    assert resolution_for(problem)["latency_ms"] == UNIT < RESOLUTION["latency_ms"]
    assert resolution_for(problem, CBC_UNITS_PER_TOTAL)["latency_ms"] == 1e-5
    assert solve(problem).resolution["latency_ms"] == UNIT
    assert solve(problem, backend="cbc").resolution["latency_ms"] == 1e-5
    slow = Problem(("a",), {"a": (Choice("x", 1e6, 1, 1e9, 1, 0.0),)}, {})
    assert resolution_for(slow)["latency_ms"] == RESOLUTION["latency_ms"]
    assert resolution_for(slow)["energy_mj"] == RESOLUTION["energy_mj"]


def test_cbc_phases_are_warm_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both CBC phases get a MIP start: the search from the caller's plan, the tie-break from
    the best plan held."""
    problem = _binding_instance()
    starts: list[dict[str, int] | None] = []
    real = cbc._Model.warm_start

    def spy(self, picks):  # type: ignore[no-untyped-def]
        starts.append(picks)
        return real(self, picks)

    monkeypatch.setattr(cbc._Model, "warm_start", spy)
    best = _feasible_plans(problem)[0]
    r = solve(problem, hint=_names(problem, best), backend="cbc", explain=False)
    assert r.status == "OPTIMAL"
    assert len(starts) >= 2 and all(s is not None and holds(problem, s) for s in starts)
