"""techniques.onnx.weights: the per-layer techniques an ONNX-only model gets on its
initializers, in torch's layout (the zeros a torch nn.Linear gets from the same weights), a
shared initializer copied rather than changed under another node, and the stored weights read
back through DequantizeLinear (a code at the zero point is a zero)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from edgefit_common.errors import PlanError
from formats.onnx_io import LAYERS_KEY
from techniques.lowrank import LowRankConfig
from techniques.onnx.weights import (
    layer_arrays,
    stored_weights,
    weights_after,
    with_weight_techniques,
)
from techniques.onnx.writer import quantize_onnx
from techniques.prune import UnstructuredPruneConfig, prune_unstructured
from techniques.share import WeightSharingConfig

RNG = np.random.default_rng(0)
W_MM = RNG.normal(size=(32, 48)).astype(np.float32)  # MatMul: (in, out)
B_MM = RNG.normal(size=48).astype(np.float32)
W_GEMM = RNG.normal(size=(10, 48)).astype(np.float32)  # Gemm transB=1: (out, in)


def _model(path: Path) -> Path:
    """x (1, 32) -> MatMul(W_MM) + B_MM -> Relu -> Gemm(W_GEMM, transB) -> y; a second
    MatMul ("probe") reads W_MM too."""
    nodes = [
        helper.make_node("MatMul", ["x", "w_mm"], ["mm"], name="fc1"),
        helper.make_node("Add", ["mm", "b_mm"], ["h"], name="bias"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "w_gemm"], ["y"], name="fc2", transB=1),
        helper.make_node("MatMul", ["x", "w_mm"], ["probe"], name="probe"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10]),
         helper.make_tensor_value_info("probe", TensorProto.FLOAT, [1, 48])],
        [numpy_helper.from_array(W_MM, "w_mm"), numpy_helper.from_array(B_MM, "b_mm"),
         numpy_helper.from_array(W_GEMM, "w_gemm")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    entry = model.metadata_props.add()
    entry.key, entry.value = LAYERS_KEY, json.dumps(["fc1", "fc2"])
    onnx.save(model, str(path))
    return path


def _init(path: Path, node: str) -> np.ndarray:
    model = onnx.load(str(path))
    name = next(n for n in model.graph.node if n.name == node).input[1]
    return numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == name))


def test_layer_arrays_are_in_torch_layout_with_their_bias(tmp_path: Path) -> None:
    arrays = layer_arrays(_model(tmp_path / "m.onnx"), ["fc1", "fc2"])
    np.testing.assert_array_equal(arrays["fc1"][0], W_MM.T)  # (out, in)
    np.testing.assert_array_equal(arrays["fc1"][1], B_MM)  # the Add after the MatMul
    np.testing.assert_array_equal(arrays["fc2"][0], W_GEMM)
    assert arrays["fc2"][1] is None


def test_pruning_an_initializer_zeroes_what_torch_zeroes(tmp_path: Path) -> None:
    src = _model(tmp_path / "m.onnx")
    cfg = UnstructuredPruneConfig(sparsity=0.75)
    changed = with_weight_techniques(src, tmp_path / "p.onnx", {"fc1": [cfg], "fc2": []})
    assert changed == ["fc1"]
    linear = torch.nn.Linear(32, 48, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(W_MM.T.copy()))
    expected = prune_unstructured(linear, cfg).weight.detach().numpy()
    got = _init(tmp_path / "p.onnx", "fc1")
    np.testing.assert_array_equal(got.T, expected)  # same zeros, same survivors
    assert int((got == 0).sum()) == round(0.75 * got.size)
    # the other reader of the same initializer still sees the dense weight
    np.testing.assert_array_equal(_init(tmp_path / "p.onnx", "probe"), W_MM)
    np.testing.assert_array_equal(_init(tmp_path / "p.onnx", "fc2"), W_GEMM)


def test_sharing_an_initializer_leaves_at_most_2_to_the_bits_values(tmp_path: Path) -> None:
    src = _model(tmp_path / "m.onnx")
    cfg = WeightSharingConfig(bits=3)
    with_weight_techniques(src, tmp_path / "s.onnx", {"fc2": [cfg]})
    got = _init(tmp_path / "s.onnx", "fc2")
    assert np.unique(got).size <= 8 < np.unique(W_GEMM).size


def test_a_torch_only_technique_is_refused_naming_the_layer() -> None:
    with pytest.raises(PlanError, match="layer 'fc1': lowrank is applied to torch models only"):
        weights_after(W_MM.T, [LowRankConfig(rank=4)], "fc1")


def test_stored_weights_read_codes_back_through_dequantize(tmp_path: Path) -> None:
    src = _model(tmp_path / "m.onnx")
    cfg = UnstructuredPruneConfig(sparsity=0.5)
    with_weight_techniques(src, tmp_path / "p.onnx", {"fc1": [cfg]})
    quantize_onnx(tmp_path / "p.onnx", tmp_path / "q.onnx", {"fc1": "int4", "fc2": "fp32"},
                  np.zeros((1, 1, 32), np.float32))
    values = stored_weights(tmp_path / "q.onnx", ["fc1", "fc2"])
    assert values["fc1"].size == W_MM.size
    assert int((values["fc1"] == 0).sum()) >= round(0.5 * W_MM.size)  # int4 codes: zeros kept
    assert np.abs(values["fc1"]).max() <= 7
    np.testing.assert_array_equal(values["fc2"], W_GEMM)
