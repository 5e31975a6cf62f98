"""Small helpers over an ONNX graph, shared by the writer's passes and the read-back: an
index of the graph (:class:`Graph`), a layer's node and float weight, its weight input and
output-channel axis, the initializer behind a weight (:func:`trace`), unique names, the
default-domain opset, loading a model with a one-line error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from edgefit_common.errors import PlanError
from formats.onnx_io import LAYERS_KEY, WEIGHTED_OPS

QLINEAR_OPS: tuple[str, ...] = ("QLinearConv", "QLinearMatMul")
"""The int8 layer forms edgefit writes itself (:func:`techniques.onnx.int8.qlinear_form`)."""


def unique_name(base: str, taken: set[str]) -> str:
    name, i = base, 1
    while name in taken:
        name = f"{base}{i}"
        i += 1
    taken.add(name)
    return name


def default_opset(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    raise PlanError("ONNX model has no default-domain opset import")


class Graph:
    """Index of a graph: nodes by name, producers, consumers, initializers."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.inits = {i.name: i for i in graph.initializer}
        self.by_name: dict[str, onnx.NodeProto] = {}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            self.by_name.setdefault(node.name, node)
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(node)
        self.outputs = {o.name for o in graph.output}
        self.names = (
            {n.name for n in graph.node}
            | set(self.inits)
            | set(self.producer)
            | {i.name for i in graph.input}
        )

    def index_of(self, node: onnx.NodeProto) -> int:
        for i, n in enumerate(self.graph.node):
            if n is node:
                return i
        raise KeyError(node.name)

    def bias_input(self, node: onnx.NodeProto) -> tuple[onnx.NodeProto, int] | None:
        """(node, input index) holding the layer's bias, or None."""
        if node.op_type in ("Conv", "Gemm"):
            return (node, 2) if len(node.input) > 2 and node.input[2] else None
        if node.op_type == "QLinearConv":
            return (node, 8) if len(node.input) > 8 and node.input[8] else None
        users = self.consumers.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type == "Add" and node.output[0] not in self.outputs:
            add = users[0]
            for k, name in enumerate(add.input):
                if name != node.output[0]:
                    return add, k
        return None

    def drop_if_unused(self, init_name: str) -> None:
        users = [n for n in self.graph.node if init_name in n.input]
        if not users and init_name not in self.outputs and init_name in self.inits:
            self.graph.initializer.remove(self.inits.pop(init_name))


def weight_axis(node: onnx.NodeProto, w: np.ndarray) -> int:
    """Output-channel axis of the layer's weight initializer."""
    if node.op_type in ("Conv", "QLinearConv"):
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if w.ndim != 2:
        raise PlanError(f"layer {node.name!r}: MatMul weight of rank {w.ndim} is not supported")
    return 1


def layer_node(g: Graph, layer: str, where: str) -> onnx.NodeProto:
    node = g.by_name.get(layer)
    if node is None:
        raise PlanError(f"{where}: no node named {layer!r} (listed in '{LAYERS_KEY}')")
    if node.op_type not in (*WEIGHTED_OPS, *QLINEAR_OPS):  # the last: written int8 forms
        raise PlanError(
            f"{where}: layer {layer!r} is a {node.op_type} node; expected {'/'.join(WEIGHTED_OPS)}"
        )
    return node


def float_weight(g: Graph, node: onnx.NodeProto, where: str) -> np.ndarray:
    name = node.input[1] if len(node.input) > 1 else ""
    init = g.inits.get(name)
    if init is None or init.data_type != TensorProto.FLOAT:
        raise PlanError(
            f"{where}: layer {node.name!r} weight {name!r} is not a float32 initializer"
        )
    return numpy_helper.to_array(init)


def weight_input(node: onnx.NodeProto) -> str:
    """The input of a layer node that carries its weight (QLinearConv / QLinearMatMul: the
    fourth, ``w`` / ``b``)."""
    return node.input[3] if node.op_type in QLINEAR_OPS else node.input[1]


def trace(g: Graph, name: str) -> tuple[onnx.TensorProto | None, list[onnx.NodeProto]]:
    """Follow Cast / DequantizeLinear / Identity back from ``name`` to an initializer."""
    chain: list[onnx.NodeProto] = []
    while name not in g.inits:
        node = g.producer.get(name)
        if node is None or node.op_type not in ("Cast", "DequantizeLinear", "Identity"):
            return None, chain
        chain.append(node)
        name = node.input[0]
    return g.inits[name], chain


def load_model(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except FileNotFoundError:
        raise PlanError(f"ONNX model {path} does not exist") from None
    except Exception as exc:
        raise PlanError(f"cannot read ONNX model {path}: {str(exc).splitlines()[0]}") from None
