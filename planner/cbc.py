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

import math
from functools import partial

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
    tie_break_costs,
)
from planner.formulation import coupling_links, pair_keys
from planner.problem import ADDITIVE, Choice, PairKey, Problem
from planner.result import SolveResult, SolverOptions

# + 0.5 on an integer bound: room for CBC's tolerance on ~1e9 coefficients (without it CBC can
# call a plan of exactly that bound infeasible)
_INTEGER_SLACK = 0.5


class _Model:
    def __init__(self, problem: Problem, limits: dict[str, float], name: str,
                 rounding: Rounding = LOOSE) -> None:
        self.p = problem
        self.rounding = rounding.at(problem, CBC_UNITS_PER_TOTAL)
        self.m = pulp.LpProblem(name, pulp.LpMinimize)
        self.x = {
            (layer, i): pulp.LpVariable(f"x_{n}_{i}", cat=pulp.LpBinary)
            for n, layer in enumerate(problem.layers)
            for i in range(len(problem.choices[layer]))
        }
        for layer in problem.layers:
            self.m += pulp.lpSum(self.x[layer, i]
                                 for i in range(len(problem.choices[layer]))) == 1
        self.y = self._coupling()
        self.expr = {m: self._additive(m) for m in (*ADDITIVE, "acc_loss")}
        self.z = self._pairs()
        self.steps = self._ram_steps()
        for metric, limit in limits.items():
            room = self.rounding.room(problem, metric, limit)
            if metric == "ram_bytes":
                for k, step in enumerate(self.steps):
                    self.m += step <= room, f"ram_{k}"
            else:
                self.m += self.expr[metric] <= room, f"limit_{metric}"

    def _coupling(self) -> dict[tuple[str, int], pulp.LpVariable]:
        """The same (group, width) variables and links as the CP-SAT model."""
        groups = self.p.groups
        y = {(g, w): pulp.LpVariable(f"y_{n}_{w}", cat=pulp.LpBinary)
             for n, g in enumerate(groups) for w in groups[g]}
        for g, widths in groups.items():
            self.m += pulp.lpSum(y[g, w] for w in widths) == 1
        for (g, w), (layer, idx) in coupling_links(self.p):
            self.m += pulp.lpSum(self.x[layer, i] for i in idx) == y[g, w]
        return y

    def _additive(self, metric: str) -> pulp.LpAffineExpression:
        def value(c: Choice) -> int:
            return self.rounding.cost(c.acc_loss if metric == "acc_loss" else c.metric(metric),
                                      metric)

        return pulp.lpSum(value(c) * self.x[layer, i]
                          for layer in self.p.layers
                          for i, c in enumerate(self.p.choices[layer]))

    def _pairs(self) -> dict[PairKey, pulp.LpVariable]:
        """The same pair booleans as the CP-SAT model: z >= x[a, A] + x[b, B] - 1."""
        z = {}
        for n, key in enumerate(pair_keys(self.p)):
            a, ia, b, ib = key
            z[key] = pulp.LpVariable(f"z_{n}", cat=pulp.LpBinary)
            self.m += z[key] >= pulp.lpSum(self.x[a, i] for i in ia) + pulp.lpSum(
                self.x[b, j] for j in ib) - 1
        return z

    def _ram_steps(self) -> list[pulp.LpAffineExpression]:
        weights = self.expr["flash_bytes"] if self.p.weights_in_ram else 0
        steps = []
        for t, step in enumerate(self.p.ram_steps or ((),)):
            coef = self.rounding.step_coefficients(self.p, t, step)  # CP-SAT's integers
            live = pulp.lpSum(k * self.x[key] for key, k in coef.items() if k)
            pairs = pulp.lpSum(k * self.z[key]
                               for key, k in self.rounding.pair_coefficients(self.p, t))
            steps.append(live + pairs + weights)
        return steps

    def warm_start(self, picks: dict[str, int] | None) -> bool:
        """CBC's MIP start from a plan (x, the groups' widths, the pair terms); False: none."""
        if not picks or len(picks) != len(self.p.layers):
            return False
        for (layer, i), var in self.x.items():
            var.setInitialValue(int(picks[layer] == i))
        members = self.p.members()
        for (g, w), var in self.y.items():
            first = members[g][0]
            var.setInitialValue(int(self.p.choices[first][picks[first]].width(g) == w))
        for (a, ia, b, ib), var in self.z.items():
            var.setInitialValue(int(picks[a] in ia and picks[b] in ib))
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
        self.m.solve(solver)
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
        return {layer: max(range(len(self.p.choices[layer])),
                           key=lambda i: self.x[layer, i].value() or 0.0)
                for layer in self.p.layers}


def _attempt(problem: Problem, run: Run, rounding: Rounding, hint: dict[str, int] | None,
             cuts: tuple[dict[str, int], ...] = ()) -> Attempt:
    """The accuracy phase on `rounding`'s integers without the plans `cuts`; its bound is the
    optimum when proven."""
    model = _Model(problem, problem.limits, "acc", rounding)
    for cut in cuts:
        model.m += pulp.lpSum(model.x[key] for key in cut.items()) <= len(cut) - 1
    model.m += model.expr["acc_loss"]
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
    second = _Model(problem, problem.limits, "cost")
    second.m += second.expr["acc_loss"] <= (pool.loss or 0) + _INTEGER_SLACK
    second.m += pulp.lpSum(cost * second.x[key] for key, cost in tie_break_costs(problem).items())
    status = second.solve(run.tie_break_options(), pool.best)
    if status in ("OPTIMAL", "FEASIBLE"):
        found = second.picks()
        pool.offer(found, "the tie-break")
        if status == "OPTIMAL" and pool.key(found) == pool.key(pool.best):
            return ""
    return ("the tie-break (latency + flash among equally accurate plans) is not proven "
            "optimal: its time slice ran out")
