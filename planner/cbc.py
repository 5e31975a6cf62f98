"""PuLP / CBC backend over the same Problem as CP-SAT: data -> variables -> constraints ->
objective -> solve -> extract. It uses the same integer data as CP-SAT (costs rounded up and
limits down at the stated resolution), so both backends answer exactly the same question and
must agree; used to cross-check CP-SAT and as the `--solver cbc` choice.
"""

from __future__ import annotations

import time

import pulp

from planner.formulation import (
    RESOLUTION,
    coupling_links,
    pair_coefficients,
    pair_keys,
    scaled_down,
    scaled_up,
    step_coefficients,
)
from planner.problem import ADDITIVE, Choice, PairKey, Problem
from planner.result import BINDING_FRACTION, SolveResult, SolverOptions


class _Model:
    def __init__(self, problem: Problem, limits: dict[str, float], name: str) -> None:
        self.p = problem
        self.m = pulp.LpProblem(name, pulp.LpMinimize)
        self.x = {
            (layer, i): pulp.LpVariable(f"x_{n}_{i}", cat=pulp.LpBinary)
            for n, layer in enumerate(problem.layers)
            for i in range(len(problem.choices[layer]))
        }
        for layer in problem.layers:
            self.m += pulp.lpSum(self.x[layer, i]
                                 for i in range(len(problem.choices[layer]))) == 1
        self._coupling()
        self.expr = {m: self._additive(m) for m in (*ADDITIVE, "acc_loss")}
        self.z = self._pairs()
        self.steps = self._ram_steps()
        for metric, limit in limits.items():
            room = scaled_down(limit, metric) - scaled_up(problem.fixed.get(metric, 0.0), metric)
            if metric == "ram_bytes":
                for k, step in enumerate(self.steps):
                    self.m += step <= room, f"ram_{k}"
            else:
                self.m += self.expr[metric] <= room, f"limit_{metric}"

    def _coupling(self) -> None:
        """The same (group, width) variables and links as the CP-SAT model."""
        groups = self.p.groups
        y = {(g, w): pulp.LpVariable(f"y_{n}_{w}", cat=pulp.LpBinary)
             for n, g in enumerate(groups) for w in groups[g]}
        for g, widths in groups.items():
            self.m += pulp.lpSum(y[g, w] for w in widths) == 1
        for (g, w), (layer, idx) in coupling_links(self.p):
            self.m += pulp.lpSum(self.x[layer, i] for i in idx) == y[g, w]

    def _additive(self, metric: str) -> pulp.LpAffineExpression:
        def value(c: Choice) -> int:
            return scaled_up(c.acc_loss if metric == "acc_loss" else c.metric(metric), metric)

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
            coef = step_coefficients(self.p, t, step)  # the same integers as CP-SAT's
            live = pulp.lpSum(k * self.x[key] for key, k in coef.items() if k)
            pairs = pulp.lpSum(k * self.z[key] for key, k in pair_coefficients(self.p, t))
            steps.append(live + pairs + weights)
        return steps

    def solve(self, options: SolverOptions) -> str:
        solver = pulp.PULP_CBC_CMD(msg=False, timeLimit=options.time_limit_s,
                                   gapRel=options.relative_gap or None)
        self.m.solve(solver)
        # LpStatus says "Optimal" even after a time-out; sol_status tells them apart
        if self.m.sol_status == pulp.LpSolutionOptimal:
            return "OPTIMAL"
        if self.m.sol_status == pulp.LpSolutionIntegerFeasible:
            return "FEASIBLE"
        if self.m.status == pulp.LpStatusInfeasible:
            return "INFEASIBLE"
        return "UNKNOWN"

    def picks(self) -> dict[str, int]:
        return {layer: max(range(len(self.p.choices[layer])),
                           key=lambda i: self.x[layer, i].value() or 0.0)
                for layer in self.p.layers}


def solve(problem: Problem, options: SolverOptions | None = None,
          hint: dict[str, str] | None = None, explain_infeasible: bool = True) -> SolveResult:
    """Minimise accuracy loss, then latency + flash normalised, as the CP-SAT backend does."""
    from planner import lp
    from planner.cpsat import separable_optimum

    del hint  # CBC through PuLP takes no warm start here
    options = options or SolverOptions()
    start = time.perf_counter()
    considered = sum(len(c) for c in problem.choices.values())
    loose = separable_optimum(problem)  # no limit binds: the exact answer without a model
    if loose is not None:
        return _result(problem, loose, True, start, considered)
    # the LP relaxation proves an infeasible budget at once (CBC alone may time out on it)
    status = ("INFEASIBLE" if lp.relax(problem).value is None and lp.proven_infeasible(problem)
              else None)
    if status is None:
        first = _Model(problem, problem.limits, "acc")
        first.m += first.expr["acc_loss"]
        status = first.solve(options)
    if status not in ("OPTIMAL", "FEASIBLE"):
        from planner.cpsat import explain

        if not explain_infeasible:
            return SolveResult(status=status, backend="cbc", resolution=dict(RESOLUTION),
                               wall_time_s=time.perf_counter() - start,
                               options_considered=considered)
        # the explanation is the same question for either backend; CP-SAT answers it
        return explain(problem, status, options, start, considered, backend="cbc")
    best = round(pulp.value(first.expr["acc_loss"]) or 0.0)  # integer loss units
    second = _Model(problem, problem.limits, "cost")
    # + 0.5: the same integer bound, with room for CBC's tolerance on ~1e9 coefficients (without
    # it CBC can call the first solve's own optimum infeasible)
    second.m += second.expr["acc_loss"] <= best + 0.5
    second.m += _tie_break(second)
    status2 = second.solve(options)
    picks = second.picks() if status2 in ("OPTIMAL", "FEASIBLE") else first.picks()
    return _result(problem, picks, status == "OPTIMAL" and status2 == "OPTIMAL", start,
                   considered)


def _result(problem: Problem, picks: dict[str, int], exact: bool, start: float,
            considered: int) -> SolveResult:
    totals = problem.totals(picks)
    return SolveResult(
        status="OPTIMAL" if exact else "FEASIBLE",
        picks={layer: problem.choices[layer][i].option for layer, i in picks.items()},
        totals=totals,
        binding=tuple(m for m, lim in problem.limits.items()
                      if totals[m] >= BINDING_FRACTION * lim),
        wall_time_s=time.perf_counter() - start,
        backend="cbc",
        resolution=dict(RESOLUTION),
        options_considered=considered,
        gap=0.0 if exact else None,
    )


def _tie_break(model: _Model) -> pulp.LpAffineExpression:
    def worst(metric: str) -> float:
        return max(1e-12, sum(max(c.metric(metric) for c in model.p.choices[layer])
                              for layer in model.p.layers))
    lat_ref, flash_ref = worst("latency_ms"), worst("flash_bytes")
    return pulp.lpSum((c.latency_ms / lat_ref + c.flash_bytes / flash_ref) * model.x[layer, i]
                      for layer in model.p.layers
                      for i, c in enumerate(model.p.choices[layer]))
