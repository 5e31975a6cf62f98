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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ortools.linear_solver.python import model_builder_helper as mbh
from scipy import sparse

from planner.exact import LOOSE, Rounding
from planner.formulation import arrays
from planner.problem import Problem, owner_layer

# Elastic-LP slack (relative to each limit) above which the budget counts as proven infeasible:
# far above GLOP's feasibility tolerance, so a rounding error cannot fake a proof.
INFEASIBLE_MARGIN = 1e-6
_INTEGRAL = 1 - 1e-6  # an LP value this close to 1 decides the layer


@dataclass(frozen=True)
class Relaxation:
    status: str  # OPTIMAL, INFEASIBLE, or what GLOP said
    value: float | None  # objective in solver integer units
    x: dict[tuple[str, int], float]  # LP value of every (layer, option index)
    # the same values over planner.formulation.Arrays' flat options (empty: none)
    flat: np.ndarray = field(default_factory=lambda: np.zeros(0), compare=False)


class _Lp:
    """The GLOP model as one sparse matrix: x in [0, 1] per option, y per (group, width),
    z per pair term, then one slack per limit when elastic. Rows: one option per layer, one
    width per group, the coupling (a member's options of a width sum to its y), the pair
    terms (z >= x[a, A] + x[b, B] - 1), the limits (+ relative slack), on the integers of
    `rounding` at the instance's resolution; assembled from planner.formulation.Arrays."""

    def __init__(self, problem: Problem, elastic: bool, rounding: Rounding) -> None:
        a = arrays(problem)
        rounding = rounding.at(problem)
        data = rounding.data(problem)
        self.a, self.n_x = a, a.n
        y0 = a.n
        z0 = y0 + len(a.group_widths)
        s0 = z0 + len(a.pair_keys)
        self.n_vars = s0 + (len(problem.limits) if elastic else 0)
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.lo: list[float] = []
        self.hi: list[float] = []
        for lo, hi in zip(a.start[:-1], a.start[1:], strict=True):  # one option per layer
            self._row(np.arange(lo, hi), np.ones(hi - lo), 1.0, 1.0)
        groups: dict[str, list[int]] = {}
        for n, (g, _) in enumerate(a.group_widths):
            groups.setdefault(g, []).append(y0 + n)
        for ys in groups.values():
            self._row(np.array(ys), np.ones(len(ys)), 1.0, 1.0)
        for gw, index in a.coupling:
            self._row(np.append(index, y0 + gw), np.append(np.ones(len(index)), -1.0), 0.0, 0.0)
        for n, (ia, ib) in enumerate(a.pair_x):
            both = np.concatenate((ia, ib))
            self._row(np.append(both, z0 + n), np.append(-np.ones(len(both)), 1.0), -1.0,
                      np.inf)
        for k, (m, limit) in enumerate(problem.limits.items()):
            room = rounding.room(problem, m, limit)
            rows = data.ram_rows if m == "ram_bytes" else [a.metric_row(data, m)]
            for index, coef in rows:
                if elastic:
                    index, coef = np.append(index, s0 + k), np.append(coef, -max(abs(room), 1))
                self._row(index, coef, -np.inf, float(room))
        self.data = data

    def _row(self, index: np.ndarray, coef: np.ndarray, lo: float, hi: float) -> None:
        self.rows.append(np.full(len(index), len(self.lo), dtype=np.int64))
        self.cols.append(np.asarray(index, dtype=np.int64))
        self.vals.append(np.asarray(coef, dtype=float))
        self.lo.append(lo)
        self.hi.append(hi)

    def solve(self, objective: np.ndarray) -> tuple[str, float, np.ndarray]:
        """GLOP's status, objective value and every variable's value, minimising
        `objective` (one coefficient per variable)."""
        matrix = sparse.csr_matrix(
            (np.concatenate(self.vals), (np.concatenate(self.rows), np.concatenate(self.cols))),
            shape=(len(self.lo), self.n_vars))
        upper = np.ones(self.n_vars)
        upper[self._slack0():] = np.inf  # the elastic slacks
        model: Any = mbh.ModelBuilderHelper()  # its stubs mistype numpy arrays
        model.fill_model_from_sparse_data(np.zeros(self.n_vars), upper, objective,
                                          np.array(self.lo), np.array(self.hi), matrix)
        solver: Any = mbh.ModelSolverHelper("glop")
        solver.solve(model)
        status = _GLOP_STATUS.get(solver.status().name, "UNKNOWN")
        if status != "OPTIMAL":
            return status, float("nan"), np.zeros(0)
        return status, solver.objective_value(), solver.variable_values()

    def _slack0(self) -> int:
        return self.n_x + len(self.a.group_widths) + len(self.a.pair_keys)


