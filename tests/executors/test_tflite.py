"""model.tflite for TFLite / TFLM profiles (issue #17): LeNet-5 on the Arduino Nano 33 BLE, each
layer in its planned precision, read back from the file, run with ai-edge-litert and TFLM.

The tests that convert need the tool virtualenv (.venv-tflite, built by `make test`); they skip,
saying so, only when it is absent."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from executors import tflite
from techniques.quantize import quantize_config

NO_TOOL = tflite.tool_python() is None
needs_tool = pytest.mark.skipif(
    NO_TOOL, reason=f"the TFLite tool virtualenv is absent ({tflite.TOOL_VENV}: `make "
    "tflite-venv` builds it; `make test` does)")
DEMO_LIMITS = {"latency": "60ms", "flash": "1MB", "ram": "256KB", "accuracy_drop": "1pp"}
LENET = ("conv1", "conv2", "fc1", "fc2", "fc3")


def _want(weights: int | None, activations: int | None = 8) -> dict[str, int | None]:
    return {"weights": weights, "activations": None if weights is None else activations}


def _op(op: str, weight_type: str, act: str, scales: int, shape: list[int],
        dim: int | None = 0) -> dict:
    return {"op": op, "activation_in": act, "outputs": [act],
            "weight": {"type": weight_type, "bits": tflite.BITS.get(weight_type.lower()),
                       "shape": shape, "scales": scales, "quantized_dimension": dim,
                       "bytes": 0}}


# ------------------------------------------------------------------ without the tool


def test_the_capability_is_a_profile_field() -> None:
    from device_specs.catalog import load_spec

    nano = load_spec("arduino-nano-33-ble").profile("tflm-cmsis-nn")
    assert nano.tflite is not None and nano.tflite.micro
    assert nano.tflite.int4_weight_ops is not None
    assert nano.tflite.int4_weight_ops.value == ["CONV_2D"]
    assert nano.tflite.int4_weight_ops.measured
    pi = load_spec("raspberry-pi-4").profile("tflite-cpu")
    assert pi.tflite is not None and not pi.tflite.micro
    assert load_spec("jetson-nano").profile().tflite is None


def test_layer_request_per_precision(lenet5_plan_factory) -> None:
    plan, _ = lenet5_plan_factory(**DEMO_LIMITS)
    layers = tflite.layer_request(plan)
    assert list(layers) == list(plan.layers)
    for name, lp in plan.layers.items():
        cfg = quantize_config(lp.techniques)
        want = _want(None) if cfg is None else _want(int(cfg.weights[3:]))
        assert layers[name] == want, name


def test_a_form_without_a_tflite_kernel_is_refused(lenet5_plan_factory) -> None:
    from techniques.quantize import QuantizeConfig

    plan, _ = lenet5_plan_factory(**DEMO_LIMITS)
    fp16 = plan.layers["fc1"].model_copy(update={"techniques": [
        QuantizeConfig(weights="fp16", activations="fp16")]})
    odd = plan.model_copy(update={"layers": {**plan.layers, "fc1": fp16}})
    with pytest.raises(tflite.Refused, match=r"^fc1: fp16 weights with fp16 activations"):
        tflite.layer_request(odd)


def test_check_layer_reads_types_bits_and_scales() -> None:
    int8 = _op("CONV_2D", "INT8", "INT8", 16, [16, 5, 5, 6])
    assert tflite.check_layer("conv2", _want(8), [int8]) == []
    assert tflite.check_layer("fc1", _want(None), [
        _op("FULLY_CONNECTED", "FLOAT32", "FLOAT32", 0, [120, 400], None)]) == []
    # ai-edge-quantizer leaves a layer float when it has no int4 form for its op: caught
    left_float = _op("DEPTHWISE_CONV_2D", "FLOAT32", "FLOAT32", 0, [1, 5, 5, 6], None)
    found = tflite.check_layer("conv1", _want(4), [left_float])
    assert any("planned int4 weights, the file holds FLOAT32" in p for p in found)
    assert any("planned INT8 activations" in p for p in found)
    per_tensor = _op("CONV_2D", "INT4", "INT8", 1, [16, 5, 5, 6])
    assert tflite.check_layer("conv2", _want(4), [per_tensor]) == [
        "conv2 (CONV_2D): 1 weight scales, not one per output channel"]
    assert tflite.check_layer("fc2", _want(8), []) == [
        "fc2: no operator of model.tflite holds its weights"]
    assert tflite.check_layer("fc2", _want(None), [int8])[0].startswith(
        "fc2 (CONV_2D): planned float")


def test_c_array_round_trip_and_compiles(tmp_path: Path) -> None:
    data = bytes(range(256)) * 3 + b"\x00\x01"
    src = tmp_path / "model.tflite"
    src.write_bytes(data)
    tflite.write_c_array(src, tmp_path / "model_data.cc")
    assert tflite.read_c_array(tmp_path / "model_data.cc") == data
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        return
    main = tmp_path / "main.cc"
    main.write_text("extern const unsigned char g_model[]; extern const unsigned int g_model_len;"
                    "\nint main() { return (g_model_len == 770 && g_model[769] == 1 &&"
                    " reinterpret_cast<unsigned long>(g_model) % 16 == 0) ? 0 : 1; }\n")
    exe = tmp_path / "a.out"
    subprocess.run([cxx, "-std=c++11", str(tmp_path / "model_data.cc"), str(main), "-o",
                    str(exe)], check=True, capture_output=True)
    assert subprocess.run([str(exe)]).returncode == 0


def test_absent_tool_is_said_not_failed(lenet5_plan_factory, monkeypatch, tmp_path) -> None:
    plan, _ = lenet5_plan_factory(**DEMO_LIMITS)
    monkeypatch.setenv(tflite.TOOL_PYTHON_ENV, str(tmp_path / "no-python"))
    monkeypatch.delenv(tflite.SWITCH_ENV, raising=False)
    section = tflite.tflite_artifact(plan, None, np.zeros(1), None, tmp_path)  # type: ignore
    assert section is not None and section["ok"] is None and not section["written"]
    assert "tool virtualenv" in section["summary"]
    assert tflite.tflite_check(section) == []
    jetson, _ = lenet5_plan_factory("jetson-nano", latency="30ms")
    assert tflite.tflite_artifact(jetson, None, np.zeros(1), None, tmp_path) is None  # type: ignore


def _tool_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("tflite_tool", tflite.TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tensor_names_map_to_planned_layers() -> None:
    """litert-torch names tensors RootClass/Class_attr/...; factor modules (fc_1.0) belong to
    their layer, nested paths to the deepest planned layer."""
    layer_of = _tool_module().layer_of
    layers = ["features.0", "features.2.conv_a", "fc_1", "conv_a"]
    root = "__main__.Net"
    seq = "torch.nn.modules.container.Sequential"
    conv = "torch.nn.modules.conv.Conv2d"
    assert layer_of(f"{root}/{seq}_features/{conv}_0;", layers) == "features.0"
    assert layer_of(f"{root}/{seq}_features/__main__.Blk_2/{conv}_conv_a;", layers) == \
        "features.2.conv_a"
    assert layer_of(f"{root}/{conv}_conv_a;1", layers) == "conv_a"
    assert layer_of(f"{root}/{seq}_fc_1/torch.nn.modules.linear.Linear_1;1", layers) == "fc_1"
    assert layer_of(f"{root}/{seq}_features/{conv}_1;", layers) is None
    assert layer_of("arith.constant", layers) is None


def test_ops_the_names_do_not_place_are_mapped_by_order_and_size() -> None:
    """litert-torch names the modules of two ModuleLists iterated with zip both Conv2d_0: the
    first unplaced layer in execution order with the op's weight size takes it."""
    by_order = _tool_module().by_order
    layers = ["stem", "depthwise.0", "pointwise.0", "depthwise.1", "pointwise.1", "fc"]
    numel = {"stem": 72, "depthwise.0": 72, "pointwise.0": 64, "depthwise.1": 72,
             "pointwise.1": 64, "fc": 80}
    weighted = [(0, 72), (2, 72), (3, 64), (5, 72), (6, 64), (9, 80)]
    named = {0: "stem", 2: None, 3: None, 5: None, 6: None, 9: "fc"}
    assert by_order(weighted, named, numel, layers) == {
        2: "depthwise.0", 3: "pointwise.0", 5: "depthwise.1", 6: "pointwise.1"}
    # a size no free layer has stays unplaced (check_runnable then names the missing layer)
    assert by_order([(2, 99)], {2: None}, numel, layers) == {}


