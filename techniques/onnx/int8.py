"""Static int8: onnxruntime.quantization's QDQ for the int8 / int8a16 layers
(:func:`quantize_int8`, calibrated on the model's inputs), then edgefit's own QLinearConv /
QLinearMatMul forms of the int8 layers (:func:`qlinear_form`).

int8 layers get asymmetric uint8 activations and 7-bit weight codes (onnxruntime's
reduce_range): ReLU / ReLU6 fold into the quantisation range, max-pooling, reshapes and
residual adds between int8 layers run on the codes (:func:`_followers`), and onnxruntime's fast
u8 x s8 kernels are exact on every CPU (issue #22: all-int8 Fashion CNN 9.4x slower than fp32
on this host with symmetric int8 codes on int8 x int8 kernels; the same graph as onnxruntime's
own quantiser now, benchmarks/int8_qlinear.py)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgefit_common.errors import PlanError
from edgefit_measure import u8s8_exact
from formats.onnx_io import WEIGHTED_OPS, planned_layers
from techniques.onnx.graph import QLINEAR_OPS, Graph, default_opset, layer_node, unique_name

CALIBRATION_BATCH = 16


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


def quantize_int8(
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
    # int8: asymmetric uint8 activations (a ReLU / ReLU6 after a layer folds into its output
    # range: no float ReLU between DequantizeLinear and QuantizeLinear) and 7-bit weight codes
    # (|code| <= WEIGHT_QMAX_U8S8): u8 x s8 kernels then never saturate their int16 pair sums
    # (x86 without VNNI), so onnxruntime's fast u8 x s8 kernels compute exactly what the file
    # says on every CPU. int16 (w8a16): symmetric, full 8-bit weights.
    wide = activations == "int16"

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
                op_types_to_quantize=[*WEIGHTED_OPS, *(() if wide else PASS_OPS)],
                nodes_to_quantize=[*layers, *(() if wide else _followers(quant_input, layers))],
                per_channel=True,
                reduce_range=not wide,
                activation_type=QuantType.QInt16 if wide else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={"ActivationSymmetric": wide, "WeightSymmetric": True,
                               "UseQDQContribOps": wide and default_opset(model) < 21},
            )
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise PlanError(f"onnxruntime int8 quantisation of {where} failed: {first}") from None
        result = onnx.load(out)
    static = set(layers) | set(quantized)
    others = [layer for layer in planned_layers(model, where) if layer not in static]
    _float_activations(result, others)
    g = Graph(result.graph)
    for layer in layers:
        node = layer_node(g, layer, where)
        dq = g.producer.get(node.input[1])
        init = g.inits.get(dq.input[0]) if dq is not None else None
        if dq is None or dq.op_type != "DequantizeLinear" or init is None:
            raise PlanError(f"onnxruntime left int8 layer {layer!r} of {where} unquantised")
    return result


PASS_OPS = ("Relu", "Clip", "MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze",
            "Unsqueeze", "ReduceMean", "GlobalAveragePool", "AveragePool", "Add", "Concat")
"""Ops onnxruntime runs on 8-bit codes (max-pool and reshapes as they are; QLinearAdd,
QLinearConcat, QLinearAveragePool) or that fold into the range before them (ReLU, ReLU6).
ReduceMean has no integer kernel: it stays DequantizeLinear -> ReduceMean -> QuantizeLinear
(MobileNetV2's global mean), as it would without being listed."""
JOIN_OPS = ("Add", "Concat")
"""Quantised only when every input is an activation (a residual add, not a MatMul's bias)."""


def _followers(path: Path, layers: list[str]) -> list[str]:
    """PASS_OPS nodes whose every activation input comes from an int8 layer or another such
    node: quantised with the layers, so onnxruntime's quantiser folds a ReLU / ReLU6 into the
    layer's output range and the codes pass max-pooling and reshapes without a float round
    trip (DequantizeLinear -> op -> QuantizeLinear)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    by_name = {n.name: n for n in graph.node}
    excluded: set[str] = set()
    while True:
        found = _pass_chain(graph, set(layers), inits, excluded)
        keep = set(layers) | set(found)
        # A folded ReLU survives only in the quantiser's range: a reader outside the int8
        # chain (a float layer, a graph output) would read the unclipped float tensor.
        cut = {n for n in found if by_name[n].op_type in FOLDED_OPS
               and _read_outside(by_name[n], keep, readers, outputs)}
        if not cut:
            return found
        excluded |= cut


FOLDED_OPS = ("Relu", "Clip")


def _read_outside(node: onnx.NodeProto, keep: set[str],
                  readers: dict[str, list[onnx.NodeProto]], outputs: set[str]) -> bool:
    """Whether a graph output or a node not in ``keep`` reads one of ``node``'s outputs."""
    return any(o in outputs or any(r.name not in keep for r in readers.get(o, []))
               for o in node.output)


def _pass_chain(graph: onnx.GraphProto, layers: set[str], inits: set[str],
                excluded: set[str]) -> list[str]:
    quantised_tensors = {o for n in graph.node if n.name in layers for o in n.output}
    found: list[str] = []
    for node in graph.node:  # topological order: a chain is followed in one pass
        acts = [i for i in node.input if i and i not in inits]
        joins_constant = node.op_type in JOIN_OPS and len(acts) != len(
            [i for i in node.input if i])
        if (node.op_type in PASS_OPS and node.name and node.name not in excluded and acts
                and not joins_constant and all(a in quantised_tensors for a in acts)):
            found.append(node.name)
            quantised_tensors.update(node.output)
    return found


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
    g = Graph(model.graph)
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
    g = Graph(model.graph)
    out = node.output[0]
    if node not in model.graph.node or out in g.consumers or out in g.outputs:
        return
    model.graph.node.remove(node)
    g = Graph(model.graph)
    for name in node.input:
        g.drop_if_unused(name)


def qlinear_form(model: onnx.ModelProto, full: dict[str, str],
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
    ``edgefit_measure.u8s8_exact``): whether a group with full 8-bit weight codes may run on
    uint8 codes. quantize_int8's own groups have 7-bit codes (|code| <= WEIGHT_QMAX_U8S8) and
    uint8 activations, exact on every CPU, so they are always written on uint8 codes; a group
    with 8-bit codes on int8 activations reads the int8 codes where u8 x s8 would saturate,
    and one on uint8 activations is then left to onnxruntime's fusion."""
    exact = u8s8_exact() if unsigned is None else unsigned
    g = Graph(model.graph)
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
        # uint8 codes are exact where this CPU's u8 x s8 kernels are, or for 7-bit weights
        unsigned = exact or _weights_fit_u8s8(g, w_dq)
        if not unsigned and _is_uint8(g, x_dq.input[2]):
            continue  # uint8 activations with 8-bit weights: left to onnxruntime's fusion
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
            if (x_q.op_type == "QuantizeLinear" and unsigned and a != x_q.output[0]
                    and x_q.output[0] not in g.outputs
                    and len(g.consumers.get(x_q.output[0], [])) == 1):
                nodes.remove(x_q)  # its uint8 twin took its only reader
        g = Graph(model.graph)
        for init in (q.input[2], x_q.input[2] if x_q.op_type == "QuantizeLinear" else "",
                     *(b_dq.input[1:] if b_dq is not None else [])):
            g.drop_if_unused(init)


def _qlinear_parts(g: Graph, node: onnx.NodeProto
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


def _bias_scale_is_product(g: Graph, b_dq: onnx.NodeProto, x_dq: onnx.NodeProto,
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


def _uint8_input(g: Graph, x_q: onnx.NodeProto) -> str:
    """The uint8 twin of int8 QuantizeLinear ``x_q`` (zero point + 128: the same codes shifted,
    what onnxruntime's own S8->U8 rewrite feeds its x86 u8s8 kernels; int8 x int8 runs several
    times slower), added once after ``x_q``; its output name."""
    if _is_uint8(g, x_q.input[2]):
        return x_q.output[0]  # asymmetric uint8 activations already
    out = f"{x_q.output[0]}_u8"
    if out in g.producer:
        return out
    zp_name = _uint8_zero_point(g, x_q.input[2])
    twin = helper.make_node("QuantizeLinear", [x_q.input[0], x_q.input[1], zp_name], [out],
                            name=unique_name(f"{x_q.name}_u8", g.names))
    twin.metadata_props.extend(x_q.metadata_props)
    g.graph.node.insert(g.index_of(x_q) + 1, twin)
    g.producer[out] = twin
    g.names.update({out, twin.name})
    return out


def _uint8_zero_point(g: Graph, name: str) -> str:
    """Initializer ``<name>_u8``: int8 zero point ``name`` + 128 as uint8 (added once)."""
    if _is_uint8(g, name):
        return name
    zp_name = f"{name}_u8"
    if zp_name not in g.inits:
        zp = numpy_helper.to_array(g.inits[name]).astype(np.int16) + 128
        g.inits[zp_name] = numpy_helper.from_array(zp.astype(np.uint8), zp_name)
        g.graph.initializer.append(g.inits[zp_name])
        g.names.add(zp_name)
    return zp_name


WEIGHT_QMAX_U8S8 = 64
"""The largest |weight code| for which u8 x s8 kernels cannot saturate: VPMADDUBSW adds two
u8 x s8 products into an int16, 2 x 255 x 64 = 32640 <= 32767 (onnxruntime's reduce_range
codes, -64..64)."""


def _weights_fit_u8s8(g: Graph, w_dq: onnx.NodeProto) -> bool:
    codes = numpy_helper.to_array(g.inits[w_dq.input[0]])
    return codes.size == 0 or int(np.abs(codes.astype(np.int16)).max()) <= WEIGHT_QMAX_U8S8


def _is_uint8(g: Graph, name: str) -> bool:
    init = g.inits.get(name)
    return init is not None and init.data_type == TensorProto.UINT8
