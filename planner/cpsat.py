"""CP-SAT backend: data -> variables -> constraints -> objective -> solve -> extract.

Quantities are scaled to integers at the instance's resolution (planner.exact.resolution_for) in
one of two roundings (planner.exact): LOOSE (costs down, limits up), a relaxation whose
infeasibility and bounds hold for the costs as measured, searched first; SAFE (costs up,
limits down), a restriction whose plans always hold, searched only when LOOSE's plan breaks a
limit by rounding. Every plan returned is checked in exact arithmetic against every limit, and
the answer is the best plan held from any source (the caller's hint, LP-and-fix, each phase).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from typing import Any

from ortools.sat.python import cp_model

from planner.exact import (
    LOOSE,
    SAFE,
    UNITS_PER_TOTAL,
    Attempt,
    Outcome,
    Pool,
    Rounding,
    breaks,
    describe,
    exact_totals,
    holds,
    loss_units,
    resolution_for,
    search,
    tie_break_costs,
)
from planner.formulation import coupling_links, pair_keys, scaled_up
from planner.problem import ADDITIVE, PairKey, Problem
from planner.result import (
    BINDING_FRACTION,
    DOWNGRADED,
    VERIFIED,
    Relaxation,
    SolveResult,
    SolverOptions,
)
from planner.sigint import solve_cpsat

_tie_break_costs = tie_break_costs  # the tests' name for it


class _Model:
    """One CP-SAT model over a Problem: x[layer, i] booleans plus named linear expressions."""

    def __init__(self, problem: Problem, limits: dict[str, float],
                 elastic: bool = False, rounding: Rounding = SAFE) -> None:
        self.p = problem
        self.elastic = elastic
        self.rounding = rounding.at(problem)
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
            self.rounding.cost(c.metric(metric) if metric != "acc_loss" else c.acc_loss, metric)
            * self.x[ly, i]
            for ly in self.p.layers for i, c in enumerate(self.p.choices[ly])
        )

    def _ram_steps(self) -> list[cp_model.LinearExprT]:
        weights: Any = self.expr["flash_bytes"] if self.p.weights_in_ram else 0
        steps = []
        for t, step in enumerate(self.p.ram_steps or ((),)):
            coef = self.rounding.step_coefficients(self.p, t, step)
            live: Any = sum(k * self.x[key] for key, k in coef.items() if k)
            pairs: Any = sum(k * self.z[key]
                             for key, k in self.rounding.pair_coefficients(self.p, t))
            steps.append(live + pairs + weights)
        return steps

    def _add_limits(self, limits: dict[str, float]) -> None:
        for metric, limit in limits.items():
            room = self.rounding.room(self.p, metric, limit)
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
            weights = sum(max(self.rounding.up(c.flash_bytes, "flash_bytes")
                              for c in self.p.choices[ly])
                          for ly in self.p.layers) if self.p.weights_in_ram else 0
            live = max((_step_upper(self.p, t, step)
                        for t, step in enumerate(self.p.ram_steps or ((),))), default=0)
            return weights + live + 1
        return sum(max(self.rounding.up(c.metric(metric), metric) for c in self.p.choices[ly])
                   for ly in self.p.layers) + 1

    def peak_ram_var(self) -> cp_model.IntVar:
        peak = self.m.new_int_var(0, self._upper_bound("ram_bytes"), "peak_ram")
        for step in self.steps:
            self.m.add(peak >= step)
        return peak

    def add_hint(self, picks: dict[str, int]) -> None:
        """A warm start: the layers' choices and everything they decide (the groups' widths,
        the pair terms), so a complete plan is one CP-SAT can take as it is."""
        for layer, chosen in picks.items():
            for i in range(len(self.p.choices[layer])):
                self.m.add_hint(self.x[layer, i], i == chosen)
        members = self.p.members()
        for (g, w), var in self.y.items():
            if all(ly in picks for ly in members[g]):
                first = members[g][0]
                self.m.add_hint(var, self.p.choices[first][picks[first]].width(g) == w)
        for (a, ia, b, ib), var in self.z.items():
            if a in picks and b in picks:
                self.m.add_hint(var, picks[a] in ia and picks[b] in ib)

    def solve(self, options: SolverOptions, hint: dict[str, int] | None = None
              ) -> tuple[Any, cp_model.CpSolver]:
        if hint:
            self.add_hint(hint)
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = max(options.time_limit_s, 1e-3)
        solver.parameters.num_workers = max(1, options.workers)
        solver.parameters.relative_gap_limit = options.relative_gap
        return solve_cpsat(solver, self.m), solver  # Ctrl-C stops it and raises

    def picks(self, solver: cp_model.CpSolver) -> dict[str, int]:
        return {ly: next(i for i in range(len(self.p.choices[ly])) if solver.value(self.x[ly, i]))
                for ly in self.p.layers}


_STATUS: dict[Any, str] = {cp_model.OPTIMAL: "OPTIMAL", cp_model.FEASIBLE: "FEASIBLE",
           cp_model.INFEASIBLE: "INFEASIBLE", cp_model.MODEL_INVALID: "MODEL_INVALID",
           cp_model.UNKNOWN: "UNKNOWN"}

Objective = Callable[[_Model], Any]


def _loss(model: _Model) -> Any:
    return model.expr["acc_loss"]


def _metric(metric: str, model: _Model) -> Any:
    return model.peak_ram_var() if metric == "ram_bytes" else model.expr[metric]


def _attempt(problem: Problem, objective: Objective, budget: Callable[[], SolverOptions],
             rounding: Rounding, hint: dict[str, int] | None,
             cuts: tuple[dict[str, int], ...] = ()) -> Attempt:
    """One CP-SAT search of `problem` in `rounding` without the plans `cuts`, within the time
    `budget()` gives now."""
    model = _Model(problem, problem.limits, rounding=rounding)
    for cut in cuts:
        model.m.add(sum(model.x[key] for key in cut.items()) <= len(cut) - 1)
    model.m.minimize(objective(model))
    status, solver = model.solve(budget(), hint)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return Attempt(_STATUS[status])
    return Attempt("OPTIMAL" if _proven(status, solver) else "FEASIBLE", model.picks(solver),
                   solver.best_objective_bound)


def _step_upper(problem: Problem, t: int, step: tuple[tuple[str, int], ...]) -> int:
    """No plan puts more integer bytes on RAM step t than this."""
    worst: dict[str, int] = defaultdict(int)
    for (layer, _), k in SAFE.step_coefficients(problem, t, step).items():
        worst[layer] = max(worst[layer], k)
    return sum(worst.values()) + sum(max(0, k) for _, k in SAFE.pair_coefficients(problem, t))


def _tie_break(model: _Model) -> cp_model.LinearExprT:
    """Cheaper latency and flash, each normalised by its worst total, for a loose budget."""
    return sum(cost * model.x[key] for key, cost in tie_break_costs(model.p).items())


def separable_optimum(problem: Problem) -> dict[str, int] | None:
    """Both phases' exact optimum when no limit binds, without a search (else None).

    Each layer takes its least-loss option, ties broken by the tie-break cost. The total
    loss is then the smallest any plan has, and any plan of that loss keeps every layer at a
    least-loss option, so the tie-break too is minimised layer by layer. It is the answer
    exactly when that plan meets every limit (in exact arithmetic) and coupling: a loose
    budget decomposes."""
    costs = tie_break_costs(problem)

    def rank(ly: str, i: int) -> tuple[int, int]:
        return scaled_up(problem.choices[ly][i].acc_loss, "acc_loss"), costs[ly, i]

    picks = {ly: min(range(len(problem.choices[ly])), key=partial(rank, ly))
             for ly in problem.layers}
    return picks if holds(problem, picks) else None


class Run:
    """One solve call: its clock (one deadline for both phases) and how it reports."""

    def __init__(self, problem: Problem, options: SolverOptions, backend: str = "cp-sat",
                 units: float = UNITS_PER_TOTAL) -> None:
        self.problem, self.options, self.backend = problem, options, backend
        self.resolution = resolution_for(problem, units)  # the search's units, as reported
        self.start = time.perf_counter()
        self.end = self.start + options.time_limit_s
        self.considered = sum(len(c) for c in problem.choices.values())

    def left(self) -> float:
        return max(0.0, self.end - time.perf_counter())

    def search_options(self) -> SolverOptions:
        """The accuracy phase: what is left of the limit less the tie-break's slice (at least
        a tenth of the limit, so a slow LP start still leaves a search)."""
        t = self.options.time_limit_s
        return dataclasses.replace(self.options, time_limit_s=max(
            self.left() - self.options.tie_break_s, 0.1 * t))

    def tie_break_options(self) -> SolverOptions:
        return dataclasses.replace(self.options, time_limit_s=self.options.tie_break_s)

    def result(self, picks: dict[str, int], status: str, gap: float | None,
               note: str = "", downgraded: bool = False) -> SolveResult:
        """The answer, after the last exact check: a plan that breaks a limit is not returned."""
        p = self.problem
        broken = breaks(p, picks)
        if broken:
            return self.bare("UNKNOWN", f"the plan found breaks {describe(p, broken)} in exact "
                             "arithmetic; not returned", True)
        totals = exact_totals(p, picks)
        return SolveResult(
            status=status,
            picks={ly: p.choices[ly][i].option for ly, i in picks.items()},
            totals=totals,
            binding=tuple(m for m, lim in p.limits.items() if totals[m] >= BINDING_FRACTION * lim),
            wall_time_s=time.perf_counter() - self.start,
            backend=self.backend,
            resolution=self.resolution,
            options_considered=self.considered,
            gap=gap if gap is None or math.isfinite(gap) else None,
            exact_check=DOWNGRADED if downgraded else VERIFIED,
            note=note,
        )

    def bare(self, status: str, note: str = "", downgraded: bool = False) -> SolveResult:
        return SolveResult(status=status, backend=self.backend,
                           wall_time_s=time.perf_counter() - self.start,
                           resolution=self.resolution, options_considered=self.considered,
                           exact_check=DOWNGRADED if downgraded else VERIFIED, note=note)

    def no_plan(self, status: str, explain_infeasible: bool, hint: dict[str, int] | None,
                note: str = "") -> SolveResult:
        """No plan holds: the bare status, or with what each limit would need."""
        if not explain_infeasible:
            return self.bare(status, note, bool(note))
        return explain(self.problem, status, self.options, self.start, self.considered,
                       self.backend, hint=hint, note=note)


def solve(problem: Problem, options: SolverOptions | None = None,
          hint: dict[str, str] | None = None, explain_infeasible: bool = True) -> SolveResult:
    """Minimise accuracy loss, then latency + flash, under every limit; explain infeasibility.

    Before CP-SAT, the LP relaxation (planner.lp): when even it needs a limit loosened, the
    budget is infeasible (no CP-SAT search); otherwise its LP-and-fix plan is a candidate and
    CP-SAT's hint, and its bound tightens the reported gap. The answer is the best plan held
    (hint, LP-and-fix, each phase), checked exactly; OPTIMAL when the accuracy phase's bound
    (valid for the measured costs) meets it, whatever the tie-break phase manages.
    hint: layer -> option of a previous solution (a warm start after a small change)."""
    run = Run(problem, options or SolverOptions())
    loose = separable_optimum(problem)
    if loose is not None:  # no limit binds: proven optimal without a model
        return run.result(loose, "OPTIMAL", 0.0)
    lp_bound, incumbent = _lp_start(problem, run.options)
    given = index_hint(problem, hint)
    if lp_bound == math.inf:
        return run.no_plan("INFEASIBLE", explain_infeasible, given)
    pool = Pool(problem)
    pool.offer(given, "the warm start")
    pool.offer(incumbent, "LP-and-fix")
    if pool.best is not None and run.options.relative_gap > 0 and gap_to(
            pool.loss or 0, lp_bound) <= run.options.relative_gap:  # no search needed
        return run.result(pool.best, "FEASIBLE", gap_to(pool.loss or 0, lp_bound))
    outcome = search(problem, partial(_attempt, problem, _loss, run.search_options),
                     pool.best or given or None)
    pool.offer(outcome.picks, "the search")
    if pool.best is None:
        return run.no_plan(outcome.status, explain_infeasible, given, outcome.note)
    return _finish(run, pool, outcome, lp_bound)


def _finish(run: Run, pool: Pool, outcome: Outcome, lp_bound: float) -> SolveResult:
    """Status from the bound, then the tie-break phase among equally accurate plans."""
    assert pool.best is not None and pool.loss is not None
    bound = outcome.bound if outcome.bound is not None else -math.inf
    proven = pool.loss - bound < 1 - 1e-9  # integer objective: the bound closes it
    note = "" if proven else outcome.note
    tie_note = _tie_break_phase(run, pool)
    notes = "; ".join(n for n in (note, tie_note) if n)
    gap = 0.0 if proven else gap_to(pool.loss, max(bound, lp_bound))
    return run.result(pool.best, "OPTIMAL" if proven else "FEASIBLE", gap, notes, bool(note))


def _tie_break_phase(run: Run, pool: Pool) -> str:
    """Latency + flash among plans as accurate as the best held, in the tie-break's slice of
    the time; its plan replaces the best only when it holds exactly and is better. Returns a
    note when the tie-break is not proven."""
    assert pool.best is not None
    model = _Model(run.problem, run.problem.limits, rounding=LOOSE)
    model.m.add(model.expr["acc_loss"] <= (pool.loss or 0))
    model.m.minimize(_tie_break(model))
    status, solver = model.solve(run.tie_break_options(), pool.best)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        found = model.picks(solver)
        pool.offer(found, "the tie-break")
        if _proven(status, solver) and pool.key(found) == pool.key(pool.best):
            return ""
    return ("the tie-break (latency + flash among equally accurate plans) is not proven "
            "optimal: its time slice ran out")


def _lp_start(problem: Problem, options: SolverOptions) -> tuple[float, dict[str, int] | None]:
    """(LP lower bound on the loss in solver units, valid for the measured costs; -inf when
    unknown, inf when the budget is proven infeasible; an LP-and-fix plan that holds, or
    None)."""
    from planner import lp

    relaxation = lp.relax(problem)
    if relaxation.value is None:
        return (math.inf if lp.proven_infeasible(problem) else -math.inf), None
    # each of the two LP-and-fix searches: a twentieth of the limit, at most 1 s
    quick = dataclasses.replace(options, time_limit_s=min(0.05 * options.time_limit_s, 1.0))
    pool = Pool(problem)
    for widen in (False, True):  # the split layers only, then with their neighbours freed
        if pool.best is not None and gap_to(pool.loss or 0, relaxation.value) <= max(
                options.relative_gap, 1e-3):
            break
        pool.offer(_fixed_solve(problem, lp.lp_and_fix(problem, relaxation, widen), quick,
                                pool.best), "LP-and-fix")
    return relaxation.value, pool.best


def _fixed_solve(problem: Problem, fixed: Problem | None, options: SolverOptions,
                 hint: dict[str, int] | None) -> dict[str, int] | None:
    """CP-SAT on an LP-and-fix restriction (SAFE: its plans hold), as indices into `problem`'s
    choices."""
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


def gap_to(value: float, bound: float) -> float:
    """Relative gap to a lower bound (-inf: none known, so the gap is unbounded)."""
    return math.inf if bound == -math.inf else _relative_gap(value, bound)


def index_hint(problem: Problem, hint: dict[str, str] | None) -> dict[str, int]:
    return {
        layer: [c.option for c in problem.choices[layer]].index(option)
        for layer, option in (hint or {}).items()
        if layer in problem.choices and option in [c.option for c in problem.choices[layer]]
    }


def _relative_gap(value: float, bound: float) -> float:
    """Of the accuracy objective: 0 when proven optimal."""
    if value <= bound:
        return 0.0
    return abs(value - bound) / max(abs(value), 1e-12)


@dataclasses.dataclass(frozen=True)
class Reach:
    """The smallest value of a metric: status OPTIMAL (proven, to the metric's resolution),
    FEASIBLE (a plan reaches `value`; maybe not the smallest), INFEASIBLE (no plan meets the
    limits, for the measured costs), UNKNOWN (no plan in time, or only by rounding)."""

    status: str
    value: float | None = None
    picks: dict[str, int] | None = None


def reach(problem: Problem, metric: str, options: SolverOptions | None = None,
          hint: dict[str, int] | None = None) -> Reach:
    """The smallest reachable value of `metric` under the problem's limits, warm-started from
    `hint`; the plan holds exactly; a time-out is UNKNOWN, never INFEASIBLE."""
    options = options or SolverOptions()
    outcome = search(problem, partial(_attempt, problem, partial(_metric, metric),
                                      lambda: options), hint)
    if outcome.picks is None:
        return Reach(outcome.status)
    status = "FEASIBLE" if outcome.downgraded else outcome.status
    return Reach(status, exact_totals(problem, outcome.picks)[metric], outcome.picks)


def minimize_metric(problem: Problem, metric: str, options: SolverOptions | None = None
                    ) -> tuple[float | None, dict[str, int] | None]:
    """The smallest reachable value of `metric` under the problem's limits (None: no plan;
    `reach` says whether that is proven)."""
    found = reach(problem, metric, options)
    return found.value, found.picks


def joint_relaxation(problem: Problem, options: SolverOptions | None = None
                     ) -> tuple[dict[str, float], str]:
    """Elastic model: the smallest total *relative* loosening of the limits that admits a plan,
    as the amount each limit must grow (0 for limits that can stay), and its status (OPTIMAL:
    the smallest; FEASIBLE: enough, maybe not the smallest; else none found: empty). SAFE
    rounding: the amounts are enough for the measured costs."""
    options = options or SolverOptions()
    model = _Model(problem, problem.limits, elastic=True)
    # weight each slack by 1 / its limit, so 1 % of latency costs as much as 1 % of flash
    res = model.rounding.resolution
    weights = {m: max(1, round(1e6 / max(v / res[m], 1))) for m, v in problem.limits.items()}
    model.m.minimize(sum(weights[m] * model.slack[m] for m in model.slack))
    status, solver = model.solve(options)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return {}, _STATUS[status]
    slack = {m: solver.value(var) * res[m] for m, var in model.slack.items()}
    return slack, "OPTIMAL" if _proven(status, solver) else "FEASIBLE"


def smallest_joint_relaxation(problem: Problem, options: SolverOptions | None = None
                              ) -> dict[str, float]:
    """joint_relaxation's amounts alone ({} when none was found)."""
    return joint_relaxation(problem, options)[0]