class _ZipNet(torch.nn.Module):
    """Depthwise and pointwise convs in two ModuleLists iterated with zip (DS-CNN's pattern)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.depthwise = torch.nn.ModuleList(
            [torch.nn.Conv2d(8, 8, 3, padding=1, groups=8) for _ in range(2)])
        self.pointwise = torch.nn.ModuleList([torch.nn.Conv2d(8, 8, 1) for _ in range(2)])
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        for dw, pw in zip(self.depthwise, self.pointwise, strict=True):
            x = torch.relu(pw(torch.relu(dw(x))))
        return self.fc(x.mean((2, 3)))


# ------------------------------------------------------------------ with the tool


@needs_tool
def test_module_lists_iterated_with_zip_convert_layer_by_layer(lenet_float, tmp_path) -> None:
    _, calib_x, profile = lenet_float
    torch.manual_seed(0)
    model = _ZipNet().eval()
    names = ["stem", "depthwise.0", "pointwise.0", "depthwise.1", "pointwise.1", "fc"]
    layers = {name: _want(8) for name in names} | {"pointwise.1": _want(None)}
    path = tmp_path / "model.tflite"
    tflite.convert(layers, model, calib_x[:32], path, profile, tmp_path)
    facts = tflite.inspect(path, names, calib_x[:16], False, tmp_path)
    rows, problems = tflite.check_file(layers, facts)
    assert problems == [], problems
    assert rows["pointwise.1"]["ops"][0]["weights"] == "FLOAT32"
    assert rows["pointwise.0"]["ops"][0]["weights"] == "INT8"


@pytest.fixture(scope="module")
def applied(lenet5_plan_factory, tmp_path_factory: pytest.TempPathFactory):
    """The demo's budget on the Nano 33 BLE, applied with the .tflite on."""
    from edgefit.applying import apply_plan

    plan, _ = lenet5_plan_factory(**DEMO_LIMITS)
    out = tmp_path_factory.mktemp("tflite-apply")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(tflite.SWITCH_ENV, raising=False)
        report = apply_plan(plan, out)
    return plan, report, out


