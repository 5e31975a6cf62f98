"""CP-SAT backend: data -> variables -> constraints -> objective -> solve -> extract.

Quantities are scaled to integers at a stated resolution. Costs are rounded up and limits down,
so every plan the integer model accepts also meets the limits in exact arithmetic.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from functools import partial
from typing import Any

from ortools.sat.python import cp_model

from planner.formulation import (
    RESOLUTION,
    coupling_links,
    pair_coefficients,
    pair_keys,
    scaled_down,
    scaled_up,
    step_coefficients,
)
from planner.problem import ADDITIVE, PairKey, Problem
from planner.result import BINDING_FRACTION, Relaxation, SolveResult, SolverOptions


# Integer unit of each quantity inside the solver (ms, bytes, mJ, loss units).
class _Model:
    """One CP-SAT model over a Problem: x[layer, i] booleans plus named linear expressions."""

    def __init__(self, problem: Problem, limits: dict[str, float],
                 elastic: bool = False) -> None:
        self.p = problem
        self.elastic = elastic
        self.slack: dict[str, cp_model.IntVar] = {}
        self.m = cp_model.CpModel()
        self.x = {
            (layer, i): self.m.new_bool_var(f"x[{layer},{c.option}]")
            for layer in problem.layers
            for i, c in enumerate(problem.choices[layer])
        }
        for layer in problem.layers:
            self.m.add_exactly_one(self.x[layer, i] for i in range(len(problem.choices[layer])))
        self.y = self._coupling()
        self.expr = {metric: self._additive(metric) for metric in ADDITIVE}
        self.expr["acc_loss"] = self._additive("acc_loss")
        self.z = self._pairs()
        self.steps = self._ram_steps()
        self._add_limits(limits)

    def _pairs(self) -> dict[PairKey, cp_model.IntVar]:
        """z[a,A,b,B] is 1 when a takes an option in A and b one in B (at least: RAM limits
        push it down to exactly that)."""
        z = {}
        for n, key in enumerate(pair_keys(self.p)):
            a, ia, b, ib = key
            z[key] = self.m.new_bool_var(f"z[{n}]")
            self.m.add(z[key] >= sum(self.x[a, i] for i in ia) + sum(self.x[b, j] for j in ib)
                       - 1)
        return z

    def _coupling(self) -> dict[tuple[str, int], cp_model.IntVar]:
        """One boolean per (group, width), exactly one per group; every member's choice follows
        it, so the group is one decision however many layers share it."""
        groups = self.p.groups
        y = {(g, w): self.m.new_bool_var(f"y[{g},{w}]") for g, widths in groups.items()
             for w in widths}
        for g, widths in groups.items():
            self.m.add_exactly_one(y[g, w] for w in widths)
        for (g, w), (layer, idx) in coupling_links(self.p):
            self.m.add(sum(self.x[layer, i] for i in idx) == y[g, w])
        return y

    def _additive(self, metric: str) -> cp_model.LinearExprT:
        return sum(
            scaled_up(c.metric(metric) if metric != "acc_loss" else c.acc_loss, metric)
            * self.x[ly, i]
            for ly in self.p.layers for i, c in enumerate(self.p.choices[ly])
        )

    def _ram_steps(self) -> list[cp_model.LinearExprT]:
        weights: Any = self.expr["flash_bytes"] if self.p.weights_in_ram else 0
        steps = []
        for t, step in enumerate(self.p.ram_steps or ((),)):
            coef = step_coefficients(self.p, t, step)
            live: Any = sum(k * self.x[key] for key, k in coef.items() if k)
            pairs: Any = sum(k * self.z[key] for key, k in pair_coefficients(self.p, t))
            steps.append(live + pairs + weights)
        return steps

    def _add_limits(self, limits: dict[str, float]) -> None:
        for metric, limit in limits.items():
            room = scaled_down(limit, metric) - scaled_up(self.p.fixed.get(metric, 0.0), metric)
            extra: Any = 0
            if self.elastic:  # limit + slack: how far it must move for a plan to exist
                extra = self.slack[metric] = self.m.new_int_var(0, self._upper_bound(metric),
                                                                f"slack[{metric}]")
            if metric == "ram_bytes":
                for step in self.steps:
                    self.m.add(step <= room + extra)
            else:
                self.m.add(self.expr[metric] <= room + extra)

    def _upper_bound(self, metric: str) -> int:
        """No plan can exceed this value of `metric` (in solver units)."""
        if metric == "ram_bytes":
            weights = sum(max(scaled_up(c.flash_bytes, "ram_bytes") for c in self.p.choices[ly])
                          for ly in self.p.layers) if self.p.weights_in_ram else 0
            live = max((_step_upper(self.p, t, step)
                        for t, step in enumerate(self.p.ram_steps or ((),))), default=0)
            return weights + live + 1
        return sum(max(scaled_up(c.metric(metric), metric) for c in self.p.choices[ly])
                   for ly in self.p.layers) + 1

    def peak_ram_var(self) -> cp_model.IntVar:
        peak = self.m.new_int_var(0, self._upper_bound("ram_bytes"), "peak_ram")
        for step in self.steps:
            self.m.add(peak >= step)
        return peak

    def solve(self, options: SolverOptions, hint: dict[str, int] | None = None
              ) -> tuple[Any, cp_model.CpSolver]:
        if hint:
            for (layer, i), var in self.x.items():
                self.m.add_hint(var, hint.get(layer) == i)
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = options.time_limit_s
        solver.parameters.num_workers = options.workers
        solver.parameters.relative_gap_limit = options.relative_gap
        return solver.solve(self.m), solver

    def picks(self, solver: cp_model.CpSolver) -> dict[str, int]:
        return {ly: next(i for i in range(len(self.p.choices[ly])) if solver.value(self.x[ly, i]))
                for ly in self.p.layers}


_STATUS: dict[Any, str] = {cp_model.OPTIMAL: "OPTIMAL", cp_model.FEASIBLE: "FEASIBLE",
           cp_model.INFEASIBLE: "INFEASIBLE", cp_model.MODEL_INVALID: "MODEL_INVALID",
           cp_model.UNKNOWN: "UNKNOWN"}


def _step_upper(problem: Problem, t: int, step: tuple[tuple[str, int], ...]) -> int:
    """No plan puts more integer bytes on RAM step t than this."""
    worst: dict[str, int] = defaultdict(int)
    for (layer, _), k in step_coefficients(problem, t, step).items():
        worst[layer] = max(worst[layer], k)
    return sum(worst.values()) + sum(max(0, k) for _, k in pair_coefficients(problem, t))


def _tie_break_costs(problem: Problem) -> dict[tuple[str, int], int]:
    """Per (layer, option index): its latency + flash, each normalised by its worst total."""
    def worst(metric: str) -> int:
        return max(1, sum(max(scaled_up(c.metric(metric), metric) for c in problem.choices[ly])
                          for ly in problem.layers))
    lat_ref, flash_ref = worst("latency_ms"), worst("flash_bytes")
    return {(ly, i): round(1e6 * scaled_up(c.latency_ms, "latency_ms") / lat_ref)
            + round(1e6 * scaled_up(c.flash_bytes, "flash_bytes") / flash_ref)
            for ly in problem.layers for i, c in enumerate(problem.choices[ly])}


def _tie_break(model: _Model) -> cp_model.LinearExprT:
    """Cheaper latency and flash, each normalised by its worst total, for a loose budget."""
    return sum(cost * model.x[key] for key, cost in _tie_break_costs(model.p).items())


def separable_optimum(problem: Problem) -> dict[str, int] | None:
    """Both phases' exact optimum when no limit binds, without a search (else None).

    Each layer takes its least-loss option, ties broken by the tie-break cost. The total
    loss is then the smallest any plan has, and any plan of that loss keeps every layer at a
    least-loss option, so the tie-break too is minimised layer by layer. It is the answer
    exactly when that plan meets every limit and coupling: a loose budget decomposes."""
    costs = _tie_break_costs(problem)

    def rank(ly: str, i: int) -> tuple[int, int]:
        return scaled_up(problem.choices[ly][i].acc_loss, "acc_loss"), costs[ly, i]

    picks = {ly: min(range(len(problem.choices[ly])), key=partial(rank, ly))
             for ly in problem.layers}
    return picks if problem.feasible(problem.totals(picks)) else None


def solve(problem: Problem, options: SolverOptions | None = None,
          hint: dict[str, str] | None = None, explain_infeasible: bool = True) -> SolveResult:
    """Minimise accuracy loss, then latency + flash, under every limit; explain infeasibility.

    Before CP-SAT, the LP relaxation (planner.lp): when even it needs a limit loosened, the
    budget is infeasible (no CP-SAT search); otherwise its LP-and-fix plan is CP-SAT's hint,
    and its bound tightens the reported gap.
    hint: layer -> option of a previous solution (a warm start after a small change)."""
    options = options or SolverOptions()
    start = time.perf_counter()
    considered = sum(len(c) for c in problem.choices.values())
    loose = separable_optimum(problem)
    if loose is not None:  # no limit binds: proven optimal without a model
        return _result(problem, loose, "OPTIMAL", start, considered, 0.0)
    lp_bound, incumbent = _lp_start(problem, options)
    if lp_bound == math.inf:
        return _infeasible(problem, "INFEASIBLE", options, start, considered, explain_infeasible)
    index_hint = _better_hint(problem, _index_hint(problem, hint), incumbent)
    hinted = _feasible_loss(problem, index_hint)  # None: no hint, or it breaks a limit
    if hinted is not None and options.relative_gap > 0 and _gap(
            hinted, lp_bound) <= options.relative_gap:
        # already within the asked gap of the LP bound: no search needed
        first_picks, exact, gap = index_hint, False, _gap(hinted, lp_bound)
    else:
        first = _Model(problem, problem.limits)
        first.m.minimize(first.expr["acc_loss"])
        status, solver = first.solve(options, index_hint or None)
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            first_picks, exact = first.picks(solver), _proven(status, solver)
            gap = 0.0 if exact else _gap(solver.objective_value,
                                         max(solver.best_objective_bound, lp_bound))
        elif status == cp_model.UNKNOWN and hinted is not None:  # a time-out; the hint holds
            first_picks, exact, gap = index_hint, False, _gap(hinted, lp_bound)
        else:
            return _infeasible(problem, _STATUS[status], options, start, considered,
                               explain_infeasible)
    best_loss = sum(scaled_up(problem.choices[ly][i].acc_loss, "acc_loss")
                    for ly, i in first_picks.items())

    second = _Model(problem, problem.limits)
    second.m.add(second.expr["acc_loss"] <= best_loss)
    second.m.minimize(_tie_break(second))
    tie_break = options if options.tie_break_time_s is None else dataclasses.replace(
        options, time_limit_s=options.tie_break_time_s)
    status2, solver2 = second.solve(tie_break, first_picks)
    if status2 in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        picks = second.picks(solver2)
        exact = exact and _proven(status2, solver2)
    else:  # the hint is feasible, so only a time-out lands here
        picks, exact = first_picks, False
    return _result(problem, picks, "OPTIMAL" if exact else "FEASIBLE", start, considered,
                   gap if math.isfinite(gap) else None)


def _lp_start(problem: Problem, options: SolverOptions) -> tuple[float, dict[str, int] | None]:
    """(LP lower bound on the loss in solver units, -inf when unknown, inf when the budget
    is proven infeasible; an LP-and-fix plan that meets every limit, or None)."""
    from planner import lp

    relaxation = lp.relax(problem)
    if relaxation.value is None:
        return (math.inf if lp.proven_infeasible(problem) else -math.inf), None
    quick = dataclasses.replace(options, time_limit_s=min(options.time_limit_s, 1.0))
    picks: dict[str, int] | None = None
    loss: float | None = None
    for widen in (False, True):  # the split layers only, then with their neighbours freed
        if loss is not None and _gap(loss, relaxation.value) <= max(options.relative_gap, 1e-3):
            break
        found = _fixed_solve(problem, lp.lp_and_fix(problem, relaxation, widen), quick, picks)
        found_loss = _feasible_loss(problem, found) if found else None
        if found_loss is not None and (loss is None or found_loss < loss):
            picks, loss = found, found_loss
    return relaxation.value, picks


def _fixed_solve(problem: Problem, fixed: Problem | None, options: SolverOptions,
                 hint: dict[str, int] | None) -> dict[str, int] | None:
    """CP-SAT on an LP-and-fix restriction, as indices into `problem`'s choices."""
    if fixed is None:
        return None
    model = _Model(fixed, fixed.limits)
    model.m.minimize(model.expr["acc_loss"])
    local = {ly: fixed.choices[ly].index(problem.choices[ly][i]) for ly, i in (hint or {}).items()
             if problem.choices[ly][i] in fixed.choices[ly]}
    status, solver = model.solve(options, local or None)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    # the restriction's option indices -> the full problem's (the same Choice objects)
    return {ly: problem.choices[ly].index(fixed.choices[ly][i])
            for ly, i in model.picks(solver).items()}


