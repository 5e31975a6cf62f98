"""Precision boundaries on this host: the formula the planner charges against a measured node
(issue #22 item 2).

    .venv/bin/python benchmarks/boundary_latency.py

For the boundary tensors of the built-in CNNs (LeNet-5's and the Fashion CNN's layer outputs,
shapes below), a one-node ONNX model of QuantizeLinear (float -> uint8) and of
DequantizeLinear (uint8 -> float) is timed against an Identity model of the same input,
interleaved in one process (cost_models.micro_latency.interleaved_us: onnxruntime CPU, 1 thread,
ORT_ENABLE_ALL, the lowest of 15 round medians); the node's time is the difference. Beside
it, what cost_models.boundary_latency charges with this host's probed constants (the per-node
overhead of a Neg chain and the numpy copy bandwidth: edgefit's host profile). The machine is
shared: read the ratios, not the microseconds.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# (name, shape) of tensors a plan's boundary crosses in the built-in CNNs
SHAPES = (("lenet5 conv1 out (6x28x28)", (1, 6, 28, 28)),
          ("lenet5 pool2 out (16x5x5)", (1, 16, 5, 5)),
          ("lenet5 fc1 out (120)", (1, 120)),
          ("fashion conv1 out (32x28x28)", (1, 32, 28, 28)),
          ("fashion conv2 out (64x14x14)", (1, 64, 14, 14)))


def one_node(op: str, shape: tuple[int, ...]) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    scale = numpy_helper.from_array(np.array(0.02, np.float32), "s")
    zero = numpy_helper.from_array(np.array(128, np.uint8), "z")
    in_type, out_type = ((TensorProto.FLOAT, TensorProto.UINT8) if op == "QuantizeLinear"
                         else (TensorProto.UINT8, TensorProto.FLOAT))
    graph = helper.make_graph(
        [helper.make_node(op, ["input", "s", "z"], ["output"], name="boundary")], op,
        [helper.make_tensor_value_info("input", in_type, list(shape))],
        [helper.make_tensor_value_info("output", out_type, list(shape))], [scale, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    return model


def identity(shape: tuple[int, ...], elem: int) -> Any:
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"], name="id")], "empty",
        [helper.make_tensor_value_info("input", elem, list(shape))],
        [helper.make_tensor_value_info("output", elem, list(shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    return model


def main() -> None:
    import onnx
    from onnx import TensorProto

    from cost_models.analytical import build_cost_table
    from cost_models.boundary_latency import boundary_ms
    from cost_models.graph import LayerGraph
    from cost_models.host_probe import host_spec
    from cost_models.micro_latency import interleaved_us

    spec = host_spec()
    table = build_cost_table(LayerGraph("none", (1,), [], [], {}, ()), spec)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"host constants: per-node overhead {1e3 * table.boundary_overhead_ms:.3g} us, "
          f"{1e6 * table.boundary_ms_per_byte:.4g} ns/B (1 / the probed bandwidth)")
    print("| tensor | elements | node | measured us | charged us | charged / measured |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in SHAPES:
            elements = int(np.prod(shape))
            paths = []
            for i, model in enumerate((identity(shape, TensorProto.FLOAT),
                                       identity(shape, TensorProto.UINT8),
                                       one_node("QuantizeLinear", shape),
                                       one_node("DequantizeLinear", shape))):
                path = Path(tmp) / f"m{i}.onnx"
                onnx.save(model, str(path))
                paths.append(path)
            us = interleaved_us(paths)
            charged_us = 1e3 * boundary_ms(table, elements)
            for op, node_us in (("Q", us[2] - us[0]), ("DQ", us[3] - us[1])):
                print(f"| {name} | {elements} | {op} | {node_us:.2f} | {charged_us:.2f} | "
                      f"{charged_us / max(node_us, 1e-3):.2f} |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
