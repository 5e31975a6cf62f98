"""Turn an fp32 ONNX model into the runnable mixed-precision model a plan asks for.

Input contract (see :func:`name_nodes_by_module`): every planned layer's Conv / Gemm / MatMul node
is named after the torch module (``conv1``, ``features.0.conv``, ``fc1``) and the model carries a
``metadata_props`` entry ``edgefit.layers`` = JSON list of those names. The weight is the node's
second input and is an initializer (for a ``MatMul`` it is ``W^T``, shape (in, out), and the
bias lives in the ``Add`` that is the MatMul's only consumer).

Per-layer options (numbers from :mod:`formats.quant_math`, so they match the flash image):

* ``fp32`` -- untouched.
* ``fp16`` -- weight and bias initializers stored as float16, each followed by a ``Cast`` to
  float; the host computes in fp32, the bytes in the file are fp16.
* ``int8`` -- ``onnxruntime.quantization.quantize_static`` in QDQ format, symmetric per-channel
  int8 weights, symmetric int8 activations (QInt8/QInt8, MinMax calibration), restricted with
  ``nodes_to_quantize`` to exactly the int8 layers. The layer's input and output each get a
  QuantizeLinear/DequantizeLinear pair; the bias is ORT's int32 (scale = in_scale * w_scale).
  With ``ORT_ENABLE_ALL`` onnxruntime fuses DQ->Gemm->Q into ``QGemm`` (com.microsoft). Conv
  and MatMul layers (a Linear over token rows) are written as ``QLinearConv`` /
  ``QLinearMatMul`` by edgefit itself (:func:`_qlinear_form`: onnxruntime does not fuse them
  when several layers read one quantised tensor), reading the uint8 twin of their int8 input
  codes. The int8 weight codes and scales equal :func:`quant_math.quantize_per_channel` (same
  formula, same guard for zero channels).
* ``int4`` -- weight-only: an ONNX ``INT4`` initializer (packed two per byte, low nibble first)
  + float32 per-output-channel scales + ``DequantizeLinear`` (axis = the output-channel axis, no
  zero point) feeding the node; activations and bias stay float32. Needs opset >= 21, so a model
  with any int4 layer is converted with ``onnx.version_converter`` (or, if that fails and no op
  in the graph changes meaning in opset 21, its opset number is bumped). onnxruntime CPU runs
  Conv as DequantizeLinear + Conv; a weight-only Gemm layer is written as MatMul (+ Add) with
  its codes in the MatMul layout (in, out) (and a Relu right after it as ``Max(x, 0)``), so
  that, like a MatMul layer, onnxruntime fuses it into ``MatMulNBits`` (see
  :func:`_matmulnbits_form`), which quantises activations to int8 unless the session sets
  ``ORT_SESSION_CONFIG`` (use :func:`ort_session_options`).

fp16 and int4 rewrites are applied before int8 calibration, so the int8 activation ranges are
those of the mixed model. Node metadata (torch name scopes) dropped by the converter/quantiser
is restored on every node that kept its name.

The output keeps ``edgefit.layers`` and adds ``edgefit.options`` (JSON {layer: option}, every
planned layer, ``fp32`` for those the plan leaves out).
"""

from __future__ import annotations

import ast
import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgefit_common.errors import PlanError
from edgefit_measure import session_config, u8s8_exact
from formats import quant_math as qm
from formats.onnx_io import (
    LAYERS_KEY,
    OPTIONS_KEY,
    WEIGHTED_OPS,
    planned_layers,
    save_atomic,
    set_meta,
)

QLINEAR_OPS: tuple[str, ...] = ("QLinearConv", "QLinearMatMul")
"""The int8 layer forms edgefit writes itself (:func:`_qlinear_form`)."""
GRAPH_FORM_VERSION = 6
"""Bumped when a per-layer graph form changes (its measured latency then changes):
2: weight-only Linear layers as MatMul (onnxruntime's MatMulNBits), 6/3/2-bit forms;
3: packed embedding rows decoded by one 2-D MatMul (was a MatMul with a 1-D right side);
4: static int8 MatMul layers written as QLinearMatMul (uint8 activations, int8 weights);
5: static int8 Conv layers written as QLinearConv the same way;
6: where this CPU's u8 x s8 kernels saturate, the QLinear layers read int8 codes (s8 x s8)."""
INT4_MIN_OPSET = 21
INT2_MIN_OPSET = 25  # ONNX INT2 / UINT2 (onnxruntime 1.32 runs DequantizeLinear on them)
WEIGHT_ONLY_OPTIONS: tuple[str, ...] = tuple(o for o in qm.INT_FORMATS if o != "int8")
"""Integer weight forms written as DequantizeLinear + float op (int8 is static w8a8 QDQ)."""
ONNX_OPTIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "int8a16", *WEIGHT_ONLY_OPTIONS)
"""The per-layer forms :func:`quantize_onnx` writes."""
CALIBRATION_BATCH = 16

_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
_LEGACY_NAME = re.compile(r"^/(?P<path>.+)/(?:Conv|Gemm|MatMul)(?:_\d+)?$")

# Ops whose opset-21 version only adds element types (int4/uint4, float8...) over the previous
# version, so an opset bump cannot change what an existing model computes.
_TYPE_ONLY_IN_21 = frozenset(
    {
        "Cast", "CastLike", "Constant", "ConstantOfShape", "DequantizeLinear", "Flatten",
        "Identity", "If", "Loop", "Pad", "QLinearMatMul", "QuantizeLinear", "Reshape", "Scan",
        "Shape", "Size", "Squeeze", "Transpose", "Unsqueeze",
    }
)  # fmt: skip

_DTYPE_NAMES: dict[int, str] = {
    TensorProto.FLOAT: "float32",
    TensorProto.FLOAT16: "float16",
    TensorProto.INT8: "int8",
    TensorProto.UINT8: "uint8",
    TensorProto.INT4: "int4",
    TensorProto.UINT4: "uint4",
    TensorProto.INT2: "int2",
    TensorProto.UINT2: "uint2",
    TensorProto.INT16: "int16",
    TensorProto.INT32: "int32",
    TensorProto.INT64: "int64",
    TensorProto.DOUBLE: "float64",
    TensorProto.BFLOAT16: "bfloat16",
}
_DTYPE_BITS = {
    "float32": 32, "float16": 16, "bfloat16": 16, "int8": 8, "uint8": 8, "int4": 4, "uint4": 4,
    "int2": 2, "uint2": 2, "int16": 16, "int32": 32, "int64": 64, "float64": 64,
}  # fmt: skip


# --------------------------------------------------------------------------------------------
# naming


def _scopes(node: onnx.NodeProto) -> list[str] | None:
    for prop in node.metadata_props:
        if prop.key == _SCOPES_KEY:
            try:
                value = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
    return None


def _module_of(node: onnx.NodeProto) -> str | None:
    """Fully-qualified torch module that emitted ``node`` (dynamo metadata or legacy name)."""
    scopes = _scopes(node)
    if scopes is not None:
        # ['', 'features', 'features.0', 'conv2d']: last entry is the aten op, the one before
        # it is the innermost module's fully-qualified name ('' for the root module).
        return scopes[-2] if len(scopes) >= 2 and scopes[-2] else None
    m = _LEGACY_NAME.match(node.name or "")
    return m.group("path").replace("/", ".") if m else None


