"""`edgefit calibrate`'s inputs: which files are `edgefit measure` results and which are timing
files (:mod:`cost_models.timing_file`), and each timed model resolved to its layer graph and the
kernel every layer ran -- from a `.onnx` / `.pt2` / built-in name (+ the entry's `option`), or
from a plan.json (its per-layer kernels; also the `model.tflite` of an `edgefit apply` folder,
through the plan.json beside it). Here, not in cost_models, because reading a plan is the
planner's (a layer above cost_models)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cost_models.calibrate import TimedRun
from cost_models.graph import LayerGraph
from cost_models.timing_file import (
    TIMING_FORMAT,
    TimedModel,
    TimingFile,
    read_timing_file,
    timing_from_json,
)
from edgefit_common.errors import EdgefitError, SpecError
from edgefit_common.fsutil import shown
from edgefit_common.jsonio import read_json

MEASURE_FORMAT = "edgefit-measure"
# techniques that change a layer's MACs or shape: the layer graph of the model would not be
# what ran, so a plan choosing them is not calibrated from (yet)
_RESHAPING = {"lowrank", "prune_channels", "prune_nm"}


@dataclass
class Inputs:
    measure_files: list[Path] = field(default_factory=list)
    timing_files: list[tuple[Path, TimingFile]] = field(default_factory=list)


def sort_inputs(files: Sequence[Path]) -> Inputs:
    """Each file read once: `.csv` is a timing file; JSON by its `format`."""
    out = Inputs()
    for path in files:
        if path.suffix.lower() == ".csv":
            out.timing_files.append((path, read_timing_file(path)))
            continue
        data = read_json(path, "measure or timing file")
        kind = data.get("format") if isinstance(data, dict) else None
        if kind == MEASURE_FORMAT:
            out.measure_files.append(path)
        elif kind == TIMING_FORMAT:
            out.timing_files.append((path, timing_from_json(data, path)))
        else:
            raise SpecError(f"{shown(path)}: neither an edgefit-measure result nor an "
                            f"edgefit-timing file (format {kind!r}); see docs/calibrate.md")
    return out


def timed_runs(timing_files: Sequence[tuple[Path, TimingFile]]) -> list[TimedRun]:
    """Every model of every timing file, with its graph and per-layer kernels."""
    graphs: dict[str, LayerGraph] = {}
    runs = []
    for path, timing in timing_files:
        for entry in timing.models:
            runs.append(_resolve(path, timing, entry, graphs))
    return runs


def _resolve(path: Path, timing: TimingFile, entry: TimedModel,
             graphs: dict[str, LayerGraph]) -> TimedRun:
    where = f"{shown(path)}: model {shown(entry.model, 80)!r}"
    target = _model_file(path, entry.model)
    if target is None:  # a built-in model name
        graph = _graph(entry.model, graphs, where)
        return TimedRun(path, timing, entry, graph, _uniform(graph, entry), entry.model)
    if target.suffix.lower() == ".tflite":
        plan_path = target.parent / "plan.json"
        if not plan_path.is_file():
            raise SpecError(f"{where}: a .tflite is read through the plan.json of its edgefit "
                            "apply folder, and there is none beside it; name the .onnx or .pt2 "
                            "it was converted from (and option)")
        target = plan_path
    if target.suffix.lower() == ".json":
        return _from_plan(path, timing, entry, target, graphs, where)
    if target.suffix.lower() not in (".onnx", ".pt2"):
        raise SpecError(f"{where}: not an .onnx, .pt2, .tflite or plan.json")
    graph = _graph(str(target), graphs, where)
    return TimedRun(path, timing, entry, graph, _uniform(graph, entry), str(target))


def _model_file(timing_path: Path, model: str) -> Path | None:
    """The file `model` names (relative to the timing file), or None for a built-in name."""
    from workloads.zoo import PRETRAINED, ZOO

    candidate = Path(model) if Path(model).is_absolute() else timing_path.parent / model
    if model in ZOO or model in PRETRAINED:
        return candidate if candidate.is_file() else None
    if not candidate.is_file():
        raise SpecError(f"{shown(timing_path)}: model {shown(model, 80)!r}: no such file "
                        f"({shown(candidate)}; paths are relative to the timing file) and not "
                        "a built-in model")
    return candidate


def _graph(ref: str, cache: dict[str, LayerGraph], where: str) -> LayerGraph:
    if ref not in cache:
        from workloads.models import load_model_ref

        try:
            loaded = load_model_ref(ref)
        except EdgefitError as exc:
            raise SpecError(f"{where}: {exc}") from None
        if loaded.kind == "onnx":
            from cost_models.capture_onnx import capture_onnx

            assert loaded.onnx_path is not None
            cache[ref] = capture_onnx(loaded.onnx_path, loaded.name)
        else:
            from cost_models.capture import capture

            cache[ref] = capture(loaded.torch_module(), loaded.input_shape, loaded.name)
    return cache[ref]


def _uniform(graph: LayerGraph, entry: TimedModel) -> dict[str, str]:
    return {name: entry.option or "fp32" for name in graph.layer_names}


def _from_plan(path: Path, timing: TimingFile, entry: TimedModel, plan_path: Path,
               graphs: dict[str, LayerGraph], where: str) -> TimedRun:
    from planner.plan import Plan

    plan = Plan.load(plan_path)
    if entry.option is not None:
        raise SpecError(f"{where}: a plan gives every layer's kernel; drop `option`")
    if not plan.feasible:
        raise SpecError(f"{where}: {shown(plan_path)} is an infeasible plan (no layer choices)")
    ref = _plan_model(plan, plan_path, where)
    graph = _graph(ref, graphs, where)
    kernels: dict[str, str] = {}
    for name in graph.layer_names:
        layer = plan.layers.get(name)
        kernels[name] = (layer.kernel or "fp32") if layer is not None else "fp32"
        reshaped = sorted({t.technique for t in (layer.techniques if layer else [])}
                          & _RESHAPING)
        if reshaped:
            raise SpecError(f"{where}: the plan's layer {shown(name, 60)} runs "
                            f"{layer.option if layer else ''} ({', '.join(reshaped)} change its "
                            "MACs), which calibrate does not model; time a plan that only "
                            "quantises / sparsifies, or the model with `option`")
    return TimedRun(path, timing, entry, graph, kernels, ref)


def _plan_model(plan: Any, plan_path: Path, where: str) -> str:
    """The model a plan names: a built-in name, or its file (as written, else beside it)."""
    model = plan.model
    if model.kind == "zoo":
        return str(model.name)
    if model.kind not in ("onnx", "pt2") or not model.path:
        raise SpecError(f"{where}: the plan's model is a {model.kind}; name the model file "
                        "(.onnx / .pt2) and option instead")
    for candidate in (Path(model.path), plan_path.parent / Path(model.path).name):
        if candidate.is_file():
            return str(candidate)
    raise SpecError(f"{where}: the plan's model file {shown(model.path)} is not there")
