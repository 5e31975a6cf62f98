"""`edgefit calibrate` with timing files from any runtime (docs/calibrate.md), through the real
CLI: end-to-end-only and per-layer files, a plan.json as the model, the machine check, bad files.
Timings are synthetic (set against the catalog's own prediction): nothing about this machine's
speed is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from cost_models.analytical import build_cost_table
from cost_models.calibrate import graphs_from_onnx
from cost_models.calibration_file import calibrated_spec, read_calibration
from device_specs.catalog import load_spec
from edgefit.cli import _run, app

STM = "stm32f746-disco"


@pytest.fixture()
def tiny_onnx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """conv1 -> relu -> conv2 -> flatten -> fc, with edgefit's layer names."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    import edgefit_common.paths

    monkeypatch.setattr(edgefit_common.paths, "cache_dir", lambda: tmp_path / "cache")
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("c1.w", rng.standard_normal((16, 1, 3, 3))), ("c2.w", rng.standard_normal((16, 16, 3, 3))),
        ("fc.w", rng.standard_normal((10, 16 * 16 * 16))), ("fc.b", np.zeros(10))]]
    nodes = [helper.make_node("Conv", ["x", "c1.w"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "c2.w"], ["b"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["b"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {"edgefit.layers": json.dumps(["conv1", "conv2", "fc"])})
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    return path


def _predicted_ms(model: Path, spec, profile: str, option: str) -> tuple[float, dict[str, float]]:
    """The planner's own end-to-end prediction (cost table + run overhead) and per layer."""
    graph = graphs_from_onnx([model])[0]
    table = build_cost_table(graph, spec, profile)
    layers = {n: table.cost(n, option).latency_ms for n in graph.layer_names}
    run = spec.profile(profile).run_overhead
    return sum(layers.values()) + (run.value if run is not None else 0.0), layers


def _timing(path: Path, cpu: str = "Arm Cortex-M7 @ 216 MHz", **model: object) -> Path:
    doc = {"format": "edgefit-timing", "format_version": 1, "cpu": cpu,
           "board": "STM32F746G-DISCO", "runtime": "TFLM + CMSIS-NN",
           "runtime_family": "tflm-cmsis-nn", "source": "synthetic (test)",
           "models": [{"model": "tiny.onnx", "option": "int8", **model}]}
    path.write_text(json.dumps(doc))
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_end_to_end_only_moves_the_prediction_to_the_timing(
        tmp_path: Path, tiny_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = load_spec(STM)
    before, _ = _predicted_ms(tiny_onnx, spec, "tflm-cmsis-nn", "int8")
    measured = before / 4  # a runtime 4x faster than the catalog thinks
    path = _timing(tmp_path / "t.json", latency_ms=[measured * 0.99, measured, measured * 1.01])
    out = tmp_path / "out"
    assert _run(app, ["calibrate", str(path), "--device", STM, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 parameter from 1 end-to-end point" in text and "int8" in text
    assert "no held-out error" in text
    result = read_calibration(out / f"{STM}.calibration.yaml")
    assert result.parameters.fitted == ["rate_scale"]
    assert list(result.parameters.kernels) == ["int8"]
    after, _ = _predicted_ms(tiny_onnx, calibrated_spec(spec, result), "tflm-cmsis-nn", "int8")
    assert abs(after / measured - 1) < abs(before / measured - 1)
    assert after == pytest.approx(measured, rel=1e-3)  # one point, one parameter: exact
    cal = calibrated_spec(spec, result).profile("tflm-cmsis-nn")
    assert "one rate scale fitted on 1 end-to-end timing (t.json" in \
        cal.kernels["int8"].macs_per_s.provenance
    assert cal.kernels["fp32"] == spec.profile("tflm-cmsis-nn").kernels["fp32"]  # not timed
    point = result.points[0]
    assert (point.kind, point.runtime_family, point.end_to_end_runs) == (
        "edgefit-timing", "tflm-cmsis-nn", 3)
    assert point.machine_check == "match: core cortex-m7" and result.machine_warnings == []


def test_several_end_to_end_points_report_leave_one_out(
        tmp_path: Path, tiny_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before, _ = _predicted_ms(tiny_onnx, load_spec(STM), "tflm-cmsis-nn", "int8")
    rows = "".join(f"tiny.onnx,{before / f},int8\n" for f in (3.0, 4.0, 5.0))
    path = tmp_path / "t.csv"
    path.write_text("model,latency_ms,option,cpu,runtime\n"
                    f"tiny.onnx,{before / 4},int8,Arm Cortex-M7,TFLM\n" + rows)
    # the same model four times is one model with four runs: one point
    out = tmp_path / "out"
    assert _run(app, ["calibrate", str(path), "--device", STM, "--out", str(out)]) == 0
    assert "1 parameter from 1 end-to-end point" in capsys.readouterr().out
    # two models (distinct names) are two points: each predicted from the other
    copy = tmp_path / "tiny2.onnx"
    copy.write_bytes(tiny_onnx.read_bytes())
    path.write_text("model,latency_ms,option,cpu,runtime\n"
                    f"tiny.onnx,{before / 3},int8,Arm Cortex-M7,TFLM\n"
                    f"tiny2.onnx,{before / 5},int8,,\n")
    assert _run(app, ["calibrate", str(path), "--device", STM, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 parameter from 2 end-to-end points" in text
    result = read_calibration(out / f"{STM}.calibration.yaml")
    held = result.residuals.leave_one_file_out
    assert [h.file for h in held] == ["t.csv:tiny.onnx", "t.csv:tiny2.onnx"]
    # a scale fitted on 1/5 predicts the 1/3 point 40 % too fast, and the other way round
    assert held[0].end_to_end_error == pytest.approx(3 / 5 - 1, rel=1e-2)
    assert held[1].end_to_end_error == pytest.approx(5 / 3 - 1, rel=1e-2)
    assert "leave-one-out" in text and "held out t.csv:tiny.onnx" in text


def test_per_layer_timings_fit_as_measure_files_do(
        tmp_path: Path, tiny_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, layers = _predicted_ms(tiny_onnx, load_spec(STM), "tflm-cmsis-nn", "int8")
    truth = {name: ms / 2.5 for name, ms in layers.items()}  # every layer 2.5x faster
    path = tmp_path / "t.csv"
    path.write_text("model,layer,latency_ms,option,cpu,core,runtime\n"
                    f"tiny.onnx,,{sum(truth.values()) + 0.05},int8,STM32F746,m7,TFLM\n"
                    f"tiny.onnx,conv1,{truth['conv1']},,,,\n"
                    f"tiny.onnx,conv2,{truth['conv2']},,,,\n"
                    f"tiny.onnx,#2,{truth['fc']},,,,\n")  # '#2': the third layer, fc
    out = tmp_path / "out"
    assert _run(app, ["calibrate", str(path), "--device", STM, "--out", str(out)]) == 0
    assert "3 layers fitted" in capsys.readouterr().out
    result = read_calibration(out / f"{STM}.calibration.yaml")
    assert "rate:int8" in result.parameters.fitted
    assert [r.layer for r in result.residuals.layers] == ["conv1", "conv2", "fc"]
    assert max(abs(r.error) for r in result.residuals.layers) < 0.02
    assert result.parameters.run_overhead_ms == pytest.approx(0.05, abs=0.02)
    # a second model timed end to end only is a check on the layer fit, not fitted
    copy = tmp_path / "tiny2.onnx"
    copy.write_bytes(tiny_onnx.read_bytes())
    with path.open("a") as fh:
        fh.write(f"tiny2.onnx,,{2 * sum(truth.values())},int8,,,\n")
    assert _run(app, ["calibrate", str(path), "--device", STM, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 layers fitted" in text and "1 model timed end to end only" in text
    assert "t.csv:tiny2.onnx: measured" in text and "[not fitted (check)]" in text
    result = read_calibration(out / f"{STM}.calibration.yaml")
    check = result.residuals.end_to_end[-1]
    assert not check.fitted and check.error == pytest.approx(0.5 - 1, abs=0.03)


def test_an_unidentified_cpu_is_calibrated_with_a_loud_warning(
        tmp_path: Path, tiny_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _timing(tmp_path / "t.json", cpu="our custom board", latency_ms=5.0)
    doc = json.loads(path.read_text())
    doc.pop("board")
    path.write_text(json.dumps(doc))
    out = tmp_path / "out"
    assert _run(app, ["calibrate", str(path), "--device", STM, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("WARNING: t.json:tiny.onnx: cannot tell whether cpu 'our custom "
                          "board' is stm32f746-disco's CPU")
    assert read_calibration(out / f"{STM}.calibration.yaml").machine_warnings


def test_a_plan_names_every_layers_kernel(tmp_path: Path, lenet5_plan_factory,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    plan, _ = lenet5_plan_factory(target="arduino-nano-33-ble", latency="1s")
    plan.save(tmp_path / "plan.json")
    # an edgefit apply folder: its model.tflite is read through the plan.json beside it
    (tmp_path / "applied").mkdir()
    plan.save(tmp_path / "applied" / "plan.json")
    (tmp_path / "applied" / "model.tflite").write_bytes(b"TFL3")
    path = tmp_path / "t.json"
    path.write_text(json.dumps({
        "format": "edgefit-timing", "format_version": 1, "cpu": "nRF52840 (Arm Cortex-M4F)",
        "runtime": "TFLM", "models": [{"model": "plan.json", "latency_ms": 50.0},
                                      {"model": "applied/model.tflite", "latency_ms": 60.0}]}))
    out = tmp_path / "out"
    code = _run(app, ["calibrate", str(path), "--device", "arduino-nano-33-ble",
                      "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = read_calibration(out / "arduino-nano-33-ble.calibration.yaml")
    kernels = {layer.kernel for layer in plan.layers.values()}
    for point in result.points:
        assert set(point.options) == kernels and point.layers == len(plan.layers)
    assert set(result.parameters.kernels) == kernels
    assert "1 parameter from 2 end-to-end points" in result.message
    assert len(result.residuals.leave_one_file_out) == 2


def test_a_timing_from_another_cpu_is_refused(tmp_path: Path, tiny_onnx: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = _timing(tmp_path / "m4.json", cpu="Arm Cortex-M4 @ 120 MHz", latency_ms=10.0)
    out = tmp_path / "out"
    assert _run(app, ["calibrate", str(path), "--device", STM, "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    assert "m4.json: timed on another machine than stm32f746-disco" in err
    assert "--allow-other-machine" in err
    assert not out.exists()
    # allowed: a loud warning, and the calibration says so (so every plan using it does)
    assert _run(app, ["calibrate", str(path), "--device", STM, "--out", str(out),
                      "--allow-other-machine"]) == 0
    assert "WARNING: m4.json:tiny.onnx: timed on another machine" in capsys.readouterr().err
    result = read_calibration(out / f"{STM}.calibration.yaml")
    assert result.machine_warnings
    assert (result.points[0].machine_check or "").startswith("mismatch")
    assert "WARNING: timings from another" in result.provenance()


def test_measure_files_from_this_machine_are_refused_for_a_pi(
        tmp_path: Path, tiny_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's case: an x86 `edgefit measure` file calibrating a Raspberry Pi profile."""
    layers = {n: {"calibrated_us": 100.0, "closed_ms": 0.1} for n in ("conv1", "conv2", "fc")}
    measure = tmp_path / "x86.json"
    measure.write_text(json.dumps({
        "format": "edgefit-measure", "format_version": 1, "model": {"path": str(tiny_onnx)},
        "latency_ms": {"median": 0.35}, "layers": layers,
        "host": {"cpu_model": "AMD EPYC 7B13 64-Core Processor", "machine": "x86_64"}}))
    out = tmp_path / "out"
    code = _run(app, ["calibrate", str(measure), "--device", "raspberry-pi-4", "--model",
                      str(tiny_onnx), "--out", str(out), "--min-layer-us", "0"])
    assert code == 2
    assert "x86 timings, raspberry-pi-4 is arm" in _one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize(("name", "edit", "match"), [
    ("nocpu.json", lambda d: d.pop("cpu"), "nocpu.json: cpu: Field required"),
    ("neg.json", lambda d: d["models"][0].update(latency_ms=-1.0),
     "neg.json: models.0.latency_ms: latency_ms must be a positive"),
    ("nomodel.json", lambda d: d["models"][0].update(model="gone.onnx"),
     "nomodel.json: model 'gone.onnx': no such file"),
    ("badlayer.json", lambda d: d["models"][0].update(layers_ms={"conv9": 1.0}),
     "badlayer.json: tiny.onnx: layers_ms key 'conv9' is neither a layer"),
    ("nokernel.json", lambda d: d["models"][0].update(option="int3"),
     "ran 'int3', which stm32f746-disco/tflm-cmsis-nn has no kernel for"),
    ("tflite.json", lambda d: d["models"][0].update(model="m.tflite"),
     "a .tflite is read through the plan.json"),
    ("format.json", lambda d: d.update(format="something"), "neither an edgefit-measure"),
])
def test_bad_timing_files_exit_2_with_one_line(tmp_path: Path, tiny_onnx: Path, name: str,
                                              edit, match: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "m.tflite").write_bytes(b"TFL3")
    path = _timing(tmp_path / name, latency_ms=5.0)
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    out = tmp_path / "out"
    assert _run(app, ["calibrate", str(path), "--device", STM, "--out", str(out)]) == 2
    assert match in _one_line_error(capsys)
    assert not out.exists()


def test_model_flag_is_for_measure_files(tmp_path: Path, tiny_onnx: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = _timing(tmp_path / "t.json", latency_ms=5.0)
    assert _run(app, ["calibrate", str(path), "--device", STM, "--model", str(tiny_onnx)]) == 2
    assert "--model is for edgefit-measure files" in _one_line_error(capsys)


def test_the_calibration_file_is_plain_yaml(tmp_path: Path, tiny_onnx: Path) -> None:
    path = _timing(tmp_path / "t.json", latency_ms=5.0, energy_mj=0.3)
    out = tmp_path / "out"
    assert _run(app, ["calibrate", str(path), "--device", STM, "--out", str(out)]) == 0
    doc = yaml.safe_load((out / f"{STM}.calibration.yaml").read_text())
    assert doc["points"][0]["energy_mj"] == 0.3 and doc["points"][0]["runtime"] == "TFLM + CMSIS-NN"
