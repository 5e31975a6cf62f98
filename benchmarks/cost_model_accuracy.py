"""How well edgefit predicts what this machine measures (issue #4's accuracy numbers).

For every architecture in ARCHITECTURES x uniform options and mixed plans:
  * latency, end to end: two host cost models against an independent onnxruntime measurement
    of the whole model (edgefit_measure, 1 thread, median) --
      - measured model: the per-layer latencies profiled by cost_models.profiler on uniform
        models (what `plan --target host` uses), summed + run overhead;
      - analytical model: the roofline with the host probe's constants;
  * latency, per layer: both models against the layer's time in that plan's own model (the
    same edgefit_measure pass, node time attributed to layers by the profiler's rules). Layers
    that take >= 20 us are judged (<= 25 %); smaller ones are reported, not judged (profiler
    granularity dominates);
  * activation memory: edgefit's liveness prediction (the planner's peak over the execution
    order, activations only) against what onnxruntime's CPU arena really held for the run
    (cost_models.ort_memory: C API allocator statistics), judged within 15 %.
Adding an architecture is one entry in ARCHITECTURES.
Run: .venv/bin/python benchmarks/cost_model_accuracy.py  (writes docs/cost-model-accuracy.md)
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import edgefit_measure as em
from cost_models.analytical import CostTable, build_cost_table
from cost_models.capture import capture
from cost_models.graph import LayerGraph
from cost_models.ort_memory import OrtMemory, measure_arena, node_memory_stats
from cost_models.profile_cache import ProfileCache
from cost_models.profiler import profile_host, step_owner_overrides
from device_specs.host import host_spec
from edgefit.fsutil import atomic_write_text
from edgefit.paths import cache_dir
from executors.apply import export_fp32
from executors.onnx_quant import quantize_onnx
from workloads.data import load_dataset
from workloads.fuse import fuse_bn
from workloads.mobilenet import MobileNetV2Small
from workloads.train import pretrained

OPTIONS = ["fp32", "fp16", "int8", "int4"]
JUDGED_LAYER_US = 20.0
E2E_TARGET = 0.10
LAYER_TARGET = 0.25
MEMORY_TARGET = 0.15
PRUNE_RATIO = 0.5
OPT_LEVEL = "all"  # what apply and edgefit_measure run with


@dataclass(frozen=True)
class Architecture:
    """One benchmarked model: how to build it, its sample shape and calibration data."""

    name: str
    build: Callable[[], torch.nn.Module]
    input_shape: tuple[int, ...]
    calibration: Callable[[], np.ndarray]


def _mnist_calibration() -> np.ndarray:
    _, test = load_dataset("mnist")
    return test.x[:128]


def _mobilenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return fuse_bn(MobileNetV2Small())


ARCHITECTURES = [
    Architecture("lenet5-mnist", lambda: pretrained("lenet5-mnist").model, (1, 28, 28),
                 _mnist_calibration),
    Architecture("lenet300-mnist", lambda: pretrained("lenet300-mnist").model, (1, 28, 28),
                 _mnist_calibration),
    Architecture("fashion-cnn", lambda: pretrained("fashion-cnn").model, (1, 28, 28),
                 _mnist_calibration),
    Architecture("mobilenetv2-small (untrained weights)", _mobilenet, (1, 28, 28),
                 _mnist_calibration),
]


def plans(names: list[str]) -> dict[str, dict[str, str]]:
    out = {f"all {o}": dict.fromkeys(names, o) for o in OPTIONS}
    # mixed plans alternate options, so Q/DQ boundaries are between layers
    out["mixed int8/fp32"] = {n: ("int8" if i % 2 == 0 else "fp32") for i, n in enumerate(names)}
    out["mixed int4/fp16"] = {n: ("int4" if i % 2 == 0 else "fp16") for i, n in enumerate(names)}
    return out


def mape(pred: list[float], meas: list[float]) -> float:
    return float(np.mean([abs(p - m) / m for p, m in zip(pred, meas, strict=True)]))


def err(pred: float, meas: float) -> str:
    return f"{100 * (pred - meas) / meas:+.0f} %"


def verdict(value: float, target: float) -> str:
    return "PASS" if value <= target else "FAIL"


# --------------------------------------------------------------------------------------------
# activation memory


def predicted_activation_bytes(graph: LayerGraph, table: CostTable, picks: dict[str, str]) -> int:
    """The planner's own peak RAM for these picks (edgefit.planning.build_problem), less its
    constant part (runtime RAM, weights held in RAM): the activation liveness peak."""
    from edgefit.planning import build_problem

    problem = build_problem(graph, table, {})
    chosen = {n: next(c for c in problem.choices[n] if c.option == picks[n])
              for n in graph.layer_names}
    base = problem.fixed.get("ram_bytes", 0.0) + (
        sum(c.flash_bytes for c in chosen.values()) if problem.weights_in_ram else 0.0)
    return round(problem.peak_ram(chosen) - base)


def channel_pruned(model: torch.nn.Module, shape: tuple[int, ...]) -> torch.nn.Module:
    """Every coupled group loses PRUNE_RATIO of its output channels (a smaller dense model)."""
    from executors import prune

    pruned = copy.deepcopy(model)
    cfg = prune.ChannelPruneConfig(ratio=PRUNE_RATIO)
    groups = prune.coupled_groups(pruned, shape)
    return prune.prune_channels(pruned, {n: cfg for g in groups for n in g}, shape)


@dataclass
class MemoryRow:
    model: str
    plan: str
    predicted: int
    measured: OrtMemory
    scratch: int  # largest kernel scratch allocation in onnxruntime's node record
    weight_copy: int  # fp32 bytes of the largest int8/int4 weight (if dequantised per run)

    @property
    def error(self) -> float:
        return abs(self.predicted - self.measured.activation_bytes) / \
            self.measured.activation_bytes

    def line(self) -> str:
        m = self.measured
        shown = f"<= {m.activation_bytes}" if m.peak_hidden else str(m.activation_bytes)
        judged = ("not judged (run peak hidden under session creation)" if m.peak_hidden else
                  ("within 15 %" if self.error <= MEMORY_TARGET else "outside 15 %"))
        error = 100 * (self.predicted - m.activation_bytes) / m.activation_bytes
        return (f"| {self.model} | {self.plan} | {self.predicted} | {shown} | {error:+.1f} % | "
                f"{m.input_bytes} | {self.scratch} | {self.weight_copy} | {judged} |")


def memory_row(name: str, plan: str, graph: LayerGraph, table: CostTable,
               picks: dict[str, str], path: Path) -> MemoryRow:
    scratch = max((r.temp_bytes for r in node_memory_stats(path, OPT_LEVEL)), default=0)
    copy_bytes = max((4 * graph.layer(n).weight_numel for n, o in picks.items()
                      if o in ("int8", "int4")), default=0)
    return MemoryRow(name, plan, predicted_activation_bytes(graph, table, picks),
                     measure_arena(path, OPT_LEVEL), scratch, copy_bytes)


# --------------------------------------------------------------------------------------------
# latency


@dataclass
class LayerPoint:
    model: str
    plan: str
    layer: str
    measured_ms: float
    profiled_ms: float
    analytic_ms: float


def layer_points(name: str, plan: str, picks: dict[str, str], m: dict, measured: dict,
                 table: CostTable) -> list[LayerPoint]:
    return [LayerPoint(name, plan, layer, float(m["layers"][layer]["calibrated_ms"]),
                       measured[layer, opt].latency_ms, table.cost(layer, opt).latency_ms)
            for layer, opt in picks.items() if m["layers"].get(layer, {}).get("nodes")]


def layer_summary(points: list[LayerPoint], label: str) -> list[str]:
    if not points:
        return [f"{label}: none."]
    meas = [p.measured_ms for p in points]
    prof = mape([p.profiled_ms for p in points], meas)
    ana = mape([p.analytic_ms for p in points], meas)
    return [f"{label}: {len(points)} (plan, layer) points; MAPE measured-per-layer model "
            f"{100 * prof:.1f} %, analytical model {100 * ana:.1f} %."]


def main() -> int:
    start = time.perf_counter()
    spec = host_spec()
    e2e_rows: list[str] = []
    e2e_meas: list[float] = []
    e2e_profiled: list[float] = []
    e2e_analytic: list[float] = []
    points: list[LayerPoint] = []
    memory: list[MemoryRow] = []
    cached = 0
    overhead_cal = em.calibrate(1, OPT_LEVEL)
    with tempfile.TemporaryDirectory() as tmp, ProfileCache(cache_dir() / "profiles.sqlite") as pc:
        for k, arch in enumerate(ARCHITECTURES):
            model, calib = arch.build(), arch.calibration()
            graph = capture(model, arch.input_shape, arch.name)
            measured = profile_host(model, arch.input_shape, graph, OPTIONS, pc, calib,
                                    progress=False)
            cached += sum(m.cached for m in measured.values())
            table = build_cost_table(graph, spec)
            overhead = next(m.run_overhead_ms for m in measured.values()
                            if m.run_overhead_ms is not None) or 0.0
            fp32 = Path(tmp) / f"{k}.fp32.onnx"
            export_fp32(model, arch.input_shape, fp32)
            for j, (label, picks) in enumerate(plans(graph.layer_names).items()):
                path = Path(tmp) / f"{k}.{j}.onnx"
                quantize_onnx(fp32, path, picks, calib)
                m = em.measure(path, runs=200, warmup=20, opt_level=OPT_LEVEL,
                               owners=step_owner_overrides(em.read_graph(path), graph),
                               calibration=overhead_cal)
                meas = float(m["latency_ms"]["median"])
                profiled = overhead + sum(measured[n, o].latency_ms for n, o in picks.items())
                analytic = table.run_overhead_ms + sum(table.cost(n, o).latency_ms
                                                       for n, o in picks.items())
                e2e_meas.append(meas)
                e2e_profiled.append(profiled)
                e2e_analytic.append(analytic)
                e2e_rows.append(f"| {arch.name} | {label} | {meas * 1e3:.1f} | "
                                f"{profiled * 1e3:.1f} ({err(profiled, meas)}) | "
                                f"{analytic * 1e3:.1f} ({err(analytic, meas)}) |")
                points += layer_points(arch.name, label, picks, m, measured, table)
                if label in ("all fp32", "all fp16", "all int8", "all int4", "mixed int8/fp32"):
                    memory.append(memory_row(arch.name, label, graph, table, picks, path))
            memory.append(_pruned_memory_row(arch, model, spec, Path(tmp) / f"{k}.pruned.onnx"))
    text = report(spec.cpu, e2e_rows, e2e_meas, e2e_profiled, e2e_analytic, points, memory,
                  cached, time.perf_counter() - start)
    print(text)
    atomic_write_text(Path(__file__).parents[1] / "docs" / "cost-model-accuracy.md", text)
    return 0


def _pruned_memory_row(arch: Architecture, model: torch.nn.Module, spec: object,
                       path: Path) -> MemoryRow:
    pruned = channel_pruned(model, arch.input_shape)
    graph = capture(pruned, arch.input_shape, arch.name)
    table = build_cost_table(graph, spec)  # type: ignore[arg-type]
    export_fp32(pruned, arch.input_shape, path)
    return memory_row(arch.name, f"channels -{100 * PRUNE_RATIO:.0f} % fp32", graph, table,
                      dict.fromkeys(graph.layer_names, "fp32"), path)


def report(cpu: str, e2e_rows: list[str], e2e_meas: list[float], e2e_profiled: list[float],
           e2e_analytic: list[float], points: list[LayerPoint], memory: list[MemoryRow],
           cached: int, wall_s: float) -> str:
    judged = [p for p in points if p.measured_ms * 1e3 >= JUDGED_LAYER_US]
    small = [p for p in points if p.measured_ms * 1e3 < JUDGED_LAYER_US]
    e2e_prof = mape(e2e_profiled, e2e_meas)
    e2e_ana = mape(e2e_analytic, e2e_meas)
    lay_prof = mape([p.profiled_ms for p in judged], [p.measured_ms for p in judged]) \
        if judged else float("nan")
    lay_ana = mape([p.analytic_ms for p in judged], [p.measured_ms for p in judged]) \
        if judged else float("nan")
    mem_judged = [r for r in memory if not r.measured.peak_hidden]
    mem_ok = sum(r.error <= MEMORY_TARGET for r in mem_judged)
    n_models = len({r.model for r in memory})
    return "\n".join([
        "# Cost-model accuracy on this machine", "",
        "Made by `.venv/bin/python benchmarks/cost_model_accuracy.py`; every number below is "
        f"from that run ({cpu}, onnxruntime, 1 thread, opt level {OPT_LEVEL}). Measured = "
        "edgefit_measure on the plan's own quantised ONNX (median of 200 runs end to end; "
        "per layer, its profiled pass with the calibrated offset removed), a separate session "
        f"from the profiling that built the measured-per-layer model ({cached} of its "
        "(layer, option) rows came from the profile cache). The machine's 2 cores were shared "
        "with other jobs during the run, so timings are noisier than on an idle host.", "",
        "## Verdict against issue #4's targets", "",
        "| criterion | target | measured-per-layer model | analytical model |",
        "|---|---|---|---|",
        f"| end-to-end latency MAPE ({len(e2e_meas)} plans) | <= 10 % | {100 * e2e_prof:.1f} % "
        f"{verdict(e2e_prof, E2E_TARGET)} | {100 * e2e_ana:.1f} % {verdict(e2e_ana, E2E_TARGET)} |",
        f"| per-layer latency MAPE, layers >= 20 us ({len(judged)} points) | <= 25 % | "
        f"{100 * lay_prof:.1f} % {verdict(lay_prof, LAYER_TARGET)} | {100 * lay_ana:.1f} % "
        f"{verdict(lay_ana, LAYER_TARGET)} |",
        f"| activation memory within 15 % ({len(mem_judged)} judged rows) | every row | "
        f"{mem_ok}/{len(mem_judged)} "
        f"{'PASS' if mem_judged and mem_ok == len(mem_judged) else 'FAIL'} | (same liveness "
        "model) |", "",
        *layer_summary([p for p in judged if p.plan.startswith("mixed")],
                       "Of the judged points, those of mixed plans (a real prediction: the "
                       "model's rows come from uniform models; on uniform plans the comparison "
                       "is a re-measurement of the profiled model)"), "",
        *layer_summary(small, f"Layers < {JUDGED_LAYER_US:g} us (reported, not judged)"), "",
        f"Architectures: {n_models} (issue #4 asks for >= 5; the MiniLM encoder is not in "
        "ARCHITECTURES yet).", "",
        "## End to end (us): measured vs the two host cost models", "",
        "| model | plan | measured | measured-per-layer model (error) | analytical model "
        "(error) |", "|---|---|---|---|---|", *e2e_rows, "",
        "## Per layer, >= 20 us (us): the layer's time in its plan's model vs the two models",
        "", "| model | plan | layer | measured | measured-per-layer model | analytical |",
        "|---|---|---|---|---|---|",
        *[f"| {p.model} | {p.plan} | {p.layer} | {p.measured_ms * 1e3:.1f} | "
          f"{p.profiled_ms * 1e3:.1f} ({err(p.profiled_ms, p.measured_ms)}) | "
          f"{p.analytic_ms * 1e3:.1f} ({err(p.analytic_ms, p.measured_ms)}) |" for p in judged],
        "", "## Activation memory (bytes): liveness prediction vs onnxruntime's arena", "",
        "Measured = peak bytes onnxruntime's CPU arena held during the runs beyond the resident "
        "weights (C API `AllocatorGetStats`: MaxInUse - InUse after session creation; "
        "intermediate tensors, kernel scratch and the returned outputs) + the caller's input "
        "buffer (`cost_models/ort_memory.py`). Predicted = the planner's liveness peak "
        "(activations only, each tensor at its owner layer's activation width). Scratch = the "
        "largest single kernel scratch allocation in onnxruntime's per-node record "
        "(`session.collect_node_memory_stats_to_file`). Weight copy = 4 bytes x the largest "
        "int8/int4 weight of the plan: the size of one fp32 copy if onnxruntime dequantises "
        "it per run (fp16 weights are cast once at session creation: those rows equal fp32). "
        "`channels -50 %` is the model with "
        "half of every coupled group's output channels removed (prune_channels), fp32.", "",
        "| model | plan | predicted | measured | error | input | scratch | weight copy | "
        "judgement |", "|---|---|---|---|---|---|---|---|---|", *[r.line() for r in memory], "",
        *WHY_MEMORY, "",
        f"Wall time {wall_s:.0f} s.", ""])


WHY_MEMORY = [
    "Why the memory prediction misses where it does (causes checked on onnxruntime's node "
    "record and graph, not fitted):",
    "",
    "* **NCHWc layout (opt level all).** onnxruntime rewrites convolutions to its blocked "
    "NCHWc layout and pads channels to the block size of the CPU's vector unit (16 floats "
    "with AVX-512): a 6-channel conv output is stored as 16 channels, and Reorder nodes add "
    "tensors at the layout boundaries. The liveness model counts the real channels. This "
    "dominates small-channel CNNs (LeNet-5: 6 and 16 channels); the fp32 rows of the models "
    "with wider layers are the ones within 15 %.",
    "* **Weights dequantised at run time.** int4 (and the int8 weight path where onnxruntime "
    "does not fuse the QDQ pair into an integer kernel) runs `DequantizeLinear` on the "
    "weight every inference: a full fp32 copy of the layer's weight is an activation-sized "
    "tensor while the layer runs (compare the weight-copy column with the int4 rows' gap). "
    "The planner treats weights as stored bytes only.",
    "* **QDQ keeps fp32 at the boundaries.** The caller's input and every "
    "`DequantizeLinear` output feeding an fp32 op stay fp32; the prediction gives each tensor "
    "its owner layer's width (int8 = 1 byte, the graph input included), so int8 plans are "
    "predicted far too small.",
    "* **Arena grain.** Every arena chunk is rounded up to 256 bytes, so tiny tensors "
    "(LeNet-300's 300/100/10-float activations) cost more than their bytes.",
    "* **Kernel scratch.** im2col-style buffers (the scratch column) are runtime workspace the "
    "liveness model does not include.",
    "",
    "* **Hidden rows.** For some int8 models session creation peaks above what stays "
    "resident (a weight pre-packed while its original still exists) and no run exceeds "
    "that, so only an upper bound is known; those rows are not judged.",
    "",
    "Not changed in the model here: each cause is specific to onnxruntime's CPU provider "
    "(a TFLM int8 model takes int8 input and has no NCHWc layout), so the "
    "honest fix is a per-runtime workspace term in the device profile (dequantised weight "
    "copies, scratch, channel padding), not a change to the device-independent liveness.",
]


if __name__ == "__main__":
    sys.exit(main())
