"""`edgefit calibrate`: fit a device's profile to the per-layer times of ``edgefit_measure``
JSON files and to timing files from any runtime (:mod:`cost_models.timing_file`).

:func:`calibrate` (device, measure files, the models' layer graphs, e.g. from
:func:`graphs_from_onnx`; timed models, :class:`TimedRun`) ->
:class:`~cost_models.calibration_file.CalibrationResult`, written atomically to
``<dir>/<device>.calibration.yaml`` (default dir: the edgefit cache); :func:`summary_lines` for
the terminal. Each measured layer is one :class:`~cost_models.fit.FitPoint` of
:mod:`cost_models.fit`'s rule. Where no file has per-layer times, the one parameter end-to-end
latencies determine is fitted: a common scale on the rates of the kernels they ran
(:func:`_fit_scale`). Every file's machine is compared with the device's CPU first
(:mod:`cost_models.machine_check`): another machine is refused unless allowed, and recorded.
"""

from __future__ import annotations

import contextlib
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
from cost_models.fit import (
    THETA_RANGE,
    Features,
    FitPoint,
    Params,
    Solved,
    levenberg_marquardt,
    mape_of,
    solve,
)
from cost_models.graph import LayerGraph
from cost_models.machine_check import MachineEvidence, machine_verdict
from cost_models.timing_file import TimedModel, TimingFile
from device_specs.schema import DeviceSpec, Profile
from edgefit_common.errors import EdgefitError, MachineMismatchError, SpecError
from edgefit_common.jsonio import read_json
from edgefit_common.yamlio import check_format

MEASURE_FORMAT = "edgefit-measure"
MEASURE_FORMAT_VERSION = 1
MIN_RATE_SHARE = 0.1  # a rate scale is fitted only where the rates are >= 10 % of some point
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
    check_format(data, path, MEASURE_FORMAT, MEASURE_FORMAT_VERSION, "an edgefit-measure result")
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


@dataclass(frozen=True)
class TimedRun:
    """One model of a timing file, resolved: its layer graph and the kernel every layer ran
    (the caller reads the model file or plan; :mod:`cost_models.timing_file` reads the
    timings)."""

    path: Path  # the timing file
    timing: TimingFile
    entry: TimedModel
    graph: LayerGraph
    kernels: Mapping[str, str]  # every layer of graph -> the profile kernel it ran
    model_path: str  # the model file (or built-in name) the entry names, resolved


@dataclass
class _Unit:
    """One model's timings on the device: a measure file, or one model of a timing file."""

    path: Path
    label: str  # the file name; "<file>:<model>" for a timing file
    graph: LayerGraph
    points: list[FitPoint]  # the layers with a measured time
    fit_mask: list[bool]
    every_layer: list[FitPoint]  # every layer with the kernel it ran (end-to-end predictions)
    end_to_end_ms: float
    evidence: MachineEvidence
    record: dict[str, Any]  # MeasurePoint fields


def _layer_point(label: str, graph: LayerGraph, name: str, option: str, latency_ms: float,
                 charged: Mapping[str, list[int]]) -> FitPoint:
    return FitPoint(label, (graph.layer(name),), option, latency_ms, (tuple(charged[name]),),
                    whole_network=False, model=graph.model)


def _file_points(path: Path, data: dict[str, Any], graph: LayerGraph,
                 min_layer_us: float) -> _Unit:
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
        option = str(options.get(name, "fp32"))
        pts.append(_layer_point(f"{path.name}:{name}", graph, name, option,
                                max(us, 1e-3) / 1e3, charged))
        mask.append(us >= min_layer_us)
    host = data.get("host") or {}
    settings = data.get("settings") or {}
    record = {"kind": "edgefit-measure", "model": str(data["model"].get("path", "")),
              "model_bytes": data["model"].get("bytes"), "cpu_model": host.get("cpu_model"),
              "onnxruntime": host.get("onnxruntime"), "threads": settings.get("threads"),
              "timestamp": data.get("timestamp"), "machine": host.get("machine"),
              "core": host.get("cpu_core")}
    evidence = MachineEvidence(cpu=host.get("cpu_model"), core=host.get("cpu_core"),
                               machine=host.get("machine"))
    return _Unit(path, path.name, graph, pts, mask, pts,
                 float(data["latency_ms"]["median"]), evidence, record)


