"""All-int8 models run integer from the first QuantizeLinear to the last DequantizeLinear
(issue #22 item 1): no float op between a DequantizeLinear and a QuantizeLinear (a "float
island": a ReLU that did not fold into the quantisation range, a max-pool on dequantised
codes) and no DequantizeLinear -> QuantizeLinear round trip, counted in the graph onnxruntime
actually runs (ORT_ENABLE_ALL, edgefit's session options)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from cost_models.capture import capture
from cost_models.export import export_fp32
from techniques.onnx.inspect import float_islands
from techniques.onnx.writer import quantize_onnx
from workloads.fuse import fuse_bn
from workloads.refs import BUILT_IN_MODELS
from workloads.train import fresh_model
from workloads.zoo import ZOO


def _all_int8(model: nn.Module, shape: tuple[int, ...], tmp: Path) -> Path:
    fp32, out = tmp / "fp32.onnx", tmp / "int8.onnx"
    export_fp32(model, shape, fp32)
    layers = capture(model, shape, "test").layer_names
    calib = np.random.default_rng(0).random((32, *shape), dtype=np.float32)
    quantize_onnx(fp32, out, dict.fromkeys(layers, "int8"), calib)
    return out


CNNS = [m for m in BUILT_IN_MODELS if m in ZOO
        and any(isinstance(x, nn.Conv2d) for x in ZOO[m].factory().modules())]


@pytest.mark.parametrize("name", CNNS)
def test_builtin_cnns_all_int8_have_no_float_islands(name, tmp_path):
    torch.manual_seed(0)
    model = fresh_model(ZOO[name]).eval()
    path = _all_int8(model, tuple(ZOO[name].input_shape), tmp_path)
    assert float_islands(path, tmp_path) == []


class _ResidualBN(nn.Module):
    """A user's block: conv + BatchNorm + ReLU6, a residual add, max-pool, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6())
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = self.pool(y + self.body(y))
        return self.head(y.flatten(1))


def test_a_users_residual_bn_model_runs_integer_between_its_layers(tmp_path):
    torch.manual_seed(0)
    model = fuse_bn(_ResidualBN().eval())  # as edgefit loads a user's model
    path = _all_int8(model, (3, 16, 16), tmp_path)
    assert float_islands(path, tmp_path) == []


def test_the_counter_sees_an_unfolded_relu(tmp_path):
    """The counter's own check: a DQ -> Relu -> Q chain written by hand is one island."""
    from onnx import TensorProto, helper, numpy_helper

    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp = numpy_helper.from_array(np.array(128, np.uint8), "z")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("Relu", ["xd"], ["r"], name="relu"),
             helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"]),
             helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [scale, zp])
    path = tmp_path / "island.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert float_islands(path, tmp_path) == ["DequantizeLinear -> Relu -> QuantizeLinear (relu)"]

