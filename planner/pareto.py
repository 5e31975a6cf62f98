"""Pareto fronts: accuracy cost against one or two limits, by repeated warm-started solves."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefit_common.fsutil import atomic_path
from edgefit_common.progress import track
from planner.cpsat import minimize_metric
from planner.problem import Problem
from planner.result import SolverOptions
from planner.solve import solve

PARETO_METRICS = {"latency": "latency_ms", "flash": "flash_bytes", "ram": "ram_bytes",
                  "energy": "energy_mj"}


@dataclass(frozen=True)
class FrontPoint:
    limits: dict[str, float]  # the swept limit values this point was solved at
    totals: dict[str, float]  # what the plan found there costs
    picks: dict[str, str]


def _range(problem: Problem, metric: str, options: SolverOptions) -> tuple[float, float] | None:
    """From the smallest reachable value of `metric` (other limits kept) to its value in the
    most accurate plan without this limit."""
    free = problem.without_limit(metric)
    low, _ = minimize_metric(free, metric, options)
    best = solve(free, options)
    if low is None or not best.feasible:
        return None
    return low, max(low, best.totals[metric])


def sweep(problem: Problem, metrics: list[str], points: int = 12,
          options: SolverOptions | None = None) -> list[FrontPoint]:
    """Solve on a grid of limit values (1-D or 2-D) and keep the non-dominated plans."""
    options = options or SolverOptions(time_limit_s=5.0)
    grids = []
    for metric in metrics:
        span = _range(problem, metric, options)
        if span is None:
            return []
        low, high = span
        n = points if len(metrics) == 1 else max(3, points // 2)
        # a hair above each grid value: costs are rounded up inside CP-SAT, so the exact
        # minimum itself would otherwise fall just outside its own limit
        grids.append([(low + (high - low) * k / (n - 1)) * (1 + 1e-6) + 1e-3
                      for k in range(n)])
    combos: list[tuple[float, ...]] = [(v,) for v in grids[0]]
    if len(grids) == 2:
        combos = [(a, b) for a in grids[0] for b in grids[1]]
    found: list[FrontPoint] = []
    hint: dict[str, str] | None = None
    own = solve(problem, options)  # the plan at the problem's own limits is on its front
    if own.feasible:
        hint = own.picks
        found.append(FrontPoint({m: problem.limits.get(m, own.totals[m]) for m in metrics},
                                own.totals, own.picks))
    for combo in track(combos, "Pareto points"):
        limits = {**problem.limits, **dict(zip(metrics, combo, strict=True))}
        p = problem.with_limits(limits)  # keeps every other field (RAM workspace too)
        r = solve(p, options, hint=hint)
        if r.feasible:
            hint = r.picks
            found.append(FrontPoint(dict(zip(metrics, combo, strict=True)), r.totals, r.picks))
    return non_dominated(found, metrics)


def non_dominated(points: list[FrontPoint], metrics: list[str]) -> list[FrontPoint]:
    keys = [*metrics, "acc_loss"]

    def vec(p: FrontPoint) -> tuple[float, ...]:
        return tuple(p.totals[k] for k in keys)

    unique = {vec(p): p for p in points}
    return sorted((p for v, p in unique.items()
                   if not any(all(a <= b for a, b in zip(w, v, strict=True)) and w != v
                              for w in unique)),
                  key=vec)


def to_csv(points: list[FrontPoint], metrics: list[str]) -> str:
    out = io.StringIO()
    columns = [*(f"limit_{m}" for m in metrics), "latency_ms", "flash_bytes", "ram_bytes",
               "energy_mj", "acc_loss", "options"]
    writer = csv.writer(out)
    writer.writerow(columns)
    for p in points:
        writer.writerow([*(f"{p.limits[m]:.6g}" for m in metrics),
                         *(f"{p.totals[k]:.6g}" for k in columns[len(metrics):-1]),
                         " ".join(f"{k}={v}" for k, v in p.picks.items())])
    return out.getvalue()


# how each metric is shown: (axis label, divisor from the solver unit)
_SHOWN = {"latency_ms": ("latency (ms)", 1.0), "flash_bytes": ("flash (KB)", 1e3),
          "ram_bytes": ("peak RAM (KB)", 1e3), "energy_mj": ("energy (mJ)", 1.0)}


def plot(points: list[FrontPoint], metrics: list[str], chosen: dict[str, float] | None,
         path: Path, title: str, accuracy_unit: str = "",
         limits: dict[str, float] | None = None) -> None:
    """A PNG of :func:`figure` at ``path``."""
    import matplotlib.pyplot as plt

    fig = figure(points, metrics, chosen, title, accuracy_unit, limits)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def figure(points: list[FrontPoint], metrics: list[str], chosen: dict[str, float] | None,
           title: str, accuracy_unit: str = "", limits: dict[str, float] | None = None
           ) -> Any:
    """The accuracy cost against the first metric (colour = the second, if any), in readable
    units; the given limits as dashed lines; a log scale (linear near 0) when the accuracy
    costs span more than two decades; the chosen plan starred. A matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label, div = _SHOWN.get(metrics[0], (metrics[0], 1.0))
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    x = [p.totals[metrics[0]] / div for p in points]
    y = [p.totals["acc_loss"] for p in points]
    if len(metrics) == 2:
        label2, div2 = _SHOWN.get(metrics[1], (metrics[1], 1.0))
        sc = ax.scatter(x, y, c=[p.totals[metrics[1]] / div2 for p in points], cmap="viridis")
        fig.colorbar(sc, ax=ax, label=label2)
    else:
        ax.plot(x, y, "o-", label="Pareto front")
    if chosen is not None:
        ax.scatter([chosen[metrics[0]] / div], [chosen["acc_loss"]], marker="*", s=220, c="red",
                   zorder=5, label="chosen plan")
    if limits and metrics[0] in limits:
        ax.axvline(limits[metrics[0]] / div, ls="--", c="grey", label=f"{label} limit")
    _accuracy_scale(ax, y)
    ax.set_xlabel(label)
    ax.set_ylabel(f"estimated accuracy cost: {accuracy_unit}" if accuracy_unit
                  else "estimated accuracy cost")
    ax.set_title(title, fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def _accuracy_scale(ax: object, y: list[float]) -> None:
    """symlog (linear below the smallest positive cost) when the costs span > 2 decades."""
    positive = [v for v in y if v > 0]
    if positive and max(positive) > 100 * min(positive):
        ax.set_yscale("symlog", linthresh=min(positive))  # type: ignore[attr-defined]
    ax.set_ylim(bottom=0)  # type: ignore[attr-defined]  # a cost is never negative
