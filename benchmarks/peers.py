"""Peers benchmark (issue #22 item 5): edgefit's plans beside the tools a user would pick instead,
on edgefit's own trained models, every runnable ONNX measured the same way in one process.

Per built-in model (fashion-cnn, lenet5-mnist, lenet300-mnist; `workloads.train.pretrained`):
  fp32        the trained model exported as edgefit exports it (cost_models.export.export_fp32);
  ORT int8    onnxruntime's quantize_static with its defaults (QDQ, MinMax, int8 per tensor) on
              the fp32 ONNX, calibrated on the same 512 training images edgefit calibrates on;
  TP50        Torch-Pruning MagnitudePruner (L1 magnitude importance, pruning_ratio 0.5: the
              name torch_pruning 1.6 gives ch_sparsity) removing 50 % of the channels of every
              layer but the classifier, then a short fine-tune, exported fp32;
  TP50 + int8 the same fine-tuned model through onnxruntime's quantize_static as above;
  mag90 + int8  torch.nn.utils.prune.global_unstructured (L1) at 90 % over every conv/linear
              weight, fine-tuned with the masks held, then onnxruntime's quantize_static;
  edgefit     `plan --target host` budgets (flash limits at 1/4 of the fp32 packed image and
              at issue #22 item 4's size target, each with and without a latency limit at the
              fp32 model's host prediction, item 4's accuracy-drop limit, distillation) made with
              edgefit.planning.make_plan and applied with edgefit.applying.apply_plan; its row is
              the model.onnx apply writes (the runnable artifact).
Accuracy: top-1 of each ONNX file on the model's whole held-out split, run by onnxruntime with the
session the latency was timed on. Latency: onnxruntime CPU, 1 thread, batch 1, default session
options (what a user gets; ORT_ENABLE_ALL), every session of a model created in one process and
timed round-robin (each round runs `--iters` calls of each file; a file's figure is the lowest
of its per-round medians over `--rounds` rounds) once every model's files are built (the builds
run in `--jobs` worker processes, none during timing); ratios are to the fp32 file, same run.
Run: .venv/bin/python benchmarks/peers.py            (writes docs/bench-peers.md + .png)
     .venv/bin/python benchmarks/peers.py --quick    (a smoke run: one model, one budget)
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: int8_qlinear

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ("fashion-cnn", "lenet5-mnist", "lenet300-mnist")
DEFAULT_OUT = ROOT / "docs" / "bench-peers.md"
FINETUNE_IMAGES = 8000  # the first training images the peers fine-tune on (MNIST has 8000)
FINETUNE_EPOCHS = 2
ZSTD_LEVEL = 19
TOOLS = ("fp32", "ORT int8", "TP50", "TP50 + int8", "mag90 + int8", "edgefit")
# the item 4 targets: accuracy drop (pp), ONNX size ratio, latency ratio, image ratio
TARGETS: dict[str, dict[str, float]] = {
    "fashion-cnn": {"drop_pp": 0.5, "onnx_ratio": 0.05, "latency_ratio": 0.30},
    "lenet5-mnist": {"drop_pp": 0.5, "onnx_ratio": 0.07, "latency_ratio": 1.0},
    "lenet300-mnist": {"drop_pp": 0.1, "image_ratio": 1 / 40},
}
# the deepest rung's flash limit: fp32 packed image / this (item 4's size target; for the CNNs
# the target is on the ONNX file, which is larger than the packed image, so the limit is on
# the image edgefit plans and the ONNX is measured)
SHRINK = {"fashion-cnn": 20, "lenet5-mnist": 14, "lenet300-mnist": 40}


@dataclass
class Row:
    """One runnable ONNX file of one model, measured."""

    workload: str
    tool: str
    recipe: str  # what was done (peers) or the plan flags (edgefit)
    accuracy: float  # top-1 fraction on the held-out split
    delta_pp: float  # vs the fp32 ONNX, percentage points (negative: worse)
    onnx_bytes: int
    onnx_ratio: float  # vs the fp32 ONNX file
    zipped_ratio: float  # zstd -19 of this file vs the fp32 ONNX file (unzipped)
    latency_us: float
    latency_ratio: float  # vs the fp32 file, same run
    image_ratio: float | None = None  # edgefit: packed flash image vs the fp32 packed image
    wall_s: float | None = None  # edgefit: plan + apply wall time
    note: str = ""


@dataclass
class Candidate:
    """A file to measure: its ONNX path and what made it."""

    tool: str
    recipe: str
    path: Path
    image_ratio: float | None = None
    wall_s: float | None = None
    note: str = ""


@dataclass
class Settings:
    rounds: int = 15
    iters: int = 200
    finetune_epochs: int = FINETUNE_EPOCHS
    finetune_images: int = FINETUNE_IMAGES
    plan_finetune: int = 2
    rungs: tuple[int, ...] = (0, 1, 2, 3)
    log: Callable[[str], None] = field(default=print)


# ---------------------------------------------------------------- measuring ONNX files


def session(path: Path) -> Any:
    """A plain onnxruntime user's session: default options, 1 intra-op thread."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _batch_of(sess: Any) -> int | None:
    """The input's fixed batch size, or None when it is dynamic."""
    dim = sess.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) else None


