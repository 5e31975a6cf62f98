"""Accuracy-aware planning benchmark (issue #5): accuracy at the budget, and wall time, of
(a) the solver's plan, (b) the closed loop (1 epoch of distillation after pruning, accuracy
limit 1 pp, minimising flash), (c) Optuna TPE over the same decision space with a fixed time
budget, scored by the predicted accuracy cost, (d) uniform baselines: every layer int8, and the
mildest uniform pruning level (with int8) that meets the limit, (e) Optuna TPE scored by the
*measured* accuracy drop (`plan --search bayes-measured`, issue #20 item 4): as many applies as
the loop may make, each judged on a validation split of the training data, never on the
held-out split the table reports.

Every plan is applied for real (`edgefit apply`): accuracy is measured on the full held-out
split, flash is the stored image's bytes plus the runtime. Budgets are flash limits on the
Arduino Nano 33 BLE deployed as edgefit's packed image (its device file without the `tflite`
fields, as the test suite's image target: the board and rates the same, no .tflite written):
runtime + a fraction of the fp32 weights' bytes.
Run: .venv/bin/python benchmarks/accuracy_planning.py [--models M ...] [--fractions F ...]
(writes docs/bench-accuracy-planning.md; by default every model and fraction)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from device_specs.budget import Budget, Limits
from edgefit.applying import apply_plan
from edgefit.loop import LoopSettings, apply_evaluator, closed_loop
from edgefit.measured_search import MeasuredSettings, search_measured
from edgefit.planning import make_plan
from edgefit_common.fsutil import atomic_write_text
from edgefit_common.units import fmt_bytes
from planner.bayes import search as tpe_search
from planner.plan import Plan
from planner.resolve import problem_from_plan, resolve, with_result

WORKLOADS = ("lenet5-mnist", "fashion-cnn")
BOARD = "arduino-nano-33-ble"
FRACTIONS = (0.25, 0.16, 0.10)  # of the fp32 weights' bytes
TPE_SECONDS = 10.0
LOOP = LoopSettings(rounds=4, objective="flash")
ACCURACY_LIMIT = "1pp"
MEASURED = MeasuredSettings(applies=LOOP.rounds)  # (e): the loop's apply budget


def image_target(folder: Path) -> str:
    """The board's device file without its `tflite` fields (edgefit's packed image, where
    sparse and shared weights save flash; a .tflite stores them dense)."""
    import yaml

    from device_specs.catalog import CATALOG_DIR

    data = yaml.safe_load((CATALOG_DIR / f"{BOARD}.yaml").read_text())
    data["name"] = f"{BOARD}-image"
    for profile in data["profiles"].values():
        profile.pop("tflite", None)
    path = folder / f"{BOARD}-image.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


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


def _measured(plan: Plan, out: Path) -> tuple[Plan | None, float, int, str]:
    """(e): the measured search from the solver's plan (its first trial), no fine-tuning
    (as (a) and (c): only the scoring differs); its best plan, wall time, applies, a note."""
    start = time.perf_counter()
    found = search_measured(plan, out, MEASURED)
    wall = time.perf_counter() - start
    s = found.search
    if not s.result.feasible:
        return None, wall, s.applies, "no trial within the limits"
    note = (f"{s.applies} applies in {len(s.trials)} trials; best apply {s.best_apply}: "
            f"validation drop {s.best_value:.2f} pp ({found.validation.split(' images')[0]} "
            "training images)")
    return found.plan, wall, s.applies, note


def one_budget(model: str, fraction: float, fp32_weight_bytes: float, runtime_bytes: float,
               tmp: Path, target: str) -> list[dict[str, Any]]:
    limit = runtime_bytes + fraction * fp32_weight_bytes
    budget = Budget(target=target, model=model,
                    limits=Limits.model_validate({"flash": f"{limit:.0f}B",
                                                  "accuracy_drop": ACCURACY_LIMIT}))
    start = time.perf_counter()
    plan, _ = make_plan(budget, "bench")
    plan_wall = time.perf_counter() - start
    rows: list[dict[str, Any]] = []
    tag = f"{model}-{fraction}"
    # (options, no fine-tuning) -> its measurement: apply is deterministic for a plan without
    # fine-tuning, so rows that chose the same plan share one apply
    applied: dict[tuple[tuple[tuple[str, str], ...], bool], dict[str, Any]] = {}

    def row(method: str, p: Plan | None, wall: float, note: str = "",
            measured: dict[str, Any] | None = None, applies: int = 0) -> None:
        """``applies``: plans applied to choose this one (the apply that measures the row's
        accuracy on the held-out split not counted)."""
        if p is None:
            rows.append({"method": method, "fits": False, "wall_s": wall, "note": note,
                         "applies": applies})
            return
        key = (tuple(sorted(p.options().items())), p.finetune is None)
        if measured is None and key not in applied:  # a plan another row chose: applied once
            applied[key] = _applied(p, tmp / f"{tag}-{len(rows)}")
        m = measured or applied[key]
        rows.append({"method": method, "fits": True, "wall_s": wall, "note": note,
                     "applies": applies, "options": p.options(), **m})

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
         "drop_pp": best.measured.drop_pp, "flash": best.measured.costs["flash_bytes"]},
        applies=len(looped.rounds))

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
    searched, search_wall, applies, note = _measured(plan, tmp / f"{tag}-measured")
    row("(e) Optuna TPE, measured", searched, search_wall + plan_wall, note, applies=applies)
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
    out += _measured_summary(by_budget)
    if uniform_gap:
        out.append(f"- Solver (a) against the best uniform baseline (d) that fits: "
                   f"{min(uniform_gap):+.2f} to {max(uniform_gap):+.2f} pp accuracy.")
    if loop_saving:
        out.append(f"- Closed loop (b) against (a): {min(loop_saving):.1f} to "
                   f"{max(loop_saving):.1f} % less flash, within the {ACCURACY_LIMIT} limit as "
                   "measured.")
    return out


def _measured_summary(by_budget: dict[tuple[str, float], dict[str, dict[str, Any]]]
                      ) -> list[str]:
    """(e) against (a) on held-out accuracy, and its applies and wall time against (b)'s."""
    diffs, same, rows_e, rows_b = [], 0, [], []
    for methods in by_budget.values():
        a, b = methods.get("(a) solver"), methods.get("(b) closed loop")
        e = methods.get("(e) Optuna TPE, measured")
        if a and e and a["fits"] and e["fits"]:
            diffs.append(100 * (e["accuracy"] - a["accuracy"]))
            same += e["options"] == a["options"]
            rows_e.append(e)
        if b and b["fits"]:
            rows_b.append(b)
    if not diffs:
        return []
    out = [f"- Measured search (e) against the solver (a), held-out accuracy: "
           f"{min(diffs):+.2f} to {max(diffs):+.2f} pp over {len(diffs)} budgets "
           f"(better in {sum(d > 1e-9 for d in diffs)}, equal in "
           f"{sum(abs(d) <= 1e-9 for d in diffs)}, worse in {sum(d < -1e-9 for d in diffs)}; "
           f"(e) kept (a)'s own plan, its first trial, in {same})."]
    if rows_b:
        out.append(f"- Applies to choose a plan: (e) {sum(r['applies'] for r in rows_e)} in "
                   f"{sum(r['wall_s'] for r in rows_e) / 60:.1f} min, (b) "
                   f"{sum(r['applies'] for r in rows_b)} in "
                   f"{sum(r['wall_s'] for r in rows_b) / 60:.1f} min, over the same budgets "
                   "(wall times include capture and estimates).")
    return out


