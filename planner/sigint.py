"""CP-SAT without its own SIGINT handler: Ctrl-C stays Python's.

With ``catch_sigint_signal`` on (OR-Tools' default), a CP-SAT solve replaces Python's SIGINT
handler while it runs and treats Ctrl-C as "stop early": the KeyboardInterrupt is swallowed and
the caller carries on with whatever the search had found, as if nothing happened. Solve through
:func:`solve_cpsat` instead: OR-Tools leaves SIGINT alone, a Ctrl-C stops the search at once
(edgefit_common.interrupt) and raises KeyboardInterrupt when the solve returns.

For ``planner/cpsat.py``: ``return solve_cpsat(solver, self.m), solver`` in place of
``return solver.solve(self.m), solver``.
"""

from __future__ import annotations

from typing import Any

from edgefit_common.interrupt import stop_on_sigint


def keep_sigint(solver: Any) -> Any:
    """`solver` (a cp_model.CpSolver) with OR-Tools' own SIGINT handler turned off."""
    solver.parameters.catch_sigint_signal = False
    return solver


def solve_cpsat(solver: Any, model: Any) -> Any:
    """`solver.solve(model)`, interruptible by Ctrl-C (KeyboardInterrupt, search stopped)."""
    keep_sigint(solver)
    with stop_on_sigint(solver.stop_search):
        return solver.solve(model)
