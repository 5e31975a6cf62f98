"""Low-rank options' host latency: the formula, the one-layer measurement, and the whole model.

For every low-rank option the host planner offers on a built-in CNN (fp32 and int8 kernels),
three predictions of the factorised layer's latency as a ratio to the dense layer's:

  formula   what plans used before issue #22's fix: the analytical roofline's ratio of the
            factors' latency to the dense layer's (cost_models.analytical, the host probe's rates);
  one-layer what plans use now: cost_models.micro_latency's measured ratio of a one-layer model
            of the factors to one of the dense layer (same form and session settings);
  in model  the check, on data neither was fitted on: the whole model exported twice, dense and
            with that one layer factorised, every layer in the same form, timed end to end
            interleaved; ratio = (dense layer's profiled in-model time + the end-to-end
            difference) / the dense layer's profiled in-model time.

Reported per option, and as the median absolute error of each prediction against "in model"
in microseconds of whole-model latency (|ratio - in-model ratio| x the dense layer's time).

Run: .venv/bin/python benchmarks/micro_latency.py  (writes docs/bench-micro-latency.md)
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("lenet5-mnist", "fashion-cnn")
FORMS = ("fp32", "int8")
REPEATS = 3  # interleaved measurements of each difference (median)
RESOLVED = 3.0  # a row is judged when its dense layer takes >= this x the A/A noise


def _setup(name: str) -> dict[str, Any]:
    from cost_models.analytical import build_cost_table
    from cost_models.capture import capture
    from cost_models.host_probe import host_spec
    from cost_models.profile_cache import ProfileCache
    from cost_models.profiler import layer_signatures, profile_host
    from edgefit.planning import (
        calibration_split,
        configs_of,
        layer_options,
        lowrank_factors,
    )
    from edgefit_common.paths import cache_dir
    from workloads.models import load_model_ref

    loaded = load_model_ref(name, None, None)
    module = loaded.torch_module().eval()
    graph = capture(module, loaded.input_shape, loaded.name)
    spec = host_spec()
    kernels = {k: v for k, v in spec.profile().kernels.items() if k in FORMS}
    offered = layer_options(graph, kernels, module)
    configs = configs_of(offered)
    table = build_cost_table(graph, spec, factored=lowrank_factors(module, graph, configs),
                             layer_options={ly: list(r.values()) for ly, r in offered.items()})
    calib = calibration_split(loaded.dataset)
    assert calib is not None
    x = calib[0][:128]
    with ProfileCache(cache_dir() / "profiles.sqlite") as cache:
        profiled = profile_host(module, loaded.input_shape, graph, list(kernels), cache, x,
                                progress=False)
    return {"loaded": loaded, "module": module, "graph": graph, "offered": offered,
            "table": table, "profiled": profiled, "x": x,
            "sigs": layer_signatures(module, loaded.input_shape, graph)}


def _factorised_model(module: Any, layer: str, option: Any) -> Any:
    from techniques.lowrank import factorize, lowrank_config

    model = copy.deepcopy(module)
    parent_name, _, child = layer.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    config = lowrank_config(option.techniques)
    assert config is not None
    setattr(parent, child, factorize(getattr(parent, child), config, layer))
    return model


def _whole_model(model: Any, input_shape: tuple[int, ...], form: str, x: np.ndarray,
                 path: Path) -> Path:
    import json

    import onnx

    from cost_models.export import export_fp32
    from formats.onnx_io import LAYERS_KEY
    from techniques.onnx.writer import quantize_onnx

    fp32 = path.with_suffix(".fp32.onnx")
    export_fp32(model, input_shape, fp32)
    if form == "fp32":
        return fp32
    meta = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
    layers = json.loads(meta[LAYERS_KEY])
    quantize_onnx(fp32, path, {name: form for name in layers}, x)
    return path


def _rows(name: str) -> list[dict[str, Any]]:
    from cost_models import micro_latency as ml
    from cost_models.profile_cache import ProfileCache
    from cost_models.profiler import host_fingerprint
    from edgefit_common.paths import cache_dir

    s = _setup(name)
    offered, table, profiled = s["offered"], s["table"], s["profiled"]
    variants, pairs = ml.variants_of(s["module"], s["graph"], offered, s["sigs"])
    with ProfileCache(cache_dir() / "profiles.sqlite") as cache:
        net = ml.measure_variants(variants, s["sigs"], host_fingerprint(), cache)
    micro = ml.measured_ratios(net, pairs)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgefit-bench-micro-") as tmp:
        dense_paths = {form: _whole_model(s["module"], s["loaded"].input_shape, form, s["x"],
                                          Path(tmp) / f"dense-{form}.onnx") for form in FORMS}
        # A/A: the dense model against a copy of itself, the noise floor of a difference
        noise = {}
        for form, path in dense_paths.items():
            twin = Path(tmp) / f"twin-{form}.onnx"
            twin.write_bytes(path.read_bytes())
            noise[form] = abs(_difference_us(path, twin))
        for (layer, option_name), ratio in sorted(micro.items()):
            option = offered[layer][option_name]
            form = option.kernel
            cost = {c.option: c for c in table.options[layer]}[option_name]
            var_path = _whole_model(_factorised_model(s["module"], layer, option),
                                    s["loaded"].input_shape, form, s["x"],
                                    Path(tmp) / f"{layer}-{option_name}.onnx")
            diff_us = _difference_us(dense_paths[form], var_path)
            layer_us = 1e3 * profiled[(layer, form)].closed_ms
            in_model = (layer_us + diff_us) / layer_us
            rows.append({"model": name, "layer": layer, "option": option_name,
                         "layer_us": layer_us, "formula": cost.latency_ratio,
                         "one_layer": ratio, "in_model": in_model, "diff_us": diff_us,
                         "noise_us": noise[form]})
            print(f"{name:13s} {layer:6s} {option_name:10s} dense layer {layer_us:7.2f} us  "
                  f"formula {cost.latency_ratio:5.2f}  one-layer {ratio:5.2f}  "
                  f"in model {in_model:5.2f}", flush=True)
    return rows


def _difference_us(dense: Path, variant: Path) -> float:
    """variant - dense end to end (µs): the median of REPEATS interleaved measurements."""
    from cost_models import micro_latency as ml

    diffs = []
    for _ in range(REPEATS):
        d_us, v_us = ml.interleaved_us([dense, variant], rounds=21, runs=60)
        diffs.append(v_us - d_us)
    return float(np.median(diffs))


def _error_us(rows: list[dict[str, Any]], key: str) -> float:
    return float(np.median([abs(r[key] - r["in_model"]) * r["layer_us"] for r in rows]))


def _resolved(r: dict[str, Any]) -> bool:
    return bool(r["layer_us"] >= RESOLVED * r["noise_us"])


def _markdown(rows: list[dict[str, Any]], cmd: str) -> str:
    lines = [
        "# Low-rank options' host latency: formula vs one-layer measurement vs whole model",
        "",
        f"Made by `{cmd}` on {dt.date.today().isoformat()} (one run; this machine: 2 shared "
        "cores, onnxruntime 1 thread, opt level all). What each column is: the docstring of "
        "`benchmarks/micro_latency.py`. Ratios are the factorised layer's latency over the "
        "dense layer's; `in model` is the check (whole model, dense vs that one layer "
        "factorised, end to end, interleaved), on data neither prediction was fitted on.",
        "",
        "A row is judged only where the dense layer's time is at least "
        f"{RESOLVED:g}x the A/A noise (the whole model against a copy of itself, same "
        "procedure); the others are marked and left out of the summary.",
        "",
        "| model | layer | option | dense layer (µs, in model) | formula | one-layer | in model "
        "| A/A noise (µs) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        judged = "" if _resolved(r) else " (within noise)"
        lines.append(f"| {r['model']} | {r['layer']} | {r['option']} | {r['layer_us']:.2f} | "
                     f"{r['formula']:.2f} | {r['one_layer']:.2f} | {r['in_model']:.2f}{judged} "
                     f"| {r['noise_us']:.2f} |")
    noisy = [r for r in rows if not _resolved(r)]
    rows = [r for r in rows if _resolved(r)]
    slower = [r for r in rows if r["in_model"] > 1.0]
    said_faster = [r for r in slower if r["formula"] < 1.0]
    caught = [r for r in slower if r["one_layer"] > 1.0]
    lines += [
        "",
        "## Summary",
        "",
        f"- {len(rows) + len(noisy)} low-rank options, {len(noisy)} within noise; of the "
        f"{len(rows)} judged, {len(slower)} ran slower than the dense layer in the "
        f"whole model. The formula called {len(said_faster)} of those faster; the one-layer "
        f"measurement called {len(caught)} of them slower.",
        f"- Median absolute error against the whole model, in µs of model latency: formula "
        f"{_error_us(rows, 'formula'):.2f}, one-layer measurement "
        f"{_error_us(rows, 'one_layer'):.2f}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench-micro-latency.md")
    args = ap.parse_args()
    rows = [r for name in args.models.split(",") for r in _rows(name)]
    cmd = ".venv/bin/python benchmarks/micro_latency.py" + (
        f" --models {args.models}" if args.models != ",".join(MODELS) else "")
    text = _markdown(rows, cmd)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
