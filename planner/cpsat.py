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
import itertools
import math
import time
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from ortools.sat.python import cp_model, cp_model_helper

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
    tie_break_array,
    tie_break_costs,
)
from planner.formulation import RESOLUTION, Arrays, Row, arrays
from planner.problem import Choice, Problem
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


# CP-SAT's presolve, lightened: one pass, no probing, no inclusion detection (ProcessSetPPC),
# no big linear-overlap search. On the multiple-choice models edgefit builds (an exactly-one per
# layer, a few long limit rows) the default presolve could use the whole time limit before the
# search started (BERT-24 tight: FEASIBLE from the LP-and-fix hint after 5 s); with these
# settings that solve proved the optimum in 3.1 s, ResNet-50 medium in 1.1 s instead of FEASIBLE
# after 5 s (docs/bench-solver-scale.md, 2026-12-07). Presolve settings never change an answer's
# correctness, only how fast it comes.
LIGHT_PRESOLVE: dict[str, Any] = {"max_presolve_iterations": 1, "cp_model_probing_level": 0,
                                  "presolve_inclusion_work_limit": 0,
                                  "find_big_linear_overlap": False}


class _Model:
    """One CP-SAT model over a Problem: a copy of its structure (planner.formulation.Arrays:
    x per option, y per group width, z per pair term, built once per problem) with this
    model's limits, objective, cuts and hint written into the proto from arrays."""

    def __init__(self, problem: Problem, limits: dict[str, float],
                 elastic: bool = False, rounding: Rounding = SAFE) -> None:
        self.p = problem
        self.a = arrays(problem)
        self.rounding = rounding.at(problem)
        self.data = self.rounding.data(problem)
        self.m = _structure(self.a).clone()
        self.proto = self.m.proto
        self.slack: dict[str, int] = {}  # limit -> its slack variable's index (elastic)
        for metric, limit in limits.items():
            room = self.rounding.room(self.p, metric, limit)
            extra = None
            if elastic:  # limit + slack: how far it must move for a plan to exist
                extra = self.slack[metric] = self.new_var(self._upper_bound(metric))
            for index, coef in self.rows(metric):
                if extra is not None:
                    index, coef = np.append(index, extra), np.append(coef, -1)
                self.add_row(index, coef, cp_model.INT_MIN, room)

    def new_var(self, upper: int) -> int:
        self.proto.variables.add().domain.extend((0, upper))
        return len(self.proto.variables) - 1

    def add_row(self, index: np.ndarray, coef: np.ndarray, lo: int, hi: int) -> None:
        ct = self.proto.constraints.add()
        ct.linear.vars.extend(index)
        ct.linear.coeffs.extend(coef)
        ct.linear.domain.extend((lo, hi))

    def cost_row(self, metric: str) -> Row:
        """The metric's total over the x variables (zero costs left out) and the pair terms'
        z (a precision boundary's latency)."""
        return self.a.metric_row(self.data, metric)

    def rows(self, metric: str) -> list[Row]:
        """The rows a limit on `metric` bounds: its total, or each RAM step's bytes."""
        return self.data.ram_rows if metric == "ram_bytes" else [self.cost_row(metric)]

    def _upper_bound(self, metric: str) -> int:
        """No plan can exceed this value of `metric` (in solver units)."""
        def worst(m: str) -> int:
            units = np.ceil(self.a.values[m] / self.rounding.resolution[m] - 1e-9)
            return int(np.maximum.reduceat(units, self.a.start[:-1]).astype(np.int64).sum())

        if metric == "ram_bytes":
            weights = worst("flash_bytes") if self.p.weights_in_ram else 0
            live = max((_step_upper(self.p, t) for t in range(len(self.data.steps))),
                       default=0)
            return weights + live + 1
        pairs = self.data.pair_costs.get(metric)
        return worst(metric) + (int(pairs[1].sum()) if pairs is not None else 0) + 1

    def peak_ram_var(self) -> int:
        peak = self.new_var(self._upper_bound("ram_bytes"))
        for index, coef in self.rows("ram_bytes"):
            self.add_row(np.append(index, peak), np.append(coef, -1), cp_model.INT_MIN, 0)
        return peak

    def minimize(self, terms: Row) -> None:
        index, coef = terms
        keep = np.flatnonzero(coef)
        self.proto.clear_objective()
        self.proto.objective.vars.extend(index[keep])
        self.proto.objective.coeffs.extend(coef[keep])

    def at_most(self, terms: Row, units: int) -> None:
        self.add_row(*terms, cp_model.INT_MIN, units)

    def forbid(self, picks: dict[str, int]) -> None:
        """A cut: not this plan (at least one layer takes another option)."""
        index = self.a.flat(picks)
        self.add_row(index, np.ones(len(index), dtype=np.int64), cp_model.INT_MIN,
                     len(index) - 1)

    def add_hint(self, picks: dict[str, int]) -> None:
        """A warm start: the layers' choices and everything they decide (the groups' widths,
        the pair terms), so a complete plan is one CP-SAT can take as it is."""
        a = self.a
        chosen = np.zeros(a.n, dtype=np.int64)
        chosen[a.flat(picks)] = 1
        hinted = np.isin(a.layer_of, [a.position[ly] for ly in picks])
        index, value = [np.flatnonzero(hinted)], [chosen[hinted]]
        width = {}
        for g, members in a.members.items():
            if all(ly in picks for ly in members):
                width[g] = self.p.choices[members[0]][picks[members[0]]].width(g)
        y = [(a.n + n, int(width[g] == w)) for n, (g, w) in enumerate(a.group_widths)
             if g in width]
        z = [(a.z0 + n, int(picks[ka] in ia and picks[kb] in ib))
             for n, (ka, ia, kb, ib) in enumerate(a.pair_keys) if ka in picks and kb in picks]
        for extra in (y, z):
            if extra:
                index.append(np.array([k for k, _ in extra], dtype=np.int64))
                value.append(np.array([v for _, v in extra], dtype=np.int64))
        self.proto.clear_solution_hint()
        self.proto.solution_hint.vars.extend(np.concatenate(index))
        self.proto.solution_hint.values.extend(np.concatenate(value))

    def solve(self, options: SolverOptions, hint: dict[str, int] | None = None
              ) -> tuple[Any, cp_model.CpSolver]:
        if hint:
            self.add_hint(hint)
        solver = cp_model.CpSolver()
        solver.parameters.max_time_in_seconds = max(options.time_limit_s, 1e-3)
        solver.parameters.num_workers = max(1, options.workers)
        solver.parameters.relative_gap_limit = options.relative_gap
        for name, value in LIGHT_PRESOLVE.items():
            setattr(solver.parameters, name, value)
        return solve_cpsat(solver, self.m), solver  # Ctrl-C stops it and raises

    def values(self, solver: cp_model.CpSolver) -> np.ndarray:
        return np.asarray(solver.response_proto.solution, dtype=np.int64)

    def picks(self, solver: cp_model.CpSolver) -> dict[str, int]:
        return self.a.picks(self.values(solver)[:self.a.n])


