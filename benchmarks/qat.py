"""Quantisation-aware fine-tuning (QAT) vs post-training quantisation (PTQ), measured.

Every planned layer of a built-in model gets the same weight precision (int4, int3, int2;
activations float, as the plan's weight-only options). PTQ quantises the trained weights as
apply does (techniques.fakequant.quantized_copy, per-channel symmetric). QAT first distils the
student against the fp32 model *through* that quantisation (executors.qat, straight-through
gradients, DistillConfig(quantization_aware=True)) and then quantises the tuned weights the same
way. A second recipe prunes 50 % of every layer's weights first (magnitude): there plain
distillation (same epochs, no QAT) followed by PTQ is the control, since fine-tuning alone
already recovers part of the pruning loss. In the quantisation-only recipes plain distillation
is not a meaningful control: the float student *is* the teacher (validation KL 0 at epoch 0), so
early stopping keeps the starting weights and it equals PTQ.

Accuracy is top-1 of the quantised torch model on the full held-out split (what apply reports
as "compressed"); KL is mean KL(fp32 || quantised) over the same images, in nats. One seed.

Run: .venv/bin/python benchmarks/qat.py  (prints the table, writes docs/bench-qat.md)
Options: --epochs N --models a,b --bits 4,3,2 --no-doc
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cost_models.capture import capture
from edgefit_common.fsutil import atomic_write_text
from executors.distill import distill, output_kl
from techniques.distill import DistillConfig
from techniques.fakequant import quantized_copy
from techniques.prune import UnstructuredPruneConfig, prune_unstructured
from techniques.quantize import QuantizeConfig
from workloads.data import Dataset, load_dataset
from workloads.train import evaluate, pretrained
from workloads.zoo import ZOO

MODELS = ("lenet5-mnist", "fashion-cnn")
CALIBRATION_IMAGES = 512
DOC = Path(__file__).parents[1] / "docs" / "bench-qat.md"


@dataclass(frozen=True)
class Row:
    model: str
    recipe: str
    method: str
    accuracy: float
    kl: float
    epochs_run: int
    seconds: float


def _run(name: str, recipe: str, bits: int, prune: bool, epochs: int, teacher: nn.Module,
         train: Dataset, test: Dataset) -> list[Row]:
    """PTQ, QAT and (pruned recipes) plain distillation + PTQ of one recipe."""
    layers = capture(teacher, ZOO[name].input_shape, name).layer_names
    cfg = QuantizeConfig.model_validate({"weights": f"int{bits}", "activations": "fp32"})
    quant = {n: cfg for n in layers}
    techniques = {n: [cfg] for n in layers}
    calib = train.x[:CALIBRATION_IMAGES]
    start = copy.deepcopy(teacher)
    if prune:
        for n in layers:
            prune_unstructured(start.get_submodule(n), UnstructuredPruneConfig(sparsity=0.5))
    methods: list[tuple[str, bool | None]] = [("PTQ", None)]
    if prune:
        methods.append(("distill + PTQ", False))
    methods.append(("QAT", True))
    rows = []
    for method, qat in methods:
        t0 = time.perf_counter()
        student, epochs_run = copy.deepcopy(start), 0
        if qat is not None:
            config = DistillConfig(epochs=epochs, quantization_aware=qat)
            student, rep = distill(student, teacher, train, config, quantized=quant,
                                   calibration=calib)
            epochs_run = rep.epochs_run
            assert rep.zeros_kept and rep.quantization_aware == qat
        q = quantized_copy(student, techniques, calib)
        row = Row(name, recipe, method, evaluate(q, test), output_kl(q, teacher, test.x),
                  epochs_run, time.perf_counter() - t0)
        print(f"{row.model:14s} {row.recipe:22s} {row.method:14s} acc {100 * row.accuracy:6.2f} %"
              f"  KL {row.kl:.4f}  epochs {row.epochs_run}  {row.seconds:6.1f} s", flush=True)
        rows.append(row)
    return rows


def _table(rows: list[Row], fp32: dict[str, float]) -> str:
    lines = ["| model | recipe | method | accuracy % | vs PTQ (pp) | vs fp32 (pp) | KL to fp32 "
             "| epochs run | s |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    ptq = {(r.model, r.recipe): r.accuracy for r in rows if r.method == "PTQ"}
    for r in rows:
        lines.append(f"| {r.model} | {r.recipe} | {r.method} | {100 * r.accuracy:.2f} | "
                     f"{100 * (r.accuracy - ptq[r.model, r.recipe]):+.2f} | "
                     f"{100 * (r.accuracy - fp32[r.model]):+.2f} | {r.kl:.4f} | "
                     f"{r.epochs_run} | {r.seconds:.0f} |")
    return "\n".join(lines)


def _doc(table: str, fp32: dict[str, float], sizes: dict[str, str], argv: list[str],
         seconds: float, epochs: int) -> str:
    cmd = " ".join([".venv/bin/python benchmarks/qat.py", *argv])
    base = "; ".join(f"{m}: fp32 {100 * a:.2f} % on {sizes[m]}" for m, a in fp32.items())
    return f"""# QAT vs PTQ (issue #3)

