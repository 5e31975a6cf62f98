"""Weight-only Linear layers in the form onnxruntime fuses into ``MatMulNBits``: Gemm -> MatMul
(+ Add) with the codes in the MatMul layout, and a Relu after it as ``Max(x, 0)``."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from techniques.onnx.graph import Graph, layer_node, unique_name

_FLOAT_OR_W8A8 = frozenset({"fp32", "fp16", "int8"})
INT2_OUT_MULTIPLE = 4
"""onnxruntime 1.32's 2-bit MatMulNBits gives wrong outputs when a layer's output features are
not a multiple of 4 (measured against DequantizeLinear + MatMul with the fusion off, K = 64:
N = 2, 6, 10 off by 57-300 % of the largest output; N = 4 ... 48 in steps of 4 exact), so
such an int2 Gemm stays Gemm(transB=1), which the fusion leaves alone
(tests/techniques/onnx/test_boundaries.py)."""
_RELU_ZERO = "edgefit_relu_zero"


def matmulnbits_form(
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
        g = Graph(model.graph)
        node = layer_node(g, layer, where)
        if option == "int2" and _out_features(g, node) % INT2_OUT_MULTIPLE:
            continue
        if node.op_type == "Gemm" and _gemm_to_matmul(g, node):
            g = Graph(model.graph)
            node = layer_node(g, layer, where)
        if node.op_type == "MatMul" and _per_axis_dq(g, node.input[1]) is not None:
            _relu_to_max(g, node)
    return model


def _out_features(g: Graph, node: onnx.NodeProto) -> int:
    """N of a Gemm / MatMul layer from its (dequantised) weight's stored shape."""
    dq = g.producer.get(node.input[1])
    name = dq.input[0] if dq is not None and dq.op_type == "DequantizeLinear" else node.input[1]
    init = g.inits.get(name)
    if init is None or len(init.dims) != 2:
        return 0
    trans_b = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
    return int(init.dims[0] if trans_b else init.dims[1])


def _per_axis_dq(g: Graph, name: str) -> tuple[onnx.NodeProto, onnx.TensorProto] | None:
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


def _gemm_to_matmul(g: Graph, node: onnx.NodeProto) -> bool:
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
    mm_out = unique_name(f"{out}_MatMul", g.names) if has_bias else out
    matmul = helper.make_node("MatMul", list(node.input[:2]), [mm_out], name=node.name)
    matmul.metadata_props.extend(node.metadata_props)
    new = [matmul]
    if has_bias:
        add_name = unique_name(f"{node.name}/bias_Add", g.names)
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


def _relu_to_max(g: Graph, node: onnx.NodeProto) -> None:
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