@needs_tool
def test_apply_writes_tflite_and_c_array(applied) -> None:
    plan, report, out = applied
    section = report["tflite"]
    assert section["written"] and section["ok"], section["summary"]
    data = (out / "model.tflite").read_bytes()
    assert data[4:8] == b"TFL3" and section["bytes"] == len(data)
    assert tflite.read_c_array(out / "model_data.cc") == data
    assert {c["check"]: c["ok"] for c in report["checks"]}[
        "model.tflite stored as planned (read back from the file)"]


@needs_tool
def test_the_plans_flash_is_the_tflite_it_writes(applied) -> None:
    """A TFLite profile's model flash is model.tflite's predicted size (issue #17): within the
    2 % apply checks, and model.flash.bin still matches each option's image bytes exactly."""
    plan, report, _ = applied
    flash = report["tflite"]["flash"]
    assert flash["planned_counts"] == "model.tflite"
    assert abs(flash["tflite_bytes"] / flash["planned_model_flash_bytes"] - 1) < 0.02
    assert report["verification"]["flash_match"] and report["verification"]["ok"]
    assert report["artifacts"]["flash_image_bytes"] == round(
        sum(lp.image_bytes for lp in plan.layers.values()) + plan.fixed["image_overhead_bytes"])


def test_on_a_tflite_profile_sparse_and_shared_options_save_no_flash(lenet5_plan_factory
                                                                    ) -> None:
    """A .tflite stores weights dense at their bit width: a sparse or weight-shared option has
    its dense option's flash there (its smaller packed-image bytes kept as image_bytes)."""
    plan, _ = lenet5_plan_factory(latency="60ms")
    assert "tflite_frame_bytes" in plan.fixed
    alts = {a.option: a for a in plan.layers["fc1"].alternatives}
    for name, dense in (("int8+s50", "int8"), ("fp32+k4", "fp32")):
        assert alts[name].flash_bytes == alts[dense].flash_bytes, name
        assert alts[name].image_bytes is not None
        assert alts[name].image_bytes < alts[dense].image_bytes, name  # type: ignore[operator]