def accuracy(sess: Any, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of an ONNX session on (x, y): batches of 500, or one sample at a time
    when the input's batch is fixed."""
    name = sess.get_inputs()[0].name
    batch = 1 if _batch_of(sess) is not None else 500
    correct = 0
    for i in range(0, len(y), batch):
        logits = sess.run(None, {name: x[i:i + batch].astype(np.float32)})[0]
        correct += int((logits.argmax(1) == y[i:i + batch]).sum())
    return correct / len(y)


def time_round_robin(sessions: dict[str, Any], x: np.ndarray, rounds: int,
                     iters: int) -> dict[str, float]:
    """Microseconds per batch-1 call: each round runs `iters` timed calls of every session in
    turn; a session's figure is the lowest of its per-round medians (the quietest round)."""
    feeds = {k: {s.get_inputs()[0].name: x[:1].astype(np.float32)} for k, s in sessions.items()}
    for k, s in sessions.items():  # warm-up: arenas, caches
        for _ in range(20):
            s.run(None, feeds[k])
    best = dict.fromkeys(sessions, math.inf)
    for _ in range(rounds):
        for k, s in sessions.items():
            calls = np.empty(iters)
            for i in range(iters):
                t = time.perf_counter_ns()
                s.run(None, feeds[k])
                calls[i] = time.perf_counter_ns() - t
            best[k] = min(best[k], float(np.median(calls)) / 1e3)
    return best


def zipped_bytes(path: Path) -> int:
    import zstandard

    return len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(path.read_bytes()))


def measure(workload: str, candidates: list[Candidate], x_test: np.ndarray, y_test: np.ndarray,
            rounds: int, iters: int) -> list[Row]:
    """Rows for candidates[0] (the fp32 file: the reference) and the rest, all sessions
    created here and timed together."""
    sessions = {c.recipe + "|" + c.tool: session(c.path) for c in candidates}
    us = time_round_robin(sessions, x_test, rounds, iters)
    ref = candidates[0]
    ref_key = ref.recipe + "|" + ref.tool
    ref_bytes = ref.path.stat().st_size
    ref_acc = accuracy(sessions[ref_key], x_test, y_test)
    rows = []
    for c in candidates:
        key = c.recipe + "|" + c.tool
        acc = ref_acc if c is ref else accuracy(sessions[key], x_test, y_test)
        size = c.path.stat().st_size
        rows.append(Row(workload, c.tool, c.recipe, acc, 100 * (acc - ref_acc), size,
                        size / ref_bytes, zipped_bytes(c.path) / ref_bytes, us[key],
                        us[key] / us[ref_key], c.image_ratio, c.wall_s, c.note))
    return rows


# ---------------------------------------------------------------- peers


def ort_int8(fp32: Path, out: Path, calib_x: np.ndarray) -> Path:
    """onnxruntime's quantize_static with its defaults on the given calibration inputs."""
    from int8_qlinear import _ort_own

    _ort_own(fp32, out, calib_x)
    return out


