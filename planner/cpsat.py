"""CP-SAT backend: data -> variables -> constraints -> objective -> solve -> extract.

Quantities are scaled to integers at a stated resolution. Costs are rounded up and limits down,
so every plan the integer model accepts also meets the limits in exact arithmetic.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

from ortools.sat.python import cp_model

from planner.problem import ADDITIVE, Problem
from planner.result import BINDING_FRACTION, Relaxation, SolveResult, SolverOptions

# Integer unit of each quantity inside the solver (ms, bytes, mJ, loss units).
RESOLUTION = {"latency_ms": 1e-4, "flash_bytes": 1.0, "ram_bytes": 1.0, "energy_mj": 1e-6,
              "acc_loss": 1e-9}


def _up(value: float, metric: str) -> int:
    return math.ceil(value / RESOLUTION[metric] - 1e-9)


def _down(value: float, metric: str) -> int:
    return math.floor(value / RESOLUTION[metric] + 1e-9)


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
        self.expr = {metric: self._additive(metric) for metric in ADDITIVE}
        self.expr["acc_loss"] = self._additive("acc_loss")
        self.steps = self._ram_steps()
        self._add_limits(limits)

    def _additive(self, metric: str) -> cp_model.LinearExprT:
        return sum(
            _up(c.metric(metric) if metric != "acc_loss" else c.acc_loss, metric) * self.x[ly, i]
            for ly in self.p.layers for i, c in enumerate(self.p.choices[ly])
        )

    def _ram_steps(self) -> list[cp_model.LinearExprT]:
        weights: Any = self.expr["flash_bytes"] if self.p.weights_in_ram else 0
        steps = []
        for step in self.p.ram_steps or ((),):
            per_owner: dict[str, int] = defaultdict(int)
            for owner, n in step:
                per_owner[owner] += n
            live: Any = sum(
                math.ceil(n * c.act_bytes - 1e-9) * self.x[owner, i]
                for owner, n in per_owner.items()
                for i, c in enumerate(self.p.choices[owner])
            )
            steps.append(live + weights)
        return steps

    def _add_limits(self, limits: dict[str, float]) -> None:
        for metric, limit in limits.items():
            room = _down(limit, metric) - _up(self.p.fixed.get(metric, 0.0), metric)
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
            weights = sum(max(_up(c.flash_bytes, "ram_bytes") for c in self.p.choices[ly])
                          for ly in self.p.layers) if self.p.weights_in_ram else 0
            live = max((sum(math.ceil(n * max(c.act_bytes for c in self.p.choices[o]))
                            for o, n in step)
                        for step in self.p.ram_steps), default=0)
            return weights + live + 1
        return sum(max(_up(c.metric(metric), metric) for c in self.p.choices[ly])
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


def _tie_break(model: _Model) -> cp_model.LinearExprT:
    """Cheaper latency and flash, each normalised by its worst total, for a loose budget."""
    def worst(metric: str) -> int:
        return max(1, sum(max(_up(c.metric(metric), metric) for c in model.p.choices[ly])
                          for ly in model.p.layers))
    lat_ref, flash_ref = worst("latency_ms"), worst("flash_bytes")
    return sum(
        (round(1e6 * _up(c.latency_ms, "latency_ms") / lat_ref)
         + round(1e6 * _up(c.flash_bytes, "flash_bytes") / flash_ref)) * model.x[ly, i]
        for ly in model.p.layers for i, c in enumerate(model.p.choices[ly])
    )


def solve(problem: Problem, options: SolverOptions | None = None,
          hint: dict[str, str] | None = None) -> SolveResult:
    """Minimise accuracy loss, then latency + flash, under every limit; explain infeasibility.

    hint: layer -> option of a previous solution (a warm start after a small change)."""
    options = options or SolverOptions()
    start = time.perf_counter()
    first = _Model(problem, problem.limits)
    first.m.minimize(first.expr["acc_loss"])
    index_hint = {
        layer: [c.option for c in problem.choices[layer]].index(option)
        for layer, option in (hint or {}).items()
        if layer in problem.choices and option in [c.option for c in problem.choices[layer]]
    }
    status, solver = first.solve(options, index_hint or None)
    considered = sum(len(c) for c in problem.choices.values())
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return explain(problem, _STATUS[status], options, start, considered)
    best_loss = round(solver.objective_value)
    first_picks = first.picks(solver)
    exact = status == cp_model.OPTIMAL

    second = _Model(problem, problem.limits)
    second.m.add(second.expr["acc_loss"] <= best_loss)
    second.m.minimize(_tie_break(second))
    status2, solver2 = second.solve(options, first_picks)
    if status2 in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        picks = second.picks(solver2)
        exact = exact and status2 == cp_model.OPTIMAL
    else:  # the hint is feasible, so only a time-out lands here
        picks, exact = first_picks, False
    gap = _relative_gap(solver.objective_value, solver.best_objective_bound)
    return _result(problem, picks, "OPTIMAL" if exact else "FEASIBLE", start, considered, gap)


def _relative_gap(value: float, bound: float) -> float:
    """Of the accuracy objective: 0 when proven optimal."""
    if value == bound:
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
    weights = {m: max(1, round(1e6 / max(_down(v, m), 1))) for m, v in problem.limits.items()}
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
    unconstrained = Problem(problem.layers, problem.choices, {}, problem.fixed,
                            problem.ram_steps, problem.weights_in_ram)
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
