"""Distillation into a smaller student (plan --student) against channel pruning with the same
distillation, and the fp32 teacher, measured through edgefit's own plan and apply.

Rows per model (every planned layer pinned to one kernel, so the rows differ in the network
only):
* the fp32 teacher (no compression);
* channels -50 % + distill N: every coupled channel group of the teacher at its offered width
  nearest 50 % (Torch-Pruning), then apply's fine-tuning, N epochs of distillation from the
  fp32 model;
* student width=0.5 (init=teacher): the derived student from the teacher's kept channels,
  distilled N epochs from the fp32 teacher before it is planned;
* student width=0.5,init=fresh: the same architecture from a fresh, seeded initialisation,
  distilled N epochs;
* the same three at int8 (the student rows reuse the distilled student from the cache; the
  channel row distils again, after the int8 is planned, as apply does).
Accuracy: apply's held-out split (the compressed model's shipped ONNX, top-1), the teacher's
fp32 beside it. Flash: the packed image apply wrote (model.flash.bin, exact, checked by apply
against the plan). Latency: the plan's prediction for the target (analytical MCU model; its
provenance is in each plan). One seed, one run.

Run: .venv/bin/python benchmarks/student.py  (prints the table, writes docs/bench-student.md)
Options: --models lenet5-mnist,fashion-cnn --epochs N --kernels fp32,int8 --no-doc
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from device_specs.budget import Budget, Limits
from edgefit.applying import apply_plan
from edgefit.planning import make_plan
from edgefit_common.fsutil import atomic_write_text
from techniques.student import parse_student

DOC = Path(__file__).parents[1] / "docs" / "bench-student.md"
TARGET, PROFILE = "stm32h743", "x-cube-ai"  # packed image (no .tflite), MCU latency model


def budget(model: str) -> Budget:
    return Budget(target=TARGET, profile=PROFILE, model=model,
                  limits=Limits.model_validate({"latency": "100s"}))


def half_channels(probe: Any, kernel: str) -> dict[str, str]:
    """Pins: every coupled group at its offered width nearest 50 % of its channels, every layer
    at ``kernel`` (as benchmarks/compare_techniques.py's channel rows)."""
    width = {g.name: min(g.widths, key=lambda w, c=g.channels: (abs(w - c * 0.5), w))  # type: ignore[misc]
             for g in probe.channel_groups}
    pins = {}
    for name, lp in probe.layers.items():
        fits = [a.option for a in lp.alternatives if a.kernel == kernel and a.widths
                and all(width.get(g) == w for g, w in a.widths.items())
                and all(t.technique in ("quantize", "prune_channels") for t in a.techniques)]
        pins[name] = fits[0] if fits else kernel
    return pins


def deployed_params(plan: Any) -> int:
    """Parameters of the network apply compresses: the student's, or the teacher's after the
    plan's channel pruning (executors.apply.channel_pruned)."""
    from executors.apply import channel_pruned
    from workloads.models import load_model_ref

    if plan.student is not None:
        return int(plan.student.params)
    loaded = load_model_ref(plan.model.name)
    narrow = channel_pruned(loaded.torch_module(), plan, loaded.input_shape)
    return sum(p.numel() for p in narrow.parameters())


def row(model: str, label: str, pins: dict[str, str], epochs: int, student: str | None,
        out: Path) -> dict[str, Any]:
    started = time.time()
    plan, _ = make_plan(budget(model), "bench", pins=pins, finetune_epochs=epochs,
                        student=None if student is None else parse_student(student))
    report = apply_plan(plan, out)
    acc = report["accuracy"]
    assert plan.totals is not None
    record = {
        "model": model, "row": label, "student": student, "epochs": epochs,
        "options": plan.options(),
        "params": deployed_params(plan),
        "fp32_accuracy": acc["fp32"], "accuracy": acc["compressed"],
        "flash_image_bytes": report["artifacts"]["flash_image_bytes"],
        "planned_flash_image_bytes": report["artifacts"]["planned_flash_bytes"],
        "latency_ms": plan.totals.latency_ms,
        "checks_ok": all(c["ok"] for c in report["checks"]),
        "finetune": acc["finetune"], "seconds": round(time.time() - started, 1)}
    print(json.dumps({k: v for k, v in record.items() if k not in ("finetune", "options")}),
          flush=True)
    return record


def rows_for(model: str, epochs: int, kernels: Sequence[str], tmp: Path,
             done: Callable[[list[dict[str, Any]], int], None] = lambda rows, left: None
             ) -> list[dict[str, Any]]:
    """Every row of ``model``; ``done(rows so far, rows left)`` after each one."""
    probe, _ = make_plan(budget(model), "bench")
    out: list[dict[str, Any]] = []
    for kernel in kernels:
        every = {name: kernel for name in probe.layers}
        recipes: list[tuple[str, dict[str, str], int, str | None]] = [
            (f"fp32 teacher, {kernel}", every, 0, None),
            (f"channels -50 % + distill {epochs} ep, {kernel}", half_channels(probe, kernel),
             epochs, None),
            (f"student width=0.5 (teacher's weights), distilled {epochs} ep, {kernel}", every,
             epochs, "width=0.5"),
            (f"student width=0.5 (fresh weights), distilled {epochs} ep, {kernel}", every,
             epochs, "width=0.5,init=fresh"),
        ]
        for i, (label, pins, ep, student) in enumerate(recipes):
            out.append(row(model, label, pins, ep, student, tmp / f"{model}-{kernel}-{i}"))
            done(out, 4 * len(kernels) - len(out))
    return out


def channels(record: dict[str, Any]) -> str:
    """Output channels of every layer but the last, of the network the row deploys: the
    student (built again: deterministic) or the teacher pruned as the row's options say."""
    from executors.student import build_student
    from workloads.models import load_model_ref

    teacher = load_model_ref(record["model"])
    module = teacher.torch_module()
    if record["student"]:
        net = build_student(module, parse_student(record["student"]), teacher.input_shape)
    else:
        kept = {layer: int(part[1:]) for layer, option in record["options"].items()
                for part in option.split("+") if part.startswith("w") and part[1:].isdigit()}
        net = module
        modules = dict(net.named_modules())
        counts = [kept.get(n, _out(modules[n])) for n in record["options"]]
        return "/".join(str(c) for c in counts[:-1])
    modules = dict(net.named_modules())
    return "/".join(str(_out(modules[n])) for n in list(record["options"])[:-1])


def _out(module: Any) -> int:
    return int(getattr(module, "out_channels", getattr(module, "out_features", 0)))


def table(records: Sequence[dict[str, Any]]) -> list[str]:
    lines = ["| model | row | channels | parameters | flash image | predicted latency | accuracy "
             "(teacher fp32 -> this) | checks |", "|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(
            f"| {r['model']} | {r['row']} | {channels(r)} | {r['params']:,} | "
            f"{r['flash_image_bytes']:,} B | "
            f"{r['latency_ms']:.3f} ms | {100 * r['fp32_accuracy']:.2f} -> "
            f"{100 * r['accuracy']:.2f} % | {'ok' if r['checks_ok'] else 'FAILED'} |")
    return lines


def command_of(argv: Sequence[str]) -> str:
    return ".venv/bin/python benchmarks/student.py" + "".join(
        f" {a}" for a in argv if a not in ("--render", "--append"))


def document(argv: Sequence[str], args: argparse.Namespace,
             records: Sequence[dict[str, Any]]) -> str:
    commands = list(dict.fromkeys(r.get("command", command_of(argv)) for r in records))
    made = " and ".join(
        f"`{c}` ({', '.join(sorted({r['model'] for r in records if r.get('command', c) == c}))})"
        for c in commands)
    students = [r for r in records if r["student"]]
    epochs = sorted({r["epochs"] for r in records if r["epochs"]})
    return "\n".join([
        "# Distillation into a smaller student, measured", "",
        f"Made by {made}; every number is from the run named beside its model (one seed; a "
        "run writes this file after every row, so a run stopped early keeps the rows it "
        "finished). Target "
        f"`{TARGET}` / `{PROFILE}` (edgefit's packed image, no .tflite). Every planned layer is "
        "pinned to one kernel, so rows differ in the network only. *Accuracy*: apply's held-out "
        "split, the shipped model.onnx run by onnxruntime, against the fp32 teacher's. *Flash "
        "image*: model.flash.bin as apply wrote it (checked by apply against the plan). "
        "*Predicted latency*: the plan's analytical MCU model (unverified rates, see the plan's "
        "provenance), not a measurement. The channel row prunes every coupled group of the "
        "teacher to its offered width nearest 50 % and then distils the pruned model "
        f"(apply's fine-tuning, the epochs its row says: {'/'.join(map(str, epochs))}); a "
        "student row builds the width=0.5 network (the same Torch-Pruning dependency graph), "
        "distils it as many epochs from the fp32 teacher before planning (`plan --student`), then "
        "applies the pinned kernel (an int8 student is not fine-tuned again). Distillation: "
        "KL to the teacher at T=4 with 0.3 cross-entropy, AdamW lr 5e-4, early stopping on "
        "the validation split's KL. *Channels*: output channels of every layer but the "
        "classifier. The channel row takes the widths the plan offers (multiples of the "
        "profile's preferred channel multiple, or the full count) nearest half; a student "
        "keeps exactly half of every group (rounded, at least one), so the two networks "
        "may differ slightly. Where they do not, a student from the teacher's weights is the "
        "same network as the channel row, distilled the same way (same seed, data and "
        "config): channel pruning with distillation, done before planning instead of after; "
        "the fresh-weights row is what the teacher's kept weights are worth.", "",
        *table(records), "",
        "What the student rows' distillation reported (validation split of the training data; "
        "the teacher's figure there is in-sample: it was trained on those images):", "",
        "| model | row | epochs run | validation top-1 before -> after | teacher |",
        "|---|---|---|---|---|",
        *(f"| {r['model']} | {r['row']} | {r['finetune']['student']['epochs_run']} | "
          f"{100 * r['finetune']['student']['val_accuracy_before']:.2f} -> "
          f"{100 * r['finetune']['student']['val_accuracy_after']:.2f} % | "
          f"{100 * r['finetune']['student'].get('teacher_val_accuracy', float('nan')):.2f} % |"
          for r in students), "",
        "Raw records: `docs/bench-student.json`.", ""])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5-mnist")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--kernels", default="fp32,int8")
    parser.add_argument("--no-doc", action="store_true")
    parser.add_argument("--append", action="store_true", help="keep the other models' rows "
                        "of docs/bench-student.json (each row names the command that made it)")
    parser.add_argument("--render", action="store_true", help="write the document again from "
                        "docs/bench-student.json (the run the other options describe), "
                        "measuring nothing")
    args = parser.parse_args(argv)
    if args.render:
        measured = json.loads(DOC.with_suffix(".json").read_text())
        done = {r["model"] for r in measured}
        left = [m for m in args.models.split(",") if m not in done]
        doc = document([a for a in argv if a != "--render"], args, measured)
        atomic_write_text(DOC, doc + (f"\nPartial: {', '.join(left)} not run yet when this "
                                      "was written.\n" if left else ""))
        return 0
    models = args.models.split(",")
    kept: list[dict[str, Any]] = []
    if args.append and DOC.with_suffix(".json").exists():
        kept = [r for r in json.loads(DOC.with_suffix(".json").read_text())
                if r["model"] not in models]
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, model in enumerate(models):

            def write(rows: list[dict[str, Any]], rows_left: int, i: int = i,
                      before: tuple[dict[str, Any], ...] = tuple(records)) -> None:
                """After every row: a stopped run keeps what it measured, and says so."""
                if args.no_doc:
                    return
                done = [*kept, *before, *({**r, "command": command_of(argv)} for r in rows)]
                left = ([f"{rows_left} more row(s) of {models[i]}"] if rows_left else []) + [
                    f"{m} (all its rows)" for m in models[i + 1:]]
                doc = document(argv, args, done)
                if left:
                    doc += f"\nPartial: {', '.join(left)} not run when this was written.\n"
                atomic_write_text(DOC, doc)
                atomic_write_text(DOC.with_suffix(".json"), json.dumps(done, indent=1) + "\n")

            records += [{**r, "command": command_of(argv)} for r in rows_for(
                model, args.epochs, args.kernels.split(","), Path(tmp), write)]
    print("\n".join(table(records)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