def classifier(model: Any) -> Any:
    """The model's last Linear (the layer whose outputs are the classes)."""
    from torch import nn

    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def tp_prune(model: Any, input_shape: tuple[int, ...], ratio: float = 0.5) -> Any:
    """Torch-Pruning's MagnitudePruner (L1 magnitude importance): `ratio` of the channels of
    every prunable layer removed, the classifier's outputs kept. Prunes a copy."""
    import torch
    import torch_pruning as tp

    model = copy.deepcopy(model).eval()
    pruner = tp.pruner.MagnitudePruner(
        model, torch.zeros((1, *input_shape)), importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio, ignored_layers=[classifier(model)])
    pruner.step()
    return model


def magnitude_prune(model: Any, sparsity: float = 0.9) -> Any:
    """One global L1 threshold over every conv/linear weight (torch.nn.utils.prune); the masks
    stay attached (fine-tuning keeps the zeros) until `fixed`. Prunes a copy."""
    from torch import nn
    from torch.nn.utils import prune

    model = copy.deepcopy(model).eval()
    weights = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    prune.global_unstructured(weights, pruning_method=prune.L1Unstructured, amount=sparsity)
    return model


def fixed(model: Any) -> Any:
    """The pruning masks folded into the weights (plain parameters again)."""
    from torch.nn.utils import prune

    for m in model.modules():
        if prune.is_pruned(m) and hasattr(m, "weight_orig"):
            prune.remove(m, "weight")
    return model


def finetune(model: Any, train: Any, entry: Any, settings: Settings) -> Any:
    """Cross-entropy on the labels: the first `finetune_images` training images, a third of
    the model's training learning rate (one cycle), its batch size, seed 0."""
    from workloads.data import Dataset
    from workloads.train import train as train_model

    if settings.finetune_epochs == 0:
        return model
    n = min(settings.finetune_images, len(train.y))
    subset = Dataset(train.name, train.x[:n], train.y[:n], train.classes, train.source)
    return train_model(model, subset, epochs=settings.finetune_epochs, lr=entry.lr / 3,
                       batch_size=entry.batch_size, label="fine-tune peer")


def peers(name: str, tmp: Path, calib_x: np.ndarray, settings: Settings) -> list[Candidate]:
    """The fp32 file first, then onnxruntime int8, Torch-Pruning 50 % (+ int8) and magnitude
    90 % + int8; a peer that fails is logged and left out (its reason in the doc)."""
    from cost_models.export import export_fp32
    from workloads.data import load_dataset
    from workloads.train import pretrained

    trained = pretrained(name)
    entry, shape = trained.entry, trained.entry.input_shape
    train, _ = load_dataset(entry.dataset)
    fp32 = tmp / "fp32.onnx"
    export_fp32(copy.deepcopy(trained.model), shape, fp32)
    ft = f"{settings.finetune_epochs} ep on {min(settings.finetune_images, len(train.y))} imgs"
    out = [Candidate("fp32", "trained model, exported", fp32),
           Candidate("ORT int8", "quantize_static defaults", ort_int8(fp32, tmp / "ort.onnx",
                                                                       calib_x))]
    tp50 = finetune(tp_prune(trained.model, shape), train, entry, settings)
    export_fp32(tp50, shape, tmp / "tp50.onnx")
    out += [Candidate("TP50", f"channels -50 %, fine-tune {ft}", tmp / "tp50.onnx"),
            Candidate("TP50 + int8", f"channels -50 %, fine-tune {ft}, quantize_static",
                      ort_int8(tmp / "tp50.onnx", tmp / "tp50-int8.onnx", calib_x))]
    mag = fixed(finetune(magnitude_prune(trained.model), train, entry, settings))
    export_fp32(mag, shape, tmp / "mag90.onnx")
    out.append(Candidate("mag90 + int8", f"global 90 %, fine-tune {ft}, quantize_static",
                         ort_int8(tmp / "mag90.onnx", tmp / "mag90-int8.onnx", calib_x)))
    return out


# ---------------------------------------------------------------- edgefit


