"""The integer formulation every exact backend shares (CP-SAT, CBC, the LP): costs scaled to
integers at a fixed resolution, the coupling links of channel groups, the RAM steps'
coefficients and the pair terms' keys. Backend-neutral: no solver is imported here."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

from planner.problem import PairKey, Problem, owner_layer

RESOLUTION = {"latency_ms": 1e-4, "flash_bytes": 1.0, "ram_bytes": 1.0, "energy_mj": 1e-6,
              "acc_loss": 1e-9, "transfer_bytes": 1.0}


def scaled_up(value: float, metric: str) -> int:
    """``value`` in integer units of ``metric``'s resolution, rounded up (limits' costs)."""
    return math.ceil(value / RESOLUTION[metric] - 1e-9)


def scaled_down(value: float, metric: str) -> int:
    """``value`` in integer units of ``metric``'s resolution, rounded down (limits)."""
    return math.floor(value / RESOLUTION[metric] + 1e-9)


def coupling_links(problem: Problem) -> list[tuple[tuple[str, int], tuple[str, list[int]]]]:
    """((group, width), (member layer, indices of its options with that width)) for every
    member and width of every group: sum of those x == y[group, width] (empty: y must be 0)."""
    links = []
    groups = problem.groups
    for g, members in problem.members().items():
        for w in groups[g]:
            for layer in members:
                idx = [i for i, c in enumerate(problem.choices[layer]) if c.width(g) == w]
                links.append(((g, w), (layer, idx)))
    return links


def _bytes_up(value: float) -> int:
    return math.ceil(value - 1e-9)


def step_coefficients(problem: Problem, t: int, step: tuple[tuple[str, int], ...],
                      rounded: Callable[[float], int] = _bytes_up
                      ) -> dict[tuple[str, int], int]:
    """Integer bytes each x[layer, i] adds at RAM step t: its live tensors (rounded per owner)
    plus its workspace, merged so each x appears once. `rounded`: up by default (a safe
    restriction); planner.exact passes its own direction."""
    per_owner: dict[str, int] = defaultdict(int)
    for owner, n in step:
        per_owner[owner] += n
    coef: dict[tuple[str, int], int] = defaultdict(int)
    for owner, n in per_owner.items():
        layer = owner_layer(owner)
        for i, c in enumerate(problem.choices[layer]):
            coef[layer, i] += rounded(n * c.entry_bytes(owner))
    for layer, i, nbytes in problem.extra_terms(t):
        coef[layer, i] += rounded(nbytes)
    return coef


def pair_coefficients(problem: Problem, t: int) -> list[tuple[PairKey, int]]:
    """Integer bytes of step t's pair terms (Problem.step_pairs), per term key."""
    return [(key, math.ceil(nbytes - 1e-9)) for key, nbytes in problem.pair_terms(t)]


def pair_keys(problem: Problem) -> list[PairKey]:
    """Every pair term's key once: one boolean each, shared by the steps that charge it."""
    keys: dict[PairKey, None] = {}
    for t in range(len(problem.step_pairs)):
        for key, _ in problem.pair_terms(t):
            keys.setdefault(key)
    return list(keys)
