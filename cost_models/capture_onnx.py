"""Capture a model given only as an ONNX file as a LayerGraph (no torch).

Two steps, so that the plan, the cost model and the quantiser all see the same node names:

* :func:`workloads.onnx_model.prepare_onnx` validates the user's file, names every planned node
  and writes a copy that satisfies :mod:`techniques.onnx.writer`'s input contract
  (``edgefit.layers`` metadata).
* :func:`capture_onnx` reads a prepared copy and builds the LayerGraph from ONNX shape
  inference.

A *layer* is a Conv / Gemm / MatMul node (default domain) whose weight -- the second input -- is
a float32 initializer (rank >= 3 for Conv, rank 2 for Gemm and MatMul); activation-by-activation
MatMuls (attention) are ordinary ops. For an ONNX-only model the plan keys are the node names:
existing names are kept, an empty or duplicated name becomes ``<OpType>_<node index>``.

Steps follow capture.py: planned nodes are "layer" steps; Relu / Clip (ReLU6) / Identity /
Dropout / Flatten / Reshape / Squeeze / Unsqueeze are "alias" (fused or a view: no new buffer),
as is the bias ``Add`` of a MatMul layer (part of the layer's kernel); every other node is an
"op" charged to the owner of its first activation input. Nodes that do not depend on the graph
input (Constant, shape arithmetic on initializers) are constant-folded by every runtime and are
not steps. The graph input is owned by the first layer.

Batch: the batch dimension (axis 0 of the graph input) is left as the file has it. Exporters
usually bake the batch into shape constants (the dynamo exporter writes ``Reshape(x, [1, 400])``
for a batch-1 export), so making it dynamic is not safe in general; a model exported at batch 1
stays batch 1, and :mod:`cost_models.accuracy_onnx` and the int8 calibration run it one sample
at a time. All sizes in the LayerGraph are per sample: shapes are inferred with the batch set
to 1 (a symbolic or batch-1 input), or divided by a fixed batch N > 1.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import onnx

from cost_models.graph import Layer, LayerGraph, Step, Tensor
from edgefit_common.errors import ModelLoadError
from formats.onnx_io import LAYERS_KEY, WEIGHTED_OPS, planned_layers
from workloads.onnx_model import (
    check_input,
    first_line,
    input_shape_of,
    is_layer,
    load_checked,
    node_attr,
    prepare_onnx,
    prepared_notes,
)

ALIAS_OPS = frozenset(
    {"Relu", "Clip", "Identity", "Dropout", "Flatten", "Reshape", "Squeeze", "Unsqueeze"}
)


def inferred_shapes(
    model: onnx.ModelProto, input_name: str, where: str
) -> tuple[dict[str, list[int | None]], int]:
    """Tensor name -> inferred dims, and the batch those shapes are for (1 unless fixed N)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    batch = 1
    for inp in probe.graph.input:
        if inp.name != input_name:
            continue
        d0 = inp.type.tensor_type.shape.dim[0]
        if d0.HasField("dim_value") and d0.dim_value > 1:
            batch = int(d0.dim_value)
        else:
            d0.Clear()
            d0.dim_value = 1
    # Stale annotations (symbolic batch) would only conflict with the batch-1 shapes.
    del probe.graph.value_info[:]
    for out in probe.graph.output:
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    except Exception as exc:
        raise ModelLoadError(f"{where}: ONNX shape inference failed: {first_line(exc)}") from None
    shapes: dict[str, list[int | None]] = {}
    g = inferred.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
            continue
        shapes[vi.name] = [
            int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim
        ]
    return shapes, batch


@dataclasses.dataclass(frozen=True)
class _Sizes:
    """Per-sample sizes of the inferred tensor shapes (batch: the shapes' fixed batch)."""

    shapes: dict[str, list[int | None]]
    batch: int
    where: str

    def numel(self, tensor: str, producer: str) -> int:
        dims = self.shapes.get(tensor)
        if dims is None or any(d is None or d < 0 for d in dims):
            raise ModelLoadError(
                f"{self.where}: cannot infer the shape of tensor {tensor!r} (from {producer}); "
                "edgefit needs static per-sample shapes"
            )
        total = math.prod(d for d in dims if d is not None)
        return total if self.batch == 1 else max(1, math.ceil(total / self.batch))

    def shape(self, tensor: str) -> tuple[int, ...]:
        """Its inferred shape (a batch of 1: as onnxruntime plans it); () if not that."""
        dims = self.shapes.get(tensor)
        if dims is None or self.batch != 1 or any(d is None for d in dims):
            return ()
        return tuple(int(d or 0) for d in dims)

    def tensor(self, name: str, producer: str, owner: str | None) -> Tensor:
        return Tensor(name, self.numel(name, producer), owner, self.shape(name))