def fp32_prediction(name: str) -> tuple[float, float]:
    """(packed fp32 image bytes, predicted host latency in ms) of the model with every layer at
    fp32: the plan `plan --target host --pin <every layer>=fp32` makes."""
    from device_specs.budget import Budget, Limits
    from edgefit.planning import make_plan

    budget = Budget(target="host", limits=Limits(), model=name)
    probe, _ = make_plan(budget, "bench")
    plan, _ = make_plan(budget, "bench", pins=dict.fromkeys(probe.layers, "fp32"))
    assert plan.totals is not None
    return plan.totals.flash_bytes, plan.totals.latency_ms


def ladder(name: str, fp32_bytes: float, fp32_ms: float,
           settings: Settings) -> list[dict[str, str]]:
    """The budgets, as plan's limit flags: flash at 1/4 of the fp32 image (int8's size) and at
    the model's item-4 size target (SHRINK), each alone and with a latency limit at the fp32
    model's own host prediction; every one with the model's item-4 accuracy-drop limit."""
    drop = f"{TARGETS[name]['drop_pp']:g}pp"
    rungs = []
    for fraction in (4, SHRINK[name]):
        flash = f"{fp32_bytes / fraction / 1000:.1f}KB"
        rungs.append({"flash": flash, "accuracy_drop": drop})
        rungs.append({"flash": flash, "latency": f"{fp32_ms * 1000:.1f}us",
                      "accuracy_drop": drop})
    return [rungs[i] for i in settings.rungs if i < len(rungs)]


def flags(limits: dict[str, str], epochs: int) -> str:
    names = {"flash": "--max-flash", "latency": "--max-latency",
             "accuracy_drop": "--max-accuracy-drop"}
    text = " ".join(f"{names[k]} {v}" for k, v in limits.items())
    return text + (f" --finetune {epochs}" if epochs else "")


def edgefit_rows(name: str, tmp: Path, settings: Settings) -> tuple[list[Candidate], list[str]]:
    """One candidate per budget of the ladder: plan (host target) + apply, wall time of both;
    and the budgets that gave no file (infeasible or failed), with why."""
    from device_specs.budget import Budget, Limits
    from edgefit.applying import apply_plan
    from edgefit.planning import make_plan

    fp32_bytes, fp32_ms = fp32_prediction(name)
    settings.log(f"{name}: fp32 packed image {fp32_bytes:.0f} B, host prediction "
                 f"{fp32_ms * 1000:.1f} us")
    out, missing = [], []
    for i, limits in enumerate(ladder(name, fp32_bytes, fp32_ms, settings)):
        recipe = f"E{i + 1}: " + flags(limits, settings.plan_finetune)
        start = time.perf_counter()
        try:
            budget = Budget(target="host", limits=Limits.model_validate(limits), model=name)
            plan, _ = make_plan(budget, "bench", finetune_epochs=settings.plan_finetune)
            if not plan.feasible:
                settings.log(f"{name} {recipe}: {plan.status}")
                missing.append(f"{name} `{recipe}` ({plan.status})")
                continue
            report = apply_plan(plan, tmp / f"edgefit-{i}")
        except Exception:  # noqa: BLE001 (one failed budget must not lose the others)
            settings.log(f"{name} {recipe}: failed\n{traceback.format_exc()}")
            missing.append(f"{name} `{recipe}` (failed: see the log)")
            continue
        wall = time.perf_counter() - start
        art, acc = report["artifacts"], report["accuracy"]
        predicted = plan.totals.latency_ms * 1000 if plan.totals else float("nan")
        note = (f"apply: {100 * acc['compressed']:.2f} % (simulated "
                f"{100 * acc['simulated']:.2f} %), predicted {predicted:.1f} us")
        out.append(Candidate("edgefit", recipe, Path(art["onnx"]),
                             art["flash_image_bytes"] / fp32_bytes, wall, note))
    return out, missing


# ---------------------------------------------------------------- the document


HEADER = ("| model | tool | recipe / budget | accuracy | Δ pp | ONNX bytes | ONNX × | zstd × | "
          "latency µs | latency × | packed image × | plan+apply s | note |")


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(rows: list[Row]) -> list[str]:
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for r in rows:
        lines.append(
            f"| {r.workload} | {r.tool} | {r.recipe} | {100 * r.accuracy:.2f} % | "
            f"{r.delta_pp:+.2f} | {r.onnx_bytes:,} | {r.onnx_ratio:.3f} | {r.zipped_ratio:.3f} | "
            f"{r.latency_us:.1f} | {r.latency_ratio:.2f} | {_num(r.image_ratio, '.4f')} | "
            f"{_num(r.wall_s, '.0f')} | {r.note} |")
    return lines


