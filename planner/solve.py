"""One entry point over the backends: presolve (dominated options), then CP-SAT or CBC."""

from __future__ import annotations

import dataclasses
from typing import Literal

from planner.cpsat import SolverOptions
from planner.presolve import remove_dominated
from planner.problem import Problem
from planner.result import SolveResult

Backend = Literal["cpsat", "cbc"]
BACKENDS: tuple[str, ...] = ("cpsat", "cbc")


def solve(problem: Problem, options: SolverOptions | None = None,
          hint: dict[str, str] | None = None, backend: str = "cpsat",
          presolve: bool = True) -> SolveResult:
    considered = sum(len(c) for c in problem.choices.values())
    removed = 0
    if presolve:
        problem, removed = remove_dominated(problem)
    if backend == "cpsat":
        from planner import cpsat

        result = cpsat.solve(problem, options, hint)
    elif backend == "cbc":
        from planner import cbc

        result = cbc.solve(problem, options, hint)
    else:
        from edgefit.errors import PlanError

        raise PlanError(f"--solver {backend!r}: choose one of {', '.join(BACKENDS)}")
    return dataclasses.replace(result, options_considered=considered,
                               dominated_removed=removed)