def binding_limits(problem: Problem, picks: dict[str, int],
                   options: SolverOptions | None = None, step: float = 0.1
                   ) -> tuple[dict[str, float], tuple[str, ...]]:
    """For each limit: re-solve with it `step` (10 %) looser, the others unchanged, warm-started
    from the current plan `picks`. Returns (binding limit -> the accuracy cost a plan reaches
    there, the limits left unknown). A limit binds when a plan that holds exactly is more
    accurate; it does not when the bound (valid for the measured costs) proves none is; a
    time-out with neither is unknown, never "not binding"."""
    options = options or SolverOptions()
    current = loss_units(problem, picks)
    binding: dict[str, float] = {}
    unknown: list[str] = []
    for metric, limit in problem.limits.items():
        looser = problem.with_limits({**problem.limits, metric: limit * (1 + step)})
        outcome = search(looser, partial(_attempt, looser, _loss, lambda: options), picks)
        if outcome.picks is not None and loss_units(looser, outcome.picks) < current:
            binding[metric] = exact_totals(looser, outcome.picks)["acc_loss"]
        elif outcome.bound is None or current - outcome.bound >= 1 - 1e-9:
            unknown.append(metric)
    return binding, tuple(unknown)


def explain(problem: Problem, status: str, options: SolverOptions, start: float,
            considered: int, backend: str = "cp-sat", hint: dict[str, int] | None = None,
            note: str = "") -> SolveResult:
    """No plan meets every limit: what each limit alone would need, and each one's minimum
    (each solve warm-started from `hint`, a time-out said as such)."""
    relaxations = []
    for limit, asked in problem.limits.items():
        found = reach(problem.without_limit(limit), limit, options, hint)
        relaxations.append(Relaxation(limit, asked, found.value, found.status))
    unconstrained = problem.with_limits({})
    minimum = {}
    for limit in problem.limits:
        value = reach(unconstrained, limit, options, hint).value
        if value is not None:
            minimum[limit] = value
    joint, joint_status = joint_relaxation(problem, options)
    return SolveResult(
        status=status,
        joint_relaxation=joint,
        joint_relaxation_status=joint_status,
        backend=backend,
        wall_time_s=time.perf_counter() - start,
        resolution=resolution_for(problem),
        options_considered=considered,
        relaxations=tuple(relaxations),
        minimum=minimum,
        exact_check=DOWNGRADED if note else VERIFIED,
        note=note,
    )