def parse_table(text: str) -> list[Row]:
    """The rows of the doc's table (the inverse of `table`, to the printed precision)."""
    rows = []
    lines = text.splitlines()
    start = lines.index(HEADER) + 2
    for line in lines[start:]:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        opt = [None if c == "-" else float(c) for c in cells[10:12]]
        rows.append(Row(cells[0], cells[1], cells[2], float(cells[3].rstrip(" %")) / 100,
                        float(cells[4]), int(cells[5].replace(",", "")), float(cells[6]),
                        float(cells[7]), float(cells[8]), float(cells[9]), opt[0], opt[1],
                        cells[12] if len(cells) > 12 else ""))
    return rows


def dominates(a: Row, b: Row) -> bool:
    """a is at least as accurate, as small (ONNX file) and as fast as b, and better in one."""
    no_worse = (a.delta_pp >= b.delta_pp and a.onnx_ratio <= b.onnx_ratio
                and a.latency_ratio <= b.latency_ratio)
    return no_worse and (a.delta_pp > b.delta_pp or a.onnx_ratio < b.onnx_ratio
                         or a.latency_ratio < b.latency_ratio)


def verdicts(rows: list[Row]) -> list[str]:
    """Per model: the item-4 target met by which edgefit row, or the nearest miss; which peers
    some edgefit row dominates."""
    out = []
    for name in dict.fromkeys(r.workload for r in rows):
        mine = [r for r in rows if r.workload == name and r.tool == "edgefit"]
        others = [r for r in rows if r.workload == name and r.tool not in ("edgefit", "fp32")]
        out.append(f"- **{name}**: " + _target_line(name, mine) + " " + _dominance_line(mine,
                                                                                        others))
    return out


def _target_line(name: str, mine: list[Row]) -> str:
    target = TARGETS.get(name)
    if target is None:
        return "no item-4 target."
    wanted = ", ".join(f"{k.replace('_', ' ')} {'≥ −' if k == 'drop_pp' else '≤ '}{v:g}"
                       for k, v in target.items())

    def misses(r: Row) -> list[str]:
        got = {"drop_pp": -r.delta_pp, "onnx_ratio": r.onnx_ratio,
               "latency_ratio": r.latency_ratio, "image_ratio": r.image_ratio}
        return [f"{k.replace('_', ' ')} {_num(got[k], '.3g')} > {v:g}"
                for k, v in target.items() if (g := got[k]) is None or g > v + 1e-9]

    if not mine:
        return f"item-4 target ({wanted}): no edgefit row (every budget infeasible or failed)."
    met = [r for r in mine if not misses(r)]
    if met:
        return f"item-4 target ({wanted}) **met** by `{met[0].recipe}`."
    each = "; ".join(f"{r.recipe.split(':')[0]} {', '.join(misses(r))}" for r in mine)
    return f"item-4 target ({wanted}) **missed** by every budget: {each}."


def _dominance_line(mine: list[Row], others: list[Row]) -> str:
    beaten = [o.tool for o in others if any(dominates(m, o) for m in mine)]
    free = [o.tool for o in others if o.tool not in beaten]
    return (f"Dominated by an edgefit row (Δ pp, ONNX ×, latency × all no worse): "
            f"{', '.join(beaten) or 'none'}; not dominated: {', '.join(free) or 'none'}.")


X_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
LABEL_OFFSETS = {"fp32": (5, 4), "ORT int8": (5, -11), "TP50": (5, 4), "TP50 + int8": (5, -11),
                 "mag90 + int8": (5, 6), "edgefit": (5, 4)}


def _labels(pts: list[Row]) -> dict[tuple[float, float, float], str]:
    """One label per distinct point of a tool: edgefit budgets that gave the same file share
    it ("E3,E4 "); int8 peers on one point get their labels apart by LABEL_OFFSETS."""
    out: dict[tuple[float, float, float], str] = {}
    for r in pts:
        key = (r.onnx_ratio, r.latency_ratio, r.delta_pp)
        tag = r.recipe.split(":")[0] if r.tool == "edgefit" else ""
        out[key] = ",".join(t for t in (out.get(key, "").strip(), tag) if t) + (
            " " if tag else "")
    return out


