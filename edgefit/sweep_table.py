"""The sweep's table (one row per model x target x budget; sweep.csv and sweep.json) and its
figure (sweep.png: predicted latency against flash, one panel per target, infeasible cells
marked). Every cost in them is the plan's prediction (its provenance is in each plan.json);
the `measured_` columns come from apply, where the sweep applied the plan."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgefit_common.fsutil import atomic_path, atomic_write_text
from edgefit_common.units import fmt_bytes, fmt_mj, fmt_ms
from planner.plan import Plan

if TYPE_CHECKING:
    from edgefit.sweep import CellResult
    from edgefit.sweep_file import Sweep

SWEEP_FORMAT = "edgefit-sweep"
SWEEP_FORMAT_VERSION = 1

_LIMIT_COLUMNS = {"latency": "limit_latency_ms", "flash": "limit_flash_bytes",
                  "ram": "limit_ram_bytes", "energy": "limit_energy_mj",
                  "accuracy_drop": "limit_accuracy_drop_pp"}
_FMT = {"latency_ms": fmt_ms, "flash_bytes": fmt_bytes, "ram_bytes": fmt_bytes,
        "energy_mj": fmt_mj, "transfer_bytes": fmt_bytes}

BASE_COLUMNS = (
    "model", "target", "profile", "budget", "status", "solver_status", "how", "binding",
    "explanation", *_LIMIT_COLUMNS.values(), "margin",
    "predicted_latency_ms", "predicted_flash_bytes", "predicted_ram_bytes",
    "predicted_energy_mj", "predicted_acc_loss", "accuracy_unit", "solve_s", "plan_json")
APPLY_COLUMNS = ("applied", "checks_ok", "measured_accuracy_fp32", "measured_accuracy",
                 "measured_accuracy_drop_pp", "accuracy_limit_met", "measured_flash_image_bytes",
                 "flash_image_as_planned", "report_json")


def rows(sweep: Sweep, results: Sequence[CellResult]) -> list[dict[str, Any]]:
    """One row per cell, in the sweep's order; every row has the same keys (layer counts a
    row's plan lacks are 0; a row without a plan's totals has None)."""
    out = [_row(sweep, r) for r in results]
    counts = sorted({k for row in out for k in row if k.startswith("layers_")})
    applied = any(r.report is not None for r in results)
    columns = [*BASE_COLUMNS, *counts, *(APPLY_COLUMNS if applied else ())]
    return [{c: row.get(c, 0 if c.startswith("layers_") and row["status"] == "feasible"
                        else None) for c in columns} for row in out]


def _row(sweep: Sweep, result: CellResult) -> dict[str, Any]:
    plan, cell = result.plan, result.cell
    totals = plan.totals
    row: dict[str, Any] = {
        "model": sweep.spec.models[cell.model].label,
        "target": plan.target.device, "profile": plan.target.profile,
        "budget": sweep.spec.budgets[cell.budget].name,
        "status": "feasible" if plan.feasible else "infeasible",
        "solver_status": plan.status, "how": result.how,
        "binding": ";".join(plan.binding) if plan.feasible else None,
        "explanation": None if plan.feasible else explanation_line(plan),
        **{column: plan.limits.given().get(k) for k, column in _LIMIT_COLUMNS.items()},
        "margin": plan.margin,
        "predicted_latency_ms": totals.latency_ms if totals else None,
        "predicted_flash_bytes": totals.flash_bytes if totals else None,
        "predicted_ram_bytes": totals.ram_bytes if totals else None,
        "predicted_energy_mj": totals.energy_mj if totals else None,
        "predicted_acc_loss": totals.acc_loss if totals else None,
        "accuracy_unit": plan.accuracy_unit,
        "solve_s": round(plan.solver.wall_time_s, 3),
        "plan_json": str(result.folder / "plan.json"),
    }
    if plan.feasible:
        row.update(layer_counts(plan))
    if result.report is not None:
        row.update(_applied(result.report, result.folder))
    return row


def layer_counts(plan: Plan) -> dict[str, int]:
    """How many layers run on each kernel (`layers_int8`) and take each technique
    (`layers_prune_unstructured`)."""
    counts: Counter[str] = Counter()
    for lp in plan.layers.values():
        if lp.option is None:
            continue
        counts[f"layers_{lp.alternative(lp.option).kernel}"] += 1
        for technique in {t.technique for t in lp.techniques}:
            counts[f"layers_{technique}"] += 1
    return dict(counts)


def explanation_line(plan: Plan) -> str:
    """Why a budget cannot be met, in one line: what each limit would need with the others
    kept (as `plan` prints it), and the smallest value this model reaches."""
    if plan.explanation is None:
        return f"status {plan.status}" + (f": {plan.solver.note}" if plan.solver.note else "")
    parts = []
    for r in plan.explanation.relaxations:
        fmt, name = _FMT.get(r.limit, str), r.limit.split("_")[0]
        asked = fmt(r.asked) + _cap_note(plan, r.limit, r.asked)
        parts.append(f"{name}: relaxing only this limit does not help (asked {asked})"
                     if r.best_reachable is None else
                     f"{name}: needs {fmt(r.best_reachable)} instead of {asked}")
    parts += [f"smallest {metric.split('_')[0]} reachable: {_FMT.get(metric, str)(value)}"
              for metric, value in plan.explanation.minimum.items()]
    return "; ".join(parts) or f"status {plan.status}"


def _cap_note(plan: Plan, metric: str, asked: float) -> str:
    """A latency the solver held below the asked limit is the fp32 plan's (a compressed plan
    is never slower than fp32): say so, as `plan` does."""
    limit = plan.limits.latency
    if metric != "latency_ms" or limit is None or asked >= limit * (1 - plan.margin) - 1e-9:
        return ""
    return f", the fp32 plan's latency, below the {fmt_ms(limit)} asked"


def _applied(report: dict[str, Any], folder: Path) -> dict[str, Any]:
    acc, artifacts = report["accuracy"], report["artifacts"]
    return {"applied": True, "checks_ok": all(c["ok"] for c in report["checks"]),
            "measured_accuracy_fp32": acc["fp32"], "measured_accuracy": acc["compressed"],
            "measured_accuracy_drop_pp": acc["drop_pp"], "accuracy_limit_met": acc["limit_met"],
            "measured_flash_image_bytes": artifacts["flash_image_bytes"],
            "flash_image_as_planned": artifacts["flash_match"],
            "report_json": str(folder / "report.json")}


def write_tables(folder: Path, table: list[dict[str, Any]], header: dict[str, Any]
                 ) -> list[Path]:
    """sweep.csv (the rows) and sweep.json (the header, the columns and the rows), each
    written atomically."""
    columns = list(table[0]) if table else list(BASE_COLUMNS)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in table)
    atomic_write_text(folder / "sweep.csv", text.getvalue())
    doc = {"format": SWEEP_FORMAT, "format_version": SWEEP_FORMAT_VERSION, **header,
           "columns": columns, "rows": table}
    atomic_write_text(folder / "sweep.json", json.dumps(doc, indent=2) + "\n")
    return [folder / "sweep.csv", folder / "sweep.json"]


def write_figure(path: Path, sweep: Sweep, results: Sequence[CellResult]) -> Path:
    """sweep.png: predicted latency (x) against flash (y), one panel per target, a colour per
    model and the budget's name beside each point; an infeasible cell is a red x at its
    budget's latency and flash limits where it has both, and is listed under the panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = [t.label for t in sweep.spec.targets]
    fig, axes = plt.subplots(1, len(targets), figsize=(4.6 * len(targets), 4.6), dpi=110,
                             squeeze=False)
    colours = plt.get_cmap("tab10")
    for t, ax in enumerate(axes[0]):
        _panel(ax, sweep, [r for r in results if r.cell.target == t], colours)
        ax.set_title(targets[t], fontsize=9)
    axes[0][0].legend(loc="best", fontsize=7)
    fig.suptitle("edgefit sweep: predicted by each plan's cost model (not measured)",
                 fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _panel(ax: Any, sweep: Sweep, results: Sequence[CellResult], colours: Any) -> None:
    solved = [r.plan.totals.flash_bytes for r in results if r.plan.totals is not None]
    unit, div = ("MB", 1e6) if max(solved, default=0.0) > 1e7 else ("KB", 1e3)
    infeasible = []
    for m, model in enumerate(sweep.spec.models):
        mine = [r for r in results if r.cell.model == m]
        points = [(r, r.plan.totals) for r in mine if r.plan.totals is not None]
        ax.scatter([t.latency_ms for _, t in points], [t.flash_bytes / div for _, t in points],
                   color=colours(m % 10), label=model.label, zorder=3)
        for r, t in points:
            ax.annotate(sweep.spec.budgets[r.cell.budget].name, (t.latency_ms, t.flash_bytes / div),
                        fontsize=7, xytext=(4, 3), textcoords="offset points")
        for r in mine:
            if r.plan.totals is not None:
                continue
            infeasible.append(f"{model.label} / {sweep.spec.budgets[r.cell.budget].name}")
            limits = r.plan.limits
            if limits.latency is not None and limits.flash is not None:
                ax.scatter([limits.latency], [limits.flash / div], marker="x", s=70,
                           color="red", zorder=4)
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel(f"predicted flash ({unit}, runtime included)")
    ax.grid(True, alpha=0.3)
    if infeasible:  # under the panel, where it hides no point
        ax.text(0.0, -0.18, "infeasible (a red x at its limits where it gives latency and flash): "
                + ", ".join(infeasible), transform=ax.transAxes, va="top", fontsize=7,
                color="red", wrap=True)

def summary_lines(result: Any) -> list[str]:
    """What `edgefit sweep` prints: a line per cell, the work done, the files written."""
    lines = []
    for r in result.cells:
        t = r.plan.totals
        what = (f"{fmt_ms(t.latency_ms)}, {fmt_bytes(t.flash_bytes)} flash, "
                f"{fmt_bytes(t.ram_bytes or 0)} RAM" if t is not None
                else f"INFEASIBLE: {explanation_line(r.plan)}")
        applied = ""
        if r.report is not None:
            acc = r.report["accuracy"]
            ok = all(c["ok"] for c in r.report["checks"])
            applied = (f"; applied: accuracy drop {acc['drop_pp']:.2f} pp, checks "
                       f"{'ok' if ok else 'FAILED'}")
        lines.append(f"{r.folder}: {what} ({r.how}){applied}")
    lines.append(f"{result.full_plans} full plan{'s' if result.full_plans != 1 else ''}, "
                 f"{result.re_solves} re-solve{'s' if result.re_solves != 1 else ''}, "
                 f"{result.applied} applied ({result.executor})")
    lines += [f"wrote {path}" for path in result.written]
    return lines
