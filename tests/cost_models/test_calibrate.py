"""Published points as data, MAC enumeration, the analytical fit and calibration from measure files.

Everything here is synthetic or published data: no timing of this machine is asserted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from cost_models import calibrate as cal
from cost_models import calibration_file as cfile
from cost_models import fit as lm
from cost_models import published as pub
from cost_models import published_fit as pfit
from cost_models.analytical import build_cost_table, layer_flash_bytes, layer_latency_ms
from cost_models.graph import Layer, LayerGraph, Step, Tensor
from device_specs.catalog import catalog_files, load_spec
from device_specs.schema import Profile
from edgefit_common.errors import MachineMismatchError, SpecError

PI4 = "raspberry-pi-4"


# --------------------------------------------------------------------------------------------
# workloads and the points file


@pytest.mark.parametrize(("builder", "published"), [
    (lambda: pub.mobilenet_v2(1.0, 224), 300e6),  # devices.md / S-TFSLIM
    (lambda: pub.mobilenet_v1(0.25, 128), 14e6),  # devices.md / S-TFSLIM
    (lambda: pub.mobilenet_v1(1.0, 224), 569e6),  # devices.md / S-TFSLIM
    (lambda: pub.resnet(50, 224), 4.1e9),  # devices.md s.3c
    (lambda: pub.resnet(50, 256), 5.36e9),  # devices.md s.3c (derived)
    (lambda: pub.mobilenet_v1(0.25, 96, channels=1, classes=2), 7.2e6),  # devices.md s.3
])
def test_mac_counts_reproduce_published_totals(builder, published: float) -> None:
    w = builder()
    assert abs(w.macs / published - 1) <= 0.05
    assert sum(w.macs_by_class().values()) == w.macs


def test_every_published_macs_figure_in_the_yaml_is_reproduced() -> None:
    data = pub.load_points_file()
    checked = 0
    for name, entry in data.models.items():
        w = pub.workload(name)
        assert entry.summary == w.summary(), f"{name}: summary in the YAML is stale"
        if entry.published_macs is not None:
            assert abs(w.macs / entry.published_macs.value - 1) <= 0.05, name
            checked += 1
    assert checked >= 10


def test_class_split_follows_the_architecture() -> None:
    by = pub.mobilenet_v2().macs_by_class()
    # MobileNetV2: 1x1 convs dominate, depthwise a few percent, one 3x3 stem conv
    assert by["pointwise"] > 0.85 * sum(by.values()) and 0.03 < by["depthwise"] / 300e6 < 0.1
    assert pub.resnet(18).macs_by_class()["depthwise"] == 0
    k = pub.conv_kernel(64, 10, 10, 64, 1)
    assert k.macs == 409_600 and k.layers[0].op_class == "pointwise"


def test_points_follow_the_split_rule_and_the_catalog() -> None:
    assert pub.check_split_rule() == []
    data = pub.load_points_file()
    for p in data.points:
        profile = load_spec(p.device).profile(p.profile)
        assert p.precision in profile.kernels, f"{p.device}/{p.profile} has no {p.precision}"
    # where a profile has primary rows, every other row is kept aside; DeepEdgeBench is fitted
    assert {p.use for p in data.points if p.source == "S-DEB"} == {"fit"}
    assert {p.use for p in pub.points("jetson-nano", "onnxruntime-cpu")
            if p.source == "S-NCNN1"} == {"aside"}
    assert {p.use for p in pub.points(PI4, "ncnn-4t")} == {"fit"}  # no primary rows there


def test_points_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "points.yaml"
    bad.write_text("format: edgefit-published-points\nformat_version: 2\n")
    with pytest.raises(SpecError, match="points.yaml"):
        pub.load_points_file(bad)


# --------------------------------------------------------------------------------------------
# the predictor is the planner's formula


def _graph(name: str, layers: tuple[Layer, ...], op_after: set[int]) -> LayerGraph:
    """Layers in a chain; an elementwise op (charged to the layer) after those in op_after."""
    tensors = {"x": Tensor("x", layers[0].input_numel, None)}
    steps, prev = [], "x"
    for i, layer in enumerate(layers):
        tensors[layer.name] = Tensor(layer.name, layer.output_numel, layer.name)
        steps.append(Step(layer.name, "layer", "Conv", (prev,), layer.name, layer.name))
        prev = layer.name
        if i in op_after:
            out = f"{layer.name}.pool"
            tensors[out] = Tensor(out, layer.output_numel, layer.name)
            steps.append(Step(out, "op", "Add", (prev,), out, layer.name))
            prev = out
    return LayerGraph(name, (3, 8, 8), list(layers), steps, tensors, (prev,))


def _layer_points(graph: LayerGraph, option: str) -> list[lm.FitPoint]:
    charged = cal.charged_ops(graph)
    return [lm.FitPoint(layer.name, (layer,), option, 1.0, (tuple(charged[layer.name]),),
                         whole_network=False) for layer in graph.layers]


@pytest.mark.parametrize(("device", "profile"), [("jetson-nano", "tensorrt-gpu"),
                                                 ("esp32-s3", "esp-nn"), (PI4, "tflite-cpu")])
def test_vectorised_predictor_equals_analytical(device: str, profile: str) -> None:
    prof = load_spec(device).profile(profile)
    option = next(iter(prof.kernels))
    pts = [lm.FitPoint.of_workload(w, option, 1.0)
           for w in (pub.mobilenet_v2(1.0, 96), pub.resnet(18, 64), pub.mobilenet_v3("small"))]
    fast = lm.Features(pts, prof).predict(lm.Params.of_profile(prof))
    assert np.allclose(fast, [lm.predict_analytical(p, prof) for p in pts], rtol=1e-12)
    # per layer, with charged ops, against the cost table the planner builds
    graph = _graph("g", pub.mobilenet_v2(1.0, 64).layers, {2, 5, 9})
    table = build_cost_table(graph, load_spec(device), profile)
    lp = _layer_points(graph, option)
    fast = lm.Features(lp, prof).predict(lm.Params.of_profile(prof))
    assert np.allclose(fast, [table.cost(p.label, option).latency_ms for p in lp], rtol=1e-12)


# --------------------------------------------------------------------------------------------
# fitting whole-network points


TRUTH = lm.Params(rates={"fp32": 3.0e9, "int8": 5.5e9},
                   efficiency={"fp32": {"depthwise": 0.3}, "int8": {"depthwise": 0.3}},
                   layer_overhead_ms=0.05, bandwidth=2.8e9)
TRUTH_FREE = ["rate:fp32", "rate:int8", "overhead", "eff:depthwise"]


def _truth_profile(base: Profile) -> Profile:
    return lm.apply_params(base, TRUTH, TRUTH_FREE, "synthetic truth", "derived")


def _synthetic_points(profile: Profile, noise: list[float] | None = None) -> list[lm.FitPoint]:
    truth = _truth_profile(profile)
    works = [pub.mobilenet_v2(1.0, 224), pub.mobilenet_v1(0.25, 128), pub.resnet(18, 128),
             pub.mobilenet_v3("small"), pub.mobilenet_v1(0.5, 160)]
    pts = []
    for i, (w, option) in enumerate([(w, o) for w in works for o in ("fp32", "int8")]):
        p = lm.FitPoint.of_workload(w, option, 1.0)
        t = lm.predict_analytical(p, truth) * (1 + (noise[i] if noise else 0.0))
        pts.append(lm.FitPoint.of_workload(w, option, t, label=f"{w.name} {option} {i}"))
    return pts


def test_fit_recovers_known_parameters() -> None:
    profile = load_spec(PI4).profile("tflite-cpu")
    fit = pfit.fit_profile(_synthetic_points(profile), profile, loo=False)
    assert fit.status == "fit" and fit.params is not None
    assert set(TRUTH_FREE) <= set(fit.free)
    assert fit.params.rates["fp32"] == pytest.approx(3.0e9, rel=1e-3)
    assert fit.params.rates["int8"] == pytest.approx(5.5e9, rel=1e-3)
    assert fit.params.layer_overhead_ms == pytest.approx(0.05, rel=1e-3)
    assert fit.params.efficiency["fp32"]["depthwise"] == pytest.approx(0.3, rel=1e-3)
    assert fit.mape is not None and fit.mape < 1e-4
    assert fit.catalog_mape is not None and fit.catalog_mape > 0.2  # the catalog is not the truth
    # the fitted profile predicts through the planner's own formula
    fitted = pfit.apply_fit(profile, fit)
    assert fitted.kernels["fp32"].macs_per_s.derived.startswith("calibrated: fitted on 10")
    p = _synthetic_points(profile)[0]
    assert lm.predict_analytical(p, fitted) == pytest.approx(p.latency_ms, rel=1e-4)


def test_leave_one_out_on_synthetic_points() -> None:
    profile = load_spec(PI4).profile("tflite-cpu")
    exact = pfit.fit_profile(_synthetic_points(profile), profile)
    assert len(exact.loo) == exact.n_points == 10
    assert exact.loo_mape is not None and exact.loo_mape < 1e-3  # the model is exact
    noise = list(np.random.default_rng(0).normal(0, 0.05, 10))
    noisy = pfit.fit_profile(_synthetic_points(profile, noise), profile)
    assert noisy.mape is not None and noisy.loo_mape is not None
    assert 0.005 < noisy.mape < 0.1
    assert noisy.loo_mape >= noisy.mape  # predicting an unseen point is harder than fitting it


def test_too_few_points_say_so() -> None:
    profile = load_spec(PI4).profile("tflite-cpu")
    none = pfit.fit_profile([], profile)
    assert (none.status, none.message, none.params) == ("no fit", "0 points: no fit", None)
    one = pfit.fit_profile(_synthetic_points(profile)[:1], profile)
    assert (one.status, one.message) == ("no fit", "1 point: no fit")
    assert one.residuals[0].catalog_ms > 0 and one.loo_mape is None
    two = pfit.fit_profile(_synthetic_points(profile)[:2], profile)
    assert two.status == "fit" and len(two.free) == 1 and two.loo_mape is None


def test_published_fit_runs_for_a_catalog_profile() -> None:
    spec = load_spec("jetson-nano")
    fit = pfit.fit_profile(pub.points("jetson-nano", "tensorrt-gpu", "fit"),
                          spec.profile("tensorrt-gpu"))
    assert fit.status == "fit" and fit.n_points == 10 and len(fit.loo) == 10
    assert fit.mape is not None and fit.catalog_mape is not None


# --------------------------------------------------------------------------------------------
# calibrate() from edgefit_measure files


CAL_TRUTH = lm.Params(
    rates={"fp32": 3.0e9, "int8": 6.0e9},
    efficiency={"fp32": {"depthwise": 0.25}, "int8": {"pointwise": 0.7}},
    layer_overhead_ms=0.015, bandwidth=5.0e9)
CAL_FREE = ["rate:fp32", "rate:int8", "overhead", "eff:fp32:depthwise", "eff:int8:pointwise",
            "bandwidth"]


def _measure_json(path: Path, graph: LayerGraph, options: dict[str, str] | None,
                  truth: Profile, version: int = 1) -> None:
    charged = cal.charged_ops(graph)
    layers = {}
    for layer in graph.layers:
        kernel = truth.kernels[(options or {}).get(layer.name, "fp32")]
        ms = layer_latency_ms(layer, kernel, truth, layer_flash_bytes(layer, kernel),
                              [(None, e) for e in charged[layer.name]])  # type: ignore[misc]
        layers[layer.name] = {"median_us": 1e3 * ms + 3, "calibrated_us": 1e3 * ms,
                              "calibrated_ms": ms, "sum_of_node_medians_us": 1e3 * ms + 3,
                              "nodes": [layer.name]}
    total = sum(v["calibrated_ms"] for v in layers.values()) + 0.2
    data = {
        "format": "edgefit-measure", "format_version": version,
        "timestamp": "2025-01-01T00:00:00+00:00",
        "model": {"path": f"/board/{graph.model}.onnx", "bytes": 1234, "inputs": [],
                  "layers": graph.layer_names, "layers_source": "'edgefit.layers' metadata",
                  "options": options},
        "settings": {"runs": 200, "warmup": 20, "threads": 1, "opt_level": "all"},
        "latency_ms": {"median": total, "p10": total, "p90": total, "mean": total,
                       "min": total, "max": total, "runs": 200, "warmup": 20},
        "nodes": [], "layers": layers, "unmapped": {"median_us": 0, "calibrated_us": 0,
                                                    "nodes": []},
        "host": {"cpu_model": "Cortex-A72", "onnxruntime": "1.20.0", "cores": 4},
    }
    path.write_text(json.dumps(data))


@pytest.fixture()
def two_files(tmp_path: Path) -> tuple[list[Path], list[LayerGraph]]:
    base = load_spec(PI4).profile("tflite-cpu")
    truth = lm.apply_params(base, CAL_TRUTH, CAL_FREE, "synthetic truth", "derived")
    g1 = _graph("mnv2_96", pub.mobilenet_v2(1.0, 96).layers, {3, 7, 20})
    g2 = _graph("resnet18_64", pub.resnet(18, 64).layers, {0, 4})
    opts2 = {name: "int8" for name in g2.layer_names[:-1]}  # classifier left in fp32
    f1, f2 = tmp_path / "a.measure.json", tmp_path / "b.measure.json"
    _measure_json(f1, g1, None, truth)
    _measure_json(f2, g2, opts2, truth)
    return [f1, f2], [g1, g2]


def test_calibrate_writes_parameters_points_and_residuals(
        tmp_path: Path, two_files: tuple[list[Path], list[LayerGraph]]) -> None:
    files, graphs = two_files
    out = tmp_path / "cache"
    result = cal.calibrate(PI4, files, graphs, out_dir=out)
    path = out / f"{PI4}.calibration.yaml"
    assert sorted(p.name for p in out.iterdir()) == [path.name]  # atomic: no temp litter
    doc = yaml.safe_load(path.read_text())
    assert doc["format"] == "edgefit-calibration" and doc["format_version"] == 1
    assert doc["device"] == PI4 and doc["profile"] == "tflite-cpu"
    params = doc["parameters"]
    assert params["kernels"]["fp32"]["macs_per_s"] == pytest.approx(3.0e9, rel=1e-3)
    assert params["kernels"]["int8"]["macs_per_s"] == pytest.approx(6.0e9, rel=1e-3)
    assert params["kernels"]["fp32"]["op_efficiency"]["depthwise"] == pytest.approx(0.25,
                                                                                    rel=1e-3)
    assert params["layer_overhead_ms"] == pytest.approx(0.015, rel=1e-3)
    assert params["memory_bandwidth_bytes_per_s"] == pytest.approx(5.0e9, rel=1e-3)
    assert params["run_overhead_ms"] == pytest.approx(0.2, rel=1e-3)
    assert [Path(p["file"]).name for p in doc["points"]] == ["a.measure.json", "b.measure.json"]
    for p, f in zip(doc["points"], files, strict=True):
        assert len(p["sha256"]) == 64 and p["model"].endswith(".onnx") and p["layers"] > 0
        assert p["sha256"] == cal._sha256(f)
    res = doc["residuals"]
    assert len(res["layers"]) == sum(len(g.layers) for g in graphs)
    assert max(abs(r["error"]) for r in res["layers"]) < 1e-3
    assert len(res["end_to_end"]) == 2 and res["summary"]["layer_mape"] < 1e-3
    assert [h["file"] for h in res["leave_one_file_out"]] == ["a.measure.json",
                                                              "b.measure.json"]
    # the loader reads back what was written
    again = cfile.load_calibration(PI4, out)
    assert again == result
    assert cfile.load_calibration("jetson-nano", out) is None


def test_apply_calibration_changes_rates_with_provenance(
        tmp_path: Path, two_files: tuple[list[Path], list[LayerGraph]]) -> None:
    files, graphs = two_files
    result = cal.calibrate(PI4, files, graphs, out_dir=tmp_path)
    spec = load_spec(PI4)
    before = spec.profile("tflite-cpu")
    after = cfile.apply_calibration(before, result)
    assert after.kernels["fp32"].macs_per_s.value == pytest.approx(3.0e9, rel=1e-3)
    assert before.kernels["fp32"].macs_per_s.value == pytest.approx(1.55e9)  # untouched
    prov = after.kernels["fp32"].macs_per_s.provenance
    assert prov.startswith("measured: calibrated: fitted on")
    assert "a.measure.json" in prov and "b.measure.json" in prov
    assert after.layer_overhead.measured and after.memory_bandwidth.measured
    assert after.run_overhead is not None and after.run_overhead.measured
    assert after.kernels["fp32"].op_efficiency["depthwise"].measured
    # the planner's cost table, built from the calibrated spec, reproduces the measurements
    cspec = cfile.calibrated_spec(spec, result)
    table = build_cost_table(graphs[0], cspec, "tflite-cpu")
    assert "calibrated: fitted on" in table.provenance["latency"]
    measured = json.loads(files[0].read_text())["layers"]
    for name, entry in measured.items():
        assert table.cost(name, "fp32").latency_ms == pytest.approx(entry["calibrated_ms"],
                                                                    rel=1e-3)
    assert cspec.profiles["ncnn-4t"] == spec.profiles["ncnn-4t"]


def test_single_file_calibration(tmp_path: Path,
                                 two_files: tuple[list[Path], list[LayerGraph]]) -> None:
    files, graphs = two_files
    result = cal.calibrate(PI4, files[:1], graphs[:1], out_dir=tmp_path, write=False)
    assert list(result.parameters.kernels) == ["fp32"]  # int8 was not measured
    assert result.residuals.leave_one_file_out == []
    assert not (tmp_path / f"{PI4}.calibration.yaml").exists()


def test_bad_measure_inputs_name_the_file(
        tmp_path: Path, two_files: tuple[list[Path], list[LayerGraph]]) -> None:
    files, graphs = two_files
    missing = tmp_path / "nope.measure.json"
    with pytest.raises(SpecError, match="nope.measure.json.*not found"):
        cal.calibrate(PI4, [missing], graphs[:1], out_dir=tmp_path)
    wrong = tmp_path / "v2.measure.json"
    base = load_spec(PI4).profile("tflite-cpu")
    _measure_json(wrong, graphs[0], None, base, version=2)
    with pytest.raises(SpecError, match="v2.measure.json.*format_version 2"):
        cal.calibrate(PI4, [wrong], graphs[:1], out_dir=tmp_path)
    notjson = tmp_path / "junk.json"
    notjson.write_text("{ not json")
    with pytest.raises(SpecError, match="junk.json"):
        cal.read_measure_file(notjson)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something-else", "format_version": 1}))
    with pytest.raises(SpecError, match="other.json.*not an edgefit-measure"):
        cal.read_measure_file(other)
    with pytest.raises(SpecError, match="a.measure.json.*not in the layer graph"):
        cal.calibrate(PI4, files[:1], graphs[1:], out_dir=tmp_path)
    with pytest.raises(SpecError, match="one graph per file"):
        cal.calibrate(PI4, files, graphs[:1], out_dir=tmp_path)
    assert not (tmp_path / f"{PI4}.calibration.yaml").exists()


def test_bad_calibration_file_names_the_file(tmp_path: Path) -> None:
    path = cfile.calibration_path(PI4, tmp_path)
    path.write_text("format: edgefit-calibration\nformat_version: 9\n")
    with pytest.raises(SpecError, match=f"{PI4}.calibration.yaml.*format_version 9"):
        cfile.load_calibration(PI4, tmp_path)
    path.write_text("format: edgefit-calibration\nformat_version: 1\ndevice: x\n")
    with pytest.raises(SpecError, match=f"{PI4}.calibration.yaml"):
        cfile.load_calibration(PI4, tmp_path)


def test_calibrate_reads_a_real_measure_file(tmp_path: Path) -> None:
    """edgefit_measure's own output (tiny model, few runs) through graphs_from_onnx + calibrate:
    structure only, nothing about how fast this machine is."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    import edgefit_measure

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("c1.w", rng.standard_normal((8, 1, 3, 3))), ("c2.w", rng.standard_normal((8, 8, 1, 1))),
        ("fc.w", rng.standard_normal((10, 8 * 16 * 16))), ("fc.b", np.zeros(10))]]
    nodes = [helper.make_node("Conv", ["x", "c1.w"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "c2.w"], ["b"], name="conv2"),
             helper.make_node("Flatten", ["b"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {"edgefit.layers": json.dumps(["conv1", "conv2", "fc"])})
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    calib = {"real_node_us": 0.5, "profiled_node_us": 1.5, "offset_us": 1.0,
             "run_overhead_us": 5.0, "how": "fixed for the test"}
    result = edgefit_measure.measure(path, runs=5, warmup=1, threads=1, profile_runs=3,
                                     calibration=calib)
    assert set(result["layers"]) == {"conv1", "conv2", "fc"}
    graphs = cal.graphs_from_onnx([path])
    assert graphs[0].layer_names == ["conv1", "conv2", "fc"]
    # this machine's microsecond timings of a toy model say nothing a fit can use: keep the
    # file exactly as edgefit_measure wrote it, but put known per-layer times in it
    truth = lm.apply_params(load_spec(PI4).profile("tflite-cpu"), CAL_TRUTH, CAL_FREE,
                              "synthetic truth", "derived")
    charged = cal.charged_ops(graphs[0])
    for layer in graphs[0].layers:
        kernel = truth.kernels["fp32"]
        t_ms = layer_latency_ms(layer, kernel, truth, layer_flash_bytes(layer, kernel),
                                [(None, e) for e in charged[layer.name]])  # type: ignore[misc]
        result["layers"][layer.name]["calibrated_us"] = 1e3 * t_ms
        result["layers"][layer.name]["closed_ms"] = t_ms  # what calibrate reads when present
    measure_file = tmp_path / "m.measure.json"
    edgefit_measure.write_json_atomic(measure_file, result)

    # this machine is not a Raspberry Pi 4: refused, unless allowed (and then recorded)
    if result["host"]["machine"] in ("x86_64", "AMD64"):
        with pytest.raises(MachineMismatchError, match="m.measure.json: timed on another"):
            cal.calibrate(PI4, [measure_file], graphs, out_dir=tmp_path, min_layer_us=0.0)
        assert not (tmp_path / f"{PI4}.calibration.yaml").exists()
    out = cal.calibrate(PI4, [measure_file], graphs, out_dir=tmp_path, min_layer_us=0.0,
                        allow_other_machine=True)
    assert out.points[0].machine_check is not None
    assert [r.layer for r in out.residuals.layers] == ["conv1", "conv2", "fc"]
    assert max(abs(r.error) for r in out.residuals.layers) < 0.05  # 3 points, <= 2 free
    assert out.points[0].sha256 == cal._sha256(measure_file) and out.points[0].layers == 3
    assert 1 <= len(out.parameters.fitted) - 1 <= 2  # + run_overhead; n - 1 at most
    assert (tmp_path / f"{PI4}.calibration.yaml").exists()
    assert any(line.startswith("calibrated raspberry-pi-4/tflite-cpu")
               for line in cal.summary_lines(out))


@pytest.mark.parametrize("path", catalog_files(), ids=lambda p: p.stem)
def test_a_published_fit_is_used_only_where_it_predicts_unseen_points(path: Path) -> None:
    """published_fit's rule on every catalog profile: >= 3 leave-one-out predictions, better
    than the catalog values on the same points; published_spec changes that profile only, and
    every value it changes says it was fitted, on which points."""
    spec = load_spec(path.stem)
    for name in spec.profiles:
        fit = pfit.published_fit(spec, name)
        fitted = pfit.published_spec(spec, name)
        if fit is None:
            assert fitted == spec
            continue
        assert len(fit.loo) >= pfit.MIN_LOO_POINTS
        assert fit.loo_mape is not None and fit.catalog_mape is not None
        assert fit.loo_mape < fit.catalog_mape
        assert {n: p for n, p in fitted.profiles.items() if n != name} == {
            n: p for n, p in spec.profiles.items() if n != name}
        new, old = fitted.profiles[name], spec.profiles[name]
        changed = [k for k in new.kernels if new.kernels[k].macs_per_s != old.kernels[k].macs_per_s]
        assert changed and all("published points" in new.kernels[k].macs_per_s.provenance
                               for k in changed)


def test_the_gpu_profiles_with_enough_points_are_fitted() -> None:
    """Which profiles qualify is a fact of published_points.yaml: the Jetson Nano's TensorRT
    profile (10 points) does; the Arduino's (0 / 1 points) cannot."""
    assert pfit.published_fit(load_spec("jetson-nano"), "tensorrt-gpu") is not None
    arduino = load_spec("arduino-nano-33-ble")
    assert all(pfit.published_fit(arduino, p) is None for p in arduino.profiles)


def test_a_rate_scale_is_fitted_only_where_the_rates_are_the_time(tmp_path: Path) -> None:
    """End-to-end timings only: one scale on the timed kernel's rate, refused (None) where
    the profile's overheads make up the time and the scale would move nothing."""
    from cost_models.timing_file import TimedModel, TimingFile
    from device_specs.quantities import Millis

    prof = load_spec("stm32f746-disco").profile("tflm-cmsis-nn")
    graph = _graph("mnv1", pub.mobilenet_v1(0.25, 96).layers, set())
    timing = TimingFile(cpu="Arm Cortex-M7", runtime="TFLM", models=[
        TimedModel(model="m.onnx", option="int8", latency_ms=40.0)])
    path = tmp_path / "t.json"
    path.write_text(timing.model_dump_json())
    run = cal.TimedRun(path, timing, timing.models[0], graph,
                       {n: "int8" for n in graph.layer_names}, "m.onnx")
    unit = cal._timed_unit(run, 5.0)
    got = cal._fit_scale([unit], prof)
    assert got is not None and got[1] == ["int8"]
    fitted = cal._scaled(lm.Params.of_profile(prof), ["int8"], got[0])
    assert cal._predict_end_to_end(unit, prof, fitted) == pytest.approx(40.0, rel=1e-4)
    busy = prof.model_copy(update={"layer_overhead": Millis.model_validate(
        {"value": "20ms", "unverified": "test: overheads dominate"})})
    assert cal._fit_scale([unit], busy) is None