def plot(rows: list[Row], path: Path) -> None:
    """ONNX size ratio (log x) vs latency ratio, one panel per model, a marker per tool, each
    point labelled with its Δ pp."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r.workload for r in rows))
    markers = dict(zip(TOOLS, "o^sDvP", strict=True))
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for tool in TOOLS:
            pts = [r for r in rows if r.workload == name and r.tool == tool]
            if not pts:
                continue
            ax.scatter([r.onnx_ratio for r in pts], [r.latency_ratio for r in pts],
                       marker=markers[tool], s=70 if tool == "edgefit" else 45, label=tool,
                       edgecolors="black", linewidths=0.5, zorder=3)
            for (x, y, delta), tags in _labels(pts).items():
                ax.annotate(f"{tags}{delta:+.2f}", (x, y), fontsize=7,
                            xytext=LABEL_OFFSETS[tool], textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(X_TICKS))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_title(name)
        ax.set_xlabel("ONNX file size / fp32 (log)")
        ax.set_ylabel("host latency / fp32 (1 thread, batch 1)")
        ax.grid(True, which="both", lw=0.3)
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle("labels: accuracy change vs fp32 (pp, held-out split); E1..: edgefit budgets",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


VERDICTS = "## Against issue #22's item 4"


def verdict_lines(rows: list[Row]) -> list[str]:
    return [*verdicts(rows), "", "(This section and the plot derive from the table alone; "
            "`benchmarks/peers.py --plot-only` redraws them from it.)"]


def redraw(doc: Path) -> None:
    """The PNG and the item-4 section made again from the doc's table (both derive from it
    alone), the rest of the doc as the run wrote it."""
    from edgefit_common.fsutil import atomic_write_text

    text = doc.read_text()
    rows = parse_table(text)
    plot(rows, doc.with_suffix(".png"))
    if VERDICTS in text:
        head, tail = text.split(VERDICTS, 1)
        blocks = tail.strip("\n").split("\n\n")  # the bullets, [the note], what follows
        blocks = blocks[1:]
        if blocks and blocks[0].startswith("(This section"):
            blocks = blocks[1:]
        rest = "\n\n".join(blocks) + "\n" if blocks else ""
        atomic_write_text(doc, head + VERDICTS + "\n\n" + "\n".join(verdict_lines(rows))
                          + "\n" + ("\n" + rest if rest else ""))


def versions() -> str:
    import onnxruntime
    import torch
    import torch_pruning

    return (f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}, "
            f"torch_pruning {torch_pruning.__version__}")


def document(command: str, rows: list[Row], load: tuple[float, float], wall_s: float,
             settings: Settings, png: str, missing: Sequence[str] = ()) -> str:
    return "\n".join([
        "# edgefit beside its peers, measured", "",
        f"Made by `{command}`; every number below is from that run ({versions()}; "
        f"{os.cpu_count()} cores, 1-minute load average {load[0]:.2f} at the start and "
        f"{load[1]:.2f} at the end: the machine is shared with other jobs, so absolute "
        "latencies carry their noise; ratios are measured in the same interleaved run). "
        f"Wall time {wall_s:.0f} s.", "",
        (__doc__ or "").split("\n\n")[1].strip(), "",
        f"Peers fine-tune {settings.finetune_epochs} epoch(s) on the first "
        f"{settings.finetune_images} training images (cross-entropy on labels). edgefit's "
        f"budgets use `--finetune {settings.plan_finetune}` (distillation against the fp32 "
        "model, run by apply) and no `--loop`. Δ pp is against the fp32 ONNX on the same "
        "split. ONNX × is the file's size over the fp32 file's; zstd × is the file compressed "
        f"by zstd -{ZSTD_LEVEL} over the fp32 file uncompressed (what a sparse model saves in "
        "transfer); packed image × is edgefit's model.flash.bin (what a device stores) over "
        "the fp32 packed image of the same model (the all-fp32 plan's exact image bytes). "
        "edgefit's note gives apply's own accuracy of the same file (its session options) and "
        "the plan's predicted host latency.", "",
        *table(rows), "",
        f"![size x latency x accuracy]({png})", "",
        VERDICTS, "",
        *verdict_lines(rows), "",
        *([f"Left out (failed or infeasible, see the run's log): {', '.join(missing)}.", ""]
          if missing else []),
    ])


# ---------------------------------------------------------------- main


def build(name: str, tmp: Path, settings: Settings) -> tuple[list[Candidate], list[str]]:
    """Every file of one model (the fp32 file first) and what could not be made; run in a
    worker process of its own (files under tmp)."""
    from edgefit.planning import calibration_split
    from workloads.zoo import ZOO

    tmp.mkdir(parents=True, exist_ok=True)
    calib = calibration_split(ZOO[name].dataset)
    assert calib is not None
    candidates = peers(name, tmp, calib[0], settings)
    mine, missing = edgefit_rows(name, tmp, settings)
    return candidates + mine, missing


def workload_rows(name: str, candidates: list[Candidate], settings: Settings) -> list[Row]:
    """The model's files measured on its held-out split, timed together."""
    from workloads.data import load_dataset
    from workloads.zoo import ZOO

    _, test = load_dataset(ZOO[name].dataset)
    settings.log(f"{name}: timing {len(candidates)} files")
    rows = measure(name, candidates, test.x, test.y, settings.rounds, settings.iters)
    for line in table(rows)[2:]:
        settings.log(line)
    return rows