def _check_layer_nodes(graph: onnx.GraphProto, layer_names: list[str],
                       inits: dict[str, onnx.TensorProto], where: str) -> None:
    nodes_by_name = {n.name: n for n in graph.node if n.name}
    for layer in layer_names:
        node = nodes_by_name.get(layer)
        if node is None or not is_layer(node, inits):
            raise ModelLoadError(
                f"{where}: '{LAYERS_KEY}' lists {layer!r}, which is not a Conv/Gemm/MatMul node "
                "with a float32 initializer weight; run prepare_onnx again"
            )
    if not layer_names:
        raise ModelLoadError(f"{where}: no Conv/Gemm/MatMul layers to plan")


def _bias_adds(graph: onnx.GraphProto, planned: set[str],
               consumers: dict[str, list[onnx.NodeProto]], inits: dict[str, onnx.TensorProto]
               ) -> tuple[dict[int, str], dict[str, int]]:
    """({id(Add node): layer}, {layer: bias numel}): the Add holding a MatMul layer's bias
    (same rule as techniques.onnx.graph.Graph.bias_input)."""
    graph_outputs = {o.name for o in graph.output}
    bias_add: dict[int, str] = {}
    layer_bias: dict[str, int] = {}
    for node in graph.node:
        if node.name not in planned or node.op_type != "MatMul":
            continue
        users = consumers.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type == "Add" and node.output[0] not in graph_outputs:
            other = [t for t in users[0].input if t != node.output[0]]
            if len(other) == 1 and other[0] in inits:
                bias_add[id(users[0])] = node.name
                layer_bias[node.name] = math.prod(inits[other[0]].dims)
    return bias_add, layer_bias


def _unique_step(label: str, taken: set[str]) -> str:
    step, n = label, 1
    while step in taken:
        step, n = f"{label}_{n}", n + 1
    taken.add(step)
    return step


def _walk(graph: onnx.GraphProto, inp: str, planned: set[str], sizes: _Sizes,
          inits: dict[str, onnx.TensorProto], consumers: dict[str, list[onnx.NodeProto]]
          ) -> tuple[dict[str, Tensor], list[Step], list[Layer]]:
    """Tensors, steps and layers in graph order (nodes not fed by the input are folded)."""
    bias_add, layer_bias = _bias_adds(graph, planned, consumers, inits)
    tensors: dict[str, Tensor] = {inp: sizes.tensor(inp, "the input", None)}
    steps: list[Step] = []
    layers: list[Layer] = []
    step_names: set[str] = set()
    used = set(consumers) | {o.name for o in graph.output}
    for index, node in enumerate(graph.node):
        inputs = tuple(t for t in node.input if t in tensors)
        if not inputs:  # Constant, or arithmetic on initializers: folded by every runtime
            continue
        in_owner = tensors[inputs[0]].owner
        label = node.name or f"{node.op_type}_{index}"
        if node.name in planned:
            kind, owner = "layer", node.name
        elif node.op_type in ALIAS_OPS or id(node) in bias_add:
            kind, owner = "alias", in_owner
        else:
            kind, owner = "op", in_owner
        outputs = [t for t in node.output if t and (t in used or t == node.output[0])]
        for k, out in enumerate(outputs):
            step = _unique_step(label if k == 0 else f"{label}:{out}", step_names)
            tensors[out] = sizes.tensor(out, f"node {label!r}", owner)
            # Only the first output of a multi-output op aliases; the others are new buffers.
            steps.append(Step(step, kind if k == 0 else "op", node.op_type, inputs, out, owner))
        if kind == "layer":
            if node.input[0] not in tensors:
                raise ModelLoadError(
                    f"{sizes.where}: layer {node.name!r} does not take the model's data as its "
                    "first input"
                )
            layers.append(_layer(node, inits, tensors, layer_bias.get(node.name, 0)))
    return tensors, steps, layers


