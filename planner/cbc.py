"""PuLP / CBC backend over the same Problem as CP-SAT: data -> variables -> constraints ->
objective -> solve -> extract. It uses the same two roundings of the data as CP-SAT
(planner.exact: LOOSE first, SAFE when LOOSE's plan breaks a limit by rounding), at coarser
latency and energy units (CBC_UNITS_PER_TOTAL: its tolerances are absolute), and the same
tie-break costs, so both backends answer the same question about the measured costs and must
agree;
used to cross-check CP-SAT and as the `--solver cbc` choice. Each phase is warm-started (CBC's
MIP start) from the best plan held, and the answer is the best plan held, checked exactly.
"""

from __future__ import annotations

import itertools
import math
from functools import partial

import numpy as np
import pulp

from planner.cpsat import Run, gap_to, index_hint, separable_optimum
from planner.exact import (
    CBC_UNITS_PER_TOTAL,
    LOOSE,
    Attempt,
    Pool,
    Rounding,
    loss_units,
    search,
    tie_break_array,
)
from planner.formulation import arrays
from planner.problem import Problem
from planner.result import SolveResult, SolverOptions

# + 0.5 on an integer bound: room for CBC's tolerance on ~1e9 coefficients (without it CBC can
# call a plan of exactly that bound infeasible)
_INTEGER_SLACK = 0.5