def _proven(status: Any, solver: cp_model.CpSolver) -> bool:
    """Optimal as proven, not merely within relative_gap_limit (CP-SAT says OPTIMAL for both);
    the objectives are integers, so a bound within 1 of the value closes it."""
    return bool(status == cp_model.OPTIMAL
                and solver.objective_value - solver.best_objective_bound < 1 - 1e-9)


def _feasible_loss(problem: Problem, picks: dict[str, int]) -> float | None:
    """The loss of a full plan in solver units, or None when it is partial or breaks a limit."""
    if len(picks) != len(problem.layers):
        return None
    totals = problem.totals(picks)
    return totals["acc_loss"] / RESOLUTION["acc_loss"] if problem.feasible(totals) else None


def _gap(value: float, bound: float) -> float:
    """Relative gap to a lower bound (-inf: none known, so the gap is unbounded)."""
    return math.inf if bound == -math.inf else _relative_gap(value, bound)


def _index_hint(problem: Problem, hint: dict[str, str] | None) -> dict[str, int]:
    return {
        layer: [c.option for c in problem.choices[layer]].index(option)
        for layer, option in (hint or {}).items()
        if layer in problem.choices and option in [c.option for c in problem.choices[layer]]
    }


def _better_hint(problem: Problem, given: dict[str, int], incumbent: dict[str, int] | None
                 ) -> dict[str, int]:
    """The caller's warm start unless the LP-and-fix plan is feasible and more accurate."""
    if incumbent is None:
        return given
    mine, theirs = _feasible_loss(problem, given), _feasible_loss(problem, incumbent)
    return given if mine is not None and theirs is not None and mine <= theirs else incumbent