def name_nodes_by_module(model: onnx.ModelProto) -> dict[str, str]:
    """Name each weighted Conv/Gemm/MatMul node, and each Gather of a 2-D float32 table (an
    nn.Embedding), after its torch module; returns {layer: op_type}.

    A node counts as a layer when its second input (the weight) is an initializer, so
    activation-by-activation MatMuls (attention) are skipped. The module comes from the dynamo
    exporter's ``pkg.torch.onnx.name_scopes`` node metadata (``['', 'conv1', 'conv2d']`` ->
    ``conv1``), or from a legacy exporter name (``/block1/conv1/Conv`` -> ``block1.conv1``).
    Nodes of the root module itself are skipped. A module that emits two weighted nodes (a
    module called twice) raises ``PlanError``: a plan gives one option per layer node. Other
    nodes that already carry a layer's name are renamed out of the way. Also sets the
    ``edgefit.layers`` metadata entry (layers in graph order). Modifies ``model`` in place.
    """
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    tables = {i.name: i for i in graph.initializer}
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        # an nn.Embedding's lookup is a layer too (not a Gather indexing some buffer)
        table = _is_table_gather(node, tables) and _from_embedding(node)
        if not table and (node.op_type not in WEIGHTED_OPS or node.domain not in ("", "ai.onnx")):
            continue
        if not table and (len(node.input) < 2 or node.input[1] not in inits):
            continue
        module = _module_of(node)
        if module:
            found.setdefault(module, []).append(node)
    reused = sorted(m for m, nodes in found.items() if len(nodes) > 1)
    if reused:
        raise PlanError(
            f"module(s) {', '.join(reused)} emit more than one weighted node (called twice?); "
            "edgefit needs one Conv/Gemm/MatMul per layer"
        )
    layer_nodes = {id(nodes[0]): m for m, nodes in found.items()}
    taken = {n.name for n in graph.node}
    for node in graph.node:
        if id(node) not in layer_nodes and node.name in found:
            node.name = _unique(f"{node.name}_", taken)
    result: dict[str, str] = {}
    for node in graph.node:
        if id(node) in layer_nodes:
            node.name = layer_nodes[id(node)]
            result[node.name] = node.op_type
    set_meta(model, LAYERS_KEY, json.dumps(list(result)))
    return result


# --------------------------------------------------------------------------------------------
# small graph helpers


def _unique(base: str, taken: set[str]) -> str:
    name, i = base, 1
    while name in taken:
        name = f"{base}{i}"
        i += 1
    taken.add(name)
    return name