Produced by `{cmd}` ({seconds / 60:.1f} min on this 2-core machine, shared with other jobs;
the seconds per row are as noisy as that makes them). Regenerate with the same command.

Every planned layer takes the same weight precision (symmetric per-channel int codes,
activations float: the plan's weight-only options). **PTQ**: the trained weights quantised as
`edgefit apply` does. **QAT**: {epochs} epoch(s) at most of distillation against the fp32 model
with the forward through the quantisation (`executors/qat.py`: fake-quantised weights,
straight-through gradients; early stopping on the quantised student's validation KL), then the
tuned weights quantised the same way. **distill + PTQ** (pruned recipe only): the same epochs of
plain distillation, then PTQ; the control that separates "fine-tuned" from "fine-tuned through
the quantisation". In the quantisation-only recipes that control is PTQ itself: the float
student equals the teacher, so plain distillation keeps its starting weights.

Accuracy: top-1 of the quantised model on the full held-out split ({base}). KL: mean
KL(fp32 || quantised) on the same images (nats). Training: the training split, 10 % of it held
out for early stopping; seed 0, one run per row. One test image is 0.05 pp of 2000 images and
0.01 pp of 10000; with one seed, accuracy differences of a few tenths of a point are within
noise: the KL column is the steadier signal.

{table}

In `edgefit`: `plan ... --finetune E --qat` stores `DistillConfig(quantization_aware=True)`;
`edgefit apply` then fine-tunes through the plan's own per-layer quantisation (int8 activation
scales calibrated first), also for quantisation-only plans.
"""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--bits", default="4,3,2")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    rows: list[Row] = []
    fp32: dict[str, float] = {}
    sizes: dict[str, str] = {}
    for name in args.models.split(","):
        teacher = pretrained(name).model.eval()
        train, test = load_dataset(ZOO[name].dataset)
        fp32[name] = evaluate(teacher, test)
        sizes[name] = f"{len(test.y)} {ZOO[name].dataset} test images"
        print(f"{name}: fp32 accuracy {100 * fp32[name]:.2f} % ({sizes[name]}; "
              f"{len(train.y)} training images)", flush=True)
        for bits in (int(b) for b in args.bits.split(",")):
            rows += _run(name, f"int{bits} weights", bits, False, args.epochs, teacher,
                         train, test)
        rows += _run(name, "prune 50 % + int4", 4, True, args.epochs, teacher, train, test)
    table = _table(rows, fp32)
    seconds = time.perf_counter() - t0
    print(table)
    print(f"total {seconds:.0f} s")
    if not args.no_doc:
        atomic_write_text(DOC, _doc(table, fp32, sizes, argv, seconds, args.epochs))
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