_GLOP_STATUS = {"OPTIMAL": "OPTIMAL", "INFEASIBLE": "INFEASIBLE", "UNBOUNDED": "UNBOUNDED",
                "FEASIBLE": "FEASIBLE"}


def relax(problem: Problem, metric: str = "acc_loss", rounding: Rounding = LOOSE
          ) -> Relaxation:
    """The LP minimum of an additive metric (or acc_loss) under every limit. On LOOSE data
    (the default) its value is a lower bound for the costs as measured (planner.exact)."""
    lp = _Lp(problem, elastic=False, rounding=rounding)
    index, costs = lp.a.metric_row(lp.data, metric)
    # GLOP gives up (ABNORMAL) on objective coefficients of ~1e9 loss units: scale them to <= 1
    scale = float(np.abs(costs).max(initial=0)) or 1.0
    objective = np.zeros(lp.n_vars)
    objective[index] = costs * (1.0 / scale)
    status, value, values = lp.solve(objective)
    if status != "OPTIMAL":
        return Relaxation(status, None, {})
    x = values[:lp.n_x]
    return Relaxation(status, value * scale, dict(zip(lp.a.keys, x.tolist(), strict=True)), x)


def proven_infeasible(problem: Problem, rounding: Rounding = LOOSE) -> bool:
    """True when even the LP relaxation needs some limit loosened by more than the margin:
    then no integer plan exists (on LOOSE data, the default: none for the costs as measured).
    False proves nothing."""
    if not problem.limits:
        return False
    lp = _Lp(problem, elastic=True, rounding=rounding)
    objective = np.zeros(lp.n_vars)
    objective[lp._slack0():] = 1.0
    status, value, _ = lp.solve(objective)
    return status == "OPTIMAL" and value > INFEASIBLE_MARGIN


def lp_and_fix(problem: Problem, relaxation: Relaxation, widen: bool = False
               ) -> Problem | None:
    """The problem with every layer the LP decides integrally fixed to that option, except
    the split layers and, with `widen`, their neighbours (layers sharing a RAM step or a
    channel group with one: rounding a split layer often needs room from them). None when the
    LP gave no solution. Any plan of it is a plan of `problem`; CP-SAT solves it in a
    fraction of the full time."""
    if relaxation.status != "OPTIMAL":
        return None
    a = arrays(problem)
    x = relaxation.flat if len(relaxation.flat) == a.n else np.array(
        [relaxation.x[key] for key in a.keys])
    best = a.picks(x)  # each layer's first option of the largest LP value
    largest = np.maximum.reduceat(x, a.start[:-1])
    split = {ly for ly, v in zip(a.layers, largest.tolist(), strict=True) if v < _INTEGRAL}
    free = split | _neighbours(problem, split) if widen else split
    choices = {ly: problem.choices[ly] if ly in free else (problem.choices[ly][best[ly]],)
               for ly in problem.layers}
    return dataclasses.replace(problem, choices=choices)


def _neighbours(problem: Problem, layers: set[str]) -> set[str]:
    out: set[str] = set()
    for step in problem.ram_steps:
        owners = {owner_layer(o) for o, _ in step}
        if owners & layers:
            out |= owners
    pairs = [(t.a, t.b) for terms in problem.step_pairs for t in terms]
    for a, b in [*pairs, *((t.a, t.b) for t in problem.latency_pairs)]:
        if {a, b} & layers:
            out |= {a, b}
    for members in problem.members().values():
        if layers.intersection(members):
            out.update(members)
    return out


