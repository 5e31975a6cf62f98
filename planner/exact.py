"""Exact where it matters: the solvers' integers against the costs as measured (issue #18).

The exact backends (CP-SAT, CBC, the LP) work on integers: every cost is scaled to its metric's
unit and rounded. Bytes stay bytes; latency and energy get a unit per instance, fine enough that
the largest total any plan reaches is about 1e9 units (resolution_for; never coarser than
planner.formulation.RESOLUTION's 0.1 us and 1 nJ), which makes a limit within the rounding rare
but not impossible. Two roundings of the same data:

- SAFE (costs up, limits down; planner.formulation's): a restriction. Every plan it accepts
  meets the limits as measured, but it misses every plan whose totals sit within the rounding
  of a limit (up to n layers x the resolution), so its "optimal" can be above the true optimum
  and its "infeasible" can be wrong near the edge.
- LOOSE (costs down, limits up): a relaxation. Every plan that meets the limits as measured is
  one of its plans, so its infeasibility proofs and its bounds hold for the measured costs;
  a plan it accepts may break a limit by up to the rounding.

`search` runs a backend on LOOSE first and checks its plan in exact arithmetic (`breaks`):
when the plan holds, LOOSE's claim is exact. Only when the plan breaks a limit by rounding does
it search SAFE for a plan that holds, and the claim is downgraded, saying why. The accuracy
objective is rounded up (1e-9 units) in both roundings: "optimal" means optimal to n x 1e-9
of the accuracy cost, far below any measured difference.

"Exact" is float arithmetic on the unrounded costs (fsum: one rounding per total) against the
unrounded limits, with Problem.feasible's 1e-9 absolute tolerance for the binary representation
of decimal costs (0.1 + 0.2 ms meets a 0.3 ms limit).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from planner.formulation import RESOLUTION, Integers, arrays, scaled_up
from planner.problem import ADDITIVE, Choice, PairKey, Problem, owner_layer

EXACT_TOL = 1e-9  # absolute, in each metric's own unit: Problem.feasible's tolerance
_UNIT_TOL = 1e-9  # of one integer unit: float noise of value / resolution
# Latency and energy are floats: their unit is chosen per instance, so that the largest total
# any plan can reach is about this many units (a band of n x 1e-9 of it; CP-SAT's 64-bit sums
# stay far from overflow). Never coarser than planner.formulation.RESOLUTION. Bytes stay bytes
# and the accuracy cost 1e-9 (the objective: only a tie can hide in its rounding).
UNITS_PER_TOTAL = 1e9
# CBC's tolerances are absolute (an integer within 1e-6 counts as integral): with ~1e8
# coefficients it calls feasible models infeasible, so its unit is coarser.
CBC_UNITS_PER_TOTAL = 1e6
PER_INSTANCE = ("latency_ms", "energy_mj")
_MAX_ROOM = 2**60  # a limit beyond every plan's reach, clamped inside int64


def resolution_for(problem: Problem, units: float = UNITS_PER_TOTAL) -> dict[str, float]:
    """The solver's unit of each metric for this problem (see UNITS_PER_TOTAL)."""
    out = dict(RESOLUTION)
    for m in PER_INSTANCE:
        worst = arrays(problem).worst[m]
        if worst > 0:
            out[m] = min(RESOLUTION[m], 10.0 ** math.floor(math.log10(worst / units)))
    return out