def _timed_unit(run: TimedRun, min_layer_us: float) -> _Unit:
    """A timing file's model: its per-layer times (by name or '#i'), every layer's kernel."""
    graph, entry = run.graph, run.entry
    names = graph.layer_names
    charged = charged_ops(graph)
    label = f"{run.path.name}:{entry.model}"
    given: dict[str, float] = {}
    for key, ms in entry.layers_ms.items():
        name = _layer_key(key, names, run.path, entry.model)
        if name in given:
            raise SpecError(f"{run.path}: {entry.model}: layer {name!r} is given twice "
                            f"(as {key!r} too)")
        given[name] = ms
    pts = [_layer_point(f"{label}:{n}", graph, n, run.kernels[n], given[n], charged)
           for n in names if n in given]
    every = [_layer_point(f"{label}:{n}", graph, n, run.kernels[n], given.get(n, 1.0), charged)
             for n in names]
    t = run.timing
    record = {"kind": "edgefit-timing", "model": run.model_path, "cpu_model": t.cpu,
              "core": t.core, "board": t.board, "runtime": t.runtime,
              "runtime_family": t.runtime_family, "end_to_end_runs": len(entry.runs_ms),
              "energy_mj": entry.energy_mj}
    evidence = MachineEvidence(cpu=t.cpu, core=t.core, board=t.board, device=t.device)
    return _Unit(run.path, label, graph, pts, [1e3 * p.latency_ms >= min_layer_us for p in pts],
                 every, entry.median_ms, evidence, record)


def _layer_key(key: str, names: Sequence[str], path: Path, model: str) -> str:
    if key in names:
        return key
    if key.startswith("#") and key[1:].isdigit() and int(key[1:]) < len(names):
        return names[int(key[1:])]
    raise SpecError(f"{path}: {model}: layers_ms key {key!r} is neither a layer of the model "
                    f"nor '#0'..'#{len(names) - 1}' (its layers: {', '.join(names[:5])}"
                    f"{', ...' if len(names) > 5 else ''})")


def _check_machines(units: Sequence[_Unit], spec: DeviceSpec, allow_other: bool) -> list[str]:
    """Refuse timings from a provably different machine (unless allowed); warnings for the
    allowed ones and for those nothing identifies. Each unit records its verdict."""
    from device_specs.catalog import catalog_files, load_spec

    others = []
    for path in catalog_files():
        with contextlib.suppress(EdgefitError):  # a broken catalog file is not this check's
            others.append(load_spec(path.stem))
    warnings: list[str] = []
    for u in units:
        verdict, reason = machine_verdict(spec, u.evidence, others)
        u.record["machine_check"] = f"{verdict}: {reason}"
        if verdict == "mismatch" and not allow_other:
            raise MachineMismatchError(
                f"{u.path}: timed on another machine than {spec.name} ({reason}; the file "
                f"says {u.evidence.describe()}); refusing to calibrate {spec.name} with it "
                "(--allow-other-machine to do it anyway)")
        if verdict == "mismatch":
            warnings.append(f"{u.label}: timed on another machine ({reason}), allowed by "
                            "--allow-other-machine")
        elif verdict == "unknown":
            warnings.append(f"{u.label}: {reason}")
    return warnings


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




def _fit_layers(units: list[_Unit], profile: Profile,
                ) -> tuple[Solved | None, list[FitPoint]]:
    train = [p for u in units for p, keep in zip(u.points, u.fit_mask, strict=True) if keep]
    if len(train) <= 1:
        return None, train
    cands, ref = _measured_candidates(train)
    base = _normalised(Params.of_profile(profile), ref)
    return solve(Features(train, profile), base, cands), train


