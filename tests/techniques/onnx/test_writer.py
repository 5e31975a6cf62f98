"""techniques.onnx.writer: fp32 ONNX -> runnable mixed-precision ONNX, checked against torch."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from edgefit_common.errors import PlanError
from formats import quant_math as qm
from formats.onnx_io import LAYERS_KEY, OPTIONS_KEY
from techniques.onnx.inspect import inspect_onnx
from techniques.onnx.int8 import WEIGHT_QMAX_U8S8
from techniques.onnx.names import name_nodes_by_module
from techniques.onnx.rewrite import WEIGHT_ONLY_OPTIONS
from techniques.onnx.writer import ort_session_options, quantize_onnx

INPUT_SHAPE = (3, 16, 16)
MIXED = {"conv1": "int8", "conv2": "fp16", "fc1": "int4", "fc2": "fp32"}
MIXED_INT8 = {"conv1": "int4", "conv2": "int8", "fc1": "int8", "fc2": "fp16"}
WEIGHT_ONLY = {"conv1": "int4", "conv2": "fp16", "fc1": "int4", "fc2": "fp16"}


class SmallCNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.pool = torch.nn.MaxPool2d(2)
        self.fc1 = torch.nn.Linear(16 * 4 * 4, 128)
        self.fc2 = torch.nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


class Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class NestedNet(torch.nn.Module):
    """Nested module names, a bias-less Conv and a Linear on a 3-D input (MatMul + Add)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), Block())
        self.head = torch.nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).permute(0, 2, 3, 1))


def _export(model: torch.nn.Module, path: Path, shape: tuple[int, ...]) -> dict[str, str]:
    x = torch.randn(2, *shape)
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        model, (x,), str(path), dynamo=True, external_data=False,
        dynamic_shapes=({0: batch},), verbose=False,
    )  # fmt: skip
    proto = onnx.load(str(path))
    layers = name_nodes_by_module(proto)
    onnx.save(proto, str(path))
    return layers


def _run(
    path: Path, x: np.ndarray, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL, edgefit=True
) -> np.ndarray:
    if edgefit:
        so = ort_session_options(level)
    else:
        so = ort.SessionOptions()
        so.graph_optimization_level = level
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


Act = tuple[float, int, bool]  # scale, zero point, unsigned


def _torch_reference(
    model: torch.nn.Module,
    options: dict[str, str],
    x: np.ndarray,
    acts: dict[str, tuple[Act, Act, np.ndarray]] | None = None,
) -> np.ndarray:
    """torch with the same fake quantisation (quant_math on .numpy() weights, torch layout).

    ``acts`` {layer: (input, output, weights)} emulates an int8 layer as the file has it: its
    stored weights (codes x scales, torch layout) and its input and output activations
    rounded like QuantizeLinear (scale, zero point, saturating at the uint8 / int8 range).
    """
    ref = copy.deepcopy(model).eval()
    for name, option in options.items():
        mod = ref.get_submodule(name)
        mod.weight.data = torch.from_numpy(qm.apply_option(mod.weight.detach().numpy(), option))
        if mod.bias is not None:
            mod.bias.data = torch.from_numpy(
                qm.apply_bias_option(mod.bias.detach().numpy(), option)
            )

    def fq(t: torch.Tensor, a: Act) -> torch.Tensor:
        scale, zp, unsigned = a
        lo, hi = (0, 255) if unsigned else (-128, 127)
        return (torch.clamp(torch.round(t / scale) + zp, lo, hi) - zp) * scale

    for name, (a_in, a_out, w) in (acts or {}).items():
        mod = ref.get_submodule(name)
        mod.weight.data = torch.from_numpy(w.reshape(mod.weight.shape))
        mod.register_forward_pre_hook(lambda m, inp, a=a_in: (fq(inp[0], a),))
        mod.register_forward_hook(lambda m, inp, out, a=a_out: fq(out, a))
    with torch.no_grad():
        return ref(torch.from_numpy(x)).numpy()


