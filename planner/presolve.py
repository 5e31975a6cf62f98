"""Presolve: drop options that another option of the same layer beats in every cost.

An option is dominated when another one of the same layer is no worse in latency, flash,
energy, accuracy loss and activation bytes (which drive peak RAM), and better in at least one.
Removing it cannot change the optimum, and it shrinks the model the solver sees.
"""

from __future__ import annotations

from planner.problem import Choice, Problem

_KEYS = ("latency_ms", "flash_bytes", "energy_mj", "acc_loss", "act_bytes")


def _vector(c: Choice) -> tuple[float, ...]:
    return tuple(float(getattr(c, k)) for k in _KEYS)


def dominates(a: Choice, b: Choice) -> bool:
    va, vb = _vector(a), _vector(b)
    return all(x <= y for x, y in zip(va, vb, strict=True)) and va != vb


def remove_dominated(problem: Problem) -> tuple[Problem, int]:
    """The same problem without dominated options, and how many were removed."""
    choices: dict[str, tuple[Choice, ...]] = {}
    removed = 0
    for layer, options in problem.choices.items():
        kept = tuple(c for c in options if not any(dominates(o, c) for o in options))
        removed += len(options) - len(kept)
        choices[layer] = kept
    return Problem(problem.layers, choices, problem.limits, problem.fixed, problem.ram_steps,
                   problem.weights_in_ram), removed
