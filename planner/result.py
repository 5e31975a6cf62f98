"""What the solver answers: a typed result, never printed by the solver itself."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Relaxation:
    """The best value of `limit` reachable when only that limit is dropped (others kept)."""

    limit: str
    asked: float
    best_reachable: float | None  # None: still infeasible without it (another limit is the cause)


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

    @property
    def feasible(self) -> bool:
        return self.status in ("OPTIMAL", "FEASIBLE")


# A limit counts as binding (without the sensitivity re-solves) when a plan uses this much of it.
BINDING_FRACTION = 0.99


@dataclass(frozen=True)
class SolverOptions:
    time_limit_s: float = 10.0
    workers: int = 4  # CP-SAT's portfolio helps even on 2 cores
    relative_gap: float = 0.0
    # the second (latency + flash tie-break) phase's own time limit; None: time_limit_s. The
    # accuracy optimum is settled by then, so a short one only costs tie-break quality.
    tie_break_time_s: float | None = None
