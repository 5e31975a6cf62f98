"""TFLM's arena and the .tflite size: measured by tflite-micro against edgefit's predictions.

For the built-in models an MCU profile plans (workloads.zoo: LeNet-5 -- the Arduino demo's
model --, LeNet-300-100, the Fashion CNN) and the three MLPerf Tiny reference models
(workloads.mlperf_tiny when present, else the builders below, from the MLPerf Tiny
descriptions: DS-CNN KWS, ResNet-8 IC, MobileNetV1-0.25 VWW; BatchNorm folded, untrained
weights: the arena and the file size do not depend on weight values), all layers int8
(weights per channel, activations per tensor) on the Arduino Nano 33 BLE's TFLM profile:

* the all-int8 .tflite, written as ``apply`` writes it (executors.tflite.convert: litert-torch
  + ai-edge-quantizer in the tool virtualenv) and run by tflite-micro: the smallest arena it
  allocates and runs in (bisection, 16-byte steps) and the recording allocator's head (planned
  tensors) / tail (persistent) split;
* edgefit's RAM prediction before this model (the planner's liveness peak, activations only:
  the profile's runtime_ram is outside TFLM's arena) and the TFLM arena model
  (cost_models.tflm_arena.predict_arena, from the layer graph alone), with the greedy planner
  replayed on the file's own graph beside it (what the allocator model gets when the graph is
  right);
* the .tflite's bytes predicted (cost_models.tflite_size) against the written file.

Run: .venv/bin/python benchmarks/tflm_arena.py [--models a,b]   (needs .venv-tflite)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cost_models import tflm_arena
from cost_models.analytical import build_cost_table
from cost_models.capture import capture
from cost_models.host_probe import target_spec
from cost_models.tflite_size import TfliteSize, name_bytes, predict_tflite_bytes
from cost_models.tflm_structs import HOST_BUILD, TflmBuild
from edgefit.planning import build_problem
from edgefit_common.fsutil import atomic_write_text
from executors.tflite import convert, inspect, tool_python
from workloads.fuse import fuse_bn
from workloads.train import pretrained

TARGET, PROFILE = "arduino-nano-33-ble", "tflm-cmsis-nn"
BOARD_BUILD = TflmBuild(pointer_bytes=4, compression=False, kernels="cmsis-nn", simd="dsp")
PUBLISHED_ARENA_KB = {"kws": 21.4, "ic": 54.0, "vww": 156.4}  # mcu-published.md, S-MLTK
PUBLISHED_TFLITE_KB = {"kws": 53.7, "ic": 99.3, "vww": 334.2}


@dataclass(frozen=True)
class Bench:
    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    published: str | None = None  # key in mcu-published.md
    held_out: bool = False
    mix: tuple[tuple[str, int], ...] = ()  # (layer, weight bits: 8 or 32) where not all int8

    @property
    def key(self) -> str:
        return self.name.split()[0] + ("-" + "-".join(str(b) for _, b in self.mix)
                                       if self.mix else "")

    def bits(self, layers: list[str]) -> dict[str, int]:
        return {n: dict(self.mix).get(n, 8) for n in layers}


def _tiny(key: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from workloads.mlperf_tiny import tiny_model

        return _chained(tiny_model(key))
    return build


class Chain(nn.Module):
    """workloads.mlperf_tiny's DS-CNN / MobileNetV1 / autoencoder with the same modules (and
    weights) held in an nn.Sequential. Their ModuleList form, iterated with zip() or
    enumerate(), does not convert through apply's tensor-name-to-layer mapping ("depthwise.0:
    no operator of the converted .tflite holds its weights"): an issue of executors.tflite,
    reported with this bench. Same layers, shapes and operators."""

    def __init__(self, features: list[nn.Module], head: list[nn.Module]) -> None:
        super().__init__()
        self.features = nn.Sequential(*features)
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


def _chained(model: Any) -> nn.Module:
    if hasattr(model, "depthwise"):
        stem = getattr(model, "conv1", None) or model.stem
        feats: list[nn.Module] = [stem, nn.ReLU()]
        for dw, pw in zip(model.depthwise, model.pointwise, strict=True):
            feats += [dw, nn.ReLU(), pw, nn.ReLU()]
        return Chain([*feats, model.pool], [model.fc]).eval()
    if hasattr(model, "layers"):
        layers: list[nn.Module] = []
        for lin in model.layers:
            layers += [lin, nn.ReLU()]
        return Chain([nn.Identity()], layers[:-1]).eval()
    return model


def _trained(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return pretrained(name).model.eval()
    return build


def _mobilenet() -> nn.Module:
    from workloads.mobilenet import MobileNetV2Small

    torch.manual_seed(0)
    return fuse_bn(MobileNetV2Small().eval())


def benches() -> list[Bench]:
    """The fit set (the tail constants of cost_models.tflm_arena were solved on these) and
    the held-out models (never used to set a constant)."""
    from workloads.mlperf_tiny import TINY_MODELS

    zoo = [Bench(n, _trained(n), (1, 28, 28))
           for n in ("lenet5-mnist", "lenet300-mnist", "fashion-cnn")]
    tiny = [Bench(f"{k} {m.description.split(',')[0]}", _tiny(k),
                  tuple(m.input_shape), k) for k, m in TINY_MODELS.items()]
    held = [Bench("mobilenetv2-small (untrained weights)", _mobilenet, (1, 28, 28),
                  held_out=True)]
    # mixed precision: the demo's plan (conv1 int8, the rest fp32) and its reverse
    mixed = [Bench("lenet5-mnist mixed: conv1 int8, the rest fp32 (make demo's plan)",
                   _trained("lenet5-mnist"), (1, 28, 28),
                   mix=(("conv1", 8), ("conv2", 32), ("fc1", 32), ("fc2", 32), ("fc3", 32))),
             Bench("lenet5-mnist mixed: conv1 fp32, conv2 / fc1 / fc3 int8, fc2 fp32",
                   _trained("lenet5-mnist"), (1, 28, 28), held_out=True,
                   mix=(("conv1", 32), ("conv2", 8), ("fc1", 8), ("fc2", 32), ("fc3", 8)))]
    return zoo + tiny + held + mixed


@dataclass
class Row:
    bench: Bench
    measured: int
    head: int
    tail: int
    kinds: dict[str, Any]
    before: float  # the planner's RAM before the TFLM model (liveness peak, activations)
    planner: float  # the planner's RAM now (linear terms: problem peak - runtime_ram)
    predicted: tflm_arena.ArenaPrediction  # greedy plan + tail, from the layer graph
    file_head: int  # greedy planner replayed on the file's graph
    file_liveness: int
    tflite_bytes: int
    tflite: TfliteSize
    image_bytes: float  # the plan's model flash: edgefit's EDGEFIT1 image
    tensors: int
    ops: int
    names: int  # the tensors' names as apply writes them (computed)
    board_planner: float  # the planner's RAM in the board's build (what `plan` holds)
    board: tflm_arena.ArenaPrediction  # the arena model in the board's build


def _problem_peak(graph: Any, table: Any, tflm: bool, bits: dict[str, int],
                  build: TflmBuild | None = HOST_BUILD) -> tuple[float, float]:
    """(peak RAM beyond the profile's runtime_ram, the EDGEFIT1 image bytes) of the plan, its
    TFLM terms in ``build`` (default: the build measured here; None: the board's)."""
    table = replace(table, memory=replace(table.memory, tflm_arena=tflm,
                                          tflm_build=build or table.memory.tflm_build))
    problem = build_problem(graph, table, {})
    chosen = {ly: next(c for c in problem.choices[ly]
                       if c.option == ("int8" if bits[ly] == 8 else "fp32"))
              for ly in problem.layers}
    image = sum(c.flash_bytes for c in chosen.values()) + problem.fixed["image_overhead_bytes"]
    return problem.peak_ram(chosen) - table.runtime_ram_bytes, image


def _convert_and_run(bench: Bench, model: nn.Module, graph: Any, tmp: Path) -> dict[str, Any]:
    """The all-int8 .tflite as apply writes it, run by tflite-micro: its graph, TFLM's arena
    and allocations, its size."""
    layers: dict[str, dict[str, int | None]] = {
        n: {"weights": 8, "activations": 8} if b == 8 else {"weights": None, "activations": None}
        for n, b in bench.bits(graph.layer_names).items()}
    x = np.random.default_rng(0).random((16, *bench.input_shape), dtype=np.float32)
    path = tmp / "model.tflite"
    convert(layers, model, x, path, target_spec(TARGET).profile(PROFILE), tmp)
    facts = inspect(path, list(layers), x[:2], True, tmp)
    tflm = facts["tflm"]
    if not tflm or not tflm.get("ran"):
        raise SystemExit(f"{bench.name}: TFLM did not run it: {tflm}")
    return {"graph": facts["tflm_graph"], "tflm": tflm, "bytes": path.stat().st_size}


def measure(bench: Bench, tmp: Path, facts_dir: Path | None = None, reuse: bool = False
            ) -> Row:
    model = bench.build()
    graph = capture(model, bench.input_shape, bench.name)
    spec = target_spec(TARGET)
    table = build_cost_table(graph, spec, PROFILE)
    bits = bench.bits(graph.layer_names)
    before, image = _problem_peak(graph, table, False, bits)
    planner, _ = _problem_peak(graph, table, True, bits)
    board_planner, _ = _problem_peak(graph, table, True, bits, None)
    prediction = tflm_arena.predict_arena(graph, {n: b / 8 for n, b in bits.items()})
    board = tflm_arena.predict_arena(graph, {n: b / 8 for n, b in bits.items()},
                                     build=table.memory.tflm_build or BOARD_BUILD)
    size = predict_tflite_bytes(graph, {n: None if b == 32 else 8 for n, b in bits.items()},
                                {n: b for n, b in bits.items()})
    saved = None if facts_dir is None else facts_dir / f"{bench.key}.json"
    if reuse and saved is not None and saved.exists():
        known = json.loads(saved.read_text())
    else:
        known = _convert_and_run(bench, model, graph, tmp)
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(json.dumps(known))
    tflm, fg = known["tflm"], known["graph"]
    buffers = tflm_arena.file_buffers(fg)
    alloc = tflm["allocations"]
    conv = tflm_arena.converted_graph(graph, [n for n, b in bits.items() if b == 8])
    return Row(bench, tflm["arena_bytes"], alloc["head"], alloc["tail"], alloc["kinds"],
               before, planner, prediction, tflm_arena.arena_head_bytes(buffers),
               tflm_arena.liveness_peak_bytes(buffers), known["bytes"], size, image,
               conv.tensor_count, len(conv.ops), name_bytes(conv), board_planner, board)


def _pct(a: float, b: float) -> str:
    return f"{100 * (a / b - 1):+.1f} %"


def _label(r: Row) -> str:
    return f"{r.bench.name}{' (held out)' if r.bench.held_out else ''}"


def arena_table(rows: list[Row]) -> list[str]:
    out = ["| model | measured arena B (head + tail) | edgefit before: liveness peak B "
           "| planner now (linear terms) B | arena model B (head + tail) | greedy plan vs "
           "liveness on the file's graph B | published arena KB (S-MLTK) |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        p = r.predicted
        pub = PUBLISHED_ARENA_KB.get(r.bench.published or "")
        out.append(
            f"| {_label(r)} | {r.measured:,} ({r.head:,} + {r.tail:,}) | {r.before:,.0f} "
            f"({_pct(r.before, r.measured)}) | {r.planner:,.0f} ({_pct(r.planner, r.measured)})"
            f" | {p.total_bytes:,} ({p.head_bytes:,} + {p.tail_bytes:,}; "
            f"{_pct(p.total_bytes, r.measured)}) | {r.file_head:,} vs {r.file_liveness:,} "
            f"({_pct(r.file_head, r.file_liveness)}) | "
            f"{'' if pub is None else f'{pub:g} (measured {_pct(r.measured / 1024, pub)})'} |")
    return out


def board_table(rows: list[Row]) -> list[str]:
    """The same models in the board's build: what `plan` holds against the limit."""
    build = BOARD_BUILD.describe()
    out = [f"| model | measured here B | arena model, this machine's build B | arena model, "
           f"the board's build ({build}) B (head + tail) | planner, board's build B | "
           "published arena KB (S-MLTK) |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        b = r.board
        pub = PUBLISHED_ARENA_KB.get(r.bench.published or "")
        out.append(
            f"| {_label(r)} | {r.measured:,} | {r.predicted.total_bytes:,} | {b.total_bytes:,} "
            f"({b.head_bytes:,} + {b.tail_bytes:,}; {_pct(b.total_bytes, r.predicted.total_bytes)}"
            f") | {r.board_planner:,.0f} | "
            f"{'' if pub is None else f'{pub:g} (board model {_pct(b.total_bytes / 1024, pub)})'}"
            " |")
    return out


def board_summary(rows: list[Row]) -> str:
    pub = [r for r in rows if r.bench.published in PUBLISHED_ARENA_KB]
    kb = {r.bench.key: PUBLISHED_ARENA_KB[r.bench.published or ""] for r in pub}
    gaps = ", ".join(f"{r.bench.published} {_pct(r.measured / 1024, kb[r.bench.key])} -> "
                     f"{_pct(r.board.total_bytes / 1024, kb[r.bench.key])}" for r in pub)
    scratch = [r for r in rows if r.board.head_bytes > r.predicted.head_bytes]
    return (
        "Against S-MLTK's published arenas (a 32-bit build; CMSIS-NN with Silicon Labs' MVP "
        "kernels on a Cortex-M33; TensorFlow's converter), measured here -> the board-build "
        f"model: {gaps or '-'}. CMSIS-NN's scratch raises the head on "
        + (", ".join(f"{r.bench.key} (+{r.board.head_bytes - r.predicted.head_bytes:,} B)"
                     for r in scratch) or "no model")
        + f"; elsewhere it fits in gaps of the greedy plan. {len(rows)} models.")


def size_table(rows: list[Row]) -> list[str]:
    out = ["| model | written .tflite B | predicted B (constants + quantisation parameters + "
           "framing) | error | the plan's flash before: EDGEFIT1 image B | published .tflite "
           "KB (S-MLTK) |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        t = r.tflite
        pub = PUBLISHED_TFLITE_KB.get(r.bench.published or "")
        out.append(
            f"| {_label(r)} | {r.tflite_bytes:,} | {t.total_bytes:,} ({t.constant_bytes:,} + "
            f"{t.quant_param_bytes:,} + {t.frame_bytes:,.0f}) | "
            f"{_pct(t.total_bytes, r.tflite_bytes)} | {r.image_bytes:,.0f} "
            f"({_pct(r.image_bytes, r.tflite_bytes)}) | {'' if pub is None else f'{pub:g}'} |")
    return out


def fit_frame(rows: list[Row]) -> list[str]:
    """The framing constants of cost_models.tflite_size: least squares of (file - constants -
    quantisation parameters - names) on [1, tensors, operators] over the fit set, with each
    fit-set model left out in turn."""
    fit = [r for r in rows if not r.bench.held_out]
    if len(fit) < 4:
        return []
    a = np.array([[1.0, r.tensors, r.ops] for r in fit])
    fixed = [r.tflite.constant_bytes + r.tflite.quant_param_bytes + r.names for r in fit]
    y = np.array([r.tflite_bytes - f for r, f in zip(fit, fixed, strict=True)], dtype=float)
    coef = np.linalg.lstsq(a, y, rcond=None)[0]
    out = [f"Framing fit (least squares, in-sample on the {len(fit)} fit-set models): "
           f"{coef[0]:.0f} B + {coef[1]:.1f} B x tensors + {coef[2]:.1f} B x operators. "
           "Leave-one-out (that model's file predicted from a fit on the others): "]
    loo = []
    for i, r in enumerate(fit):
        keep = [j for j in range(len(fit)) if j != i]
        c = np.linalg.lstsq(a[keep], y[keep], rcond=None)[0]
        total = fixed[i] + float(a[i] @ c)
        loo.append(f"{r.bench.key} {_pct(total, r.tflite_bytes)} "
                   f"({total - r.tflite_bytes:+,.0f} B)")
    out[0] += "; ".join(loo) + "."
    return out


def summary(rows: list[Row]) -> list[str]:
    errs = [abs(r.predicted.total_bytes / r.measured - 1) for r in rows]
    lin = [abs(r.planner / r.measured - 1) for r in rows]
    before = [abs(r.before / r.measured - 1) for r in rows]
    size = [abs(r.tflite.total_bytes / r.tflite_bytes - 1) for r in rows]
    image = [abs(r.image_bytes / r.tflite_bytes - 1) for r in rows]
    frag = [r for r in rows if r.file_head > r.file_liveness]
    return [
        f"Arena model vs measured: {sum(e <= 0.10 for e in errs)} of {len(rows)} within 10 %, "
        f"worst {100 * max(errs):.1f} %, mean {100 * sum(errs) / len(errs):.2f} %. The "
        f"planner's linear terms: {sum(e <= 0.10 for e in lin)} of {len(rows)} within 10 %, "
        f"worst {100 * max(lin):.1f} %. Before (liveness peak of the layer graph): "
        f"{sum(e <= 0.10 for e in before)} of {len(rows)} within 10 %, worst "
        f"{100 * max(before):.1f} %.",
        "Greedy fragmentation (TFLM's plan above the liveness peak on the file's own graph): "
        + (", ".join(f"{r.bench.key} {_pct(r.file_head, r.file_liveness)}"
                     for r in frag) or "none") + f"; {len(rows) - len(frag)} of {len(rows)} "
        "models have none.",
        f".tflite size predicted vs written: worst {100 * max(size):.1f} %, mean "
        f"{100 * sum(size) / len(size):.2f} % (the EDGEFIT1 image the plan counted before: "
        f"worst {100 * max(image):.1f} %, mean {100 * sum(image) / len(image):.1f} %)."]


def caveats(rows: list[Row]) -> list[str]:
    """What the numbers above do not cover, with this run's figures where there are some."""
    pub = [r for r in rows if r.bench.published in PUBLISHED_ARENA_KB]
    gap = ", ".join(f"{r.bench.published} "
                    f"{_pct(r.measured / 1024, PUBLISHED_ARENA_KB[r.bench.published or ''])}"
                    for r in pub)
    frag = [r for r in rows if r.planner < r.predicted.total_bytes]
    return [
        "Not covered, or covered only in part:",
        "",
        "* **Fragmentation in the solver.** The solver's RAM is linear: per step of the layer "
        "graph, the converted tensors alive at its busiest TFLite operator. TFLM's greedy plan "
        "can exceed that liveness peak; the solver does not see it (planner below the arena "
        "model on " + (", ".join(f"{r.bench.key} "
                                 f"{_pct(r.planner, r.predicted.total_bytes)}" for r in frag)
                       or "no model") + "). No post-solve exact check is added: `apply` "
        "prints the arena model (greedy plan included) next to the measured arena. A plan "
        "near its RAM limit on a model with residual branches should keep that margin.",
        "* **Kernels and 32-bit builds: derived, not measured.** tflite-micro's Python package "
        "runs the reference kernels in a 64-bit build (every measured head equals the greedy "
        "plan of the file's tensors: no scratch). A board runs a 32-bit build, usually with "
        "CMSIS-NN, whose kernels request im2col / depthwise scratch in the arena. The board's "
        "figures (below) come from the C sources (`cost_models/tflm_structs.py`: the structs' "
        "layouts, which reproduce every measured 64-bit per-item constant at 8-byte pointers, "
        "and CMSIS-NN's get_buffer_size functions per core feature); the allocator's own "
        "objects are kept at their 64-bit size (an upper bound). No board here measures them. "
        "The measured arenas exceed S-MLTK's published ones by " + (gap or "-") +
        " (also another converter: S-MLTK's .tflite files are TensorFlow's).",
        "* **Mixed precision.** Two mixed LeNet-5 plans only. The arena model adds the "
        "quantiser's DEQUANTIZE / QUANTIZE copies at precision boundaries; the solver adds a "
        "DEQUANTIZE copy as a pair term (both choices) and no QUANTIZE copy (smaller than the "
        "float source it already charges), and keeps the all-integer graph's tail (a float "
        "fully connected layer's missing per-channel arrays are per option; its op data and "
        "the boundary operators are not). int16 activations and int4 weights: not measured.",
        "* **Module lists.** workloads.mlperf_tiny's DS-CNN, MobileNetV1 and autoencoder hold "
        "their layers in nn.ModuleList iterated with zip, whose tensors litert-torch names "
        "without the list (depthwise.0 and pointwise.0 both Conv2d_0); apply now places such "
        "ops by order and weight size (scripts/tflite_tool.py by_order), and this bench still "
        "converts the same modules and weights held in an nn.Sequential (`Chain`)."]


def report(rows: list[Row], versions: str) -> str:
    return "\n".join([
        SECTION_START,
        "## TFLM arena (bytes): the arena model vs tflite-micro's own",
        "",
        "Made by `.venv/bin/python benchmarks/tflm_arena.py --docs` (needs `.venv-tflite`); every "
        "number in this section is from that run. Each model all int8 (weights per channel, "
        "activations per tensor; the two LeNet-5 'mixed' rows keep the layers named fp32 "
        "float) on the Arduino Nano 33 BLE's `tflm-cmsis-nn` profile, "
        "written as `apply` writes model.tflite "
        f"({versions}). Measured = the smallest arena "
        "(16-byte steps) in which tflite-micro allocates and runs the model (reference kernels, "
        "x86-64 build: 64-bit pointers, so the tail's structs are larger than on a 32-bit MCU), "
        "split by its recording allocator into head (planned tensors) and tail (persistent). "
        "Edgefit before = the planner's liveness peak of the layer graph (activations only), "
        "as it was. Planner now = the peak of the solver's linear RAM terms "
        "(`cost_models.tflm_ram`: the converted graph's tensors per step + the tail as a "
        "constant + per-option per-channel arrays). Arena model = `cost_models.tflm_arena."
        "predict_arena` from the layer graph alone: TFLM's GreedyMemoryPlanner replayed on the "
        "converted graph + the Prepare-time temporaries + the tail; `apply` reports it next to "
        "the measured arena. Fit set: the models not marked held out set the tail's per-kind "
        "constants (and the autoencoder the Prepare temporaries); MobileNetV2-small set "
        "nothing. Published = S-MLTK's TFLM arena for the same reference model (another "
        "converter, a 32-bit build).",
        "",
        *arena_table(rows),
        "",
        *summary(rows)[:2],
        "",
        *caveats(rows),
        "",
        "### The board's build: what the planner holds",
        "",
        "The planner's RAM for a TFLM profile is the arena in the board's build "
        "(`cost_models.runtime_memory.tflm_build`: the core's pointer width from "
        "`device_specs/cores.yaml`, the profile's `micro_kernels`, CMSIS-NN's variant from the "
        "core's DSP / Helium flags). Here: the Arduino Nano 33 BLE's `tflm-cmsis-nn` profile "
        "(Cortex-M4). `apply` prints it next to the measured arena.",
        "",
        *board_table(rows),
        "",
        board_summary(rows),
        "",
        "### model.tflite size (bytes): predicted vs written",
        "",
        "Predicted = `cost_models.tflite_size` from the layer graph and each layer's bit width: "
        "the constants (weights at their bit width, int32 biases, the converted graph's shape / "
        "permutation / padding constants) and the per-channel quantisation parameters (float32 "
        "scale + int64 zero point per channel, weight and bias) are exact sums; the names "
        "(`edgefit[<layer>]:t<i>`, apply's short names) are computed; the framing (tables, "
        "vectors, 16-byte alignment, signature, metadata) is fitted.",
        "",
        *size_table(rows),
        "",
        summary(rows)[2],
        "",
        *fit_frame(rows),
        "",
        "For a TFLite profile and a torch model the planner counts this prediction as the "
        "model's flash (each layer's constants and quantisation parameters per option, the "
        "all-integer graph's framing as a constant; sparse and shared options are stored "
        "dense in a .tflite, so they save no flash there); `plan` then builds the chosen "
        "plan's model.tflite and re-solves with its exact size (`edgefit.exact_flash`), which "
        "`apply` checks to the byte (2 % where the plan has no such size: `resolve`, Pareto "
        "points), and model.flash.bin against each option's image bytes (exact).",
        SECTION_END])


SECTION_START = "<!-- section:tflm-arena (benchmarks/tflm_arena.py --docs) -->"
SECTION_END = "<!-- /section:tflm-arena -->"


def write_docs(text: str) -> None:
    doc = Path(__file__).parents[1] / "docs" / "cost-model-accuracy.md"
    old = doc.read_text()
    i, j = old.find(SECTION_START), old.find(SECTION_END)
    body = (old[:i] + text + old[j + len(SECTION_END):] if i >= 0 and j > i
            else old.rstrip("\n") + "\n\n" + text + "\n")
    atomic_write_text(doc, body)


def _tool_versions() -> dict[str, str]:
    """The tool virtualenv's converter, quantiser and TFLM versions."""
    python = tool_python()
    assert python is not None
    code = ("from importlib.metadata import version; import json; print(json.dumps({p: version(p)"
            " for p in ('litert-torch', 'ai-edge-quantizer', 'tflite-micro')}))")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated name prefixes (default: all)")
    ap.add_argument("--facts", type=Path, help="keep each model's TFLM facts here (JSON)")
    ap.add_argument("--docs", action="store_true",
                    help="write the section into docs/cost-model-accuracy.md")
    ap.add_argument("--reuse", action="store_true",
                    help="read the facts kept in --facts instead of converting again")
    args = ap.parse_args(argv)
    if tool_python() is None:
        print("the TFLite tool virtualenv is absent: make tflite-venv", file=sys.stderr)
        return 2
    wanted = [w for w in args.models.split(",") if w]
    rows = []
    with tempfile.TemporaryDirectory(prefix="tflm-arena-") as tmp:
        for bench in benches():
            if wanted and not any(bench.name.startswith(w) for w in wanted):
                continue
            rows.append(measure(bench, Path(tmp), args.facts, args.reuse))
            print(f"measured {bench.name}", file=sys.stderr)
    from importlib.metadata import version

    tool = [f"{k} {v}" for k, v in _tool_versions().items()]
    text = report(rows, ", ".join(tool) + f"; torch {version('torch')}")
    print(text)
    if args.docs:
        write_docs(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
