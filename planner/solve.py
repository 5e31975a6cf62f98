"""One entry point over the backends: presolve (dominated options), then CP-SAT or CBC."""

from __future__ import annotations

import dataclasses

from planner.presolve import remove_dominated
from planner.problem import Problem
from planner.result import SolveResult, SolverOptions

BACKENDS: tuple[str, ...] = ("cpsat", "cbc")


def solve(problem: Problem, options: SolverOptions | None = None,
          hint: dict[str, str] | None = None, backend: str = "cpsat",
          presolve: bool = True, explain: bool = True,
          explain_infeasible: bool = True) -> SolveResult:
    """explain: also find the binding limits (one more solve per limit, each within the time
    limit); the time limit applies to the solve (both its phases) and to each of those
    re-solves, not to the whole call.
    explain_infeasible: on an infeasible budget, also say what each limit would need (False:
    the bare status, e.g. to time the proof alone)."""
    considered = sum(len(c) for c in problem.choices.values())
    removed = 0
    if presolve:
        problem, removed = remove_dominated(problem)
    if backend == "cpsat":
        from planner import cpsat

        result = cpsat.solve(problem, options, hint, explain_infeasible)
    elif backend == "cbc":
        from planner import cbc

        result = cbc.solve(problem, options, hint, explain_infeasible)
    else:
        from edgefit_common.errors import PlanError

        raise PlanError(f"--solver {backend!r}: choose one of {', '.join(BACKENDS)}")
    result = dataclasses.replace(result, options_considered=considered,
                                 dominated_removed=removed)
    return with_sensitivity(problem, result, options) if result.feasible and explain else result


def with_sensitivity(problem: Problem, result: SolveResult,
                     options: SolverOptions | None) -> SolveResult:
    """A limit *binds* when loosening it by 10 % would buy a more accurate plan; record what
    that plan's accuracy cost would be, for each binding limit. Each re-solve is warm-started
    from the plan; one that times out without an answer leaves its limit unknown
    (binding_unknown), never "not binding"."""
    from planner.cpsat import binding_limits

    picks = {ly: next(i for i, c in enumerate(problem.choices[ly]) if c.option == option)
             for ly, option in result.picks.items()}
    binding, unknown = binding_limits(problem, picks, options)
    return dataclasses.replace(result, binding=tuple(binding), sensitivity=binding,
                               binding_unknown=unknown)