def _activation_params(path: Path, layers: list[str]) -> dict[str, tuple[Act, Act, np.ndarray]]:
    """(input, output) activation quantisation and the dequantised stored weights (torch
    layout) of int8 layers, read from the file."""
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def act(scale: str, zp: str) -> Act:
        z = inits[zp]
        return float(inits[scale]), int(z), z.dtype == np.uint8

    out = {}
    for n in m.graph.node:
        if n.name not in layers:
            continue
        codes, scales = _weight_codes(path, n.name)
        assert scales is not None
        if n.op_type.endswith("MatMul"):  # W^T stored
            codes = codes.T
        w = qm.dequantize_per_channel(codes, scales, axis=0)
        if n.op_type.startswith("QLinear"):  # x_scale/zp, y_scale/zp inputs
            out[n.name] = (act(*n.input[1:3]), act(*n.input[6:8]), w)
        else:
            dq = producer[n.input[0]]
            (q,) = consumers[n.output[0]]
            assert dq.op_type == "DequantizeLinear" and q.op_type == "QuantizeLinear"
            out[n.name] = (act(*dq.input[1:3]), act(*q.input[1:3]), w)
    return out


def _initializers(path: Path) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


def _weight_codes(path: Path, layer: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Stored weight initializer (ints for int4/int8, floats else) and DQ scales of a layer."""
    m = onnx.load(str(path))
    inits = {i.name: i for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    node = next(n for n in m.graph.node if n.name == layer)
    if node.op_type.startswith("QLinear"):  # w, w_scale are the node's inputs 3 and 4
        return (numpy_helper.to_array(inits[node.input[3]]),
                numpy_helper.to_array(inits[node.input[4]]))
    src = producer.get(node.input[1])
    if src is None:
        return numpy_helper.to_array(inits[node.input[1]]), None
    arr = numpy_helper.to_array(inits[src.input[0]])
    if src.op_type == "DequantizeLinear":
        return arr.astype(np.int8), numpy_helper.to_array(inits[src.input[1]])
    return arr, None


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    d = tmp_path_factory.mktemp("cnn")
    fp32 = d / "fp32.onnx"
    layers = _export(model, fp32, INPUT_SHAPE)
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((64, *INPUT_SHAPE)).astype(np.float32)
    test_x = rng.standard_normal((8, *INPUT_SHAPE)).astype(np.float32)
    outs = {}
    for key, options in (("mixed", MIXED), ("int8", MIXED_INT8), ("wonly", WEIGHT_ONLY)):
        outs[key] = d / f"{key}.onnx"
        quantize_onnx(fp32, outs[key], options, calib)
    return {"model": model, "fp32": fp32, "layers": layers, "calib": calib, "x": test_x, **outs}


def test_name_nodes_by_module(cnn):
    assert cnn["layers"] == {"conv1": "Conv", "conv2": "Conv", "fc1": "Gemm", "fc2": "Gemm"}
    m = onnx.load(str(cnn["fp32"]))
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta[LAYERS_KEY]) == ["conv1", "conv2", "fc1", "fc2"]
    names = [n.name for n in m.graph.node]
    assert len(names) == len(set(names))
    # idempotent: naming the already-named model again changes nothing
    assert name_nodes_by_module(m) == cnn["layers"]
    # dynamic batch kept from the export
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param


def test_module_called_twice_is_refused(cnn):
    m = onnx.load(str(cnn["fp32"]))
    by_name = {n.name: n for n in m.graph.node}
    scopes = next(p for p in by_name["fc1"].metadata_props if p.key == "pkg.torch.onnx.name_scopes")
    for p in by_name["fc2"].metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            p.value = scopes.value
    with pytest.raises(PlanError, match="fc1"):
        name_nodes_by_module(m)


@pytest.mark.parametrize("key", ["mixed", "int8", "wonly"])
def test_inspect_reports_chosen_storage(cnn, key):
    options = {"mixed": MIXED, "int8": MIXED_INT8, "wonly": WEIGHT_ONLY}[key]
    info = inspect_onnx(cnn[key])
    assert set(info) == set(options)
    want_dtype = {"fp32": "float32", "fp16": "float16", "int8": "int8", "int4": "int4"}
    for layer, option in options.items():
        st = info[layer]
        assert st.option == option
        assert st.weight_dtype == want_dtype[option]
        assert st.bits == qm.BITS[option]
        n = st.weight_numel
        assert (
            st.weight_bytes
            == {"fp32": 4 * n, "fp16": 2 * n, "int8": n, "int4": (n + 1) // 2}[option]
        )
        out_ch = st.weight_shape[-1 if st.op_type.endswith("MatMul") else 0]  # W^T
        if option == "int4":
            assert st.distinct_values <= 15
            assert st.scale_bytes == 4 * out_ch
            assert st.weight_ops == ("DequantizeLinear",)
            assert st.activation_dtype == "float32" and st.bias_dtype == "float32"
        elif option == "int8":
            assert st.distinct_values <= 255
            assert st.scale_bytes == 4 * out_ch + out_ch  # float32 scales + int8 zero points
            assert st.activation_dtype == "uint8"  # asymmetric activation codes
            if st.op_type.startswith("QLinear"):  # written by edgefit
                assert st.input_ops == ("QuantizeLinear",)
                assert set(st.output_ops) == {"DequantizeLinear"}
            else:  # Gemm: onnxruntime fuses its QDQ group into QGemm itself
                assert st.input_ops == ("DequantizeLinear",)
                assert st.output_ops == ("QuantizeLinear",)
            assert st.bias_dtype == "int32"
        elif option == "fp16":
            assert st.weight_ops == ("Cast",) and st.bias_dtype == "float16"
        else:
            assert st.weight_ops == () and st.bias_dtype == "float32"
    meta = {p.key: p.value for p in onnx.load(str(cnn[key])).metadata_props}
    assert json.loads(meta[OPTIONS_KEY]) == options
    assert json.loads(meta[LAYERS_KEY]) == list(options)


@pytest.mark.parametrize("key", ["mixed", "int8", "wonly"])
def test_stored_values_equal_quant_math(cnn, key):
    """int4 (ours) codes are bit-for-bit quant_math's; int8 (written by onnxruntime) are its
    reduce-range codes (-64..64: u8 x s8 kernels exact on every CPU), per channel symmetric
    with scale max|w| / 64."""
    options = {"mixed": MIXED, "int8": MIXED_INT8, "wonly": WEIGHT_ONLY}[key]
    for layer, option in options.items():
        w = cnn["model"].get_submodule(layer).weight.detach().numpy()
        stored, scales = _weight_codes(cnn[key], layer)
        if inspect_onnx(cnn[key])[layer].op_type.endswith("MatMul"):  # W^T stored
            stored = stored.T
        if option == "int4":
            q, s = qm.quantize_per_channel(w, qm.BITS[option], axis=0)
            np.testing.assert_array_equal(stored, q)
            np.testing.assert_array_equal(scales, s)
        elif option == "int8":
            absmax = np.abs(w.reshape(len(w), -1)).max(axis=1)
            np.testing.assert_allclose(scales, absmax / WEIGHT_QMAX_U8S8, rtol=1e-6)
            s = scales.reshape(-1, *([1] * (w.ndim - 1)))
            want = np.clip(np.round(w / s), -WEIGHT_QMAX_U8S8, WEIGHT_QMAX_U8S8)
            np.testing.assert_array_equal(stored, want)
            assert np.abs(stored).max(axis=tuple(range(1, w.ndim))).tolist() == \
                [WEIGHT_QMAX_U8S8] * len(w)
        elif option == "fp16":
            assert stored.dtype == np.float16
            np.testing.assert_array_equal(stored, w.astype(np.float16))
        else:
            np.testing.assert_array_equal(stored, w)


def test_weight_only_options_match_torch_tightly(cnn):
    """int4 / fp16 keep float activations: ORT == torch fake-quant up to float rounding."""
    ref = _torch_reference(cnn["model"], WEIGHT_ONLY, cnn["x"])
    got = _run(cnn["wonly"], cnn["x"])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max() + 1e-7)
    full = _torch_reference(cnn["model"], {}, cnn["x"])
    assert np.abs(got - full).max() > 1e-4  # and the quantisation really happened


@pytest.mark.parametrize("key", ["mixed", "int8"])
def test_int8_models_match_torch(cnn, key):
    """int8 activations add rounding torch does not see unless emulated.

    Weight-only emulation: max error <= 6 % of max|output| (measured ~2 %).
    Emulating the int8 layers' input/output QuantizeLinear with the scales from the file:
    <= 1 % (measured <= 0.2 %; ORT's int32 bias and requantisation rounding differ slightly).
    """
    options = {"mixed": MIXED, "int8": MIXED_INT8}[key]
    x = cnn["x"]
    for level in (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    ):
        got = _run(cnn[key], x, level)
        ref = _torch_reference(cnn["model"], options, x)
        scale = np.abs(ref).max()
        assert np.abs(got - ref).max() <= 0.06 * scale
        int8_layers = [k for k, v in options.items() if v == "int8"]
        emulated = _torch_reference(
            cnn["model"], options, x, _activation_params(cnn[key], int8_layers)
        )
        assert np.abs(got - emulated).max() <= 0.01 * scale


def test_dynamic_batch(cnn):
    for n in (1, 5):
        x = cnn["x"][:n]
        assert _run(cnn["mixed"], x).shape == (n, 10)


def test_file_size_shrinks_by_expected_amount(cnn):
    model = cnn["model"]
    fp32_size = os.path.getsize(cnn["fp32"])
    for key, options in (("mixed", MIXED), ("wonly", WEIGHT_ONLY)):
        saved = 0
        for layer, option in options.items():
            mod = model.get_submodule(layer)
            n, c = mod.weight.numel(), mod.weight.shape[0]
            fp32 = qm.stored_weight_bytes("fp32", n, c) + qm.stored_bias_bytes("fp32", c)
            saved += fp32 - qm.stored_weight_bytes(option, n, c) - qm.stored_bias_bytes(option, c)
        q_size = os.path.getsize(cnn[key])
        # extra Cast/DQ/QDQ nodes, int8 zero points and int32 bias scales: a few hundred bytes
        assert abs((fp32_size - q_size) - saved) <= 0.02 * fp32_size, (key, fp32_size, q_size)
        assert q_size < fp32_size / 4


def test_onnxruntime_fuses_int8_and_runs_int4(cnn, tmp_path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(cnn["int8"]), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    assert "QLinearConv" in ops and "QGemm" in ops
    assert "DequantizeLinear" in ops  # int4 weights dequantised at run time
    m = onnx.load(str(cnn["int8"]))
    assert next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 21


@pytest.fixture(scope="module")
def nested(tmp_path_factory):
    torch.manual_seed(1)
    model = NestedNet().eval()
    d = tmp_path_factory.mktemp("nested")
    fp32 = d / "fp32.onnx"
    layers = _export(model, fp32, (3, 5, 5))
    rng = np.random.default_rng(1)
    return {
        "model": model,
        "fp32": fp32,
        "layers": layers,
        "dir": d,
        "calib": rng.standard_normal((32, 3, 5, 5)).astype(np.float32),
        "x": rng.standard_normal((4, 3, 5, 5)).astype(np.float32),
    }


def test_nested_names_and_matmul(nested):
    assert nested["layers"] == {"features.0": "Conv", "features.1.conv": "Conv", "head": "MatMul"}
    out = nested["dir"] / "wonly.onnx"
    options = {"features.0": "fp16", "features.1.conv": "int4", "head": "int4"}
    quantize_onnx(nested["fp32"], out, options, nested["calib"])
    info = inspect_onnx(out)
    assert {k: v.weight_dtype for k, v in info.items()} == {
        "features.0": "float16", "features.1.conv": "int4", "head": "int4",
    }  # fmt: skip
    assert info["head"].weight_shape == (6, 5)  # MatMul holds W^T; channels on axis 1
    assert info["features.1.conv"].bias_dtype is None
    ref = _torch_reference(nested["model"], options, nested["x"])
    got = _run(out, nested["x"])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max() + 1e-7)
    # onnxruntime's default session fuses DQ(int4) + MatMul into MatMulNBits with
    # accuracy_level 4 (int8 activations inside the kernel): close, but not weight-only.
    default = _run(out, nested["x"], edgefit=False)
    assert np.abs(default - ref).max() <= 0.01 * np.abs(ref).max()
    w = nested["model"].head.weight.detach().numpy()
    stored, scales = _weight_codes(out, "head")
    q, s = qm.quantize_per_channel(w, 4, axis=0)
    np.testing.assert_array_equal(stored, q.T)
    np.testing.assert_array_equal(scales, s)


def test_nested_int8_matmul_and_fp16_add_bias(nested):
    out = nested["dir"] / "mixed.onnx"
    options = {"features.0": "int8", "head": "int8", "features.1.conv": "fp16"}
    quantize_onnx(nested["fp32"], out, options, nested["calib"])
    info = inspect_onnx(out)
    assert {k: v.option for k, v in info.items()} == options
    assert info["head"].activation_dtype == "uint8"
    ref = _torch_reference(nested["model"], options, nested["x"])
    got = _run(out, nested["x"])
    assert np.abs(got - ref).max() <= 0.06 * np.abs(ref).max()
    out2 = nested["dir"] / "fp16head.onnx"
    quantize_onnx(nested["fp32"], out2, {"head": "fp16"}, nested["calib"])
    assert inspect_onnx(out2)["head"].bias_dtype == "float16"  # the Add's bias


def test_errors(cnn, tmp_path):
    out = tmp_path / "q.onnx"
    with pytest.raises(PlanError, match=r"unknown layer 'conv9'.*conv1, conv2, fc1, fc2"):
        quantize_onnx(cnn["fp32"], out, {"conv9": "int8"}, cnn["calib"])
    with pytest.raises(PlanError, match=r"unknown option 'int5' for layer 'fc1'.*fp32, fp16"):
        quantize_onnx(cnn["fp32"], out, {"fc1": "int5"}, cnn["calib"])
    with pytest.raises(PlanError, match="calibration data of shape"):
        quantize_onnx(cnn["fp32"], out, {"conv1": "int8"}, cnn["calib"][:, :, :8])
    with pytest.raises(PlanError, match="does not exist"):
        quantize_onnx(tmp_path / "nope.onnx", out, {}, cnn["calib"])
    bare = onnx.load(str(cnn["fp32"]))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(PlanError, match="edgefit.layers"):
        quantize_onnx(tmp_path / "bare.onnx", out, {}, cnn["calib"])
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["bare.onnx"]  # no temp files left behind


def test_all_fp32_is_untouched(cnn, tmp_path):
    out = tmp_path / "same.onnx"
    quantize_onnx(cnn["fp32"], out, {}, cnn["calib"])
    assert {k: v.option for k, v in inspect_onnx(out).items()} == dict.fromkeys(
        cnn["layers"], "fp32"
    )
    np.testing.assert_array_equal(_run(out, cnn["x"]), _run(cnn["fp32"], cnn["x"]))


def test_int4_opset_bump_fallback(cnn, tmp_path, monkeypatch):
    """If onnx.version_converter fails, the opset is bumped (no op here changes in opset 21)."""

    def broken(model, target):
        raise RuntimeError("no adapter")

    monkeypatch.setattr(onnx.version_converter, "convert_version", broken)
    out = tmp_path / "bumped.onnx"
    quantize_onnx(cnn["fp32"], out, {"fc1": "int4"}, cnn["calib"])
    m = onnx.load(str(out))
    assert next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) == 21
    ref = _torch_reference(cnn["model"], {"fc1": "int4"}, cnn["x"])
    got = _run(out, cnn["x"])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max() + 1e-7)


@pytest.mark.parametrize("option", WEIGHT_ONLY_OPTIONS)
def test_every_weight_only_form_runs_and_is_stored_as_claimed(cnn, tmp_path, option):
    """2..8-bit, symmetric and asymmetric: onnxruntime runs it, the output equals the model
    with quant_math's decoded weights, and the file stores packed int4/int2 natively (an
    int8/uint8 container for 6 and 3 bits, counted as 8 bits)."""
    out = tmp_path / f"{option}.onnx"
    quantize_onnx(cnn["fp32"], out, {"conv2": option, "fc1": option}, cnn["calib"])
    ref_model = copy.deepcopy(cnn["model"])
    with torch.no_grad():
        for name in ("conv2", "fc1"):
            mod = getattr(ref_model, name)
            w = mod.weight.detach().numpy()
            deq = qm.apply_option(w.reshape(w.shape[0], -1), option).reshape(w.shape)
            mod.weight.copy_(torch.from_numpy(deq))
        ref = ref_model(torch.from_numpy(cnn["x"])).numpy()
    np.testing.assert_allclose(_run(out, cnn["x"]), ref, rtol=1e-4, atol=1e-4)
    info = inspect_onnx(out)
    bits, symmetric = qm.INT_FORMATS[option]
    for name in ("conv2", "fc1"):
        assert info[name].option == option
        assert info[name].weight_ops == ("DequantizeLinear",)
        numel = info[name].weight_numel
        container = bits if bits in (4, 2) else 8
        assert info[name].bits == container
        assert info[name].weight_bytes == -(-numel * container // 8)
        assert info[name].distinct_values <= 2**bits
    assert info["conv1"].option == "fp32"


def test_int16_activations_w8a16(cnn, tmp_path):
    """w8a16: int8 weights with int16 activations runs in onnxruntime, mixed with w8a8, and
    its output is closer to fp32 than the all-int8 model's."""
    ref = _run(cnn["fp32"], cnn["x"])
    a16 = tmp_path / "a16.onnx"
    quantize_onnx(cnn["fp32"], a16, {"conv1": "int8a16", "conv2": "int8a16", "fc1": "int8",
                                     "fc2": "int8a16"}, cnn["calib"])
    a8 = tmp_path / "a8.onnx"
    quantize_onnx(cnn["fp32"], a8, dict.fromkeys(("conv1", "conv2", "fc1", "fc2"), "int8"),
                  cnn["calib"])
    info = inspect_onnx(a16)
    assert info["conv2"].option == "int8a16" and info["conv2"].activation_dtype == "int16"
    assert info["conv2"].weight_dtype == "int8"
    assert info["fc1"].option == "int8" and info["fc1"].activation_dtype == "uint8"
    err16 = np.abs(_run(a16, cnn["x"]) - ref).max()
    err8 = np.abs(_run(a8, cnn["x"]) - ref).max()
    assert err16 < err8


def test_residual_int8_convs_all_run_integer_kernels(tmp_path):
    """MobileNetV2-style blocks: a block's input is read by its expand conv and by the skip
    Add, which onnxruntime alone would run as a float conv on a dequantised weight every run.
    Every conv is written as QLinearConv (bias: the int32 codes), and the optimised graph runs
    no float conv."""
    from workloads.fuse import fuse_bn
    from workloads.mobilenet import MobileNetV2Small

    torch.manual_seed(0)
    model = fuse_bn(MobileNetV2Small()).eval()
    fp32, out = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    layers = _export(model, fp32, (1, 28, 28))
    convs = [name for name, op in layers.items() if op == "Conv"]
    calib = np.random.default_rng(0).standard_normal((16, 1, 28, 28)).astype(np.float32)
    quantize_onnx(fp32, out, dict.fromkeys(layers, "int8"), calib)
    info = inspect_onnx(out)
    assert {info[c].op_type for c in convs} == {"QLinearConv"}
    assert all(info[c].bias_dtype in ("int32", None) and info[c].option == "int8" for c in convs)
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    executed = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    assert not {"Conv", "FusedConv"} & set(executed)
    assert sum(op.endswith("QLinearConv") for op in executed) == len(convs)
    x = calib[:4]
    ref = _torch_reference(model, dict.fromkeys(layers, "int8"), x)
    assert np.abs(_run(out, x) - ref).max() <= 0.1 * np.abs(ref).max()
