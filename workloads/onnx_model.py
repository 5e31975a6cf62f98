"""A user's ONNX file as a model edgefit plans: validated, its planned nodes named uniquely
(the plan's keys), written as a prepared copy that carries ``edgefit.layers`` metadata
(:mod:`formats.onnx_io`). A *layer* is a Conv / Gemm / MatMul node whose weight, the second input,
is a float32 initializer; an empty or duplicated name becomes ``<OpType>_<node index>``."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from onnx import TensorProto
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

from edgefit_common.errors import ModelLoadError
from formats.onnx_io import LAYERS_KEY, WEIGHTED_OPS, get_meta, save_atomic, set_meta
from workloads.onnx_convert import (
    check_sample_dims_fit,
    fix_sample_dims,
    fold_constants,
    folding_reason,
    lift_constant_weights,
    symbolic_dims_problem,
    upgrade_opset,
)

PREPARE_VERSION = 2  # in the cache key of prepared copies: bump when preparation changes
PREPARED_KEY = "edgefit.prepared"  # JSON list: what prepare_onnx converted
_MAX_PROTO_BYTES = 2**31 - 1


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The exception's message on one line (whitespace collapsed, cut at ``limit`` chars)."""
    text = " ".join(str(exc).split())
    if not text:
        return type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------
# loading and validation


