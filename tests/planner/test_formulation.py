"""The array formulation (planner.formulation.Arrays, issue #18 item 3) against the per-option
one it replaced on the hot path (step_coefficients, coupling_links, pair_coefficients,
Rounding.cost, the tie-break formula): the same integers, the same LP optimum; built once per
problem and shared by a problem with other limits."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from scipy.optimize import linprog

from planner import formulation, lp
from planner.bruteforce import brute_force
from planner.cpsat import separable_optimum
from planner.cpsat import solve as cpsat_solve
from planner.exact import LOOSE, SAFE, tie_break_array
from planner.formulation import RESOLUTION, arrays, coupling_links, pair_keys, scaled_up
from planner.problem import ADDITIVE, Problem
from tests.planner.test_coupling import random_coupled_problem
from tests.planner.test_pairs import instance as pairs_instance
from tests.planner.test_solver import random_problem
from tests.planner.test_workspace import instance as workspace_instance


def problems() -> list[Problem]:
    return ([random_problem(1300 + s, n_layers=1 + s % 6, weights_in_ram=s % 3 == 0)
             for s in range(10)] + [workspace_instance(s) for s in range(6)]
            + [pairs_instance(s) for s in range(6)]
            + [random_coupled_problem(1400 + s, n_layers=2 + s % 5) for s in range(10)])


PROBLEMS = problems()


def _flat(problem: Problem, layer: str, i: int) -> int:
    return int(arrays(problem).start[problem.layers.index(layer)]) + i


@pytest.mark.parametrize("k", range(len(PROBLEMS)))
@pytest.mark.parametrize("rounding", [LOOSE, SAFE], ids=["loose", "safe"])
def test_the_arrays_agree_with_the_per_option_formulation(k: int, rounding) -> None:  # type: ignore[no-untyped-def]
    problem = PROBLEMS[k]
    rounding = rounding.at(problem)
    a, data = arrays(problem), rounding.data(problem)
    for ly in problem.layers:
        for i, c in enumerate(problem.choices[ly]):
            for m in (*ADDITIVE, "acc_loss"):
                assert data.costs[m][_flat(problem, ly, i)] == rounding.cost(c.metric(m), m)
    for t, step in enumerate(problem.ram_steps or ((),)):
        (index, coef), (pairs, pair_coef) = data.steps[t]
        expected = {_flat(problem, *key): k for key, k in
                    rounding.step_coefficients(problem, t, step).items() if k}
        assert dict(zip(index.tolist(), coef.tolist(), strict=True)) == expected
        per_pair: dict[int, int] = defaultdict(int)
        for key, k_bytes in rounding.pair_coefficients(problem, t):
            per_pair[pair_keys(problem).index(key)] += k_bytes
        assert dict(zip(pairs.tolist(), pair_coef.tolist(), strict=True)) == {
            n: b for n, b in per_pair.items() if b}
        # the row the limits bound: the same, with the weights and the pair booleans
        row = defaultdict(int, expected)
        if problem.weights_in_ram:
            for n, f in enumerate(data.costs["flash_bytes"].tolist()):
                row[n] += f
        for n, b in per_pair.items():
            row[a.z0 + n] += b
        index, coef = data.ram_rows[t]
        assert dict(zip(index.tolist(), coef.tolist(), strict=True)) == {
            n: v for n, v in row.items() if v}
    links = sorted((key, tuple(_flat(problem, ly, i) for i in idx))
                   for key, (ly, idx) in coupling_links(problem))
    assert sorted((a.group_widths[gw], tuple(idx.tolist())) for gw, idx in a.coupling) == links
    assert a.pair_keys == pair_keys(problem)


@pytest.mark.parametrize("k", range(len(PROBLEMS)))
def test_tie_break_costs_are_the_formulas(k: int) -> None:
    problem = PROBLEMS[k]

    def worst(metric: str) -> int:
        return max(1, sum(max(scaled_up(c.metric(metric), metric) for c in problem.choices[ly])
                          for ly in problem.layers))

    expected = [round(1e6 * scaled_up(c.latency_ms, "latency_ms") / worst("latency_ms"))
                + round(1e6 * scaled_up(c.flash_bytes, "flash_bytes") / worst("flash_bytes"))
                for ly in problem.layers for c in problem.choices[ly]]
    assert tie_break_array(problem).tolist() == expected


def _reference_lp(problem: Problem) -> float | None:
    """The LP relaxation built option by option from the per-option functions (LOOSE), solved
    by HiGHS: its optimum in loss units, None when infeasible."""
    r = LOOSE.at(problem)
    keys = [(ly, i) for ly in problem.layers for i in range(len(problem.choices[ly]))]
    gws = [(g, w) for g, ws in problem.groups.items() for w in ws]
    pkeys = pair_keys(problem)
    col = {key: n for n, key in enumerate([*keys, *gws, *pkeys])}
    eq_rows, eq_rhs, ub_rows, ub_rhs = [], [], [], []
    for ly in problem.layers:
        eq_rows.append({col[ly, i]: 1.0 for i in range(len(problem.choices[ly]))})
        eq_rhs.append(1.0)
    for g, ws in problem.groups.items():
        eq_rows.append({col[g, w]: 1.0 for w in ws})
        eq_rhs.append(1.0)
    for gw, (ly, idx) in coupling_links(problem):
        eq_rows.append({**{col[ly, i]: 1.0 for i in idx}, col[gw]: -1.0})
        eq_rhs.append(0.0)
    for key in pkeys:
        a, ia, b, ib = key
        ub_rows.append({**{col[a, i]: 1.0 for i in ia}, **{col[b, j]: 1.0 for j in ib},
                        col[key]: -1.0})
        ub_rhs.append(1.0)
    for m, limit in problem.limits.items():
        room = r.room(problem, m, limit)
        if m != "ram_bytes":
            ub_rows.append({col[ly, i]: float(r.cost(c.metric(m), m)) for ly in problem.layers
                            for i, c in enumerate(problem.choices[ly])})
            ub_rhs.append(room)
            continue
        for t, step in enumerate(problem.ram_steps or ((),)):
            row: dict[int, float] = defaultdict(float)
            for option, k in r.step_coefficients(problem, t, step).items():
                row[col[option]] += k
            for term, k in r.pair_coefficients(problem, t):
                row[col[term]] += k
            if problem.weights_in_ram:
                for ly in problem.layers:
                    for i, c in enumerate(problem.choices[ly]):
                        row[col[ly, i]] += r.cost(c.flash_bytes, "flash_bytes")
            ub_rows.append(row)
            ub_rhs.append(room)

    def dense(rows: list[dict[int, float]]) -> np.ndarray | None:
        out = np.zeros((len(rows), len(col)))
        for n, row in enumerate(rows):
            for j, v in row.items():
                out[n, j] = v
        return out if rows else None

    objective = np.zeros(len(col))
    for ly in problem.layers:
        for i, c in enumerate(problem.choices[ly]):
            objective[col[ly, i]] = r.cost(c.acc_loss, "acc_loss")
    scale = max(1.0, float(np.abs(objective).max()))
    res = linprog(objective / scale, A_ub=dense(ub_rows), b_ub=ub_rhs or None,
                  A_eq=dense(eq_rows), b_eq=eq_rhs, bounds=(0, 1), method="highs")
    return float(res.fun) * scale if res.status == 0 else None


@pytest.mark.parametrize("k", range(len(PROBLEMS)))
def test_the_sparse_lp_has_the_reference_optimum(k: int) -> None:
    problem = PROBLEMS[k]
    reference = _reference_lp(problem)
    relaxation = lp.relax(problem)
    if reference is None:
        assert relaxation.status == "INFEASIBLE"
        return
    assert relaxation.status == "OPTIMAL" and relaxation.value is not None
    assert relaxation.value == pytest.approx(reference, rel=1e-6, abs=1e-3)
    assert relaxation.flat.tolist() == [relaxation.x[key] for key in arrays(problem).keys]


@pytest.mark.parametrize("seed", range(20))
def test_the_lp_bound_holds_on_coupled_groups(seed: int) -> None:
    """The relaxation with group-level width variables (each member's options of a width sum
    to the group's y) never cuts off the brute-force optimum, nor proves a feasible budget
    infeasible."""
    problem = random_coupled_problem(1500 + seed, n_layers=2 + seed % 5)
    reference = brute_force(problem)
    if reference is None:
        return
    assert not lp.proven_infeasible(problem)
    relaxation = lp.relax(problem)
    assert relaxation.value is not None
    assert relaxation.value <= reference[0] / RESOLUTION["acc_loss"] + 1e-3


def test_one_build_per_problem_shared_across_limits_and_phases(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The arrays of a problem are those of the same problem with other limits (the binding-
    limit re-solves), and a solve that searches builds no other for it: the LP, every CP-SAT
    phase (one copy each of the structure built once) and the checks share them."""
    searched = [p for p in (random_coupled_problem(1600 + s, n_layers=5) for s in range(20))
                if separable_optimum(p) is None and brute_force(p) is not None]
    assert searched
    problem = searched[0]
    a = arrays(problem)
    assert arrays(problem.with_limits({m: 2 * v for m, v in problem.limits.items()})) is a
    built: list[Problem] = []
    real = formulation.Arrays.__init__

    def spy(self, p):  # type: ignore[no-untyped-def]
        built.append(p)
        real(self, p)

    monkeypatch.setattr(formulation.Arrays, "__init__", spy)
    r = cpsat_solve(problem, explain_infeasible=False)
    assert r.feasible and "cp-sat" in a.memo
    assert not [p for p in built if p.choices is problem.choices]  # LP-and-fix: restrictions