@needs_tool
def test_each_layer_is_stored_in_its_planned_precision(applied) -> None:
    plan, report, _ = applied
    rows = report["tflite"]["layers"]
    assert list(rows) == list(plan.layers)
    floats = [n for n, lp in plan.layers.items() if lp.option == "fp32"]
    assert report["tflite"]["float_layers"] == floats
    assert floats and len(floats) < len(LENET), "the demo plan mixes int8 and float layers"
    for name, lp in plan.layers.items():
        (op,) = rows[name]["ops"]
        kind = "FLOAT32" if quantize_config(lp.techniques) is None else "INT8"
        assert (op["weights"], op["activations_in"], op["outputs"]) == (kind, kind, [kind]), name
        assert rows[name]["stored_as_planned"]  # int8: one weight scale per output channel


@needs_tool
def test_tflite_outputs_agree_with_torch_and_onnx(applied) -> None:
    _, report, _ = applied
    out = report["tflite"]["outputs"]
    assert out["samples"] == report["accuracy"]["test_size"]
    assert abs(out["accuracy"] - report["accuracy"]["compressed"]) <= 0.005
    assert out["vs_torch"]["top1_agreement"] >= 0.99
    assert out["vs_onnx"]["top1_agreement"] >= 0.99
    assert out["vs_torch"]["max_abs_error"] < 5.0  # logits not clipped (min/max ranges)


@needs_tool
def test_tflm_runs_it_and_its_arena_is_reported(applied) -> None:
    plan, report, _ = applied
    tflm = report["tflite"]["tflm"]
    assert tflm["ran"], tflm
    assert 0 < tflm["arena_bytes"] <= 64 * 1024
    assert tflm["allocations"]["total"] <= tflm["arena_bytes"]
    assert tflm["planned_ram_bytes"] == plan.totals.ram_bytes
    assert tflm["vs_litert"]["top1_agreement"] >= 0.99
    size = report["tflite"]["flash"]
    assert size["tflite_bytes"] > 0 and size["planned_model_flash_bytes"] > 0
    # the arena model and the size predictor (cost_models.tflm_arena, tflite_size) against
    # the arena TFLM measured and the file written
    pred = tflm["predicted_arena"]
    assert abs(pred["total_bytes"] / tflm["arena_bytes"] - 1) <= 0.10, (pred, tflm)
    assert abs(size["predicted_tflite_bytes"] / size["tflite_bytes"] - 1) <= 0.03, size
    lines = tflite.summary_lines(report["tflite"])
    assert any("arena model" in line for line in lines)
    # the board's build (32-bit Cortex-M4, CMSIS-NN): what the plan held, beside the
    # measured 64-bit one; its structs are smaller
    board = pred["board"]
    assert board["build"] == "32-bit, cmsis-nn kernels (dsp)"
    assert board["tail_bytes"] < pred["tail_bytes"]
    assert any("on the board (32-bit" in line for line in lines)


@pytest.fixture(scope="module")
def lenet_float(tmp_path_factory):
    from device_specs.catalog import load_spec
    from edgefit.planning import calibration_split
    from workloads.models import load_model_ref

    calib = calibration_split("mnist")
    assert calib is not None
    profile = load_spec("arduino-nano-33-ble").profile("tflm-cmsis-nn")
    return load_model_ref("lenet5-mnist").torch_module(), calib[0], profile


@needs_tool
def test_int4_weights_where_the_runtime_has_them(lenet_float, tmp_path: Path) -> None:
    model, calib_x, profile = lenet_float
    layers = {"conv1": _want(8), "conv2": _want(4), "fc1": _want(None), "fc2": _want(8),
              "fc3": _want(8)}
    path = tmp_path / "model.tflite"
    tflite.convert(layers, model, calib_x, path, profile, tmp_path)
    facts = tflite.inspect(path, list(layers), calib_x[:50], True, tmp_path)
    rows, problems = tflite.check_file(layers, facts)
    assert problems == []
    assert rows["conv2"]["ops"][0]["weights"] == "INT4" and rows["conv2"]["ops"][0]["bits"] == 4
    assert rows["fc1"]["ops"][0]["weights"] == "FLOAT32"
    assert facts["tflm"]["ran"], facts["tflm"]


@needs_tool
def test_int4_where_the_runtime_has_none_is_refused_in_one_line(lenet_float, tmp_path) -> None:
    model, calib_x, profile = lenet_float
    layers = {name: _want(8) for name in LENET} | {"fc1": _want(4)}
    with pytest.raises(tflite.Refused) as info:
        tflite.convert(layers, model, calib_x, tmp_path / "model.tflite", profile, tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("fc1: int4 weights, but it converts to FULLY_CONNECTED")
    assert "CONV_2D" in message and not (tmp_path / "model.tflite").exists()
