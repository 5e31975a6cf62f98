"""Capture a model given only as an ONNX file as a LayerGraph (no torch).

Two steps, so that the plan, the cost model and the quantiser all see the same node names:

* :func:`prepare_onnx` validates the user's file, names every planned node and writes a copy
  that satisfies :mod:`executors.onnx_quant`'s input contract (``edgefit.layers`` metadata).
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
import json
import math
from pathlib import Path

import onnx
from onnx import TensorProto
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

from cost_models.graph import Layer, LayerGraph, Step, Tensor
from edgefit_common.errors import ModelLoadError
from executors.onnx_quant import (
    LAYERS_KEY,
    WEIGHTED_OPS,
    planned_layers,
    save_atomic,
    set_meta,
)

ALIAS_OPS = frozenset(
    {"Relu", "Clip", "Identity", "Dropout", "Flatten", "Reshape", "Squeeze", "Unsqueeze"}
)
_MAX_PROTO_BYTES = 2**31 - 1


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """The exception's message on one line (whitespace collapsed, cut at ``limit`` chars)."""
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# loading and validation


def _load_checked(src: Path) -> onnx.ModelProto:
    if not src.exists():
        raise ModelLoadError(f"{src}: ONNX model file not found")
    if not src.is_file():
        raise ModelLoadError(f"{src}: not a file")
    try:
        model = onnx.load(str(src), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, OSError...
        raise ModelLoadError(f"{src}: not a readable ONNX model: {_first_line(exc)}") from None
    if any(uses_external_data(t) for t in model.graph.initializer):
        try:  # onnx refuses absolute locations and paths outside the model's folder
            load_external_data_for_model(model, str(src.parent))
        except Exception as exc:
            raise ModelLoadError(
                f"{src}: cannot load the model's external data: {_first_line(exc)}"
            ) from None
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # ValidationError, or a proto too large for the in-memory check
        raise ModelLoadError(f"{src}: not a valid ONNX model: {_first_line(exc)}") from None
    return model


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _check_input(model: onnx.ModelProto, where: str) -> onnx.ValueInfoProto:
    inputs = _graph_inputs(model)
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise ModelLoadError(
            f"{where}: the model has {len(inputs)} graph inputs ({names}); edgefit plans "
            "single-input models"
        )
    inp = inputs[0]
    if not inp.type.HasField("tensor_type"):
        raise ModelLoadError(f"{where}: graph input {inp.name!r} is not a tensor")
    tt = inp.type.tensor_type
    if tt.elem_type != TensorProto.FLOAT:
        dtype = TensorProto.DataType.Name(tt.elem_type).lower()
        raise ModelLoadError(
            f"{where}: graph input {inp.name!r} is {dtype}; edgefit needs a float32 input"
        )
    if not tt.HasField("shape") or len(tt.shape.dim) < 2:
        rank = len(tt.shape.dim) if tt.HasField("shape") else "unknown"
        raise ModelLoadError(
            f"{where}: graph input {inp.name!r} has rank {rank}; edgefit needs a batch "
            "dimension and fixed sample dimensions (e.g. N x C x H x W)"
        )
    dims = list(tt.shape.dim)
    if dims[0].HasField("dim_value") and dims[0].dim_value <= 0:
        raise ModelLoadError(
            f"{where}: graph input {inp.name!r} has batch dimension {dims[0].dim_value}"
        )
    for axis, d in enumerate(dims[1:], start=1):
        if not d.HasField("dim_value") or d.dim_value <= 0:
            shown = d.dim_value if d.HasField("dim_value") else repr(d.dim_param or "unknown")
            raise ModelLoadError(
                f"{where}: graph input {inp.name!r} axis {axis} is {shown}; edgefit needs a "
                "fixed positive size for every non-batch dimension"
            )
    return inp


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def _is_layer(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    if node.op_type not in WEIGHTED_OPS or node.domain not in ("", "ai.onnx"):
        return False
    if len(node.input) < 2 or node.input[1] not in inits:
        return False
    w = inits[node.input[1]]
    if w.data_type != TensorProto.FLOAT:
        return False
    return len(w.dims) >= 3 if node.op_type == "Conv" else len(w.dims) == 2


# --------------------------------------------------------------------------------------------
# prepare


def _name_layers(model: onnx.ModelProto) -> list[str]:
    """Give each layer node a unique non-empty name; returns the layer names in graph order."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    layer_idx = [i for i, n in enumerate(graph.node) if _is_layer(n, inits)]
    taken: set[str] = set()
    names: dict[int, str] = {}
    # Existing names first (a name used by two layers stays with the first of them).
    for i in layer_idx:
        name = graph.node[i].name
        if name and name not in taken:
            names[i] = name
            taken.add(name)
    all_names = {n.name for n in graph.node if n.name} | taken
    for i in layer_idx:
        if i in names:
            continue
        base = f"{graph.node[i].op_type}_{i}"
        name, k = base, 1
        while name in all_names:
            name, k = f"{base}_{k}", k + 1
        names[i] = name
        all_names.add(name)
        taken.add(name)
    for i, node in enumerate(graph.node):
        if i in names:
            node.name = names[i]
        elif node.name in taken:  # a non-layer node sharing a layer's name: move it aside
            base, k = f"{node.name}_", 1
            while f"{base}{k}" in all_names:
                k += 1
            node.name = f"{base}{k}"
            all_names.add(node.name)
    return [names[i] for i in layer_idx]


def prepare_onnx(src: Path, dst: Path) -> list[str]:
    """Validate ``src``, name its layer nodes, write the plannable copy to ``dst``.

    Raises ``ModelLoadError`` (one line, naming ``src``) for a missing file, a file that is not
    an ONNX protobuf, a model ``onnx.checker`` rejects, external data that cannot be loaded
    (e.g. a location outside the model's folder), more than one graph input, a graph input that
    is not float32 or has a non-positive / unknown non-batch dimension, and a model with no
    layer to plan. Every layer node gets a unique non-empty name (existing names are kept), the
    ``edgefit.layers`` metadata lists them in graph order, and the copy (external data inlined)
    is written atomically. Returns the layer names. The batch dimension is left as it is.
    """
    src, dst = Path(src), Path(dst)
    where = str(src)
    model = _load_checked(src)
    _check_input(model, where)
    layers = _name_layers(model)
    if not layers:
        raise ModelLoadError(
            f"{where}: no Conv/Gemm/MatMul node with a float32 initializer weight to plan"
        )
    set_meta(model, LAYERS_KEY, json.dumps(layers))
    if model.ByteSize() > _MAX_PROTO_BYTES:
        raise ModelLoadError(f"{where}: the model is larger than 2 GB, which is not supported")
    save_atomic(model, dst)
    return layers


# --------------------------------------------------------------------------------------------
# capture


def _inferred_shapes(
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
        raise ModelLoadError(f"{where}: ONNX shape inference failed: {_first_line(exc)}") from None
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


def capture_onnx(path: Path, name: str) -> LayerGraph:
    """The LayerGraph of a model written by :func:`prepare_onnx` (sizes per sample)."""
    path = Path(path)
    where = str(path)
    model = _load_checked(path)
    inp = _check_input(model, where)
    layer_names = planned_layers(model, where, ModelLoadError, "run prepare_onnx first")
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    shapes, batch = _inferred_shapes(model, inp.name, where)

    def numel(tensor: str, producer: str) -> int:
        dims = shapes.get(tensor)
        if dims is None or any(d is None or d < 0 for d in dims):
            raise ModelLoadError(
                f"{where}: cannot infer the shape of tensor {tensor!r} (from {producer}); "
                "edgefit needs static per-sample shapes"
            )
        total = math.prod(d for d in dims if d is not None)
        return total if batch == 1 else max(1, math.ceil(total / batch))

    def shape(tensor: str) -> tuple[int, ...]:
        """Its inferred shape (a batch of 1: as onnxruntime plans it); () if not that."""
        dims = shapes.get(tensor)
        if dims is None or batch != 1 or any(d is None for d in dims):
            return ()
        return tuple(int(d or 0) for d in dims)

    nodes_by_name = {n.name: n for n in graph.node if n.name}
    for layer in layer_names:
        node = nodes_by_name.get(layer)
        if node is None or not _is_layer(node, inits):
            raise ModelLoadError(
                f"{where}: '{LAYERS_KEY}' lists {layer!r}, which is not a Conv/Gemm/MatMul node "
                "with a float32 initializer weight; run prepare_onnx again"
            )
    if not layer_names:
        raise ModelLoadError(f"{where}: no Conv/Gemm/MatMul layers to plan")
    planned = set(layer_names)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for t in node.input:
            if t:
                consumers.setdefault(t, []).append(node)
    graph_outputs = [o.name for o in graph.output]

    # The Add holding a MatMul layer's bias (same rule as onnx_quant._Graph.bias_input).
    bias_add: dict[int, str] = {}  # id(Add node) -> layer
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

    tensors: dict[str, Tensor] = {inp.name: Tensor(inp.name, numel(inp.name, "the input"), None,
                                                   shape(inp.name))}
    steps: list[Step] = []
    layers: list[Layer] = []
    step_names: set[str] = set()
    used = set(consumers) | set(graph_outputs)
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
            step = label if k == 0 else f"{label}:{out}"
            base, n = step, 1
            while step in step_names:
                step, n = f"{base}_{n}", n + 1
            step_names.add(step)
            tensors[out] = Tensor(out, numel(out, f"node {label!r}"), owner, shape(out))
            # Only the first output of a multi-output op aliases; the others are new buffers.
            step_kind = kind if k == 0 else "op"
            steps.append(Step(step, step_kind, node.op_type, inputs, out, owner))
        if kind == "layer":
            if node.input[0] not in tensors:
                raise ModelLoadError(
                    f"{where}: layer {node.name!r} does not take the model's data as its first "
                    "input"
                )
            layers.append(_layer(node, inits, tensors, layer_bias.get(node.name, 0)))

    if [ly.name for ly in layers] != layer_names:
        raise ModelLoadError(
            f"{where}: '{LAYERS_KEY}' does not match the graph's layer nodes "
            "(a layer does not depend on the input?); run prepare_onnx again"
        )
    first = layer_names[0]
    tensors = {
        k: dataclasses.replace(t, owner=first) if t.owner is None else t for k, t in tensors.items()
    }
    steps = [
        Step(s.name, s.kind, s.op, s.inputs, s.output, first) if s.owner is None else s
        for s in steps
    ]
    input_shape = tuple(int(d.dim_value) for d in inp.type.tensor_type.shape.dim[1:])
    return LayerGraph(
        name, input_shape, layers, steps, tensors,
        tuple(t for t in graph_outputs if t in tensors),
        meta={"capture": "onnx shape inference"},
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
        group = _attr(node, "group", 1)
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
        if node.op_type == "Gemm" and _attr(node, "transB", 0):
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
            node.op_type == "Gemm" and _attr(node, "transB", 0)) else reversed(w_dims)),
    )


def input_shape_of(path: Path) -> tuple[int, ...]:
    """Per-sample input shape of an ONNX model (validated as prepare_onnx does)."""
    model = _load_checked(Path(path))
    inp = _check_input(model, str(path))
    return tuple(int(d.dim_value) for d in inp.type.tensor_type.shape.dim[1:])


__all__ = [
    "ALIAS_OPS",
    "LAYERS_KEY",
    "WEIGHTED_OPS",
    "capture_onnx",
    "input_shape_of",
    "prepare_onnx",
]