def build_all(models: list[str], tmp: Path, settings: Settings,
              jobs: int) -> dict[str, tuple[list[Candidate], list[str]]]:
    """Each model's files, `jobs` models at a time (spawned workers: nothing of torch's is
    forked); a model whose build fails is logged and left out."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    built: dict[str, tuple[list[Candidate], list[str]]] = {}
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {m: pool.submit(build, m, tmp / m, settings) for m in models}
        for name, future in futures.items():
            try:
                built[name] = future.result()
            except Exception:  # noqa: BLE001 (one model's failure must not lose the others)
                settings.log(f"{name}: build failed\n{traceback.format_exc()}")
    return built


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--models", default=",".join(WORKLOADS),
                    help=f"comma-separated, from {', '.join(WORKLOADS)}")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--jobs", type=int, default=2, help="models built at once (worker "
                    "processes); every file is timed after all are built, in this process")
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG and the item-4 "
                    "section from the table in --out (no measuring)")
    ap.add_argument("--quick", action="store_true", help="smoke run: lenet300-mnist only, one "
                    "budget without fine-tuning, 1 fine-tune epoch on 1000 images, 3 rounds")
    args = ap.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    if bad := [m for m in args.models if m not in WORKLOADS]:
        ap.error(f"--models: unknown {', '.join(bad)}; allowed: {', '.join(WORKLOADS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    settings = Settings(rounds=args.rounds, iters=args.iters)
    if args.quick:
        args.models = ["lenet300-mnist"] if args.models == list(WORKLOADS) else args.models
        settings = Settings(rounds=3, iters=30, finetune_epochs=1, finetune_images=1000,
                            plan_finetune=0, rungs=(0,))
    if args.plot_only:
        redraw(args.out)
        return 0
    from edgefit_common.fsutil import atomic_write_text

    load_start, start = os.getloadavg()[0], time.perf_counter()
    command = shlex.join([".venv/bin/python", "benchmarks/peers.py", *argv])
    rows: list[Row] = []
    missing: list[str] = []
    text = "nothing was measured"
    png = args.out.with_suffix(".png")
    with tempfile.TemporaryDirectory() as d:
        built = build_all(args.models, Path(d), settings, max(1, args.jobs))
        settings.log(f"built in {time.perf_counter() - start:.0f} s; timing")
        for name in args.models:
            if name not in built:
                missing.append(f"{name} (its build failed: see the log)")
                continue
            rows += workload_rows(name, built[name][0], settings)
            missing += built[name][1]
            plot(rows, png)  # after each model, so a long run's finished part is never lost
            text = document(command, rows, (load_start, os.getloadavg()[0]),
                            time.perf_counter() - start, settings, png.name, missing)
            atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
