"""`edgefit calibrate`: fit a device's profile to the per-layer times of ``edgefit_measure``
JSON files.

:func:`calibrate` (device, measure files, the models' layer graphs, e.g. from
:func:`graphs_from_onnx`) -> :class:`~cost_models.calibration_file.CalibrationResult`, written
atomically to ``<dir>/<device>.calibration.yaml`` (default dir: the edgefit cache);
:func:`summary_lines` for the terminal. Each measured layer is one
:class:`~cost_models.fit.FitPoint` of :mod:`cost_models.fit`'s rule.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cost_models.calibration_file import (
    CalibratedKernel,
    CalibratedParameters,
    CalibrationResult,
    EndToEndResidual,
    HeldOutFile,
    LayerResidual,
    MeasurePoint,
    Residuals,
    calibration_path,
    save_calibration,
)
from cost_models.fit import Features, FitPoint, Params, Solved, mape_of, solve
from cost_models.graph import LayerGraph
from device_specs.schema import Profile
from edgefit_common.errors import SpecError
from edgefit_common.jsonio import read_json

MEASURE_FORMAT = "edgefit-measure"
MEASURE_FORMAT_VERSION = 1
JUDGED_LAYER_US = 20.0  # per-layer errors below this are reported, not judged (profiler floor)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_measure_file(path: Path) -> dict[str, Any]:
    """An edgefit_measure JSON result, checked for its format; SpecError naming the file."""
    path = Path(path)
    data = read_json(path, "measure file")
    if not isinstance(data, dict) or data.get("format") != MEASURE_FORMAT:
        raise SpecError(f"{path}: not an edgefit-measure result (format "
                        f"{data.get('format') if isinstance(data, dict) else None!r})")
    if data.get("format_version") != MEASURE_FORMAT_VERSION:
        raise SpecError(f"{path}: format_version {data.get('format_version')!r} is not "
                        f"supported (this edgefit reads {MEASURE_FORMAT_VERSION})")
    for key in ("layers", "latency_ms", "model"):
        if not isinstance(data.get(key), dict):
            raise SpecError(f"{path}: missing or malformed {key!r}")
    if not isinstance(data["latency_ms"].get("median"), int | float):
        raise SpecError(f"{path}: latency_ms.median missing")
    return data


def charged_ops(graph: LayerGraph) -> dict[str, list[int]]:
    """Per layer, elements read + written by each non-layer op charged to it (as
    analytical's cost table does)."""
    out: dict[str, list[int]] = {name: [] for name in graph.layer_names}
    for s in graph.steps:
        if s.kind == "op" and s.owner is not None and s.owner in out:
            out[s.owner].append(graph.tensors[s.output].numel
                                + sum(graph.tensors[t].numel for t in s.inputs))
    return out


@dataclass
class _FileData:
    path: Path
    data: dict[str, Any]
    graph: LayerGraph
    points: list[FitPoint]  # every measured layer
    fit_mask: list[bool]


def _file_points(path: Path, data: dict[str, Any], graph: LayerGraph,
                 min_layer_us: float) -> _FileData:
    options = data["model"].get("options") or {}
    if not isinstance(options, dict):
        raise SpecError(f"{path}: model.options is not a mapping")
    known = set(graph.layer_names)
    missing = [name for name in data["layers"] if name not in known]
    if missing:
        raise SpecError(f"{path}: layers {', '.join(missing[:5])} are not in the layer graph "
                        f"{graph.model!r} (it has {', '.join(graph.layer_names[:5])}...)")
    charged = charged_ops(graph)
    pts, mask = [], []
    for name, entry in data["layers"].items():
        try:
            # the closed time (its share of the unprofiled run) where the file has one
            us = (1e3 * float(entry["closed_ms"]) if "closed_ms" in entry
                  else float(entry["calibrated_us"]))
        except (KeyError, TypeError, ValueError):
            raise SpecError(f"{path}: layers.{name}.calibrated_us missing") from None
        layer = graph.layer(name)
        option = str(options.get(name, "fp32"))
        pts.append(FitPoint(f"{path.name}:{name}", (layer,), option, max(us, 1e-3) / 1e3,
                            (tuple(charged[name]),), whole_network=False, model=graph.model))
        mask.append(us >= min_layer_us)
    return _FileData(path, data, graph, pts, mask)


def _measured_candidates(points: Sequence[FitPoint]) -> tuple[list[str], dict[str, str]]:
    """Free-parameter candidates for measured layers and the reference class per option."""
    macs: dict[str, dict[str, int]] = {}
    count: dict[tuple[str, str], int] = {}
    for p in points:
        layer = p.layers[0]
        macs.setdefault(p.option, {}).setdefault(layer.op_class, 0)
        macs[p.option][layer.op_class] += layer.macs
        count[(p.option, layer.op_class)] = count.get((p.option, layer.op_class), 0) + 1
    ref = {o: max(by, key=lambda c: (by[c], c)) for o, by in macs.items()}
    by_option = sorted(macs, key=lambda o: (-sum(macs[o].values()), o))
    cands = [f"rate:{o}" for o in by_option] + ["overhead"]
    for o in by_option:
        for c in sorted(macs[o], key=lambda c: -macs[o][c]):
            if c != ref[o] and count[(o, c)] >= 2 and macs[o][c] > 0:
                cands.append(f"eff:{o}:{c}")
    cands.append("bandwidth")
    return cands, ref


def _normalised(base: Params, ref: Mapping[str, str]) -> Params:
    """Same predictions, with each option's reference class at efficiency 1."""
    rates = dict(base.rates)
    eff = {k: dict(v) for k, v in base.efficiency.items()}
    for option, cls in ref.items():
        factor = eff.get(option, {}).get(cls, 1.0)
        if factor != 1.0:
            rates[option] *= factor
            eff[option] = {c: v / factor for c, v in eff[option].items() if c != cls}
    return Params(rates, eff, base.layer_overhead_ms, base.bandwidth, base.run_overhead_ms)


def _fit_layers(files: list[_FileData], profile: Profile,
                ) -> tuple[Solved | None, list[FitPoint]]:
    train = [p for f in files for p, keep in zip(f.points, f.fit_mask, strict=True) if keep]
    if len(train) <= 1:
        return None, train
    cands, ref = _measured_candidates(train)
    base = _normalised(Params.of_profile(profile), ref)
    return solve(Features(train, profile), base, cands), train


def _run_overhead(files: list[_FileData], profile: Profile, params: Params) -> float:
    gaps = [float(f.data["latency_ms"]["median"])
            - float(Features(f.points, profile).predict(params).sum()) for f in files]
    return max(0.0, float(np.median(gaps))) if gaps else 0.0


def graphs_from_onnx(models: Sequence[Path]) -> list[LayerGraph]:
    """Layer graphs of fp32 ONNX models (prepared or not), for :func:`calibrate`.

    For a file measured on a compressed model (`edgefit apply` output), give the model it was
    made from: layer names are kept by apply, and the file's `model.options` says which option
    each layer ran. Imports onnx (lazily).
    """
    from cost_models.capture_onnx import capture_onnx, prepare_onnx

    out = []
    with tempfile.TemporaryDirectory(prefix="edgefit-calibrate-") as tmp:
        for i, model in enumerate(models):
            copy = Path(tmp) / f"{i}.onnx"
            prepare_onnx(Path(model), copy)
            out.append(capture_onnx(copy, Path(model).stem))
    return out


def summary_lines(result: CalibrationResult) -> list[str]:
    """A few lines for the terminal: what was fitted, on what, and how well."""
    p, s = result.parameters, result.residuals.summary
    lines = [f"calibrated {result.device}/{result.profile}: {result.message}"]
    for option, k in p.kernels.items():
        eff = ", ".join(f"{c} x{v:.3g}" for c, v in k.op_efficiency.items())
        lines.append(f"  {option}: {k.macs_per_s / 1e9:.4g} GMAC/s" + (f" ({eff})" if eff
                                                                       else ""))
    lines.append(f"  layer overhead {p.layer_overhead_ms:.4g} ms, bandwidth "
                 f"{p.memory_bandwidth_bytes_per_s / 1e9:.4g} GB/s, run overhead "
                 f"{p.run_overhead_ms:.4g} ms")
    judged = s.get("layer_mape_ge_20us")
    lines.append(f"  per-layer MAPE {_fmt_pct(s.get('layer_mape'))} (layers >= "
                 f"{JUDGED_LAYER_US:g} µs: {_fmt_pct(judged)}), end-to-end MAPE "
                 f"{_fmt_pct(s.get('end_to_end_mape'))}")
    for h in result.residuals.leave_one_file_out:
        lines.append(f"  held out {h.file}: layer MAPE {_fmt_pct(h.layer_mape)}, end to end "
                     f"{_fmt_pct(h.end_to_end_error)}" + (f" ({h.note})" if h.note else ""))
    return lines


def _fmt_pct(x: object) -> str:
    return f"{100 * x:.1f} %" if isinstance(x, float) and not math.isnan(x) else "-"


def calibrate(device: str, measure_files: Sequence[Path], graphs: Sequence[LayerGraph], *,
              profile: str | None = None, out_dir: Path | None = None,
              min_layer_us: float = 5.0, write: bool = True) -> CalibrationResult:
    """Fit `device`'s profile to per-layer times of `edgefit_measure` JSON files.

    graphs[i] is the layer graph of the model measured in measure_files[i] (layer names as in
    the file, e.g. from :func:`cost_models.capture_onnx.capture_onnx`). A layer's option is
    the file's `model.options` entry (written by `edgefit apply`), else fp32. Layers faster
    than `min_layer_us` are not fitted (profiler granularity), but their residuals are
    reported. Writes `<out_dir or cache>/<device>.calibration.yaml` atomically unless
    `write` is False.
    """
    from cost_models.host_probe import target_spec

    if len(measure_files) != len(graphs):
        raise SpecError(f"{len(measure_files)} measure files but {len(graphs)} layer graphs: "
                        "give one graph per file")
    if not measure_files:
        raise SpecError("calibrate: no measure files given")
    spec = target_spec(device)
    profile_name = profile or spec.default_profile
    if profile_name not in spec.profiles:
        raise SpecError(f"profile {profile_name!r} is not a profile of {spec.name}; known: "
                        f"{', '.join(spec.profiles)}")
    prof = spec.profile(profile_name)
    files = [_file_points(Path(p), read_measure_file(Path(p)), g, min_layer_us)
             for p, g in zip(measure_files, graphs, strict=True)]
    for f in files:
        for p in f.points:
            if p.option not in prof.kernels:
                raise SpecError(f"{f.path}: layer {p.layers[0].name} ran {p.option!r}, which "
                                f"{spec.name}/{profile_name} has no kernel for")
    solved, train = _fit_layers(files, prof)
    if solved is None:
        raise SpecError(f"calibrate: {len(train)} layer{'s' if len(train) != 1 else ''} of "
                        f"at least {min_layer_us:g} µs in {len(files)} files: no fit")
    run_ovh = _run_overhead(files, prof, solved.params)
    params = Params(solved.params.rates, solved.params.efficiency,
                    solved.params.layer_overhead_ms, solved.params.bandwidth, run_ovh)
    fitted = [*solved.free, "run_overhead"]
    residuals = _calibration_residuals(files, prof, params)
    held_out = _leave_one_file_out(files, prof) if len(files) >= 2 else []
    options = sorted({f.split(":")[1] for f in solved.free if f.startswith("rate:")})
    result = CalibrationResult(
        device=spec.name, profile=profile_name,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        method="least squares on log per-layer latency (Levenberg-Marquardt, log parameters) "
               "of the analytical roofline (cost_models.analytical); run_overhead = median "
               "over files of end-to-end median minus the sum of predicted layers",
        message=f"{len(train)} layers fitted, {len(solved.free)} free parameters "
                f"({', '.join(solved.free)}), {len(train) - len(solved.free)} degrees of "
                "freedom",
        parameters=CalibratedParameters(
            fitted=fitted,
            kernels={o: CalibratedKernel(macs_per_s=params.rates[o],
                                         op_efficiency=dict(params.efficiency.get(o, {})))
                     for o in options},
            layer_overhead_ms=params.layer_overhead_ms,
            memory_bandwidth_bytes_per_s=params.bandwidth,
            run_overhead_ms=params.run_overhead_ms),
        points=[_measure_point(f) for f in files],
        residuals=Residuals(layers=residuals[0], end_to_end=residuals[1],
                            summary=residuals[2], leave_one_file_out=held_out),
    )
    if write:
        save_calibration(result, calibration_path(spec.name, out_dir))
    return result


def _measure_point(f: _FileData) -> MeasurePoint:
    host = f.data.get("host") or {}
    settings = f.data.get("settings") or {}
    return MeasurePoint(
        file=str(f.path), sha256=_sha256(f.path), model=str(f.data["model"].get("path", "")),
        graph=f.graph.model, model_bytes=f.data["model"].get("bytes"), layers=len(f.points),
        fitted_layers=sum(f.fit_mask), options=sorted({p.option for p in f.points}),
        latency_median_ms=float(f.data["latency_ms"]["median"]),
        cpu_model=host.get("cpu_model"), onnxruntime=host.get("onnxruntime"),
        threads=settings.get("threads"), timestamp=f.data.get("timestamp"))


def _calibration_residuals(files: list[_FileData], prof: Profile, params: Params,
                           ) -> tuple[list[LayerResidual], list[EndToEndResidual],
                                      dict[str, float | int | str | None]]:
    layers, e2e = [], []
    for f in files:
        pred = Features(f.points, prof).predict(params)
        for p, pr, keep in zip(f.points, pred, f.fit_mask, strict=True):
            layers.append(LayerResidual(
                file=f.path.name, layer=p.layers[0].name, op_class=p.layers[0].op_class,
                option=p.option, macs=p.layers[0].macs, measured_ms=p.latency_ms,
                predicted_ms=float(pr), error=float(pr / p.latency_ms - 1), fitted=keep))
        meas = float(f.data["latency_ms"]["median"])
        total = float(pred.sum()) + params.run_overhead_ms
        e2e.append(EndToEndResidual(file=f.path.name, measured_ms=meas, predicted_ms=total,
                                    error=total / meas - 1 if meas > 0 else math.nan))
    fitted = [r.error for r in layers if r.fitted]
    judged = [r.error for r in layers if r.measured_ms * 1e3 >= JUDGED_LAYER_US]
    summary: dict[str, float | int | str | None] = {
        "layers": len(layers), "fitted_layers": len(fitted),
        "layer_mape": mape_of(fitted),
        "layer_mape_ge_20us": mape_of(judged), "layers_ge_20us": len(judged),
        "end_to_end_mape": mape_of([r.error for r in e2e]),
        "note": "end-to-end of a single file is exact by construction (run_overhead absorbs "
                "the gap)" if len(files) == 1 else None,
    }
    return layers, e2e, summary


def _leave_one_file_out(files: list[_FileData], prof: Profile) -> list[HeldOutFile]:
    out = []
    for i, held in enumerate(files):
        rest = files[:i] + files[i + 1:]
        solved, _ = _fit_layers(rest, prof)
        name = held.path.name
        if solved is None:
            out.append(HeldOutFile(file=name, layers=len(held.points), layer_mape=None,
                                   end_to_end_error=None, note="the other files: no fit"))
            continue
        options = {f.split(":")[1] for f in solved.free if f.startswith("rate:")}
        usable = [p for p in held.points if p.option in options]
        if not usable:
            out.append(HeldOutFile(file=name, layers=len(held.points), layer_mape=None,
                                   end_to_end_error=None,
                                   note="its options were not measured in the other files"))
            continue
        params = Params(solved.params.rates, solved.params.efficiency,
                        solved.params.layer_overhead_ms, solved.params.bandwidth,
                        _run_overhead(rest, prof, solved.params))
        pred = Features(usable, prof).predict(params)
        errs = [float(pr / p.latency_ms - 1) for p, pr in zip(usable, pred, strict=True)
                if p.latency_ms * 1e3 >= JUDGED_LAYER_US]
        e2e = None
        if len(usable) == len(held.points):
            meas = float(held.data["latency_ms"]["median"])
            e2e = (float(pred.sum()) + params.run_overhead_ms) / meas - 1
        out.append(HeldOutFile(file=name, layers=len(usable), layer_mape=mape_of(errs),
                               end_to_end_error=e2e,
                               note=f"layer MAPE over layers >= {JUDGED_LAYER_US:g} µs"))
    return out