def _infeasible(problem: Problem, status: str, options: SolverOptions, start: float,
                considered: int, explain_infeasible: bool) -> SolveResult:
    if explain_infeasible:
        return explain(problem, status, options, start, considered)
    return SolveResult(status=status, wall_time_s=time.perf_counter() - start,
                       resolution=dict(RESOLUTION), options_considered=considered)


def _relative_gap(value: float, bound: float) -> float:
    """Of the accuracy objective: 0 when proven optimal."""
    if value <= bound:
        return 0.0
    return abs(value - bound) / max(abs(value), 1e-12)


def minimize_metric(problem: Problem, metric: str, options: SolverOptions | None = None
                    ) -> tuple[float | None, dict[str, int] | None]:
    """The smallest reachable value of `metric` under the problem's limits (None: infeasible)."""
    options = options or SolverOptions()
    model = _Model(problem, problem.limits)
    objective = model.peak_ram_var() if metric == "ram_bytes" else model.expr[metric]
    model.m.minimize(objective)
    status, solver = model.solve(options)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None, None
    picks = model.picks(solver)
    return problem.totals(picks)[metric], picks


def _result(problem: Problem, picks: dict[str, int], status: str, start: float,
            considered: int, gap: float | None = None) -> SolveResult:
    totals = problem.totals(picks)
    binding = tuple(m for m, lim in problem.limits.items() if totals[m] >= BINDING_FRACTION * lim)
    return SolveResult(
        status=status,
        picks={ly: problem.choices[ly][i].option for ly, i in picks.items()},
        totals=totals,
        binding=binding,
        wall_time_s=time.perf_counter() - start,
        resolution=dict(RESOLUTION),
        options_considered=considered,
        gap=gap,
    )


