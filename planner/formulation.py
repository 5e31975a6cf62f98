"""The integer formulation every exact backend shares (CP-SAT, CBC, the LP): costs scaled to
integers at a fixed resolution, the coupling links of channel groups, the RAM steps'
coefficients and the pair terms' keys. Backend-neutral: no solver is imported here.

The functions below state it option by option (the reference the tests and the benchmark's
plain models use); `Arrays` holds the same data as flat numpy arrays, built once per problem,
from which every backend writes its model (issue #18: no per-option Python on the hot path)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from planner.problem import (
    ADDITIVE,
    INPUT_SUFFIX,
    PAIR_METRICS,
    Choice,
    PairKey,
    Problem,
    owner_layer,
)

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
    """Every pair term's key once: one boolean each, shared by the steps that charge it and
    the precision boundaries' latency (Problem.latency_pairs)."""
    keys: dict[PairKey, None] = {}
    for t in range(len(problem.step_pairs)):
        for key, _ in problem.pair_terms(t):
            keys.setdefault(key)
    for m in PAIR_METRICS:
        for key, _ in problem.latency_pair_terms(m):
            keys.setdefault(key)
    return list(keys)


# ---------------------------------------------------------------- the same data as arrays

# (flat option indices, integer coefficients): one linear row over the x variables
Row = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class Steps:
    """One RAM step's terms before rounding: every (flat option, bytes) it charges (a live
    tensor per owner, a workspace) and every (pair term, bytes); rounded term by term, then
    summed per variable, as step_coefficients does."""

    x_index: np.ndarray
    x_bytes: np.ndarray
    pair_index: np.ndarray
    pair_bytes: np.ndarray


@dataclass(frozen=True, eq=False)
class Integers:
    """The data in one rounding's integers: per-option costs of every metric; each RAM step's
    x terms and pair-term terms (zeros dropped); and each step's row over all the variables
    (x, then y, then z: Arrays.z0), with every option's flash bytes when weights_in_ram."""

    costs: dict[str, np.ndarray]
    steps: list[tuple[Row, Row]]
    ram_rows: list[Row]
    # per additive metric, what the pair terms add to its total: (pair index, units)
    pair_costs: dict[str, Row]