def _structure(a: Arrays) -> cp_model.CpModel:
    """The limit-free CP-SAT model of a problem, built once (each model is a copy): x[k] for
    every option (exactly one per layer), y for every (group, width) (exactly one per group;
    each member's options of that width sum to it, so the group is one decision however many
    layers share it), z for every pair term (z >= x[a, A] + x[b, B] - 1: 1 when both take
    one of those options, at least; RAM limits push it down to exactly that)."""
    if "cp-sat" in a.memo:
        model: cp_model.CpModel = a.memo["cp-sat"]
        return model
    model = cp_model.CpModel()
    proto = model.proto
    boolean = cp_model_helper.IntegerVariableProto()
    boolean.domain.extend((0, 1))
    y0 = a.n
    z0 = y0 + len(a.group_widths)
    proto.variables.extend([boolean] * (z0 + len(a.pair_keys)))
    for lo, hi in itertools.pairwise(a.start.tolist()):
        proto.constraints.add().exactly_one.literals.extend(range(lo, hi))
    by_group: dict[str, list[int]] = defaultdict(list)
    for n, (g, _) in enumerate(a.group_widths):
        by_group[g].append(y0 + n)
    for literals in by_group.values():
        proto.constraints.add().exactly_one.literals.extend(literals)
    for gw, index in a.coupling:
        ct = proto.constraints.add().linear
        ct.vars.extend(index)
        ct.vars.append(y0 + gw)
        ct.coeffs.extend([1] * len(index) + [-1])
        ct.domain.extend((0, 0))
    for n, (ia, ib) in enumerate(a.pair_x):
        ct = proto.constraints.add().linear
        ct.vars.append(z0 + n)
        ct.vars.extend(np.concatenate((ia, ib)))
        ct.coeffs.extend([1] + [-1] * (len(ia) + len(ib)))
        ct.domain.extend((-1, cp_model.INT_MAX))
    a.memo["cp-sat"] = model
    return model


_STATUS: dict[Any, str] = {cp_model.OPTIMAL: "OPTIMAL", cp_model.FEASIBLE: "FEASIBLE",
           cp_model.INFEASIBLE: "INFEASIBLE", cp_model.MODEL_INVALID: "MODEL_INVALID",
           cp_model.UNKNOWN: "UNKNOWN"}

Objective = Callable[[_Model], Row]


def _loss(model: _Model) -> Row:
    return model.cost_row("acc_loss")