@dataclass(frozen=True)
class Rounding:
    """How real costs and limits become the solver's integers (SAFE or LOOSE), at a resolution
    (`at(problem)`: the instance's own; by default planner.formulation.RESOLUTION)."""

    loose: bool
    name: str
    resolution: Mapping[str, float] = field(default_factory=lambda: dict(RESOLUTION))

    def at(self, problem: Problem, units: float = UNITS_PER_TOTAL) -> Rounding:
        return dataclasses.replace(self, resolution=resolution_for(problem, units))

    def cost(self, value: float, metric: str) -> int:
        """One option's cost in integer units (the accuracy cost: always rounded up)."""
        q = value / self.resolution[metric]
        if not self.loose or metric == "acc_loss":
            return math.ceil(q - _UNIT_TOL)
        return math.floor(q + _UNIT_TOL)

    def costs(self, values: np.ndarray, metric: str) -> np.ndarray:
        """`cost` of every value of an array at once (the same float operations)."""
        q = values / self.resolution[metric]
        if not self.loose or metric == "acc_loss":
            return np.ceil(q - _UNIT_TOL).astype(np.int64)
        return np.floor(q + _UNIT_TOL).astype(np.int64)

    def nbytes_array(self, values: np.ndarray) -> np.ndarray:
        """`nbytes` of every value of an array at once."""
        if self.loose:
            return np.floor(values + _UNIT_TOL).astype(np.int64)
        return np.ceil(values - _UNIT_TOL).astype(np.int64)

    def data(self, problem: Problem) -> Integers:
        """The problem's costs and RAM-step rows in this rounding's integers (cached with its
        Arrays)."""
        key = (self.loose, tuple(sorted(self.resolution.items())))
        return arrays(problem).integers(self.costs, self.nbytes_array, key)

    def up(self, value: float, metric: str) -> int:
        """`value` in units, rounded up whatever the direction (bounds on totals)."""
        return math.ceil(value / self.resolution[metric] - _UNIT_TOL)

    def room(self, problem: Problem, metric: str, limit: float) -> int:
        """The limit minus the fixed part, in integer units."""
        r = self.resolution[metric]
        fixed = problem.fixed.get(metric, 0.0)
        if not self.loose:
            room = math.floor(limit / r + _UNIT_TOL) - math.ceil(fixed / r - _UNIT_TOL)
            return min(room, _MAX_ROOM)
        q = (limit - fixed) / r
        # every LOOSE cost can sit _UNIT_TOL above its exact value; float noise on top
        terms = 3 * len(problem.layers) + sum(len(s) for s in problem.step_pairs) \
            + len(problem.latency_pairs) + 2
        return min(_MAX_ROOM, math.floor(q + EXACT_TOL / r + _UNIT_TOL * terms
                                         + 1e-12 * max(1.0, abs(q))))

    def nbytes(self, value: float) -> int:
        return math.floor(value + _UNIT_TOL) if self.loose else math.ceil(value - _UNIT_TOL)

    def step_coefficients(self, problem: Problem, t: int, step: tuple[tuple[str, int], ...]
                          ) -> dict[tuple[str, int], int]:
        """planner.formulation.step_coefficients in this rounding (bytes: resolution 1)."""
        from planner.formulation import step_coefficients

        return step_coefficients(problem, t, step, self.nbytes)

    def pair_coefficients(self, problem: Problem, t: int) -> list[tuple[PairKey, int]]:
        return [(key, self.nbytes(b)) for key, b in problem.pair_terms(t)]


SAFE = Rounding(loose=False, name="costs rounded up, limits down")
LOOSE = Rounding(loose=True, name="costs rounded down, limits up")


def exact_totals(problem: Problem, picks: dict[str, int]) -> dict[str, float]:
    """Problem.totals with each total summed exactly (math.fsum) from the unrounded costs."""
    chosen = {ly: problem.choices[ly][picks[ly]] for ly in problem.layers}
    out = {m: math.fsum([problem.fixed.get(m, 0.0), *(c.metric(m) for c in chosen.values()),
                         *(p.metric(m) for p in problem.latency_pairs if p.applies(chosen))])
           for m in ADDITIVE}
    out["ram_bytes"] = max(step_bytes(problem, chosen))
    out["acc_loss"] = math.fsum(c.acc_loss for c in chosen.values())
    out["coupling_violations"] = float(problem.coupling_violations(chosen))
    return out


def step_bytes(problem: Problem, chosen: dict[str, Choice]) -> list[float]:
    """Problem.step_ram, each step's bytes summed exactly."""
    base = [problem.fixed.get("ram_bytes", 0.0)]
    if problem.weights_in_ram:
        base += [c.flash_bytes for c in chosen.values()]
    out = []
    for t, step in enumerate(problem.ram_steps or ((),)):
        terms = [*base, *(n * chosen[owner_layer(o)].entry_bytes(o) for o, n in step)]
        if problem.step_extra:
            terms += [b for (ly, o), b in problem.step_extra[t].items()
                      if chosen[ly].option == o]
        if problem.step_pairs:
            terms += [p.nbytes for p in problem.step_pairs[t] if p.applies(chosen)]
        out.append(math.fsum(terms))
    return out


def breaks(problem: Problem, picks: dict[str, int] | None) -> dict[str, float]:
    """Limit -> by how much the plan exceeds it in exact arithmetic ("plan": partial or
    missing; "coupling": a channel group given two widths). Empty: the plan holds."""
    if picks is None or any(ly not in picks for ly in problem.layers):
        return {"plan": math.inf}
    totals = exact_totals(problem, picks)
    out = {m: totals[m] - lim for m, lim in problem.limits.items()
           if not totals[m] <= lim + EXACT_TOL}
    if totals["coupling_violations"]:
        out["coupling"] = totals["coupling_violations"]
    return out


def holds(problem: Problem, picks: dict[str, int] | None) -> bool:
    return not breaks(problem, picks)


def describe(problem: Problem, broken: dict[str, float]) -> str:
    return ", ".join(f"{m} by {v:.6g}" + (f" ({v / problem.limits[m]:.2g} of it)"
                                         if problem.limits.get(m) else "")
                     for m, v in broken.items())


def loss_units(problem: Problem, picks: dict[str, int]) -> int:
    """The accuracy objective as the solvers see it (each cost rounded up to 1e-9)."""
    return sum(scaled_up(problem.choices[ly][i].acc_loss, "acc_loss") for ly, i in picks.items())


def tie_break_costs(problem: Problem) -> dict[tuple[str, int], int]:
    """Per (layer, option index): its latency + flash, each normalised by its worst total."""
    return dict(zip(arrays(problem).keys, tie_break_array(problem).tolist(), strict=True))