def load_checked(src: Path) -> onnx.ModelProto:
    if not src.exists():
        raise ModelLoadError(f"{src}: ONNX model file not found")
    if not src.is_file():
        raise ModelLoadError(f"{src}: not a file")
    try:
        model = onnx.load(str(src), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError, OSError...
        raise ModelLoadError(f"{src}: not a readable ONNX model: {first_line(exc)}") from None
    if any(uses_external_data(t) for t in model.graph.initializer):
        try:  # onnx refuses absolute locations and paths outside the model's folder
            load_external_data_for_model(model, str(src.parent))
        except Exception as exc:
            raise ModelLoadError(
                f"{src}: cannot load the model's external data: {first_line(exc)}"
            ) from None
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # ValidationError, or a proto too large for the in-memory check
        raise ModelLoadError(f"{src}: not a valid ONNX model: {first_line(exc)}") from None
    return model


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def check_input(model: onnx.ModelProto, where: str,
                allow_symbolic: bool = False) -> onnx.ValueInfoProto:
    """The model's one float32 data input; `allow_symbolic`: before --input-shape fixed its
    symbolic sample dims (prepare_onnx), else they are refused naming the flag."""
    inputs = _graph_inputs(model)
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise ModelLoadError(
            f"{where}: the model has {len(inputs)} graph inputs ({names}); edgefit plans "
            "models with one float32 input tensor (the calibration data is one array per "
            "sample): give the other inputs fixed values as initializers of the same name "
            "(edgefit treats them as constants), or export a wrapper that holds them"
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
    if not allow_symbolic and (problem := symbolic_dims_problem(inp, where)) is not None:
        raise ModelLoadError(problem)
    for axis, d in enumerate(dims[1:], start=1):
        if d.HasField("dim_value") and d.dim_value <= 0:
            shown = d.dim_value
            raise ModelLoadError(
                f"{where}: graph input {inp.name!r} axis {axis} is {shown}; edgefit needs a "
                "fixed positive size for every non-batch dimension"
            )
    return inp


def node_attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(a.i)
    return default


def is_layer(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
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
    layer_idx = [i for i, n in enumerate(graph.node) if is_layer(n, inits)]
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


def prepare_onnx(src: Path, dst: Path, input_shape: tuple[int, ...] | None = None) -> list[str]:
    """Validate ``src``, convert what edgefit can (:mod:`workloads.onnx_convert`), name its
    layer nodes, write the plannable copy to ``dst``.

    Raises ``ModelLoadError`` (one line, naming ``src``) for a missing file, a file that is not
    an ONNX protobuf, a model ``onnx.checker`` rejects, external data that cannot be loaded
    (e.g. a location outside the model's folder), more than one graph input, a graph input that
    is not float32 or has a non-positive dimension, symbolic sample dimensions without
    ``input_shape`` (one sample's shape, from --input-shape) or an ``input_shape`` that does not
    fit, an opset the converter cannot upgrade, folding that changes the outputs, and a model
    with no layer to plan. Converted: symbolic sample dims (from ``input_shape``), opset < 13,
    Constant-node weights, shapes that need constant folding (the batch is then fixed to 1);
    the ``edgefit.prepared`` metadata lists what was done. Every layer node gets a unique
    non-empty name (existing names are kept), the ``edgefit.layers`` metadata lists them in
    graph order, and the copy (external data inlined) is written atomically. Returns the layer
    names. A symbolic batch dimension is otherwise left as it is.
    """
    src, dst = Path(src), Path(dst)
    where = str(src)
    model = load_checked(src)
    name = check_input(model, where, allow_symbolic=True).name
    model, notes = upgrade_opset(model, where)
    original = onnx.ModelProto()
    original.CopyFrom(model)
    fixed = fix_sample_dims(model, _input(model, name), input_shape, where)
    if fixed and input_shape is not None:  # sizes the user gave: checked against the graph
        check_sample_dims_fit(original, model, input_shape, where)
    notes += fixed
    check_input(model, where)
    model, lifted = lift_constant_weights(model)
    notes += lifted
    if (reason := folding_reason(model, name)) is not None:
        try:
            model, folded = fold_constants(model, name, reason, where)
        except ModelLoadError as exc:
            if not fixed or input_shape is None:
                raise
            raise ModelLoadError(f"{exc} (run at the sizes --input-shape "
                                 f"{'x'.join(map(str, input_shape))} gave: is that the sample "
                                 "shape the model was built for?)") from None
        notes += folded
    if lifted or reason is not None:
        try:
            onnx.checker.check_model(model)
        except Exception as exc:
            raise ModelLoadError(f"{where}: the converted model is not valid ONNX: "
                                 f"{first_line(exc)}") from None
        check_input(model, where)
    layers = _name_layers(model)
    if not layers:
        raise ModelLoadError(
            f"{where}: no Conv/Gemm/MatMul node with a float32 initializer weight to plan"
            f"{_no_layers_hint(model)}"
        )
    set_meta(model, LAYERS_KEY, json.dumps(layers))
    set_meta(model, PREPARED_KEY, json.dumps(notes))
    if model.ByteSize() > _MAX_PROTO_BYTES:
        raise ModelLoadError(f"{where}: the model is larger than 2 GB, which is not supported")
    save_atomic(model, dst)
    return layers


_QUANTISED_OPS = frozenset({"DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                            "MatMulInteger", "MatMulNBits"})


def _no_layers_hint(model: onnx.ModelProto) -> str:
    """The likely reason a model has no plannable layer, and what to do (or "")."""
    ops = {n.op_type for n in model.graph.node}
    if ops & _QUANTISED_OPS:
        found = ", ".join(sorted(ops & _QUANTISED_OPS))
        return f" ({found}: the model is already quantised; plan its float32 export)"
    inits = {i.name: i for i in model.graph.initializer}
    types = {TensorProto.DataType.Name(inits[n.input[1]].data_type).lower()
             for n in model.graph.node
             if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in inits}
    if types - {"float"}:
        return f" (layer weights are {', '.join(sorted(types))}; export the model in float32)"
    return ""


def _input(model: onnx.ModelProto, name: str) -> onnx.ValueInfoProto:
    return next(i for i in model.graph.input if i.name == name)


def prepared_notes(model: onnx.ModelProto) -> list[str]:
    """What prepare_onnx converted (the ``edgefit.prepared`` metadata; [] when nothing)."""
    raw = get_meta(model, PREPARED_KEY)
    try:
        notes = json.loads(raw) if raw else []
    except json.JSONDecodeError:
        return []
    return [str(n) for n in notes] if isinstance(notes, list) else []


# --------------------------------------------------------------------------------------------
# capture


def input_shape_of(path: Path) -> tuple[int, ...]:
    """Per-sample input shape of an ONNX model (validated as prepare_onnx does)."""
    model = load_checked(Path(path))
    inp = check_input(model, str(path))
    return tuple(int(d.dim_value) for d in inp.type.tensor_type.shape.dim[1:])


__all__ = ["PREPARED_KEY", "PREPARE_VERSION", "check_input", "first_line", "input_shape_of",
           "is_layer", "load_checked", "node_attr", "prepare_onnx", "prepared_notes"]