def _default_opset(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    raise PlanError("ONNX model has no default-domain opset import")


class _Graph:
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


def _weight_axis(node: onnx.NodeProto, w: np.ndarray) -> int:
    """Output-channel axis of the layer's weight initializer."""
    if node.op_type in ("Conv", "QLinearConv"):
        return 0
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if w.ndim != 2:
        raise PlanError(f"layer {node.name!r}: MatMul weight of rank {w.ndim} is not supported")
    return 1


def _layer_node(g: _Graph, layer: str, where: str) -> onnx.NodeProto:
    node = g.by_name.get(layer)
    if node is None:
        raise PlanError(f"{where}: no node named {layer!r} (listed in '{LAYERS_KEY}')")
    if node.op_type not in (*WEIGHTED_OPS, *QLINEAR_OPS):  # the last: written int8 forms
        raise PlanError(
            f"{where}: layer {layer!r} is a {node.op_type} node; expected {'/'.join(WEIGHTED_OPS)}"
        )
    return node


def _float_weight(g: _Graph, node: onnx.NodeProto, where: str) -> np.ndarray:
    name = node.input[1] if len(node.input) > 1 else ""
    init = g.inits.get(name)
    if init is None or init.data_type != TensorProto.FLOAT:
        raise PlanError(
            f"{where}: layer {node.name!r} weight {name!r} is not a float32 initializer"
        )
    return numpy_helper.to_array(init)


# --------------------------------------------------------------------------------------------
# per-option rewrites


def _cast_fp16(g: _Graph, node: onnx.NodeProto, k: int, layer: str, role: str) -> None:
    """Replace float32 initializer input ``k`` of ``node`` with float16 initializer + Cast."""
    name = node.input[k]
    init = g.inits.get(name)
    if init is None or init.data_type != TensorProto.FLOAT:
        return
    arr = numpy_helper.to_array(init)
    qm.check_fp16_range(arr, f"layer {layer!r} {role}")
    h_name = _unique(f"{name}_fp16", g.names)
    out_name = _unique(f"{name}_fp16_cast", g.names)
    g.graph.initializer.append(numpy_helper.from_array(arr.astype(np.float16), h_name))
    cast = helper.make_node(
        "Cast", [h_name], [out_name], name=_unique(f"{layer}/{role}_cast", g.names),
        to=TensorProto.FLOAT,
    )  # fmt: skip
    g.graph.node.insert(g.index_of(node), cast)
    node.input[k] = out_name
    g.drop_if_unused(name)


def _to_fp16(g: _Graph, layer: str, where: str) -> None:
    node = _layer_node(g, layer, where)
    _float_weight(g, node, where)
    _cast_fp16(g, node, 1, layer, "weight")
    bias = g.bias_input(node)
    if bias is not None:
        _cast_fp16(g, bias[0], bias[1], layer, "bias")


_PACKED_TYPES = {"int4": TensorProto.INT4, "uint4": TensorProto.UINT4,
                 "int2": TensorProto.INT2, "uint2": TensorProto.UINT2}


_PACKED_BITS: dict[int, int] = {TensorProto.INT4: 4, TensorProto.UINT4: 4, TensorProto.INT2: 2,
                TensorProto.UINT2: 2}


def _codes_tensor(name: str, codes: np.ndarray, option: str) -> onnx.TensorProto:
    """Integer codes as an initializer: a packed ONNX INT4/UINT4/INT2/UINT2 tensor where ONNX
    has the type, else an int8/uint8 container (6- and 3-bit codes)."""
    bits, symmetric = qm.INT_FORMATS[option]
    packed = _PACKED_TYPES.get(option)
    if packed is not None:
        return helper.make_tensor(name, packed, list(codes.shape),
                                  qm.pack_bits(codes, bits, signed=symmetric), raw=True)
    return numpy_helper.from_array(codes.astype(np.int8 if symmetric else np.uint8), name)


def _to_weight_only(g: _Graph, layer: str, option: str, where: str) -> None:
    """Integer weight codes + per-channel scales (+ zero points) + DequantizeLinear feeding the
    layer's node; activations and bias stay float32."""
    node = _layer_node(g, layer, where)
    w = _float_weight(g, node, where)
    axis = _weight_axis(node, w)
    codes = qm.quantize_option(w, option, axis=axis)
    name = node.input[1]
    q_name = _unique(f"{name}_{option}", g.names)
    s_name = _unique(f"{name}_scale", g.names)
    out_name = _unique(f"{name}_DequantizeLinear_Output", g.names)
    g.graph.initializer.append(_codes_tensor(q_name, codes.q, option))
    g.graph.initializer.append(numpy_helper.from_array(codes.scales, s_name))
    inputs = [q_name, s_name]
    if codes.zero_points is not None:
        z_name = _unique(f"{name}_zero_point", g.names)
        g.graph.initializer.append(_codes_tensor(z_name, codes.zero_points, option))
        inputs.append(z_name)
    dq = helper.make_node(
        "DequantizeLinear", inputs, [out_name],
        name=_unique(f"{layer}/weight_DequantizeLinear", g.names), axis=axis,
    )  # fmt: skip
    g.graph.node.insert(g.index_of(node), dq)
    node.input[1] = out_name
    g.drop_if_unused(name)


def _ensure_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    current = _default_opset(model)
    if current >= target:
        return model
    try:
        converted = onnx.version_converter.convert_version(model, target)
        onnx.checker.check_model(converted)
        return converted
    except Exception as exc:  # the converter raises assorted RuntimeError/ValueError types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__

    # Fallback: bump the opset when no op in the graph changes meaning between the versions.
    def changes(op: str) -> bool:
        try:
            return onnx.defs.get_schema(op, target).since_version > current
        except onnx.defs.SchemaError:
            return True

    changed = sorted(
        {
            n.op_type
            for n in model.graph.node
            if n.domain in ("", "ai.onnx") and n.op_type not in _TYPE_ONLY_IN_21
        }
    )
    changed = [op for op in changed if changes(op)]
    if changed or target != INT4_MIN_OPSET:
        raise PlanError(
            f"cannot convert the model from opset {current} to {target} for int4 "
            f"({reason}; ops that change: {', '.join(changed) or 'unknown'})"
        )
    bumped = onnx.ModelProto()
    bumped.CopyFrom(model)
    for op in bumped.opset_import:
        if op.domain in ("", "ai.onnx"):
            op.version = target
    return bumped


# --------------------------------------------------------------------------------------------
# int8 via onnxruntime.quantization


def _single_input(model: onnx.ModelProto, where: str) -> onnx.ValueInfoProto:
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise PlanError(
            f"{where}: int8 calibration supports single-input models, this one has "
            f"{len(inputs)} inputs"
        )
    return inputs[0]


def _calibration_batches(
    model: onnx.ModelProto, calibration: np.ndarray, where: str
) -> tuple[str, list[np.ndarray]]:
    inp = _single_input(model, where)
    dims = [
        d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim
    ]
    try:
        data = np.asarray(calibration, dtype=np.float32)
    except (TypeError, ValueError):
        raise PlanError("calibration data is not a numeric array") from None
    if data.ndim != len(dims) or data.shape[0] == 0:
        raise PlanError(
            f"calibration data of shape {tuple(data.shape)} does not fit model input "
            f"{inp.name!r} of rank {len(dims)} (need at least one sample)"
        )
    for axis, (want, got) in enumerate(zip(dims[1:], data.shape[1:], strict=True), start=1):
        if want is not None and want != got:
            raise PlanError(
                f"calibration data of shape {tuple(data.shape)} does not fit model input "
                f"{inp.name!r}: axis {axis} is {got}, the model needs {want}"
            )
    if not np.isfinite(data).all():
        raise PlanError("calibration data contains NaN or infinite values")
    batch = dims[0] if dims[0] is not None else min(CALIBRATION_BATCH, data.shape[0])
    if batch <= 0 or data.shape[0] < batch:
        raise PlanError(
            f"calibration data has {data.shape[0]} samples; the model's fixed batch needs {batch}"
        )
    # A fixed batch dimension takes whole batches only (the remainder is dropped).
    stop = data.shape[0] if dims[0] is None else data.shape[0] - data.shape[0] % batch
    return inp.name, [data[i : i + batch] for i in range(0, stop, batch)]


def _quantize_int8(
    model: onnx.ModelProto, layers: list[str], calibration: np.ndarray, where: str,
    activations: str = "int8", quantized: Iterable[str] = (),
) -> onnx.ModelProto:
    """Static QDQ for ``layers``: int8 weights, ``activations`` int8 or int16 (w8a16; Q/DQ from
    the com.microsoft domain below opset 21). ``quantized``: layers an earlier pass made static
    already (their inputs stay quantised)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    input_name, batches = _calibration_batches(model, calibration, where)

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[np.ndarray] = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch}

        def rewind(self) -> None:
            self._it = iter(batches)

    with tempfile.TemporaryDirectory(prefix="edgefit-int8-") as tmp:
        src = Path(tmp) / "fp32.onnx"
        pre = Path(tmp) / "pre.onnx"
        out = Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        # Shape inference only: no ORT graph rewrite, so node names (= layer names) survive.
        quant_input = src
        try:
            quant_pre_process(src, pre, skip_optimization=True)
            pre_names = {n.name for n in onnx.load(pre).graph.node}
            if set(layers) <= pre_names:
                quant_input = pre
        except Exception:  # pre-processing is an optional improvement; the raw model works
            quant_input = src
        try:
            quantize_static(
                str(quant_input),
                str(out),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(WEIGHTED_OPS),
                nodes_to_quantize=list(layers),
                per_channel=True,
                reduce_range=False,
                activation_type=QuantType.QInt16 if activations == "int16" else QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                               "UseQDQContribOps": activations == "int16"
                               and _default_opset(model) < 21},
            )
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise PlanError(f"onnxruntime int8 quantisation of {where} failed: {first}") from None
        result = onnx.load(out)
    static = set(layers) | set(quantized)
    others = [layer for layer in planned_layers(model, where) if layer not in static]
    _float_activations(result, others)
    g = _Graph(result.graph)
    for layer in layers:
        node = _layer_node(g, layer, where)
        dq = g.producer.get(node.input[1])
        init = g.inits.get(dq.input[0]) if dq is not None else None
        if dq is None or dq.op_type != "DequantizeLinear" or init is None:
            raise PlanError(f"onnxruntime left int8 layer {layer!r} of {where} unquantised")
    return result


def _float_activations(model: onnx.ModelProto, layers: list[str]) -> None:
    """Give the non-int8 ``layers`` back the float activation quantize_static took from them.

    quantize_static replaces a quantised tensor by its QuantizeLinear -> DequantizeLinear output
    for *every* consumer, so a weight-only (int4) or float layer sharing its input with an int8
    layer (MiniLM's q/k/v all read one LayerNorm output) got int8-rounded activations. Besides
    being wrong for a weight-only layer, onnxruntime 1.32 cannot load that form when the input
    is 3-D with static shape: MatMulAddFusion puts a Reshape after the int8 DequantizeLinear,
    QDQPropagationTransformer adds a QuantizeLinear behind it, and that node fails type
    inference ("output_dtype INT8 does not match y_zero_point type UINT8"). Such layers now
    read the QuantizeLinear's float input; pairs left without consumers are removed.
    """
    g = _Graph(model.graph)
    pairs: list[tuple[onnx.NodeProto, onnx.NodeProto]] = []
    for layer in layers:
        node = g.by_name.get(layer)
        if node is None:
            continue
        dq = g.producer.get(node.input[0])
        q = g.producer.get(dq.input[0]) if dq is not None else None
        if dq is None or q is None or dq.op_type != "DequantizeLinear":
            continue
        if q.op_type == "QuantizeLinear" and q.input[0] not in g.inits:
            node.input[0] = q.input[0]
            pairs.append((q, dq))
    for q, dq in pairs:
        _drop_if_dead(model, dq)
        _drop_if_dead(model, q)


def _drop_if_dead(model: onnx.ModelProto, node: onnx.NodeProto) -> None:
    """Remove ``node`` when nothing reads its output, with initializers only it used."""
    g = _Graph(model.graph)
    out = node.output[0]
    if node not in model.graph.node or out in g.consumers or out in g.outputs:
        return
    model.graph.node.remove(node)
    g = _Graph(model.graph)
    for name in node.input:
        g.drop_if_unused(name)


# --------------------------------------------------------------------------------------------
# weight-only Gemm -> MatMul + Add (onnxruntime's MatMulNBits)

_FLOAT_OR_W8A8 = frozenset({"fp32", "fp16", "int8"})
_RELU_ZERO = "edgefit_relu_zero"


def _matmulnbits_form(
    model: onnx.ModelProto, full: dict[str, str], where: str
) -> onnx.ModelProto:
    """Write weight-only Linear layers in the form onnxruntime 1.32 runs as ``MatMulNBits``.

    Its DequantizeLinear -> MatMul/Gemm fusion needs the weight as (K, N) with per-axis scales on
    axis 1 (blocks of 32 along K are made from them) and a MatMul or a Gemm without transB, so
    a Gemm(transB=1) layer -- torch's export of a Linear on a 2-D input -- becomes MatMul + Add
    (:func:`_gemm_to_matmul`). The fusion also skips a layer whose only consumer is a Relu not
    followed by QuantizeLinear (its QDQ selector takes the Relu for a clip it could drop), so
    such a Relu becomes the identical ``Max(x, 0)`` (:func:`_relu_to_max`). Same stored codes,
    scales and bytes; outputs equal DequantizeLinear + Gemm up to float summation order.
    """
    for layer, option in full.items():
        if option in _FLOAT_OR_W8A8:
            continue
        g = _Graph(model.graph)
        node = _layer_node(g, layer, where)
        if node.op_type == "Gemm" and _gemm_to_matmul(g, node):
            g = _Graph(model.graph)
            node = _layer_node(g, layer, where)
        if node.op_type == "MatMul" and _per_axis_dq(g, node.input[1]) is not None:
            _relu_to_max(g, node)
    return model


def _per_axis_dq(g: _Graph, name: str) -> tuple[onnx.NodeProto, onnx.TensorProto] | None:
    """(DequantizeLinear, its 2-D initializer) when ``name`` is a per-axis/per-tensor DQ output
    read by one node only, from codes read by that DQ only."""
    dq = g.producer.get(name)
    if dq is None or dq.op_type != "DequantizeLinear" or len(g.consumers.get(name, [])) != 1:
        return None
    init = g.inits.get(dq.input[0])
    if init is None or len(init.dims) != 2 or len(g.consumers.get(dq.input[0], [])) != 1:
        return None
    if any(a.name == "block_size" and a.i for a in dq.attribute):
        return None
    return dq, init


def _gemm_to_matmul(g: _Graph, node: onnx.NodeProto) -> bool:
    """Rewrite a plain weight-only Gemm (alpha = beta = 1, no transA) as MatMul (+ Add for the
    bias): codes transposed to the MatMul layout (K, N), as MatMul layers already store them;
    scales and zero points unchanged. The MatMul keeps the layer's name. False if not plain."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    found = _per_axis_dq(g, node.input[1])
    plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0
    if found is None or not plain or attrs.get("transA", 0):
        return False
    if attrs.get("transB", 0):
        _transpose_codes(*found)
    index = g.index_of(node)
    has_bias = len(node.input) > 2 and bool(node.input[2])
    out = node.output[0]
    mm_out = _unique(f"{out}_MatMul", g.names) if has_bias else out
    matmul = helper.make_node("MatMul", list(node.input[:2]), [mm_out], name=node.name)
    matmul.metadata_props.extend(node.metadata_props)
    new = [matmul]
    if has_bias:
        add_name = _unique(f"{node.name}/bias_Add", g.names)
        new.append(helper.make_node("Add", [mm_out, node.input[2]], [out], name=add_name))
    g.graph.node.remove(node)
    for k, n in enumerate(new):
        g.graph.node.insert(index + k, n)
    return True


def _transpose_codes(dq: onnx.NodeProto, init: onnx.TensorProto) -> None:
    """(N, K) codes -> (K, N) in place; the per-axis dimension moves with them."""
    codes = numpy_helper.to_array(init)  # INT4 comes back as ml_dtypes.int4, packed again below
    init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(codes.T), init.name))
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)  # ONNX's default axis is 1
    kept = [a for a in dq.attribute if a.name != "axis"]
    dq.ClearField("attribute")
    dq.attribute.extend([*kept, helper.make_attribute("axis", 1 - axis)])