class _Model:
    """The PuLP model of a problem under its limits in one rounding, assembled from
    planner.formulation.Arrays (variables in CP-SAT's layout: x per option, y per group
    width, z per pair term) and kept for every phase of a solve (`for_phase`): each phase
    only sets its objective and its own constraints (cuts, the tie-break's accuracy bound)."""

    def __init__(self, problem: Problem, limits: dict[str, float], name: str,
                 rounding: Rounding = LOOSE) -> None:
        self.p = problem
        self.a = a = arrays(problem)
        self.rounding = rounding.at(problem, CBC_UNITS_PER_TOTAL)
        self.data = self.rounding.data(problem)
        self.m = pulp.LpProblem(name, pulp.LpMinimize)
        self.vars = [pulp.LpVariable(f"x_{k}", cat=pulp.LpBinary) for k in range(a.n)]
        self.vars += [pulp.LpVariable(f"y_{n}", cat=pulp.LpBinary)
                      for n in range(len(a.group_widths))]
        self.vars += [pulp.LpVariable(f"z_{n}", cat=pulp.LpBinary)
                      for n in range(len(a.pair_keys))]
        self.x = dict(zip(a.keys, self.vars[:a.n], strict=True))
        for lo, hi in itertools.pairwise(a.start.tolist()):
            self._add(np.arange(lo, hi), np.ones(hi - lo, dtype=np.int64), pulp.LpConstraintEQ, 1)
        by_group: dict[str, list[int]] = {}
        for n, (g, _) in enumerate(a.group_widths):
            by_group.setdefault(g, []).append(a.n + n)
        for ys in by_group.values():
            self._add(np.array(ys), np.ones(len(ys), dtype=np.int64), pulp.LpConstraintEQ, 1)
        for gw, index in a.coupling:  # the same (group, width) links as the CP-SAT model
            self._add(np.append(index, a.n + gw), np.append(np.ones(len(index), dtype=np.int64),
                                                            -1), pulp.LpConstraintEQ, 0)
        for n, (ia, ib) in enumerate(a.pair_x):  # z >= x[a, A] + x[b, B] - 1
            both = np.concatenate((ia, ib))
            self._add(np.append(both, a.z0 + n), np.append(-np.ones(len(both), dtype=np.int64),
                                                           1), pulp.LpConstraintGE, -1)
        for metric, limit in limits.items():
            room = self.rounding.room(problem, metric, limit)
            rows = self.data.ram_rows if metric == "ram_bytes" else [self.cost_row(metric)]
            for k, (index, coef) in enumerate(rows):
                name = f"ram_{k}" if metric == "ram_bytes" else f"limit_{metric}"
                self._add(index, coef, pulp.LpConstraintLE, room, name)
        self._phase: list[str] = []  # the current phase's own constraints

    def expr(self, index: np.ndarray, coef: np.ndarray) -> pulp.LpAffineExpression:
        return pulp.LpAffineExpression(zip([self.vars[k] for k in index.tolist()],
                                           coef.tolist(), strict=True))

    def _add(self, index: np.ndarray, coef: np.ndarray, sense: int, rhs: float,
             name: str | None = None) -> None:
        self.m += pulp.LpConstraint(self.expr(index, coef), sense, name, rhs)

    def cost_row(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        costs = self.data.costs[metric]
        keep = np.flatnonzero(costs)
        return keep, costs[keep]

    def phase(self, objective: tuple[np.ndarray, np.ndarray],
              rows: tuple[tuple[np.ndarray, np.ndarray, float], ...] = ()) -> None:
        """A new phase: the previous phase's constraints dropped, these rows (index, coef,
        at most) added, this objective set."""
        for name in self._phase:
            del self.m.constraints[name]
        self._phase = []
        for n, (index, coef, most) in enumerate(rows):
            self._phase.append(f"phase_{n}")
            self._add(index, coef, pulp.LpConstraintLE, most, self._phase[-1])
        self.m.setObjective(self.expr(*objective))

    def warm_start(self, picks: dict[str, int] | None) -> bool:
        """CBC's MIP start from a plan (x, the groups' widths, the pair terms); False: none."""
        if not picks or len(picks) != len(self.p.layers):
            return False
        a = self.a
        chosen = np.zeros(len(self.vars), dtype=np.int64)
        chosen[a.flat(picks)] = 1
        for n, (g, w) in enumerate(a.group_widths):
            first = a.members[g][0]
            chosen[a.n + n] = self.p.choices[first][picks[first]].width(g) == w
        for n, (ka, ia, kb, ib) in enumerate(a.pair_keys):
            chosen[a.z0 + n] = picks[ka] in ia and picks[kb] in ib
        for var, value in zip(self.vars, chosen.tolist(), strict=True):
            var.setInitialValue(value)
        return True

    def solve(self, options: SolverOptions, start: dict[str, int] | None = None) -> str:
        warm = self.warm_start(start)
        status = self._run(options, warm)
        if status == "INFEASIBLE":
            # CBC 2.10's integer preprocessing can call a feasible model with ~1e9
            # coefficients infeasible (seen on a 3-layer model): confirm without it. Without
            # it CBC proves a truly infeasible model so ("tightenPrimalBounds") and then
            # crashes writing the solution file: the verdict stands.
            try:
                status = self._run(options, warm, ["preprocess off"])
            except pulp.PulpSolverError:
                status = "INFEASIBLE"
        return status

    def _run(self, options: SolverOptions, warm: bool, extra: list[str] | None = None) -> str:
        solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=max(options.time_limit_s, 0.01),
                                   gapRel=options.relative_gap or None, warmStart=warm,
                                   options=extra or [])
        try:
            self.m.solve(solver)
        except pulp.PulpSolverError:
            if extra:  # the confirmation of an infeasible verdict: solve() reads the crash
                raise
            # CBC ended without a solution file (its time ran out before it wrote one): as a
            # time-out, nothing is known
            return "UNKNOWN"
        # LpStatus says "Optimal" even after a time-out; sol_status tells them apart
        if self.m.sol_status == pulp.LpSolutionOptimal:
            # within gapRel, when one is asked: not a proof
            return "FEASIBLE" if options.relative_gap else "OPTIMAL"
        if self.m.sol_status == pulp.LpSolutionIntegerFeasible:
            return "FEASIBLE"
        if self.m.status == pulp.LpStatusInfeasible:
            return "INFEASIBLE"
        return "UNKNOWN"

    def picks(self) -> dict[str, int]:
        return self.a.picks(np.array([v.varValue or 0.0 for v in self.vars[:self.a.n]]))