def _predict_end_to_end(u: _Unit, prof: Profile, params: Params) -> float:
    return float(Features(u.every_layer, prof).predict(params).sum()) + params.run_overhead_ms


def _run_overhead(units: list[_Unit], profile: Profile, params: Params) -> float:
    no_run = Params(params.rates, params.efficiency, params.layer_overhead_ms, params.bandwidth)
    gaps = [u.end_to_end_ms - _predict_end_to_end(u, profile, no_run) for u in units]
    return max(0.0, float(np.median(gaps))) if gaps else 0.0


def _scaled(base: Params, options: Sequence[str], scale: float) -> Params:
    rates = {o: r * scale if o in options else r for o, r in base.rates.items()}
    return Params(rates, base.efficiency, base.layer_overhead_ms, base.bandwidth,
                  base.run_overhead_ms)


def _fit_scale(units: Sequence[_Unit], prof: Profile) -> tuple[float, list[str]] | None:
    """One scale on the rates of the kernels the timed models ran, by least squares on log
    end-to-end latency (every other number keeps the spec's value). None when the spec's fixed
    costs (overheads, memory-bound layers) alone exceed a timing: no scale fits."""
    options = sorted({p.option for u in units for p in u.every_layer})
    base = Params.of_profile(prof)
    feats = [Features(u.every_layer, prof) for u in units]
    measured = np.log([u.end_to_end_ms for u in units])

    def residual(theta: np.ndarray) -> np.ndarray:
        params = _scaled(base, options, float(np.exp(theta[0])))
        pred = [float(f.predict(params).sum()) + params.run_overhead_ms for f in feats]
        return np.log(np.maximum(pred, 1e-300)) - measured

    start = np.array([float(np.median(-residual(np.zeros(1))))])  # log(pred / measured)
    theta, _ = levenberg_marquardt(residual, start, np.array([-THETA_RANGE]),
                                   np.array([THETA_RANGE]))
    # d log(prediction) / d log(scale): about -1 where the rates are the time, about 0 where
    # overheads or memory-bound layers are (then the scale moves nothing: not identified)
    slope = (residual(theta + 1e-4) - residual(theta)) / 1e-4
    if abs(theta[0]) >= THETA_RANGE - 1e-6 or float(np.max(np.abs(slope))) < MIN_RATE_SHARE:
        return None
    return float(np.exp(theta[0])), options


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
    kept = "kept from the spec" if "rate_scale" in p.fitted else "fitted"
    lines.append(f"  layer overhead {p.layer_overhead_ms:.4g} ms, bandwidth "
                 f"{p.memory_bandwidth_bytes_per_s / 1e9:.4g} GB/s, run overhead "
                 f"{p.run_overhead_ms:.4g} ms" + (f" ({kept})" if "rate_scale" in p.fitted
                                                  else ""))
    if s.get("fitted_layers"):
        judged = s.get("layer_mape_ge_20us")
        lines.append(f"  per-layer MAPE {_fmt_pct(s.get('layer_mape'))} (in-sample; layers >= "
                     f"{JUDGED_LAYER_US:g} µs: {_fmt_pct(judged)}), end-to-end MAPE "
                     f"{_fmt_pct(s.get('end_to_end_mape'))}")
    if "rate_scale" in p.fitted:
        lines.append(f"  end-to-end MAPE {_fmt_pct(s.get('end_to_end_mape'))} in-sample, "
                     f"{_fmt_pct(s.get('end_to_end_loo_mape'))} leave-one-out (the spec "
                     f"before: {_fmt_pct(s.get('catalog_end_to_end_mape'))})")
    for r in result.residuals.end_to_end:
        before = (f", spec before {r.catalog_predicted_ms:.4g} ms" if r.catalog_predicted_ms
                  else "")
        role = "fitted" if r.fitted else "not fitted (check)"
        lines.append(f"  {r.file}: measured {r.measured_ms:.4g} ms, calibrated "
                     f"{r.predicted_ms:.4g} ms ({_signed_pct(r.error)}){before} [{role}]")
    for h in result.residuals.leave_one_file_out:
        layer = f"layer MAPE {_fmt_pct(h.layer_mape)}, " if h.layer_mape is not None else ""
        lines.append(f"  held out {h.file}: {layer}end to end "
                     f"{_signed_pct(h.end_to_end_error)}" + (f" ({h.note})" if h.note else ""))
    if not result.residuals.leave_one_file_out:
        lines.append("  no held-out error: fewer than 2 files/models to leave one out")
    return lines