class Arrays:
    """A problem's structure as flat arrays over every (layer, option) (flat index k: layer
    l's options are start[l]:start[l+1], in Problem.choices order), built once per problem
    (see `arrays`) and shared by every model of it: the LP, each CP-SAT phase, the binding-
    limit re-solves. Limits are not part of it: a problem with other limits shares it."""

    def __init__(self, problem: Problem) -> None:
        self.layers = problem.layers
        self.position = {ly: n for n, ly in enumerate(problem.layers)}
        counts = np.array([len(problem.choices[ly]) for ly in problem.layers], dtype=np.int64)
        self.start = np.concatenate(([0], np.cumsum(counts)))
        self.n = int(self.start[-1])
        self.layer_of = np.repeat(np.arange(len(counts)), counts)
        flat = [c for ly in problem.layers for c in problem.choices[ly]]
        self.keys = [(ly, i) for ly in problem.layers for i in range(len(problem.choices[ly]))]
        metrics = (*ADDITIVE, "acc_loss")
        table = np.array([[getattr(c, m) for m in metrics] for c in flat],
                         dtype=float).reshape(len(flat), len(metrics))
        self.values = {m: table[:, j].copy() for j, m in enumerate(metrics)}
        self.weights_in_ram = problem.weights_in_ram
        self.groups = problem.groups
        self.members = problem.members()
        self.group_widths = [(g, w) for g, ws in self.groups.items() for w in ws]
        self.z0 = self.n + len(self.group_widths)  # the first pair term's variable
        self.coupling = self._coupling(problem)
        self.pair_keys = pair_keys(problem)
        self.pair_x = [(self._flat(a, ia), self._flat(b, ib)) for a, ia, b, ib in self.pair_keys]
        self.steps = self._steps(problem, flat)
        self.pair_values = self._pair_values(problem)
        self.worst = {m: self._worst(problem, m) for m in ADDITIVE}
        self._integers: dict[tuple[object, ...], Integers] = {}
        self.memo: dict[str, Any] = {}  # what the backends derive once per problem

    def _worst(self, problem: Problem, metric: str) -> float:
        """The largest |total| any plan reaches (planner.exact.resolution_for): the layers'
        largest |cost| summed in Problem.choices' order, as one Python sum always did, plus
        every pair term's |cost|."""
        pairs = sum(abs(v) for _, v in problem.latency_pair_terms(metric)) \
            if metric in PAIR_METRICS else 0.0
        if list(problem.choices) != list(self.layers):
            return abs(problem.fixed.get(metric, 0.0)) + sum(
                max(abs(c.metric(metric)) for c in cs) for cs in problem.choices.values()) \
                + pairs
        largest = np.maximum.reduceat(np.abs(self.values[metric]), self.start[:-1])
        return abs(problem.fixed.get(metric, 0.0)) + sum(largest.tolist()) + pairs

    def _pair_values(self, problem: Problem) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per pair metric, (pair index, unrounded cost) of the pair terms adding to it."""
        pair_of = {key: n for n, key in enumerate(self.pair_keys)}
        out = {}
        for m in PAIR_METRICS:
            terms = problem.latency_pair_terms(m)
            out[m] = (np.array([pair_of[key] for key, _ in terms], dtype=np.int64),
                      np.array([v for _, v in terms], dtype=float))
        return out

    def _flat(self, layer: str, idx: tuple[int, ...] | list[int]) -> np.ndarray:
        return self.start[self.position[layer]] + np.asarray(idx, dtype=np.int64)

    def _coupling(self, problem: Problem) -> list[tuple[int, np.ndarray]]:
        """(index into group_widths, flat indices of one member's options at that width): the
        rows sum x == y[group, width] (coupling_links, on arrays)."""
        gw = {key: n for n, key in enumerate(self.group_widths)}
        rows = []
        for g, members in self.members.items():
            for layer in members:
                base = self.start[self.position[layer]]
                width = np.array([c.width(g) for c in problem.choices[layer]])
                for w in self.groups[g]:
                    rows.append((gw[g, w], base + np.flatnonzero(width == w)))
        return rows

    def _steps(self, problem: Problem, flat: list[Choice]) -> list[Steps]:
        act = np.array([c.act_bytes for c in flat], dtype=float)
        first_input = np.array([c.entry_bytes(INPUT_SUFFIX) for c in flat], dtype=float)
        pair_of = {key: n for n, key in enumerate(self.pair_keys)}
        out = []
        for t, step in enumerate(problem.ram_steps or ((),)):
            per_owner: dict[str, int] = defaultdict(int)
            for owner, n in step:
                per_owner[owner] += n
            index, nbytes = [], []
            for owner, n in per_owner.items():
                lo, hi = self._bounds(owner_layer(owner))
                index.append(np.arange(lo, hi))
                entry = first_input if owner.endswith(INPUT_SUFFIX) else act
                nbytes.append(n * entry[lo:hi])
            for layer, i, b in problem.extra_terms(t):
                index.append(self._flat(layer, [i]))
                nbytes.append(np.array([b], dtype=float))
            pairs = problem.pair_terms(t)
            out.append(Steps(_cat(index, np.int64), _cat(nbytes, float),
                             np.array([pair_of[key] for key, _ in pairs], dtype=np.int64),
                             np.array([b for _, b in pairs], dtype=float)))
        return out

    def _bounds(self, layer: str) -> tuple[int, int]:
        pos = self.position[layer]
        return int(self.start[pos]), int(self.start[pos + 1])

    def integers(self, cost: Callable[[np.ndarray, str], np.ndarray],
                 nbytes: Callable[[np.ndarray], np.ndarray], key: tuple[object, ...]
                 ) -> Integers:
        """The data in a rounding's integers (`cost`: one metric's costs, `nbytes`: bytes),
        cached under `key` (the rounding's direction and units)."""
        if key not in self._integers:
            costs = {m: cost(v, m) for m, v in self.values.items()}
            steps = [(_merged(s.x_index, nbytes(s.x_bytes)),
                      _merged(s.pair_index, nbytes(s.pair_bytes))) for s in self.steps]
            pair_costs = {m: _merged(index, cost(v, m))
                          for m, (index, v) in self.pair_values.items()}
            self._integers[key] = Integers(costs, steps, [self._ram_row(x, pairs, costs)
                                                          for x, pairs in steps], pair_costs)
        return self._integers[key]

    def metric_row(self, data: Integers, metric: str) -> Row:
        """An additive metric's total over every variable in `data`'s integers: each option's
        cost on its x (zero costs left out), then what pair terms add on their z."""
        costs = data.costs[metric]
        keep = np.flatnonzero(costs)
        pairs = data.pair_costs.get(metric)
        if pairs is None or not len(pairs[0]):
            return keep, costs[keep]
        return (np.concatenate((keep, self.z0 + pairs[0])),
                np.concatenate((costs[keep], pairs[1])))

    def _ram_row(self, x: Row, pairs: Row, costs: dict[str, np.ndarray]) -> Row:
        """A step's row over all variables; with weights_in_ram, every option's flash bytes
        added (the weights sit in RAM too)."""
        if self.weights_in_ram:
            x = _merged(np.concatenate((x[0], np.arange(self.n))),
                        np.concatenate((x[1], costs["flash_bytes"])))
        return (np.concatenate((x[0], self.z0 + pairs[0])), np.concatenate((x[1], pairs[1])))

    def picks(self, x: np.ndarray) -> dict[str, int]:
        """layer -> its option index, from 0/1 values of every x (the largest per layer)."""
        best = np.maximum.reduceat(x, self.start[:-1])
        first = np.flatnonzero(x >= best[self.layer_of])
        # the first option reaching its layer's largest value
        chosen = first[np.concatenate(([True], np.diff(self.layer_of[first]) != 0))]
        return dict(zip(self.layers, (chosen - self.start[:-1]).tolist(), strict=True))

    def flat(self, picks: dict[str, int]) -> np.ndarray:
        """The flat indices of a plan's options, in the plan's order."""
        return np.array([self.start[self.position[ly]] + i for ly, i in picks.items()],
                        dtype=np.int64)


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)