def _model(problem: Problem, rounding: Rounding) -> _Model:
    """The problem's model in this rounding, built on first use and kept (with its Arrays)
    for the other phases of the solve."""
    memo = arrays(problem).memo
    key, limits = f"cbc {rounding.name}", tuple(sorted(problem.limits.items()))
    if key not in memo or memo[key][0] != limits:  # one model per rounding: the last limits
        memo[key] = (limits, _Model(problem, problem.limits, "edgefit", rounding))
    model: _Model = memo[key][1]
    return model


def _attempt(problem: Problem, run: Run, rounding: Rounding, hint: dict[str, int] | None,
             cuts: tuple[dict[str, int], ...] = ()) -> Attempt:
    """The accuracy phase on `rounding`'s integers without the plans `cuts`; its bound is the
    optimum when proven."""
    model = _model(problem, rounding)
    model.phase(model.cost_row("acc_loss"), tuple(
        (index := model.a.flat(cut), np.ones(len(index), dtype=np.int64), len(cut) - 1)
        for cut in cuts))
    status = model.solve(run.search_options(), hint)
    if status not in ("OPTIMAL", "FEASIBLE"):
        return Attempt(status)
    picks = model.picks()
    return Attempt(status, picks, loss_units(problem, picks) if status == "OPTIMAL" else None)


def solve(problem: Problem, options: SolverOptions | None = None,
          hint: dict[str, str] | None = None, explain_infeasible: bool = True) -> SolveResult:
    """Minimise accuracy loss, then latency + flash normalised, as the CP-SAT backend does."""
    from planner import lp

    run = Run(problem, options or SolverOptions(), backend="cbc", units=CBC_UNITS_PER_TOTAL)
    loose = separable_optimum(problem)  # no limit binds: the exact answer without a model
    if loose is not None:
        return run.result(loose, "OPTIMAL", 0.0)
    given = index_hint(problem, hint)
    # the LP relaxation proves an infeasible budget at once (CBC alone may time out on it)
    relaxation = lp.relax(problem)
    if relaxation.value is None and lp.proven_infeasible(problem):
        return run.no_plan("INFEASIBLE", explain_infeasible, given)
    pool = Pool(problem)
    pool.offer(given, "the warm start")
    outcome = search(problem, partial(_attempt, problem, run), pool.best)
    pool.offer(outcome.picks, "the search")
    if pool.best is None or pool.loss is None:
        # the explanation is the same question for either backend; CP-SAT answers it
        return run.no_plan(outcome.status, explain_infeasible, given, outcome.note)
    proven = outcome.bound is not None and pool.loss <= outcome.bound
    note = "" if proven else outcome.note
    tie_note = _tie_break_phase(problem, run, pool)
    lp_bound = relaxation.value if relaxation.value is not None else -math.inf
    gap = 0.0 if proven else gap_to(pool.loss, lp_bound)
    return run.result(pool.best, "OPTIMAL" if proven else "FEASIBLE", gap,
                      "; ".join(n for n in (note, tie_note) if n), bool(note))


def _tie_break_phase(problem: Problem, run: Run, pool: Pool) -> str:
    """CP-SAT's tie-break costs among plans as accurate as the best held, warm-started from it,
    in the tie-break's slice; a note when not proven."""
    assert pool.best is not None
    second = _model(problem, LOOSE)
    second.phase((np.arange(second.a.n), tie_break_array(problem)),
                 ((*second.cost_row("acc_loss"), (pool.loss or 0) + _INTEGER_SLACK),))
    status = second.solve(run.tie_break_options(), pool.best)
    if status in ("OPTIMAL", "FEASIBLE"):
        found = second.picks()
        pool.offer(found, "the tie-break")
        if status == "OPTIMAL" and pool.key(found) == pool.key(pool.best):
            return ""
    return ("the tie-break (latency + flash among equally accurate plans) is not proven "
            "optimal: its time slice ran out")