def tie_break_array(problem: Problem) -> np.ndarray:
    """tie_break_costs over the flat options (planner.formulation.Arrays), computed once per
    problem: round(1e6 x units / the worst total's units) for latency and for flash."""
    a = arrays(problem)
    if "tie_break" not in a.memo:
        out = np.zeros(a.n, dtype=np.int64)
        for metric in ("latency_ms", "flash_bytes"):
            units = np.ceil(a.values[metric] / RESOLUTION[metric] - _UNIT_TOL)
            worst = max(1, int(np.maximum.reduceat(units, a.start[:-1]).astype(np.int64).sum()))
            out += np.round(1e6 * units / worst).astype(np.int64)
        a.memo["tie_break"] = out
    tie: np.ndarray = a.memo["tie_break"]
    return tie


class Pool:
    """The best plan held so far by (accuracy units, tie-break cost), from any source (the
    caller's hint, LP-and-fix, each phase's incumbent); only plans that hold exactly enter."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self._tie = tie_break_array(problem)
        self.best: dict[str, int] | None = None
        self.source = ""

    def key(self, picks: dict[str, int]) -> tuple[int, int]:
        return (loss_units(self.problem, picks),
                int(self._tie[arrays(self.problem).flat(picks)].sum()))

    def offer(self, picks: dict[str, int] | None, source: str) -> bool:
        """Keep `picks` when it holds exactly and beats the best so far; True if kept."""
        if picks is None or not holds(self.problem, picks):
            return False
        if self.best is not None and self.key(picks) >= self.key(self.best):
            return False
        self.best, self.source = dict(picks), source
        return True

    @property
    def loss(self) -> int | None:
        return None if self.best is None else loss_units(self.problem, self.best)


@dataclass(frozen=True)
class Attempt:
    """One backend search: status (OPTIMAL: proven, FEASIBLE, INFEASIBLE, UNKNOWN, ...), its
    plan (option indices), and a lower bound on its objective in solver units (None: none)."""

    status: str
    picks: dict[str, int] | None = None
    bound: float | None = None


@dataclass(frozen=True)
class Outcome:
    """A search's answer for the costs as measured. status: OPTIMAL (the plan is proven best
    for the objective), FEASIBLE, INFEASIBLE (proven on LOOSE: exact), UNKNOWN; bound: a lower
    bound valid for the measured costs (LOOSE's), in solver units; note: why a claim was
    downgraded (empty: not)."""

    status: str
    picks: dict[str, int] | None
    bound: float | None = None
    note: str = ""

    @property
    def downgraded(self) -> bool:
        return bool(self.note)


# (rounding, warm start, plans to exclude) -> one backend search
Searcher = Callable[[Rounding, "dict[str, int] | None", "tuple[dict[str, int], ...]"], Attempt]
# LOOSE plans that break a limit by rounding are cut off and LOOSE searched again, this often
MAX_CUTS = 3


def search(problem: Problem, attempt: Searcher, hint: dict[str, int] | None,
           max_cuts: int = MAX_CUTS) -> Outcome:
    """LOOSE first; while its plan breaks a limit by rounding, cut that plan off and search
    LOOSE again (the cuts remove only plans that do not hold, so LOOSE's infeasibility and
    bound stay exact); after max_cuts, SAFE for a plan that holds (see the module)."""
    cuts: list[dict[str, int]] = []
    while True:
        loose = attempt(LOOSE, hint, tuple(cuts))
        if loose.picks is None:  # INFEASIBLE on a relaxation is exact; a time-out is UNKNOWN
            if loose.status == "INFEASIBLE" or not cuts:
                return Outcome(loose.status if loose.status != "FEASIBLE" else "UNKNOWN",
                               None, loose.bound)
            break
        broken = breaks(problem, loose.picks)
        if not broken:
            return Outcome(loose.status, loose.picks, loose.bound)
        cuts.append(loose.picks)
        if len(cuts) > max_cuts:
            break
    return _safe_search(problem, attempt, hint, cuts, loose.bound)


def _safe_search(problem: Problem, attempt: Searcher, hint: dict[str, int] | None,
                 cuts: list[dict[str, int]], bound: float | None) -> Outcome:
    """The fallback after LOOSE found only plans that break a limit by rounding."""
    why = (f"{len(cuts)} best plan(s) with {LOOSE.name} break "
           f"{describe(problem, breaks(problem, cuts[-1]))} in exact arithmetic (a limit "
           "within the rounding)")
    safe = attempt(SAFE, hint if holds(problem, hint) else cuts[-1], ())
    if safe.picks is not None and holds(problem, safe.picks):
        return Outcome("FEASIBLE", safe.picks, bound,
                       f"{why}; this plan, found with {SAFE.name}, holds; a better one may "
                       "sit within the rounding")
    if safe.status == "INFEASIBLE":
        return Outcome("UNKNOWN", None, bound,
                       f"{why}; with {SAFE.name} no plan exists: only the rounding decides "
                       "whether the budget can be met")
    return Outcome("UNKNOWN", None, bound, f"{why}; no plan that holds was found in time")