def _fmt_pct(x: object) -> str:
    return f"{100 * x:.1f} %" if isinstance(x, float) and not math.isnan(x) else "-"


def _signed_pct(x: object) -> str:
    return f"{100 * x:+.1f} %" if isinstance(x, float) and not math.isnan(x) else "-"


def calibrate(device: str, measure_files: Sequence[Path], graphs: Sequence[LayerGraph], *,
              timed: Sequence[TimedRun] = (), profile: str | None = None,
              out_dir: Path | None = None, min_layer_us: float = 5.0, write: bool = True,
              allow_other_machine: bool = False) -> CalibrationResult:
    """Fit `device`'s profile to per-layer times of `edgefit_measure` JSON files and to the
    models of timing files (`timed`).

    graphs[i] is the layer graph of the model measured in measure_files[i] (layer names as in
    the file, e.g. from :func:`cost_models.capture_onnx.capture_onnx`). A layer's option is
    the file's `model.options` entry (written by `edgefit apply`), else fp32. Layers faster
    than `min_layer_us` are not fitted (profiler granularity), but their residuals are
    reported. With per-layer times anywhere, the layer fit (models timed end to end only are
    then checks, not fitted); without, one scale on the rates. Timings from another machine
    than the device's CPU: MachineMismatchError unless `allow_other_machine` (then recorded in
    `machine_warnings`). Writes `<out_dir or cache>/<device>.calibration.yaml` atomically
    unless `write` is False.
    """
    from cost_models.host_probe import target_spec

    if len(measure_files) != len(graphs):
        raise SpecError(f"{len(measure_files)} measure files but {len(graphs)} layer graphs: "
                        "give one graph per file")
    if not measure_files and not timed:
        raise SpecError("calibrate: no measure or timing files given")
    spec = target_spec(device)
    profile_name = profile or spec.default_profile
    if profile_name not in spec.profiles:
        raise SpecError(f"profile {profile_name!r} is not a profile of {spec.name}; known: "
                        f"{', '.join(spec.profiles)}")
    prof = spec.profile(profile_name)
    units = [_file_points(Path(p), read_measure_file(Path(p)), g, min_layer_us)
             for p, g in zip(measure_files, graphs, strict=True)]
    units += [_timed_unit(run, min_layer_us) for run in timed]
    for u in units:
        for p in u.every_layer:
            if p.option not in prof.kernels:
                raise SpecError(f"{u.path}: layer {p.layers[0].name} ran {p.option!r}, which "
                                f"{spec.name}/{profile_name} has no kernel for (it has "
                                f"{', '.join(prof.kernels)})")
    warnings = _check_machines(units, spec, allow_other_machine)
    layered = [u for u in units if u.points]
    fit = (_layer_fit(layered, [u for u in units if not u.points], prof, min_layer_us)
           if layered else _scale_fit(units, prof))
    result = CalibrationResult(
        device=spec.name, profile=profile_name,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        points=[_measure_point(u) for u in units], machine_warnings=warnings, **fit)
    if write:
        save_calibration(result, calibration_path(spec.name, out_dir))
    return result


def _parameters(fitted: list[str], params: Params, options: Sequence[str]
                ) -> CalibratedParameters:
    return CalibratedParameters(
        fitted=fitted,
        kernels={o: CalibratedKernel(macs_per_s=params.rates[o],
                                     op_efficiency=dict(params.efficiency.get(o, {})))
                 for o in options},
        layer_overhead_ms=params.layer_overhead_ms,
        memory_bandwidth_bytes_per_s=params.bandwidth, run_overhead_ms=params.run_overhead_ms)