def _relu_to_max(g: _Graph, node: onnx.NodeProto) -> None:
    """Relu reading the layer's output (through its bias Add) alone -> Max(x, 0), the same
    values, which onnxruntime's MatMulNBits fusion does not mistake for a removable clip."""
    out = node.output[0]
    users = g.consumers.get(out, [])
    if len(users) == 1 and users[0].op_type == "Add" and out not in g.outputs:
        out = users[0].output[0]
        users = g.consumers.get(out, [])
    if len(users) != 1 or users[0].op_type != "Relu" or out in g.outputs:
        return
    if _RELU_ZERO not in g.inits:
        g.graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), _RELU_ZERO))
    relu = users[0]
    relu.op_type = "Max"
    relu.input.append(_RELU_ZERO)


def weight_input(node: onnx.NodeProto) -> str:
    """The input of a layer node that carries its weight (QLinearConv / QLinearMatMul: the
    fourth, ``w`` / ``b``)."""
    return node.input[3] if node.op_type in QLINEAR_OPS else node.input[1]


def _qlinear_form(model: onnx.ModelProto, full: dict[str, str],
                  unsigned: bool | None = None) -> None:
    """Static int8 MatMul / Conv layers (DQ(x), DQ(w) [, DQ(b)] -> op -> Q) written as
    QLinearMatMul / QLinearConv.

    onnxruntime fuses that pattern itself only when the input's QuantizeLinear feeds a single
    DequantizeLinear; where several layers read one quantised tensor (a transformer's q, k, v
    after one LayerNorm; a residual block's input, read by the block and by its skip Add) it
    keeps DQ(w) + the float op, dequantising the whole weight on every run (MiniLM all-int8 ran
    2x slower than fp32). The QLinear ops are what that fusion would produce: same codes,
    scales and zero points (the bias: its int32 codes, scale x_scale * w_scale), integer
    kernel, reading the uint8 twin of the int8 input codes (:func:`_uint8_input`).

    ``unsigned`` (default: whether this CPU's u8 x s8 kernels are exact,
    ``edgefit_measure.u8s8_exact``) False: the layers read the int8 codes themselves
    (s8 x s8 kernels): on x86 without VNNI the u8 x s8 kernels saturate."""
    if unsigned is None:
        unsigned = u8s8_exact()
    g = _Graph(model.graph)
    # graph order: a layer reading an earlier rewritten layer takes its uint8 codes as they are
    for layer in [n.name for n in model.graph.node if full.get(n.name) == "int8"]:
        node = g.by_name.get(layer)
        if node is None or node.op_type not in ("MatMul", "Conv"):
            continue
        found = _qlinear_parts(g, node)
        if found is None:
            continue
        x_dq, w_dq, b_dq, q = found
        x_q = g.producer[x_dq.input[0]]
        y_zp = _uint8_zero_point(g, q.input[2]) if unsigned else q.input[2]
        for r in g.consumers.get(q.output[0], []):  # the output's codes are uint8 too
            r.input[2] = y_zp  # (onnxruntime: T3 = T1)
        if x_q.op_type == "QuantizeLinear" and not unsigned:
            a, a_zp = x_q.output[0], x_q.input[2]
        elif x_q.op_type == "QuantizeLinear":
            a, a_zp = _uint8_input(g, x_q), _uint8_zero_point(g, x_q.input[2])
        else:  # codes of an earlier QLinear layer
            a, a_zp = x_dq.input[0], x_dq.input[2]
        inputs = [a, x_dq.input[1], a_zp, *w_dq.input[:3], q.input[1], y_zp]
        if node.op_type == "Conv" and b_dq is not None:
            inputs.append(b_dq.input[0])
        fused = helper.make_node(f"QLinear{node.op_type}", inputs, [q.output[0]], name=layer)
        fused.attribute.extend(node.attribute)
        fused.metadata_props.extend(node.metadata_props)
        nodes = model.graph.node
        nodes.insert(g.index_of(node), fused)
        for dead in (node, w_dq, q, *([b_dq] if b_dq is not None else [])):
            nodes.remove(dead)
        if len(g.consumers.get(x_dq.output[0], [])) == 1 and x_dq.output[0] not in g.outputs:
            nodes.remove(x_dq)
            if (x_q.op_type == "QuantizeLinear" and unsigned and x_q.output[0] not in g.outputs
                    and len(g.consumers.get(x_q.output[0], [])) == 1):
                nodes.remove(x_q)  # its uint8 twin took its only reader
        g = _Graph(model.graph)
        for init in (q.input[2], x_q.input[2] if x_q.op_type == "QuantizeLinear" else "",
                     *(b_dq.input[1:] if b_dq is not None else [])):
            g.drop_if_unused(init)


