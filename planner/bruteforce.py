"""Exhaustive reference solver for small problems (tests compare CP-SAT against it)."""

from __future__ import annotations

import itertools

from planner.problem import Problem


def brute_force(problem: Problem) -> tuple[float, dict[str, int]] | None:
    """(best acc_loss, picks) over every assignment, or None when nothing is feasible.

    Assignments that give a coupled channel group two widths are infeasible (Problem.feasible
    reads the coupling violations from the totals)."""
    best: tuple[float, dict[str, int]] | None = None
    ranges = [range(len(problem.choices[ly])) for ly in problem.layers]
    for combo in itertools.product(*ranges):
        picks = dict(zip(problem.layers, combo, strict=True))
        totals = problem.totals(picks)
        if problem.feasible(totals) and (best is None or totals["acc_loss"] < best[0] - 1e-12):
            best = (totals["acc_loss"], picks)
    return best
