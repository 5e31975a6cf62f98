"""Per-option rewrites of one layer in place: fp16 (float16 initializers + Cast), weight-only
integer codes (int4/int2 packed, 6/3-bit in an int8 container, + DequantizeLinear), and the
opset bump those packed types need."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgefit_common.errors import PlanError
from formats import quant_math as qm
from techniques.onnx.graph import (
    Graph,
    default_opset,
    float_weight,
    layer_node,
    unique_name,
    weight_axis,
)

INT4_MIN_OPSET = 21
INT2_MIN_OPSET = 25  # ONNX INT2 / UINT2 (onnxruntime 1.32 runs DequantizeLinear on them)
WEIGHT_ONLY_OPTIONS: tuple[str, ...] = tuple(o for o in qm.INT_FORMATS if o != "int8")
"""Integer weight forms written as DequantizeLinear + float op (int8 is static w8a8 QDQ)."""

# Ops whose opset-21 version only adds element types (int4/uint4, float8...) over the previous
# version, so an opset bump cannot change what an existing model computes.
_TYPE_ONLY_IN_21 = frozenset(
    {
        "Cast", "CastLike", "Constant", "ConstantOfShape", "DequantizeLinear", "Flatten",
        "Identity", "If", "Loop", "Pad", "QLinearMatMul", "QuantizeLinear", "Reshape", "Scan",
        "Shape", "Size", "Squeeze", "Transpose", "Unsqueeze",
    }
)  # fmt: skip


def _cast_fp16(g: Graph, node: onnx.NodeProto, k: int, layer: str, role: str) -> None:
    """Replace float32 initializer input ``k`` of ``node`` with float16 initializer + Cast."""
    name = node.input[k]
    init = g.inits.get(name)
    if init is None or init.data_type != TensorProto.FLOAT:
        return
    arr = numpy_helper.to_array(init)
    qm.check_fp16_range(arr, f"layer {layer!r} {role}")
    h_name = unique_name(f"{name}_fp16", g.names)
    out_name = unique_name(f"{name}_fp16_cast", g.names)
    g.graph.initializer.append(numpy_helper.from_array(arr.astype(np.float16), h_name))
    cast = helper.make_node(
        "Cast", [h_name], [out_name], name=unique_name(f"{layer}/{role}_cast", g.names),
        to=TensorProto.FLOAT,
    )  # fmt: skip
    g.graph.node.insert(g.index_of(node), cast)
    node.input[k] = out_name
    g.drop_if_unused(name)


def to_fp16(g: Graph, layer: str, where: str) -> None:
    node = layer_node(g, layer, where)
    float_weight(g, node, where)
    _cast_fp16(g, node, 1, layer, "weight")
    bias = g.bias_input(node)
    if bias is not None:
        _cast_fp16(g, bias[0], bias[1], layer, "bias")


PACKED_TYPES = {"int4": TensorProto.INT4, "uint4": TensorProto.UINT4,
                 "int2": TensorProto.INT2, "uint2": TensorProto.UINT2}



def _codes_tensor(name: str, codes: np.ndarray, option: str) -> onnx.TensorProto:
    """Integer codes as an initializer: a packed ONNX INT4/UINT4/INT2/UINT2 tensor where ONNX
    has the type, else an int8/uint8 container (6- and 3-bit codes)."""
    bits, symmetric = qm.INT_FORMATS[option]
    packed = PACKED_TYPES.get(option)
    if packed is not None:
        return helper.make_tensor(name, packed, list(codes.shape),
                                  qm.pack_bits(codes, bits, signed=symmetric), raw=True)
    return numpy_helper.from_array(codes.astype(np.int8 if symmetric else np.uint8), name)


def to_weight_only(g: Graph, layer: str, option: str, where: str) -> None:
    """Integer weight codes + per-channel scales (+ zero points) + DequantizeLinear feeding the
    layer's node; activations and bias stay float32."""
    node = layer_node(g, layer, where)
    w = float_weight(g, node, where)
    axis = weight_axis(node, w)
    codes = qm.quantize_option(w, option, axis=axis)
    name = node.input[1]
    q_name = unique_name(f"{name}_{option}", g.names)
    s_name = unique_name(f"{name}_scale", g.names)
    out_name = unique_name(f"{name}_DequantizeLinear_Output", g.names)
    g.graph.initializer.append(_codes_tensor(q_name, codes.q, option))
    g.graph.initializer.append(numpy_helper.from_array(codes.scales, s_name))
    inputs = [q_name, s_name]
    if codes.zero_points is not None:
        z_name = unique_name(f"{name}_zero_point", g.names)
        g.graph.initializer.append(_codes_tensor(z_name, codes.zero_points, option))
        inputs.append(z_name)
    dq = helper.make_node(
        "DequantizeLinear", inputs, [out_name],
        name=unique_name(f"{layer}/weight_DequantizeLinear", g.names), axis=axis,
    )  # fmt: skip
    g.graph.node.insert(g.index_of(node), dq)
    node.input[1] = out_name
    g.drop_if_unused(name)


def ensure_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    current = default_opset(model)
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