def _layer_fit(units: list[_Unit], checks: list[_Unit], prof: Profile,
               min_layer_us: float) -> dict[str, Any]:
    """The per-layer fit (as for measure files); `checks` (end-to-end only) are predicted."""
    solved, train = _fit_layers(units, prof)
    if solved is None:
        raise SpecError(f"calibrate: {len(train)} layer{'s' if len(train) != 1 else ''} of "
                        f"at least {min_layer_us:g} µs in {len(units)} files: no fit")
    run_ovh = _run_overhead(units, prof, solved.params)
    params = Params(solved.params.rates, solved.params.efficiency,
                    solved.params.layer_overhead_ms, solved.params.bandwidth, run_ovh)
    layers, e2e, summary = _calibration_residuals(units, prof, params)
    e2e += [_e2e_residual(u, prof, params, fitted=False) for u in checks]
    held_out = _leave_one_file_out(units, prof) if len(units) >= 2 else []
    options = sorted({f.split(":")[1] for f in solved.free if f.startswith("rate:")})
    checked = (f"; {len(checks)} model{'s' if len(checks) != 1 else ''} timed end to end "
               "only, predicted as checks") if checks else ""
    return {
        "method": "least squares on log per-layer latency (Levenberg-Marquardt, log parameters) "
                  "of the analytical roofline (cost_models.analytical); run_overhead = median "
                  "over files of end-to-end median minus the sum of predicted layers",
        "message": f"{len(train)} layers fitted, {len(solved.free)} free parameters "
                   f"({', '.join(solved.free)}), {len(train) - len(solved.free)} degrees of "
                   f"freedom{checked}",
        "parameters": _parameters([*solved.free, "run_overhead"], params, options),
        "residuals": Residuals(layers=layers, end_to_end=e2e, summary=summary,
                               leave_one_file_out=held_out),
    }


def _scale_fit(units: list[_Unit], prof: Profile) -> dict[str, Any]:
    """End-to-end timings only: the one scale on the rates they determine."""
    got = _fit_scale(units, prof)
    if got is None:
        raise SpecError("calibrate: under the profile, overheads and memory-bound layers make "
                        "up almost all of these models' time (or alone exceed it), so one scale "
                        "on the kernel rates cannot fit the end-to-end timings: give per-layer "
                        "times (layers_ms)")
    scale, options = got
    params = _scaled(Params.of_profile(prof), options, scale)
    e2e = [_e2e_residual(u, prof, params, fitted=True) for u in units]
    held = _scale_leave_one_out(units, prof) if len(units) >= 2 else []
    n = len(units)
    mape_in = mape_of([r.error for r in e2e])
    loo = mape_of([h.end_to_end_error for h in held if h.end_to_end_error is not None])
    kernels = ", ".join(options)
    return {
        "method": "one scale on the rates of the kernels timed, least squares on log "
                  "end-to-end latency of the analytical roofline (cost_models.analytical); "
                  "layer overhead, bandwidth, op efficiencies and run overhead keep the "
                  "spec's values (end-to-end timings do not separate them)",
        "message": f"1 parameter from {n} end-to-end point{'s' if n != 1 else ''}: one scale "
                   f"x{scale:.4g} on the {kernels} rate{'s' if len(options) > 1 else ''}"
                   + (" (exact by construction: 0 degrees of freedom)" if n == 1 else ""),
        "parameters": _parameters(["rate_scale"], params, options),
        "residuals": Residuals(
            layers=[], end_to_end=e2e, leave_one_file_out=held,
            summary={"layers": 0, "fitted_layers": 0, "end_to_end_points": n,
                     "rate_scale": scale, "end_to_end_mape": mape_in,
                     "end_to_end_loo_mape": loo,
                     "catalog_end_to_end_mape": mape_of(
                         [(r.catalog_predicted_ms or math.nan) / r.measured_ms - 1
                          for r in e2e]),
                     "note": "end_to_end_mape is in-sample; end_to_end_loo_mape predicts each "
                             "point from a scale fitted on the others"}),
    }


