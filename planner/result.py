"""What the solver answers: a typed result, never printed by the solver itself."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

# SolveResult.exact_check: how the answer's claim relates to the costs as measured (unrounded).
VERIFIED = "verified"  # the plan meets every limit in exact arithmetic and the claim holds
DOWNGRADED = "downgraded"  # the claim held only for the rounded costs: status lowered (note)


@dataclass(frozen=True)
class Relaxation:
    """The best value of `limit` reachable when only that limit is dropped (others kept)."""

    limit: str
    asked: float
    best_reachable: float | None  # None: see status
    # OPTIMAL: best_reachable is the minimum; FEASIBLE: a plan reaches it (the minimum may be
    # lower: time-out); INFEASIBLE: no plan even without this limit (another limit is the
    # cause); UNKNOWN: the solve timed out without a plan (nothing is known)
    status: str = "OPTIMAL"


@dataclass(frozen=True)
class SolveResult:
    status: str  # OPTIMAL, FEASIBLE, INFEASIBLE, UNKNOWN
    picks: dict[str, str] = field(default_factory=dict)  # layer -> option
    totals: dict[str, float] = field(default_factory=dict)
    binding: tuple[str, ...] = ()  # limits within 1 % of their value
    wall_time_s: float = 0.0
    backend: str = "cp-sat"
    resolution: dict[str, float] = field(default_factory=dict)  # solver integer unit per metric
    options_considered: int = 0
    gap: float | None = None  # relative gap of the accuracy objective; None when unknown
    dominated_removed: int = 0  # options presolve dropped before solving
    # Infeasible answers: per limit what is reachable without it, and each metric's own minimum.
    relaxations: tuple[Relaxation, ...] = ()
    minimum: dict[str, float] = field(default_factory=dict)
    joint_relaxation: dict[str, float] = field(default_factory=dict)  # limit -> how much more
    # Feasible answers: accuracy cost with each binding limit 10 % looser.
    sensitivity: dict[str, float] = field(default_factory=dict)
    # limits whose 10 %-looser re-solve timed out without a better plan or a proof that none
    # exists: neither binding nor not binding
    binding_unknown: tuple[str, ...] = ()
    # OPTIMAL: the joint relaxation is the smallest; FEASIBLE: enough, maybe not the smallest;
    # UNKNOWN: none found in time (joint_relaxation empty)
    joint_relaxation_status: str = ""
    exact_check: str = ""  # VERIFIED, DOWNGRADED, or "" (not checked: made outside a backend)
    note: str = ""  # why a claim was downgraded, what is not proven

    @property
    def feasible(self) -> bool:
        return self.status in ("OPTIMAL", "FEASIBLE")


# A limit counts as binding (without the sensitivity re-solves) when a plan uses this much of it.
BINDING_FRACTION = 0.99


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# The tie-break phase's share of the time limit when SolverOptions.tie_break_time_s is None.
TIE_BREAK_SHARE = 0.1


@dataclass(frozen=True)
class SolverOptions:
    # one solve call's search time: the accuracy phase gets it less the tie-break's slice
    time_limit_s: float = 10.0
    # CP-SAT workers: the cores available (more workers than cores only time-slice them)
    workers: int = field(default_factory=available_cores)
    relative_gap: float = 0.0
    # the second (latency + flash tie-break) phase's time; None: TIE_BREAK_SHARE of
    # time_limit_s. The accuracy optimum is settled by then, so it only costs tie-break quality
    # (a proven optimum stays OPTIMAL when the tie-break does not finish).
    tie_break_time_s: float | None = None

    @property
    def tie_break_s(self) -> float:
        if self.tie_break_time_s is not None:
            return self.tie_break_time_s
        return TIE_BREAK_SHARE * self.time_limit_s