def _qlinear_parts(g: _Graph, node: onnx.NodeProto
                   ) -> tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto | None,
                              onnx.NodeProto] | None:
    """(DQ of x, DQ of w, DQ of the bias or None, Q of the output) when ``node`` is a complete
    static int8 group the QLinear op can take over (else None)."""
    x_dq, w_dq = g.producer.get(node.input[0]), g.producer.get(node.input[1])
    users = g.consumers.get(node.output[0], [])
    if (x_dq is None or w_dq is None or x_dq.op_type != "DequantizeLinear"
            or w_dq.op_type != "DequantizeLinear" or w_dq.input[0] not in g.inits
            or g.inits[w_dq.input[0]].data_type != TensorProto.INT8
            or len(users) != 1 or users[0].op_type != "QuantizeLinear"
            or node.output[0] in g.outputs
            or any(len(n.input) < 3 or not n.input[2] for n in (x_dq, w_dq, users[0]))):
        return None
    channel_axis = 1 if node.op_type == "MatMul" else 0
    if (next((a.i for a in w_dq.attribute if a.name == "axis"), 1) != channel_axis
            or (node.op_type == "MatMul" and len(g.inits[w_dq.input[0]].dims) != 2)):
        return None
    b_dq = None
    if node.op_type == "Conv" and len(node.input) > 2 and node.input[2]:
        b_dq = g.producer.get(node.input[2])
        if (b_dq is None or b_dq.op_type != "DequantizeLinear" or b_dq.input[0] not in g.inits
                or g.inits[b_dq.input[0]].data_type != TensorProto.INT32
                or not _bias_scale_is_product(g, b_dq, x_dq, w_dq)):
            return None
    q, x_q = users[0], g.producer.get(x_dq.input[0])
    x_zp = g.inits.get(x_dq.input[2])
    from_qlinear = (x_q is not None and x_q.op_type in QLINEAR_OPS and x_zp is not None
                    and x_zp.data_type in (TensorProto.UINT8, TensorProto.INT8))
    if (x_q is None or not (from_qlinear or (x_q.op_type == "QuantizeLinear"
                                             and x_q.input[1:3] == x_dq.input[1:3]))
            or q.output[0] in g.outputs
            or any(r.op_type != "DequantizeLinear" or r.input[1:3] != q.input[1:3]
                   for r in g.consumers.get(q.output[0], []))):
        return None
    return x_dq, w_dq, b_dq, q


def _bias_scale_is_product(g: _Graph, b_dq: onnx.NodeProto, x_dq: onnx.NodeProto,
                           w_dq: onnx.NodeProto) -> bool:
    """QLinearConv takes the int32 bias with scale x_scale * w_scale implied: only then."""
    try:
        b_scale = numpy_helper.to_array(g.inits[b_dq.input[1]])
        product = (numpy_helper.to_array(g.inits[x_dq.input[1]])
                   * numpy_helper.to_array(g.inits[w_dq.input[1]]))
    except KeyError:
        return False
    zp = g.inits.get(b_dq.input[2]) if len(b_dq.input) > 2 and b_dq.input[2] else None
    return (b_scale.shape == product.shape and np.allclose(b_scale, product, rtol=1e-6, atol=0)
            and (zp is None or not np.any(numpy_helper.to_array(zp))))


def _uint8_input(g: _Graph, x_q: onnx.NodeProto) -> str:
    """The uint8 twin of int8 QuantizeLinear ``x_q`` (zero point + 128: the same codes shifted,
    what onnxruntime's own S8->U8 rewrite feeds its x86 u8s8 kernels; int8 x int8 runs several
    times slower), added once after ``x_q``; its output name."""
    out = f"{x_q.output[0]}_u8"
    if out in g.producer:
        return out
    zp_name = _uint8_zero_point(g, x_q.input[2])
    twin = helper.make_node("QuantizeLinear", [x_q.input[0], x_q.input[1], zp_name], [out],
                            name=_unique(f"{x_q.name}_u8", g.names))
    twin.metadata_props.extend(x_q.metadata_props)
    g.graph.node.insert(g.index_of(x_q) + 1, twin)
    g.producer[out] = twin
    g.names.update({out, twin.name})
    return out


def _uint8_zero_point(g: _Graph, name: str) -> str:
    """Initializer ``<name>_u8``: int8 zero point ``name`` + 128 as uint8 (added once)."""
    zp_name = f"{name}_u8"
    if zp_name not in g.inits:
        zp = numpy_helper.to_array(g.inits[name]).astype(np.int16) + 128
        g.inits[zp_name] = numpy_helper.from_array(zp.astype(np.uint8), zp_name)
        g.graph.initializer.append(g.inits[zp_name])
        g.names.add(zp_name)
    return zp_name


def _check_storage(model: onnx.ModelProto, full: dict[str, str], where: str) -> None:
    """Every layer's weight is stored as its option says (guards against ORT rewriting ours)."""
    g = _Graph(model.graph)
    for layer, option in full.items():
        node = _layer_node(g, layer, where)
        init, _ = _trace(g, weight_input(node))
        got = _dtype_name(init) if init is not None else "not an initializer"
        if got != onnx_weight_dtype(option):
            raise PlanError(
                f"layer {layer!r} of {where} should store {onnx_weight_dtype(option)} weights "
                f"for {option}, but the rewritten model stores {got}"
            )


def onnx_weight_dtype(option: str) -> str:
    """The initializer type a layer's weight has in the ONNX: packed int4/int2 (and unsigned),
    an int8/uint8 container for 6- and 3-bit codes, float otherwise."""
    if option == "int8a16":
        return "int8"
    if option in _PACKED_TYPES or option in ("fp32", "fp16"):
        return qm.weight_dtype(option)
    fmt = qm.INT_FORMATS[option]
    return "int8" if fmt[1] else "uint8"


# --------------------------------------------------------------------------------------------
# public entry points