def smallest_joint_relaxation(problem: Problem, options: SolverOptions | None = None
                              ) -> dict[str, float]:
    """Elastic model: the smallest total *relative* loosening of the limits that admits a plan,
    as the amount each limit must grow (0 for limits that can stay)."""
    options = options or SolverOptions()
    model = _Model(problem, problem.limits, elastic=True)
    # weight each slack by 1 / its limit, so 1 % of latency costs as much as 1 % of flash
    weights = {m: max(1, round(1e6 / max(scaled_down(v, m), 1))) for m, v in problem.limits.items()}
    model.m.minimize(sum(weights[m] * model.slack[m] for m in model.slack))
    status, solver = model.solve(options)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return {}
    return {m: solver.value(var) * RESOLUTION[m] for m, var in model.slack.items()}


def sensitivity(problem: Problem, metrics: tuple[str, ...],
                options: SolverOptions | None = None, step: float = 0.1) -> dict[str, float]:
    """For each limit in `metrics`: the accuracy cost reachable with that limit `step` (10 %)
    looser, the others unchanged — what more of that resource is worth."""
    out = {}
    for metric in metrics:
        looser = {**problem.limits, metric: problem.limits[metric] * (1 + step)}
        model = _Model(problem, looser)
        model.m.minimize(model.expr["acc_loss"])
        status, solver = model.solve(options or SolverOptions())
        if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            out[metric] = problem.totals(model.picks(solver))["acc_loss"]
    return out


def explain(problem: Problem, status: str, options: SolverOptions, start: float,
            considered: int, backend: str = "cp-sat") -> SolveResult:
    """No plan meets every limit: what each limit alone would need, and each one's minimum."""
    relaxations = []
    for limit, asked in problem.limits.items():
        best, _ = minimize_metric(problem.without_limit(limit), limit, options)
        relaxations.append(Relaxation(limit, asked, best))
    unconstrained = problem.with_limits({})
    minimum = {}
    for limit in problem.limits:
        value, _ = minimize_metric(unconstrained, limit, options)
        if value is not None:
            minimum[limit] = value
    return SolveResult(
        status="INFEASIBLE" if status == "INFEASIBLE" else status,
        joint_relaxation=smallest_joint_relaxation(problem, options),
        backend=backend,
        wall_time_s=time.perf_counter() - start,
        resolution=dict(RESOLUTION),
        options_considered=considered,
        relaxations=tuple(relaxations),
        minimum=minimum,
    )