def _scale_leave_one_out(units: list[_Unit], prof: Profile) -> list[HeldOutFile]:
    out = []
    for i, held in enumerate(units):
        rest = units[:i] + units[i + 1:]
        got = _fit_scale(rest, prof)
        held_options = {p.option for p in held.every_layer}
        if got is None or not held_options <= set(got[1]):
            note = ("the others: no fit" if got is None
                    else "its kernels were not timed in the others")
            out.append(HeldOutFile(file=held.label, layers=len(held.every_layer),
                                   layer_mape=None, end_to_end_error=None, note=note))
            continue
        params = _scaled(Params.of_profile(prof), got[1], got[0])
        err = _predict_end_to_end(held, prof, params) / held.end_to_end_ms - 1
        out.append(HeldOutFile(file=held.label, layers=len(held.every_layer), layer_mape=None,
                               end_to_end_error=err, note=f"scale x{got[0]:.4g} fitted on the "
                               f"other {len(rest)}"))
    return out


def _e2e_residual(u: _Unit, prof: Profile, params: Params, fitted: bool) -> EndToEndResidual:
    total = _predict_end_to_end(u, prof, params)
    catalog = _predict_end_to_end(u, prof, Params.of_profile(prof))
    return EndToEndResidual(file=u.label, measured_ms=u.end_to_end_ms, predicted_ms=total,
                            error=total / u.end_to_end_ms - 1, catalog_predicted_ms=catalog,
                            fitted=fitted)


def _measure_point(u: _Unit) -> MeasurePoint:
    return MeasurePoint(
        file=str(u.path), sha256=_sha256(u.path), graph=u.graph.model,
        layers=len(u.every_layer), fitted_layers=sum(u.fit_mask),
        options=sorted({p.option for p in u.every_layer}),
        latency_median_ms=u.end_to_end_ms, **u.record)


def _calibration_residuals(units: list[_Unit], prof: Profile, params: Params,
                           ) -> tuple[list[LayerResidual], list[EndToEndResidual],
                                      dict[str, float | int | str | None]]:
    layers, e2e = [], []
    for u in units:
        pred = Features(u.points, prof).predict(params)
        for p, pr, keep in zip(u.points, pred, u.fit_mask, strict=True):
            layers.append(LayerResidual(
                file=u.label, layer=p.layers[0].name, op_class=p.layers[0].op_class,
                option=p.option, macs=p.layers[0].macs, measured_ms=p.latency_ms,
                predicted_ms=float(pr), error=float(pr / p.latency_ms - 1), fitted=keep))
        e2e.append(_e2e_residual(u, prof, params, fitted=True))
    fitted = [r.error for r in layers if r.fitted]
    judged = [r.error for r in layers if r.measured_ms * 1e3 >= JUDGED_LAYER_US]
    summary: dict[str, float | int | str | None] = {
        "layers": len(layers), "fitted_layers": len(fitted),
        "layer_mape": mape_of(fitted),
        "layer_mape_ge_20us": mape_of(judged), "layers_ge_20us": len(judged),
        "end_to_end_mape": mape_of([r.error for r in e2e]),
        "note": "end-to-end of a single file is exact by construction (run_overhead absorbs "
                "the gap)" if len(units) == 1 else None,
    }
    return layers, e2e, summary


def _leave_one_file_out(units: list[_Unit], prof: Profile) -> list[HeldOutFile]:
    out = []
    for i, held in enumerate(units):
        rest = units[:i] + units[i + 1:]
        solved, _ = _fit_layers(rest, prof)
        name = held.label
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
        if all(p.option in options for p in held.every_layer):
            e2e = _predict_end_to_end(held, prof, params) / held.end_to_end_ms - 1
        out.append(HeldOutFile(file=name, layers=len(usable), layer_mape=mape_of(errs),
                               end_to_end_error=e2e,
                               note=f"layer MAPE over layers >= {JUDGED_LAYER_US:g} µs"))
    return out
