"""The LP relaxation of the planning model (GLOP), on the integer data CP-SAT searches first:
the LOOSE rounding (planner.exact: costs down, limits up), so its bound and its infeasibility
proofs hold for the costs as measured, not only for the rounded ones.

What it is for: a lower bound on the accuracy loss, a fast test that a budget is infeasible
(the relaxation of the elastic model already needs slack), and an incumbent found by fixing
every layer the LP already decides and solving the few fractional ones exactly (LP-and-fix),
given to CP-SAT as a hint. Floating-point LP answers are used as evidence only with a margin
(see INFEASIBLE_MARGIN); an incumbent is always checked in exact arithmetic.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ortools.linear_solver import pywraplp

from planner.exact import LOOSE, SAFE, Rounding
from planner.formulation import coupling_links, pair_keys
from planner.problem import ADDITIVE, Choice, Problem, owner_layer

# Elastic-LP slack (relative to each limit) above which the budget counts as proven infeasible:
# far above GLOP's feasibility tolerance, so a rounding error cannot fake a proof.
INFEASIBLE_MARGIN = 1e-6
_INTEGRAL = 1 - 1e-6  # an LP value this close to 1 decides the layer


@dataclass(frozen=True)
class Relaxation:
    status: str  # OPTIMAL, INFEASIBLE, or what GLOP said
    value: float | None  # objective in solver integer units
    x: dict[tuple[str, int], float]  # LP value of every (layer, option index)


def _lp(problem: Problem, elastic: bool, rounding: Rounding = SAFE
        ) -> tuple[Any, dict[tuple[str, int], Any], dict[str, Any], dict[str, Any]]:
    """GLOP model: x in [0, 1], one per layer, coupling, limits (+ relative slack), on the
    integers of `rounding` at the instance's resolution."""
    rounding = rounding.at(problem)
    s = pywraplp.Solver.CreateSolver("GLOP")
    x = {(ly, i): s.NumVar(0.0, 1.0, "") for ly in problem.layers
         for i in range(len(problem.choices[ly]))}
    for ly in problem.layers:
        s.Add(sum(x[ly, i] for i in range(len(problem.choices[ly]))) == 1)
    groups = problem.groups
    y = {(g, w): s.NumVar(0.0, 1.0, "") for g, ws in groups.items() for w in ws}
    for g, ws in groups.items():
        s.Add(sum(y[g, w] for w in ws) == 1)
    for (g, w), (ly, idx) in coupling_links(problem):
        s.Add(sum(x[ly, i] for i in idx) == y[g, w])
    expr = {m: sum(rounding.cost(_value(c, m), m) * x[ly, i] for ly in problem.layers
                   for i, c in enumerate(problem.choices[ly])) for m in (*ADDITIVE, "acc_loss")}
    z = {key: s.NumVar(0.0, 1.0, "") for key in pair_keys(problem)}
    for (a, ia, b, ib), var in z.items():
        s.Add(var >= sum(x[a, i] for i in ia) + sum(x[b, j] for j in ib) - 1)
    slack = {m: s.NumVar(0.0, s.infinity(), "") for m in problem.limits} if elastic else {}
    for m, limit in problem.limits.items():
        room = rounding.room(problem, m, limit)
        extra = slack[m] * max(abs(room), 1) if elastic else 0
        if m == "ram_bytes":
            weights = expr["flash_bytes"] if problem.weights_in_ram else 0
            for t, step in enumerate(problem.ram_steps or ((),)):
                coef = rounding.step_coefficients(problem, t, step)
                pairs = sum(k * z[key] for key, k in rounding.pair_coefficients(problem, t))
                s.Add(sum(k * x[key] for key, k in coef.items() if k) + pairs + weights
                      <= room + extra)
        else:
            s.Add(expr[m] <= room + extra)
    return s, x, expr, slack


def _value(c: Choice, metric: str) -> float:
    return c.acc_loss if metric == "acc_loss" else c.metric(metric)


_GLOP_STATUS = {pywraplp.Solver.OPTIMAL: "OPTIMAL", pywraplp.Solver.INFEASIBLE: "INFEASIBLE",
                pywraplp.Solver.UNBOUNDED: "UNBOUNDED", pywraplp.Solver.FEASIBLE: "FEASIBLE"}


def relax(problem: Problem, metric: str = "acc_loss", rounding: Rounding = LOOSE
          ) -> Relaxation:
    """The LP minimum of an additive metric (or acc_loss) under every limit. On LOOSE data
    (the default) its value is a lower bound for the costs as measured (planner.exact)."""
    rounding = rounding.at(problem)
    s, x, expr, _ = _lp(problem, elastic=False, rounding=rounding)
    # GLOP gives up (ABNORMAL) on objective coefficients of ~1e9 loss units: scale them to <= 1
    scale = max((abs(rounding.cost(_value(c, metric), metric)) for cs in problem.choices.values()
                 for c in cs), default=1) or 1
    s.Minimize(expr[metric] * (1.0 / scale))
    status = _GLOP_STATUS.get(s.Solve(), "UNKNOWN")
    if status != "OPTIMAL":
        return Relaxation(status, None, {})
    return Relaxation(status, s.Objective().Value() * scale,
                      {k: v.solution_value() for k, v in x.items()})


def proven_infeasible(problem: Problem, rounding: Rounding = LOOSE) -> bool:
    """True when even the LP relaxation needs some limit loosened by more than the margin:
    then no integer plan exists (on LOOSE data, the default: none for the costs as measured).
    False proves nothing."""
    if not problem.limits:
        return False
    s, _, _, slack = _lp(problem, elastic=True, rounding=rounding)
    s.Minimize(sum(slack.values()))
    if s.Solve() != pywraplp.Solver.OPTIMAL:
        return False
    return s.Objective().Value() > INFEASIBLE_MARGIN


def lp_and_fix(problem: Problem, relaxation: Relaxation, widen: bool = False
               ) -> Problem | None:
    """The problem with every layer the LP decides integrally fixed to that option, except
    the split layers and, with `widen`, their neighbours (layers sharing a RAM step or a
    channel group with one: rounding a split layer often needs room from them). None when the
    LP gave no solution. Any plan of it is a plan of `problem`; CP-SAT solves it in a
    fraction of the full time."""
    if relaxation.status != "OPTIMAL":
        return None
    best = {ly: _argmax([relaxation.x[ly, i] for i in range(len(problem.choices[ly]))])
            for ly in problem.layers}
    split = {ly for ly in problem.layers if relaxation.x[ly, best[ly]] < _INTEGRAL}
    free = split | _neighbours(problem, split) if widen else split
    choices = {ly: problem.choices[ly] if ly in free else (problem.choices[ly][best[ly]],)
               for ly in problem.layers}
    return dataclasses.replace(problem, choices=choices)


def _argmax(values: list[float]) -> int:
    return values.index(max(values))


def _neighbours(problem: Problem, layers: set[str]) -> set[str]:
    out: set[str] = set()
    for step in problem.ram_steps:
        owners = {owner_layer(o) for o, _ in step}
        if owners & layers:
            out |= owners
    for terms in problem.step_pairs:
        for term in terms:
            if {term.a, term.b} & layers:
                out |= {term.a, term.b}
    for members in problem.members().values():
        if layers.intersection(members):
            out.update(members)
    return out


