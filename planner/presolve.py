"""Presolve: drop options that can never be part of an optimal plan.

An option is dominated when another one of the same layer, with the same channel coupling
(the same kept width of every group it names), is no worse in latency, flash, energy, accuracy
loss, activation bytes (which drive peak RAM: of its outputs and of the model input), RAM
workspace at every step (Problem.step_extra) and the bytes of every pair term it takes part in
(Problem.step_pairs: it is in no term the other is not, so in every plan it adds no more)
and the latency and energy of every precision boundary it takes part in (Problem.latency_pairs,
the same way),
and better in at least one. Removing it cannot
change the optimum. Comparing only within one coupling signature matters: an option of another
width may look better for this layer but force its group's other members into worse options.

An option whose width of some group is not offered by every member of that group can never be
chosen (the group must take one width in all its members); it is removed too.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from planner.problem import INPUT_SUFFIX, Choice, Problem

_KEYS = ("latency_ms", "flash_bytes", "energy_mj", "acc_loss", "act_bytes", "transfer_bytes")


def _vector(c: Choice) -> tuple[float, ...]:
    return (*(float(getattr(c, k)) for k in _KEYS), c.entry_bytes(INPUT_SUFFIX))


def dominates(a: Choice, b: Choice, workspace_a: tuple[float, ...] = (),
              workspace_b: tuple[float, ...] = ()) -> bool:
    """a beats b in every cost, on the same coupling (never across widths). workspace_*: the
    option's RAM workspace at each step (Problem.step_extra), compared step by step."""
    va, vb = (*_vector(a), *workspace_a), (*_vector(b), *workspace_b)
    return (a.signature == b.signature and all(x <= y for x, y in zip(va, vb, strict=True))
            and va != vb)


def _unreachable_widths(problem: Problem, choices: dict[str, tuple[Choice, ...]]
                        ) -> dict[str, tuple[Choice, ...]]:
    """Drop options naming a width some other member of the group lacks, to a fixpoint
    (dropping one can take a width of another group away from its layer)."""
    members = problem.members()
    while True:
        offered = {g: set.intersection(*({c.width(g) for c in choices[ly]} for ly in layers))
                   for g, layers in members.items()}
        kept = {ly: tuple(c for c in opts if all(w in offered[g] for g, w in c.widths))
                for ly, opts in choices.items()}
        # a filter of choices: unchanged when no layer lost an option (no element comparisons)
        if all(len(kept[ly]) == len(opts) for ly, opts in choices.items()):
            return choices
        choices = kept


def remove_dominated(problem: Problem) -> tuple[Problem, int]:
    """The same problem without dominated or unreachable options, and how many were removed.

    A layer left with no option (its group has no width every member offers) keeps its options:
    the solver then proves the problem infeasible and explains it."""
    choices = _unreachable_widths(problem, dict(problem.choices))
    if any(not opts for opts in choices.values()):
        choices = dict(problem.choices)
    workspace = _workspace_vectors(problem)
    reduced: dict[str, tuple[Choice, ...]] = {}
    for layer, options in choices.items():
        vectors = [(c.latency_ms, c.flash_bytes, c.energy_mj, c.acc_loss, c.act_bytes,
                    c.transfer_bytes, c.act_bytes if c.in_act_bytes is None else c.in_act_bytes,
                    *workspace.get((layer, c.option), ())) for c in options]  # as _vector
        kept = _undominated(np.array(vectors, dtype=float), [c.signature for c in options])
        reduced[layer] = tuple(c for c, keep in zip(options, kept, strict=True) if keep)
    removed = sum(len(c) for c in problem.choices.values()) - sum(
        len(c) for c in reduced.values())
    return dataclasses.replace(problem, choices=reduced), removed


def _undominated(costs: np.ndarray, signatures: list[tuple[tuple[str, int], ...]]
                 ) -> np.ndarray:
    """Which rows no other row of the same signature dominates (as `dominates`, all pairs of
    one signature at once: a 500-layer, 126-option problem presolves in about a second)."""
    ids: dict[tuple[tuple[str, int], ...], int] = {}
    sig = np.array([ids.setdefault(s, len(ids)) for s in signatures])
    keep = np.ones(len(costs), dtype=bool)
    for n in range(len(ids)):
        rows = np.flatnonzero(sig == n)
        block = costs[rows]
        no_worse = (block[:, None, :] <= block[None, :, :]).all(axis=2)  # [i, j]: i <= j
        differs = (block[:, None, :] != block[None, :, :]).any(axis=2)
        keep[rows] = ~(no_worse & differs).any(axis=0)
    return keep


def _workspace_vectors(problem: Problem) -> dict[tuple[str, str], tuple[float, ...]]:
    """(layer, option) -> its workspace bytes at each step where its layer has any, then the
    bytes of each pair term naming its layer if the option is on its side of the term, else 0
    (one length for all options of a layer, so they compare element by element)."""
    steps: dict[str, list[int]] = {}
    for t, extra in enumerate(problem.step_extra):
        for layer in {ly for ly, _ in extra}:
            steps.setdefault(layer, []).append(t)
    sides: dict[str, list[tuple[tuple[str, ...], float]]] = {}
    for terms in problem.step_pairs:
        for term in terms:
            sides.setdefault(term.a, []).append((term.a_options, term.nbytes))
            sides.setdefault(term.b, []).append((term.b_options, term.nbytes))
    for boundary in problem.latency_pairs:  # a precision boundary's latency, like its bytes
        for layer, opts in ((boundary.a, boundary.a_options), (boundary.b, boundary.b_options)):
            sides.setdefault(layer, []).append((opts, boundary.latency_ms))
            sides.setdefault(layer, []).append((opts, boundary.energy_mj))
    return {(layer, c.option): (
        *(problem.step_extra[t].get((layer, c.option), 0.0) for t in steps.get(layer, ())),
        *(nbytes if c.option in opts else 0.0 for opts, nbytes in sides.get(layer, ())))
        for layer in set(steps) | set(sides) for c in problem.choices[layer]}