def _load(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except FileNotFoundError:
        raise PlanError(f"ONNX model {path} does not exist") from None
    except Exception as exc:
        raise PlanError(f"cannot read ONNX model {path}: {str(exc).splitlines()[0]}") from None


def validate_options(options: dict[str, str], layers: Iterable[str]) -> dict[str, str]:
    """Full {layer: option} for every planned layer (missing ones ``fp32``); PlanError on junk."""
    layers = list(layers)
    known = set(layers)
    for layer, option in options.items():
        if layer not in known:
            raise PlanError(
                f"unknown layer {layer!r}; the model's layers are: {', '.join(layers) or '(none)'}"
            )
        if option not in ONNX_OPTIONS:
            raise PlanError(
                f"unknown option {option!r} for layer {layer!r}; allowed: {', '.join(ONNX_OPTIONS)}"
            )
    return {layer: options.get(layer, "fp32") for layer in layers}


def quantize_onnx(
    fp32_path: Path, out_path: Path, options: dict[str, str], calibration: np.ndarray
) -> None:
    """Write the mixed-precision model for ``options`` ({layer: fp32|fp16|int8|int4}).

    Layers the plan leaves out stay fp32. ``calibration`` is an array of model inputs
    (N, ...) used only when some layer is int8 (MinMax ranges, batches of
    ``CALIBRATION_BATCH`` for a dynamic batch dimension, whole batches for a fixed one).
    The output is written atomically (temp file + ``os.replace``).
    """
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if _quantize_with_tables(fp32_path, out_path, options, calibration):  # embedding tables
        return
    where = str(fp32_path)
    model = _load(fp32_path)
    layers = planned_layers(model, where)
    full = validate_options(dict(options), layers)
    g = _Graph(model.graph)
    for layer in layers:
        node = _layer_node(g, layer, where)
        if full[layer] != "fp32":
            _float_weight(g, node, where)

    # onnx.version_converter and quantize_static drop node metadata_props (torch name scopes,
    # stack traces); keep them to put back on every node that keeps its name.
    node_meta = {n.name: list(n.metadata_props) for n in model.graph.node if n.name}
    chosen = set(full.values())
    if chosen & {"int2", "uint2"}:
        model = _ensure_opset(model, INT2_MIN_OPSET)
    elif chosen & set(_PACKED_TYPES):
        model = _ensure_opset(model, INT4_MIN_OPSET)
    # fp16 / int4 first, so int8 calibration sees the activations the mixed model produces.
    g = _Graph(model.graph)
    for layer in layers:
        if full[layer] == "fp16":
            _to_fp16(g, layer, where)
        elif full[layer] in WEIGHT_ONLY_OPTIONS:
            _to_weight_only(g, layer, full[layer], where)
    int8_layers = [layer for layer in layers if full[layer] == "int8"]
    if int8_layers:
        model = _quantize_int8(model, int8_layers, calibration, where)
    a16_layers = [layer for layer in layers if full[layer] == "int8a16"]
    if a16_layers:
        model = _quantize_int8(model, a16_layers, calibration, where, "int16", int8_layers)
    model = _matmulnbits_form(model, full, where)
    _qlinear_form(model, full)
    _check_storage(model, full, where)
    for node in model.graph.node:
        if node.name in node_meta and not node.metadata_props:
            node.metadata_props.extend(node_meta[node.name])
    set_meta(model, LAYERS_KEY, json.dumps(layers))
    set_meta(model, OPTIONS_KEY, json.dumps(full))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PlanError(f"quantised model for {where} is invalid: {first}") from None
    save_atomic(model, out_path)


ORT_SESSION_CONFIG: dict[str, str] = {"session.qdq_matmulnbits_accuracy_level": "0"}
"""Session config entries for evaluating these models' accuracy: int4 weight-only layers stay
weight-only.

At ``ORT_ENABLE_EXTENDED`` and above, onnxruntime fuses DequantizeLinear -> MatMul into
``MatMulNBits`` with ``accuracy_level`` 4 by default, which quantises the *activations* to int8
inside the kernel (within 1 % of the weight-only output on a test model, tested). Level 0 keeps
them float32 (the DQ + MatMul result up to float summation order). Latency and memory are
measured as onnxruntime runs by default (``edgefit_measure.SESSION_CONFIG``, empty): level 0's
kernels were many times slower here for 2/3/6/8-bit weights. So the accuracy edgefit reports for
a weight-only Linear is the weight-only one, and the deployed kernel may differ from it by that
much. Weight-only Gemm layers are written as MatMul + Add so they fuse too; Conv layers are not
affected (DequantizeLinear + Conv).
"""


def ort_session_options(level: object = None, threads: int | None = None):  # -> SessionOptions
    """``onnxruntime.SessionOptions`` for running these models: ``ORT_SESSION_CONFIG`` applied.

    ``level`` is an ``onnxruntime.GraphOptimizationLevel`` (default ``ORT_ENABLE_ALL``);
    ``threads`` sets ``intra_op_num_threads`` when given.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if level is None else level
    )
    if threads is not None:
        so.intra_op_num_threads = int(threads)
    for key, value in {**session_config(), **ORT_SESSION_CONFIG}.items():
        so.add_session_config_entry(key, value)
    return so


# --------------------------------------------------------------------------------------------
# inspection


@dataclass(frozen=True)
class LayerStorage:
    """How one layer is stored in an ONNX file, read back from the file alone.

    ``option`` is inferred from storage: float32 -> fp32, float16 -> fp16, int4 -> int4, int8
    weights -> int8. ``weight_bytes`` counts only the weight tensor as stored (INT4: packed
    ceil(n/2); an int4 in an int8 container would count 8 bits a value); ``scale_bytes`` the
    weight scales and zero points. ``distinct_values`` counts distinct stored values (integer
    codes for int4/int8). ``weight_ops`` are the ops between the initializer and the layer node
    (``("Cast",)``, ``("DequantizeLinear",)``), ``input_ops`` the producers of the node's
    activation input (``"<graph input>"`` for a model input), ``output_ops`` the consumers of its
    output. ``activation_dtype`` is ``int8`` when the activation input comes through a
    DequantizeLinear of an int8 tensor, else ``float32``.
    """

    name: str
    op_type: str
    option: str
    weight_dtype: str
    bits: int
    weight_shape: tuple[int, ...]
    weight_numel: int
    weight_bytes: int
    scale_bytes: int
    distinct_values: int
    bias_dtype: str | None
    bias_bytes: int
    activation_dtype: str
    weight_ops: tuple[str, ...]
    input_ops: tuple[str, ...]
    output_ops: tuple[str, ...]


def _stored_bytes(init: onnx.TensorProto) -> int:
    if init.HasField("raw_data") or init.raw_data:
        return len(init.raw_data)
    numel = int(np.prod(init.dims)) if init.dims else 1
    if init.data_type in _PACKED_BITS:
        return qm.packed_bytes(numel, _PACKED_BITS[init.data_type])
    return numel * np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize


def _init_values(init: onnx.TensorProto) -> np.ndarray:
    arr = numpy_helper.to_array(init)
    if init.data_type in _PACKED_BITS:
        arr = arr.astype(np.int8)
    return arr


def _trace(g: _Graph, name: str) -> tuple[onnx.TensorProto | None, list[onnx.NodeProto]]:
    """Follow Cast / DequantizeLinear / Identity back from ``name`` to an initializer."""
    chain: list[onnx.NodeProto] = []
    while name not in g.inits:
        node = g.producer.get(name)
        if node is None or node.op_type not in ("Cast", "DequantizeLinear", "Identity"):
            return None, chain
        chain.append(node)
        name = node.input[0]
    return g.inits[name], chain


def _dtype_name(init: onnx.TensorProto) -> str:
    code = int(init.data_type)
    return _DTYPE_NAMES.get(code) or TensorProto.DataType.Name(code).lower()


def _stored_option(dtype: str, values: np.ndarray, act_dtype: str,
                   chain: list[onnx.NodeProto]) -> str:
    """The layer's form, read from the file: its weight dtype, and for codes in an 8-bit
    container of a weight-only layer the code width their range needs (every nonzero channel
    of a symmetric b-bit layer reaches +-qmax, an asymmetric one spans 0..2**b - 1)."""
    if dtype in ("float32", "float16"):
        return "fp32" if dtype == "float32" else "fp16"
    if dtype == "int8" and act_dtype == "int16":
        return "int8a16"
    dq = next((n for n in chain if n.op_type == "DequantizeLinear"), None)
    if dtype in ("int8", "uint8") and act_dtype in ("float32", "float16") and dq is not None:
        top = int(np.abs(values.astype(np.int16)).max()) if values.size else 0
        for bits in sorted(qm.INT_BITS):
            if dtype == "int8" and top <= qm.qmax_for_bits(bits):
                return f"int{bits}" if bits < 8 else "int8"
            if dtype == "uint8" and top <= 2**bits - 1:
                return f"uint{bits}"
    return dtype


def inspect_onnx(path: Path) -> dict[str, LayerStorage]:
    """Per planned layer (``edgefit.layers``): how its weights are stored in the file."""
    path = Path(path)
    model = _load(path)
    g = _Graph(model.graph)
    inputs = {i.name for i in model.graph.input}
    result: dict[str, LayerStorage] = {}
    for layer in planned_layers(model, str(path)):
        if g.by_name.get(layer) is not None and g.by_name[layer].op_type == "Gather":
            result[layer] = _table_storage(g, layer, inputs, str(path))  # embedding table
            continue
        node = _layer_node(g, layer, str(path))
        init, chain = _trace(g, weight_input(node))
        if init is None:
            raise PlanError(f"{path}: weight of layer {layer!r} is not stored as an initializer")
        dtype = _dtype_name(init)
        values = _init_values(init)
        scale_bytes = 0
        if node.op_type in QLINEAR_OPS:  # w_scale, w_zero_point are the node's own inputs
            scale_bytes += sum(_stored_bytes(g.inits[t]) for t in node.input[4:6] if t in g.inits)
        for dq in (n for n in chain if n.op_type == "DequantizeLinear"):
            for extra in dq.input[1:]:
                if extra in g.inits:
                    scale_bytes += _stored_bytes(g.inits[extra])
        bias_dtype, bias_bytes = None, 0
        bias = g.bias_input(node)
        if bias is not None:
            b_init, _ = _trace(g, bias[0].input[bias[1]])
            if b_init is not None:
                bias_dtype, bias_bytes = _dtype_name(b_init), _stored_bytes(b_init)
        act = node.input[0]
        act_dtype = "float32"
        src = g.producer.get(act)
        if node.op_type in QLINEAR_OPS and node.input[2] in g.inits:
            act_dtype = _dtype_name(g.inits[node.input[2]])  # a_zero_point
            if act_dtype == "uint8" and np.all(_init_values(g.inits[node.input[2]]) == 128):
                act_dtype = "int8"  # _uint8_input's shifted twin of symmetric int8 codes
        elif src is not None and src.op_type == "DequantizeLinear":
            q_src = g.producer.get(src.input[0])
            zp = g.inits.get(src.input[2]) if len(src.input) > 2 else None
            if zp is not None:
                act_dtype = _dtype_name(zp)
            elif q_src is not None and q_src.op_type == "QuantizeLinear":
                q_zp = g.inits.get(q_src.input[2]) if len(q_src.input) > 2 else None
                act_dtype = _dtype_name(q_zp) if q_zp is not None else "uint8"
        option = _stored_option(dtype, values, act_dtype, chain)
        result[layer] = LayerStorage(
            name=layer,
            op_type=node.op_type,
            option=option,
            weight_dtype=dtype,
            bits=_DTYPE_BITS.get(dtype, 8 * np.dtype(values.dtype).itemsize),
            weight_shape=tuple(int(d) for d in init.dims),
            weight_numel=int(values.size),
            weight_bytes=_stored_bytes(init),
            scale_bytes=scale_bytes,
            distinct_values=qm.distinct_values(values),
            bias_dtype=bias_dtype,
            bias_bytes=bias_bytes,
            activation_dtype=act_dtype,
            weight_ops=tuple(n.op_type for n in reversed(chain)),
            input_ops=tuple(
                g.producer[i].op_type
                if i in g.producer
                else "<graph input>"
                if i in inputs
                else "<initializer>"
                for i in node.input[:1]
            ),  # fmt: skip
            output_ops=tuple(n.op_type for n in g.consumers.get(node.output[0], [])),
        )
    return result


# --------------------------------------------------------------------------------------------
# embedding tables: Gather layers
#
# An nn.Embedding exports as Gather(table, ids), the table (rows, dim) a float32 initializer;
# name_nodes_by_module names that Gather after the module. Its forms keep the table stored as
# the option says and decode only the rows looked up, never the whole table (a
# DequantizeLinear of the table before the Gather would decode all of it on every run):
#
# * fp16 -- float16 table; Gather, then Cast to float.
# * 8-bit codes (int8, uint8) -- int8/uint8 table; Gather, Cast, (- gathered zero point),
#   x gathered row scale. A gather has no activations to quantise, so the static forms int8
#   and int8a16 store a table as these weight-only int8 codes (:func:`_table_form`).
# * b < 8 bits -- each row's codes bit-packed LSB first into bytes (a uint8 table of
#   (rows, ceil(dim / 8) * b) bytes: the flash image's layout when dim * b is a multiple of 8);
#   Gather of the rows' bytes, each byte looked up in a 256 x 8 bit table, the bits of each
#   code summed with their place values (two's complement for the signed forms: the top
#   bit's place is -2**(b-1)) by one MatMul, then zero point and scale as above.
#
# Scales are float32 (rows, 1), zero points uint8 (rows, 1). The nodes are named
# ``<layer>/<role>`` so inspect_onnx reads the form back from the file.

_TABLE_ROLES = ("codes_matmul", "scale_gather", "zero_point_gather")
_BITS_LUT = "edgefit_bits_lut"


def _table_form(option: str) -> str:
    """The storage form (quant_math option) a Gather layer takes for an ONNX option."""
    return "int8" if option in ("int8", "int8a16") else option


def _is_table_gather(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    """A Gather on axis 0 of a 2-D float32 initializer: an embedding table's lookup."""
    if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return False
    table = inits.get(node.input[0])
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return (table is not None and table.data_type == TensorProto.FLOAT
            and len(table.dims) == 2 and axis == 0)


def _from_embedding(node: onnx.NodeProto) -> bool:
    """Whether the exporter emitted ``node`` for aten.embedding (its name scope's last entry:
    ``['', 'embeddings', 'embeddings.word', 'embedding']``)."""
    scopes = _scopes(node)
    return scopes is not None and bool(scopes) and scopes[-1].split("_")[0] == "embedding"


def table_layers(model: onnx.ModelProto, layers: Iterable[str]) -> list[str]:
    """The planned layers of ``model`` that are Gather nodes (embedding tables)."""
    ops = {n.name: n.op_type for n in model.graph.node}
    return [layer for layer in layers if ops.get(layer) == "Gather"]


class _TableWriter:
    """Adds one Gather layer's decode nodes (named ``<layer>/<role>``, the layer's torch scope
    metadata copied so profiling charges them to the layer) and initializers."""

    def __init__(self, g: _Graph, node: onnx.NodeProto) -> None:
        self.g, self.node, self.layer = g, node, node.name
        self.index = g.index_of(node) + 1
        self.meta = list(node.metadata_props)

    def init(self, role: str, arr: np.ndarray | onnx.TensorProto) -> str:
        name = _unique(f"{self.node.input[0]}_{role}", self.g.names)
        tensor = (numpy_helper.from_array(arr, name) if isinstance(arr, np.ndarray) else arr)
        tensor.name = name
        self.g.graph.initializer.append(tensor)
        return name

    def add(self, op: str, inputs: list[str], role: str, out: str | None = None,
            before: bool = False, **attrs: int) -> str:
        """Insert a node after the ones added so far (before: in front of the Gather)."""
        out = out or _unique(f"{self.layer}/{role}_output", self.g.names)
        node = helper.make_node(op, inputs, [out], name=_unique(f"{self.layer}/{role}",
                                                                self.g.names))
        node.attribute.extend(helper.make_attribute(k, v) for k, v in attrs.items())
        node.metadata_props.extend(self.meta)
        self.g.graph.node.insert(self.g.index_of(self.node) if before else self.index, node)
        self.index += 1
        return out


def _table_codes_tensor(name: str, codes: np.ndarray, bits: int, signed: bool
                        ) -> tuple[onnx.TensorProto, int]:
    """(uint8 initializer of each row's codes packed LSB first, codes per row incl. padding):
    rows padded with zero codes to a multiple of 8 codes, so every row starts on a byte."""
    rows, dim = codes.shape
    padded = -(-dim // 8) * 8
    full = np.zeros((rows, padded), dtype=codes.dtype)
    full[:, :dim] = codes
    packed = np.frombuffer(qm.pack_bits(full, bits, signed=signed), dtype=np.uint8)
    return numpy_helper.from_array(packed.reshape(rows, padded * bits // 8), name), padded


def _bits_lut(g: _Graph) -> str:
    if _BITS_LUT not in g.inits:
        lut = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(np.float32)
        g.inits[_BITS_LUT] = numpy_helper.from_array(lut, _BITS_LUT)
        g.graph.initializer.append(g.inits[_BITS_LUT])
        g.names.add(_BITS_LUT)
    return _BITS_LUT


def _to_table_form(g: _Graph, layer: str, form: str, where: str) -> None:
    """Rewrite Gather layer ``layer`` so its table is stored as ``form`` (see above)."""
    node = g.by_name.get(layer)
    if node is None or not _is_table_gather(node, g.inits):
        raise PlanError(f"{where}: layer {layer!r} is not a Gather of a float32 table")
    if form == "fp32":
        return
    table_name, ids, out = node.input[0], node.input[1], node.output[0]
    table = numpy_helper.to_array(g.inits[table_name])
    w = _TableWriter(g, node)
    if form == "fp16":
        qm.check_fp16_range(table, f"layer {layer!r} table")
        node.input[0] = w.init("fp16", table.astype(np.float16))
        node.output[0] = _unique(f"{layer}/rows", g.names)
        w.add("Cast", [node.output[0]], "rows_cast", out, to=TensorProto.FLOAT)
        g.drop_if_unused(table_name)
        return
    codes = qm.quantize_option(table, form, axis=0)
    bits, signed = qm.INT_FORMATS[form]
    rows_out = _unique(f"{layer}/rows", g.names)
    if bits == 8:
        node.input[0] = w.init(form, codes.q)
        node.output[0] = rows_out
        values = w.add("Cast", [rows_out], "rows_cast", to=TensorProto.FLOAT)
        gather_ids, restore = ids, None
    else:
        packed, padded = _table_codes_tensor("", codes.q, bits, signed)
        gather_ids = w.add("Reshape", [ids, w.init("flat", np.array([-1], np.int64))],
                           "ids_flat", before=True)
        node.input[0], node.input[1] = w.init(form, packed), gather_ids
        node.output[0] = rows_out
        values = _unpack_rows(w, rows_out, bits, signed, padded, table.shape[1])
        restore = table.shape[1]
    if codes.zero_points is not None:
        zp = w.add("Gather", [w.init("zero_point", codes.zero_points.reshape(-1, 1)),
                              gather_ids], "zero_point_gather")
        zp = w.add("Cast", [zp], "zero_point_cast", to=TensorProto.FLOAT)
        values = w.add("Sub", [values, zp], "zero_point_sub")
    scale = w.add("Gather", [w.init("scale", codes.scales.reshape(-1, 1)), gather_ids],
                  "scale_gather")
    if restore is None:
        w.add("Mul", [values, scale], "dequant_mul", out)
    else:
        scaled = w.add("Mul", [values, scale], "dequant_mul")
        shape = w.add("Shape", [ids], "ids_shape")
        shape = w.add("Concat", [shape, w.init("dim", np.array([restore], np.int64))],
                      "out_shape", axis=0)
        w.add("Reshape", [scaled, shape], "out_reshape", out)
    g.drop_if_unused(table_name)


def _unpack_rows(w: _TableWriter, rows: str, bits: int, signed: bool, padded: int,
                 dim: int) -> str:
    """Float codes (N, dim) of the gathered packed rows (N, padded * bits / 8)."""
    index = w.add("Cast", [rows], "rows_cast", to=TensorProto.INT64)
    unpacked = w.add("Gather", [_bits_lut(w.g), index], "bits_gather")  # (N, bytes, 8)
    # one (N * padded, bits) x (bits, 1) GEMM: a MatMul with a 1-D right side runs as N * padded
    # tiny products in onnxruntime (MiniLM's word table at 32 tokens: 1.7 ms against 0.03 ms)
    grouped = w.add("Reshape", [unpacked, w.init("bits_shape", np.array([-1, bits], np.int64))],
                    "bits_reshape")
    place = (2.0 ** np.arange(bits)).astype(np.float32)
    if signed:
        place[-1] = -place[-1]  # two's complement
    column = w.add("MatMul", [grouped, w.init("place_values", place.reshape(bits, 1))],
                   "codes_matmul")
    values = w.add("Reshape", [column, w.init("codes_shape", np.array([-1, padded], np.int64))],
                   "codes_reshape")
    if padded == dim:
        return values
    return w.add("Slice", [values, w.init("starts", np.array([0], np.int64)),
                           w.init("ends", np.array([dim], np.int64)),
                           w.init("axes", np.array([1], np.int64))], "codes_slice")


def _table_storage(g: _Graph, layer: str, inputs: set[str], where: str) -> LayerStorage:
    """How Gather layer ``layer`` stores its table, read from the file: the table's dtype and
    shape, the code width from the place values of ``<layer>/codes_matmul`` (packed rows; a
    negative top place: signed), the scales and zero points its nodes gather."""
    node = g.by_name[layer]
    init = g.inits.get(node.input[0])
    if init is None:
        raise PlanError(f"{where}: table of layer {layer!r} is not stored as an initializer")
    role = {r: g.by_name.get(f"{layer}/{r}") for r in _TABLE_ROLES}
    extra = [g.inits[n.input[0]] for r, n in role.items() if n is not None and r != _TABLE_ROLES[0]
             and n.input[0] in g.inits]
    dtype = _dtype_name(init)
    values = _init_values(init)
    shape = tuple(int(d) for d in init.dims)
    option, bits = {"float32": ("fp32", 32), "float16": ("fp16", 16)}.get(dtype, (dtype, 8))
    matmul, asymmetric = role["codes_matmul"], role["zero_point_gather"] is not None
    if matmul is not None and matmul.input[1] in g.inits:
        place = numpy_helper.to_array(g.inits[matmul.input[1]]).reshape(-1)
        bits, signed = int(place.size), bool(place[-1] < 0)
        option = f"{'' if signed else 'u'}int{bits}"
        rows, nbytes = shape
        # the codes as the graph decodes them: each row's bits LSB first, summed with the
        # file's place values
        stream = np.unpackbits(values.reshape(rows, nbytes), axis=1, bitorder="little")
        codes = stream.reshape(rows, -1, bits).astype(np.int16) @ place.astype(np.int16)
        cut = g.by_name.get(f"{layer}/codes_slice")
        dim = (int(numpy_helper.to_array(g.inits[cut.input[2]])[0])
               if cut is not None else nbytes * 8 // bits)
        values = codes.reshape(rows, -1)[:, :dim]
        shape = (rows, dim)
    if option in qm.INT_FORMATS and qm.INT_FORMATS[option][1] == asymmetric:
        raise PlanError(f"{where}: layer {layer!r} stores {option} codes "
                        + ("with" if asymmetric else "without") + " zero points")
    decode = [n.op_type for n in g.graph.node if n.name.startswith(f"{layer}/")]
    final = _table_output(g, node)
    return LayerStorage(
        name=layer, op_type="Gather", option=option, weight_dtype=qm.weight_dtype(option)
        if option in qm.BITS else dtype, bits=bits, weight_shape=shape,
        weight_numel=int(np.prod(shape)), weight_bytes=_stored_bytes(init),
        scale_bytes=sum(_stored_bytes(t) for t in extra),
        distinct_values=qm.distinct_values(values), bias_dtype=None, bias_bytes=0,
        activation_dtype="float32", weight_ops=tuple(decode),
        input_ops=tuple(g.producer[i].op_type if i in g.producer else
                        "<graph input>" if i in inputs else "<initializer>"
                        for i in node.input[1:2]),
        output_ops=tuple(n.op_type for n in g.consumers.get(final, [])),
    )


def _table_output(g: _Graph, node: onnx.NodeProto) -> str:
    """The tensor a Gather layer's decode chain ends in (the rows as float32)."""
    out = node.output[0]
    while True:
        users = [n for n in g.consumers.get(out, []) if n.name.startswith(f"{node.name}/")]
        if not users:
            return out
        out = users[-1].output[0]


def _check_tables(model: onnx.ModelProto, forms: dict[str, str], where: str) -> None:
    """Every Gather layer stores its table as its form says (read back from the model)."""
    g = _Graph(model.graph)
    inputs = {i.name for i in model.graph.input}
    for layer, option in forms.items():
        got = _table_storage(g, layer, inputs, where).option
        if got != _table_form(option):
            raise PlanError(f"layer {layer!r} of {where} should store a {_table_form(option)} "
                            f"table for {option}, but the rewritten model stores {got}")


def _quantize_with_tables(fp32_path: Path, out_path: Path, options: dict[str, str],
                          calibration: np.ndarray) -> bool:
    """quantize_onnx for a model whose planned layers include embedding tables: their forms
    are written here, the other layers by quantize_onnx on a copy that lists only those; the
    result lists every layer and option again. False (nothing written): no table layer."""
    where = str(fp32_path)
    model = _load(fp32_path)
    layers = planned_layers(model, where)
    tables = table_layers(model, layers)
    if not tables:
        return False
    full = validate_options(dict(options), layers)
    g = _Graph(model.graph)
    for layer in tables:
        _to_table_form(g, layer, _table_form(full[layer]), where)
    rest = [layer for layer in layers if layer not in tables]
    set_meta(model, LAYERS_KEY, json.dumps(rest))
    with tempfile.TemporaryDirectory(prefix="edgefit-tables-") as tmp:
        src, out = Path(tmp) / "tables.onnx", Path(tmp) / "quantized.onnx"
        onnx.save(model, str(src))
        quantize_onnx(src, out, {layer: full[layer] for layer in rest}, calibration)
        result = onnx.load(str(out))
    set_meta(result, LAYERS_KEY, json.dumps(layers))
    set_meta(result, OPTIONS_KEY, json.dumps(full))
    _check_tables(result, {layer: full[layer] for layer in tables}, where)
    save_atomic(result, out_path)
    return True


__all__ = [
    "CALIBRATION_BATCH",
    "INT2_MIN_OPSET",
    "INT4_MIN_OPSET",
    "ONNX_OPTIONS",
    "WEIGHT_ONLY_OPTIONS",
    "LAYERS_KEY",
    "OPTIONS_KEY",
    "ORT_SESSION_CONFIG",
    "LayerStorage",
    "inspect_onnx",
    "name_nodes_by_module",
    "ort_session_options",
    "quantize_onnx",
    "validate_options",
]