def capture_onnx(path: Path, name: str, where: str | None = None) -> LayerGraph:
    """The LayerGraph of a model written by :func:`prepare_onnx` (sizes per sample).
    ``where``: the file to name in errors (the user's, not edgefit's prepared copy)."""
    path = Path(path)
    where = where or str(path)
    model = load_checked(path)
    inp = check_input(model, where)
    layer_names = planned_layers(model, where, ModelLoadError, "run prepare_onnx first")
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    shapes, batch = inferred_shapes(model, inp.name, where)
    _check_layer_nodes(graph, layer_names, inits, where)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for t in node.input:
            if t:
                consumers.setdefault(t, []).append(node)
    tensors, steps, layers = _walk(graph, inp.name, set(layer_names),
                                   _Sizes(shapes, batch, where), inits, consumers)
    if [ly.name for ly in layers] != layer_names:
        raise ModelLoadError(
            f"{where}: '{LAYERS_KEY}' does not match the graph's layer nodes "
            "(a layer does not depend on the input?); run prepare_onnx again"
        )
    # what no layer produced (the input, ops before the first layer) belongs to the first layer
    first = layer_names[0]
    tensors = {
        k: dataclasses.replace(t, owner=first) if t.owner is None else t for k, t in tensors.items()
    }
    steps = [dataclasses.replace(s, owner=first) if s.owner is None else s for s in steps]
    input_shape = tuple(int(d.dim_value) for d in inp.type.tensor_type.shape.dim[1:])
    graph_outputs = [o.name for o in graph.output]
    return LayerGraph(
        name, input_shape, layers, steps, tensors,
        tuple(t for t in graph_outputs if t in tensors),
        meta={"capture": "onnx shape inference",
              **({"prepared": "; ".join(notes)} if (notes := prepared_notes(model)) else {})},
    )  # fmt: skip


def _layer(
    node: onnx.NodeProto,
    inits: dict[str, onnx.TensorProto],
    tensors: dict[str, Tensor],
    matmul_bias: int,
) -> Layer:
    w_dims = [int(d) for d in inits[node.input[1]].dims]
    weight_numel = math.prod(w_dims)
    in_numel = tensors[node.input[0]].numel
    out_numel = tensors[node.output[0]].numel
    if node.op_type == "Conv":
        group = node_attr(node, "group", 1)
        in_channels = w_dims[1] * group
        kernel = w_dims[2:]
        if group > 1 and group == in_channels:
            cls = "depthwise"
        elif all(k == 1 for k in kernel):
            cls = "pointwise"
        else:
            cls = "conv"
        out_channels = w_dims[0]
        macs = out_numel * w_dims[1] * math.prod(kernel)
        bias = node.input[2] if len(node.input) > 2 else ""
        bias_numel = math.prod(inits[bias].dims) if bias in inits else 0
    else:
        cls = "linear"
        if node.op_type == "Gemm" and node_attr(node, "transB", 0):
            out_channels, in_features = w_dims
        else:
            in_features, out_channels = w_dims
        macs = out_numel * in_features  # out_features * in_features per row, rows per sample
        if node.op_type == "Gemm":
            bias = node.input[2] if len(node.input) > 2 else ""
            bias_numel = math.prod(inits[bias].dims) if bias in inits else 0
        else:
            bias_numel = matmul_bias
    return Layer(
        name=node.name,
        op_type=node.op_type,
        op_class=cls,
        params=weight_numel + bias_numel,
        weight_numel=weight_numel,
        bias_numel=bias_numel,
        out_channels=out_channels,
        macs=macs,
        input_numel=in_numel,
        output_numel=out_numel,
        weight_shape=tuple(w_dims if node.op_type == "Conv" or (
            node.op_type == "Gemm" and node_attr(node, "transB", 0)) else reversed(w_dims)),
    )


__all__ = [
    "ALIAS_OPS",
    "LAYERS_KEY",
    "WEIGHTED_OPS",
    "capture_onnx",
    "input_shape_of",
    "prepare_onnx",
]
