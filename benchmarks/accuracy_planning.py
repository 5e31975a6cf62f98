"""Accuracy-aware planning benchmark (issue #5): accuracy at the budget, and wall time, of
(a) the solver's plan, (b) the closed loop (1 epoch of distillation after pruning, accuracy
limit 1 pp, minimising flash), (c) Optuna TPE over the same decision space with a fixed time
budget, (d) uniform baselines: every layer int8, and the mildest uniform pruning level (with
int8) that meets the limit.

Every plan is applied for real (`edgefit apply`): accuracy is measured on the full held-out
split, flash is the stored image's bytes plus the runtime. Budgets are flash limits on the
Arduino Nano 33 BLE: runtime + a fraction of the fp32 weights' bytes.
Run: .venv/bin/python benchmarks/accuracy_planning.py  (writes docs/bench-accuracy-planning.md)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from device_specs.budget import Budget, Limits
from edgefit.applying import apply_plan
from edgefit.loop import LoopSettings, apply_evaluator, closed_loop
from edgefit.planning import make_plan
from edgefit_common.fsutil import atomic_write_text
from edgefit_common.units import fmt_bytes
from planner.bayes import search as tpe_search
from planner.plan import Plan
from planner.resolve import problem_from_plan, resolve, with_result

WORKLOADS = ("lenet5-mnist", "fashion-cnn")
TARGET = "arduino-nano-33-ble"
FRACTIONS = (0.25, 0.16, 0.10)  # of the fp32 weights' bytes
TPE_SECONDS = 10.0
LOOP = LoopSettings(rounds=4, objective="flash")
ACCURACY_LIMIT = "1pp"


def _applied(plan: Plan, out: Path) -> dict[str, Any]:
    report = apply_plan(plan, out)
    acc = report["accuracy"]
    flash = plan.fixed.get("flash_bytes", 0.0) + report["artifacts"]["flash_payload_bytes"]
    return {"accuracy": acc["compressed"], "fp32": acc["fp32"], "drop_pp": acc["drop_pp"],
            "flash": flash}


def _uniform(plan: Plan, option: str) -> Plan | None:
    """Every layer takes `option` (its dense precision where the layer has no sparse form)."""
    pins = {}
    for name, lp in plan.layers.items():
        names = {a.option for a in lp.alternatives}
        pins[name] = option if option in names else option.split("+")[0]
    new = resolve(plan, pins=pins)
    return new if new.feasible else None


def _tpe(plan: Plan) -> tuple[Plan | None, float]:
    problem = problem_from_plan(plan)
    start = time.perf_counter()
    result = tpe_search(problem, 1_000_000, TPE_SECONDS, seed=0)
    wall = time.perf_counter() - start
    return (with_result(plan, problem, result) if result.feasible else None), wall


def one_budget(model: str, fraction: float, fp32_weight_bytes: float, runtime_bytes: float,
               tmp: Path) -> list[dict[str, Any]]:
    limit = runtime_bytes + fraction * fp32_weight_bytes
    budget = Budget(target=TARGET, model=model,
                    limits=Limits.model_validate({"flash": f"{limit:.0f}B",
                                                  "accuracy_drop": ACCURACY_LIMIT}))
    start = time.perf_counter()
    plan, _ = make_plan(budget, "bench")
    plan_wall = time.perf_counter() - start
    rows: list[dict[str, Any]] = []
    tag = f"{model}-{fraction}"

    def row(method: str, p: Plan | None, wall: float, note: str = "",
            measured: dict[str, Any] | None = None) -> None:
        if p is None:
            rows.append({"method": method, "fits": False, "wall_s": wall, "note": note})
            return
        m = measured or _applied(p, tmp / f"{tag}-{len(rows)}")
        rows.append({"method": method, "fits": True, "wall_s": wall, "note": note, **m})

    if not plan.feasible:
        row("(a) solver", None, plan_wall, f"infeasible: {plan.status}")
        return [{"limit": limit, **r} for r in rows]
    row("(a) solver", plan, plan_wall,
        f"solve {plan.solver.wall_time_s:.2f} s of {plan_wall:.1f} s (rest: capture, "
        "accuracy estimates)")

    ft = plan.model_copy(update={"finetune": _distill(1)})
    start = time.perf_counter()
    looped = closed_loop(ft, apply_evaluator(tmp / f"{tag}-loop"), LOOP)
    loop_wall = time.perf_counter() - start + plan_wall
    best = looped.rounds[(looped.best_round or 1) - 1]
    assert best.measured is not None
    row("(b) closed loop", looped.best_plan, loop_wall,
        f"{looped.status} after {len(looped.rounds)} round(s); best round {best.number}",
        {"accuracy": best.measured.accuracy, "fp32": best.measured.fp32_accuracy,
         "drop_pp": best.measured.drop_pp, "flash": best.measured.costs["flash_bytes"]})

    tpe_plan, tpe_wall = _tpe(plan)
    row("(c) Optuna TPE", tpe_plan, tpe_wall + plan_wall - plan.solver.wall_time_s,
        f"{TPE_SECONDS:g} s of search" if tpe_plan else "no feasible trial")
    row("(d) uniform int8", _uniform(plan, "int8"), 0.0)
    for level in ("int8+s50", "int8+s75", "int4+s75"):
        uniform = _uniform(plan, level)
        if uniform is not None:
            row(f"(d) uniform {level}", uniform, 0.0, "mildest uniform pruning that fits")
            break
    else:
        row("(d) uniform pruning", None, 0.0, "no uniform level fits")
    return [{"limit": limit, **r} for r in rows]


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """What the table says, computed from it (so the prose cannot drift from the numbers)."""
    by_budget: dict[tuple[str, float], dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_budget.setdefault((r["model"], r["limit"]), {})[r["method"]] = r
    wins = ties = losses = 0
    uniform_gap = []
    loop_saving = []
    for methods in by_budget.values():
        a, c = methods.get("(a) solver"), methods.get("(c) Optuna TPE")
        if a and c and a["fits"] and c["fits"]:
            diff = a["accuracy"] - c["accuracy"]
            wins, ties, losses = (wins + (diff > 1e-9), ties + (abs(diff) <= 1e-9),
                                  losses + (diff < -1e-9))
        uniform = [m for k, m in methods.items() if k.startswith("(d)") and m["fits"]]
        if a and a["fits"] and uniform:
            uniform_gap.append(100 * (a["accuracy"] - max(u["accuracy"] for u in uniform)))
        b = methods.get("(b) closed loop")
        if a and b and a["fits"] and b["fits"]:
            loop_saving.append(100 * (1 - b["flash"] / a["flash"]))
    out = [f"- Solver (a) against Optuna (c), measured accuracy: better in {wins}, equal in "
           f"{ties}, worse in {losses} of {wins + ties + losses} budgets."]
    if uniform_gap:
        out.append(f"- Solver (a) against the best uniform baseline (d) that fits: "
                   f"{min(uniform_gap):+.2f} to {max(uniform_gap):+.2f} pp accuracy.")
    if loop_saving:
        out.append(f"- Closed loop (b) against (a): {min(loop_saving):.1f} to "
                   f"{max(loop_saving):.1f} % less flash, within the {ACCURACY_LIMIT} limit as "
                   "measured.")
    return out


def _distill(epochs: int) -> Any:
    from techniques.distill import DistillConfig

    return DistillConfig(epochs=epochs)


def main() -> int:
    start = time.perf_counter()
    all_rows: list[dict[str, Any]] = []
    lines = ["| model | flash limit | method | fits | accuracy | drop | flash | wall time | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for model in WORKLOADS:
            probe, _ = make_plan(Budget(target=TARGET, model=model,
                                        limits=Limits.model_validate({"flash": "1000MB"})), "bench")
            fp32_bytes = sum(lp.alternative("fp32").flash_bytes for lp in probe.layers.values())
            runtime = probe.fixed.get("flash_bytes", 0.0)
            for fraction in FRACTIONS:
                for r in one_budget(model, fraction, fp32_bytes, runtime, Path(tmp)):
                    all_rows.append({"model": model, **r})
                    acc = (f"{100 * r['accuracy']:.2f} %" if r["fits"] else "-")
                    drop = f"{r['drop_pp']:.2f} pp" if r["fits"] else "-"
                    flash = fmt_bytes(r["flash"]) if r["fits"] else "-"
                    line = (f"| {model} | {fmt_bytes(r['limit'])} ({100 * fraction:g} % of fp32)"
                            f" | {r['method']} | {'yes' if r['fits'] else 'no'} | {acc} | {drop} "
                            f"| {flash} | {r['wall_s']:.1f} s | {r['note']} |")
                    print(line, flush=True)
                    lines.append(line)
    total = time.perf_counter() - start
    doc = "\n".join([
        "# Accuracy-aware planning: solver vs closed loop vs Optuna vs uniform",
        "",
        "Made by `.venv/bin/python benchmarks/accuracy_planning.py` (part of `make bench`), "
        f"in {total / 60:.1f} min on this machine. Target {TARGET}; each flash limit is the "
        "runtime plus a fraction of the fp32 weights' bytes; accuracy limit "
        f"{ACCURACY_LIMIT} (used by the closed loop). Every plan was applied: accuracy is "
        "measured on the full held-out split; flash is the stored image plus the runtime.",
        "",
        "- (a) solver: CP-SAT, minimising the summed per-layer accuracy estimate (output KL). "
        "Wall time includes capturing the model and measuring the estimates.",
        "- (b) closed loop: `plan --loop 4 --objective flash --finetune 1`: starts from (a), "
        "1 epoch of distillation after pruning, then walks to cheaper plans while the "
        "measured drop stays within the limit (so its flash is at most (a)'s).",
        f"- (c) Optuna TPE over the same options and limits, {TPE_SECONDS:g} s of search "
        "(plus the same capture and estimates as (a)).",
        "- (d) uniform: every layer int8; the mildest uniform pruning level that fits.",
        "",
        *lines,
        "",
        "## What it says",
        "",
        *summary(all_rows),
        "- Wall times are of one run on this machine; (a)'s solve time is in its note.",
        "",
    ])
    atomic_write_text(Path(__file__).parents[1] / "docs" / "bench-accuracy-planning.md", doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