def _distill(epochs: int) -> Any:
    from techniques.distill import DistillConfig

    return DistillConfig(epochs=epochs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    all_rows: list[dict[str, Any]] = []
    lines = ["| model | flash limit | method | fits | accuracy | drop | flash | applies | "
             "wall time | note |", "|---|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        target = image_target(Path(tmp))
        for model in args.models:
            probe, _ = make_plan(Budget(target=target, model=model,
                                        limits=Limits.model_validate({"flash": "1000MB"})), "bench")
            fp32_bytes = sum(lp.alternative("fp32").flash_bytes for lp in probe.layers.values())
            runtime = probe.fixed.get("flash_bytes", 0.0)
            for fraction in args.fractions:
                for r in one_budget(model, fraction, fp32_bytes, runtime, Path(tmp), target):
                    all_rows.append({"model": model, **r})
                    acc = (f"{100 * r['accuracy']:.2f} %" if r["fits"] else "-")
                    drop = f"{r['drop_pp']:.2f} pp" if r["fits"] else "-"
                    flash = fmt_bytes(r["flash"]) if r["fits"] else "-"
                    line = (f"| {model} | {fmt_bytes(r['limit'])} ({100 * fraction:g} % of fp32)"
                            f" | {r['method']} | {'yes' if r['fits'] else 'no'} | {acc} | {drop} "
                            f"| {flash} | {r['applies']} | {r['wall_s']:.1f} s | {r['note']} |")
                    print(line, flush=True)
                    lines.append(line)
    total = time.perf_counter() - start
    reduced = ([] if (args.models, args.fractions) == (list(WORKLOADS), list(FRACTIONS)) else [
        f"This run was reduced for CPU time (a shared 2-core machine): models "
        f"{', '.join(args.models)} of {', '.join(WORKLOADS)}; fractions "
        f"{', '.join(f'{f:g}' for f in args.fractions)} of "
        f"{', '.join(f'{f:g}' for f in FRACTIONS)}.", ""])
    command = " ".join(["`.venv/bin/python benchmarks/accuracy_planning.py", *(
        ["--models", *args.models, "--fractions", *map(str, args.fractions)] if reduced
        else [])]) + "`"
    doc = "\n".join([
        "# Accuracy-aware planning: solver vs closed loop vs Optuna vs uniform",
        "",
        f"Made by {command} (part of `make bench`), "
        f"in {total / 60:.1f} min on this machine. Target {BOARD} deployed as edgefit's packed "
        "image (its device file without the `tflite` fields: the same board and rates, no "
        ".tflite written); each flash limit is the "
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
        f"- (e) `plan --search bayes-measured --trials {MEASURED.applies}`: Optuna TPE over "
        "the same options and limits (costs predicted, hard limits), each trial within them "
        "applied (no fine-tuning, as (a) and (c)) and scored by its accuracy drop measured "
        "on a validation split: 2000 images of the training split, stratified, without the "
        "calibration sample (the built-in models were trained on them, so only the ranking "
        "of plans is used). The solver's plan is its first trial. The table's accuracy is the "
        "chosen plan applied again on the held-out split, which the search never saw. Its "
        f"budget is the loop's ({MEASURED.applies} applies).",
        "- applies: plans applied to choose the row's plan (the apply that measured the "
        "row on the held-out split not counted).",
        "",
        *reduced,
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