def _metric(metric: str, model: _Model) -> Row:
    if metric == "ram_bytes":
        return np.array([model.peak_ram_var()]), np.ones(1, dtype=np.int64)
    return model.cost_row(metric)


def _attempt(problem: Problem, objective: Objective, budget: Callable[[], SolverOptions],
             rounding: Rounding, hint: dict[str, int] | None,
             cuts: tuple[dict[str, int], ...] = ()) -> Attempt:
    """One CP-SAT search of `problem` in `rounding` without the plans `cuts`, within the time
    `budget()` gives now."""
    model = _Model(problem, problem.limits, rounding=rounding)
    for cut in cuts:
        model.forbid(cut)
    model.minimize(objective(model))
    status, solver = model.solve(budget(), hint)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return Attempt(_STATUS[status])
    return Attempt("OPTIMAL" if _proven(status, solver) else "FEASIBLE", model.picks(solver),
                   solver.best_objective_bound)


def _step_upper(problem: Problem, t: int) -> int:
    """No plan puts more integer bytes on RAM step t than this (its live tensors, workspace
    and pair terms; the costs rounded up)."""
    a = arrays(problem)
    (index, coef), (_, pair_coef) = SAFE.data(problem).steps[t]
    worst = np.zeros(len(a.layers), dtype=np.int64)
    np.maximum.at(worst, a.layer_of[index], coef)
    return int(worst.sum() + np.maximum(pair_coef, 0).sum())


def _tie_break(model: _Model) -> Row:
    """Cheaper latency and flash, each normalised by its worst total, for a loose budget."""
    return np.arange(model.a.n), tie_break_array(model.p)


def separable_optimum(problem: Problem) -> dict[str, int] | None:
    """Both phases' exact optimum when no limit binds, without a search (else None).

    Each layer takes its least-loss option, ties broken by the tie-break cost. The total
    loss is then the smallest any plan has, and any plan of that loss keeps every layer at a
    least-loss option, so the tie-break too is minimised layer by layer. It is the answer
    exactly when that plan meets every limit (in exact arithmetic) and coupling: a loose
    budget decomposes."""
    a = arrays(problem)
    loss = np.ceil(a.values["acc_loss"] / RESOLUTION["acc_loss"] - 1e-9)
    # by layer, then loss, then tie-break cost; a stable sort keeps the first of equal options
    order = np.lexsort((tie_break_array(problem), loss, a.layer_of))
    first = order[a.start[:-1]]
    picks = dict(zip(a.layers, (first - a.start[:-1]).tolist(), strict=True))
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
    model.at_most(model.cost_row("acc_loss"), pool.loss or 0)
    model.minimize(_tie_break(model))
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
    model.minimize(model.cost_row("acc_loss"))
    # option indices between the two: the same Choice objects (found by identity: fast)
    local = {ly: j for ly, i in (hint or {}).items()
             if (j := _position(fixed.choices[ly], problem.choices[ly][i])) is not None}
    status, solver = model.solve(options, local or None)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    found = {ly: _position(problem.choices[ly], fixed.choices[ly][i])
             for ly, i in model.picks(solver).items()}
    return {ly: i for ly, i in found.items() if i is not None}  # all are: a restriction


def _position(options: tuple[Choice, ...], option: Choice) -> int | None:
    """The index of this very Choice object among `options` (None: not offered)."""
    return next((i for i, c in enumerate(options) if c is option), None)


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


def joint_relaxation(problem: Problem, options: SolverOptions | None = None,
                     hint: dict[str, int] | None = None) -> tuple[dict[str, float], str]:
    """Elastic model: the smallest total *relative* loosening of the limits that admits a plan,
    as the amount each limit must grow (0 for limits that can stay), and its status (OPTIMAL:
    the smallest; FEASIBLE: enough, maybe not the smallest; else none found: empty). SAFE
    rounding: the amounts are enough for the measured costs. hint: a plan to start from (any
    plan is one of the elastic model's, its slacks left to CP-SAT)."""
    options = options or SolverOptions()
    model = _Model(problem, problem.limits, elastic=True)
    # weight each slack by 1 / its limit, so 1 % of latency costs as much as 1 % of flash
    res = model.rounding.resolution
    weights = {m: max(1, round(1e6 / max(v / res[m], 1))) for m, v in problem.limits.items()}
    model.minimize((np.array(list(model.slack.values()), dtype=np.int64),
                    np.array([weights[m] for m in model.slack], dtype=np.int64)))
    status, solver = model.solve(options, hint)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return {}, _STATUS[status]
    values = model.values(solver)
    slack = {m: int(values[var]) * res[m] for m, var in model.slack.items()}
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
    """No plan meets every limit: what each limit alone would need, each one's minimum and
    the joint relaxation (each solve warm-started from `hint`, a time-out said as such)."""
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
    joint, joint_status = joint_relaxation(problem, options, hint)
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