def _merged(index: np.ndarray, coef: np.ndarray) -> Row:
    """Coefficients summed per index (each index once, ascending), zeros dropped."""
    unique, where = np.unique(index, return_inverse=True)
    total = np.zeros(len(unique), dtype=np.int64)
    np.add.at(total, where, coef.astype(np.int64))
    keep = np.flatnonzero(total)
    return unique[keep], total[keep]


# Arrays of the last few problems, by the identity of everything but their limits (a problem
# with other limits, as the binding-limit re-solves make, shares them). Problems are frozen and
# their dicts never changed after construction. Few: a 500-layer problem's arrays with its
# CP-SAT structure and CBC model hold about 45 MB.
_CACHE: list[tuple[tuple[object, ...], Arrays]] = []
_CACHED = 4


def arrays(problem: Problem) -> Arrays:
    """The problem's Arrays, built on first use."""
    key = (problem.layers, problem.choices, problem.fixed, problem.ram_steps,
           problem.weights_in_ram, problem.step_extra, problem.step_pairs,
           problem.latency_pairs)
    for k, found in _CACHE:
        if all(a is b for a, b in zip(k, key, strict=True)):
            return found
    built = Arrays(problem)
    _CACHE.append((key, built))
    del _CACHE[:-_CACHED]
    return built
