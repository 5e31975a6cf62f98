"""Read a written model back: how each planned layer is stored (:class:`LayerStorage`,
:func:`inspect_onnx`), from the file alone -- weight dtype and bytes, scales, the ops around
the layer, and for an embedding table the form :mod:`techniques.onnx.tables` wrote."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgefit_common.errors import PlanError
from formats import quant_math as qm
from formats.onnx_io import planned_layers
from techniques.onnx.graph import QLINEAR_OPS, Graph, layer_node, load_model, trace, weight_input
from techniques.onnx.tables import TABLE_ROLES

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
_PACKED_BITS: dict[int, int] = {TensorProto.INT4: 4, TensorProto.UINT4: 4, TensorProto.INT2: 2,
                                TensorProto.UINT2: 2}


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


def init_values(init: onnx.TensorProto) -> np.ndarray:
    arr = numpy_helper.to_array(init)
    if init.data_type in _PACKED_BITS:
        arr = arr.astype(np.int8)
    return arr


def dtype_name(init: onnx.TensorProto) -> str:
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
    model = load_model(path)
    g = Graph(model.graph)
    inputs = {i.name for i in model.graph.input}
    result: dict[str, LayerStorage] = {}
    for layer in planned_layers(model, str(path)):
        if g.by_name.get(layer) is not None and g.by_name[layer].op_type == "Gather":
            result[layer] = table_storage(g, layer, inputs, str(path))  # embedding table
            continue
        node = layer_node(g, layer, str(path))
        init, chain = trace(g, weight_input(node))
        if init is None:
            raise PlanError(f"{path}: weight of layer {layer!r} is not stored as an initializer")
        dtype = dtype_name(init)
        values = init_values(init)
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
            b_init, _ = trace(g, bias[0].input[bias[1]])
            if b_init is not None:
                bias_dtype, bias_bytes = dtype_name(b_init), _stored_bytes(b_init)
        act = node.input[0]
        act_dtype = "float32"
        src = g.producer.get(act)
        if node.op_type in QLINEAR_OPS and node.input[2] in g.inits:
            act_dtype = dtype_name(g.inits[node.input[2]])  # a_zero_point
            if act_dtype == "uint8" and np.all(init_values(g.inits[node.input[2]]) == 128):
                act_dtype = "int8"  # _uint8_input's shifted twin of symmetric int8 codes
        elif src is not None and src.op_type == "DequantizeLinear":
            q_src = g.producer.get(src.input[0])
            zp = g.inits.get(src.input[2]) if len(src.input) > 2 else None
            if zp is not None:
                act_dtype = dtype_name(zp)
            elif q_src is not None and q_src.op_type == "QuantizeLinear":
                q_zp = g.inits.get(q_src.input[2]) if len(q_src.input) > 2 else None
                act_dtype = dtype_name(q_zp) if q_zp is not None else "uint8"
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


def table_storage(g: Graph, layer: str, inputs: set[str], where: str) -> LayerStorage:
    """How Gather layer ``layer`` stores its table (a form of :mod:`techniques.onnx.tables`),
    read from the file: the table's dtype and shape, the code width from the place values of
    ``<layer>/codes_matmul`` (packed rows; a negative top place: signed), the scales and zero
    points its nodes gather."""
    node = g.by_name[layer]
    init = g.inits.get(node.input[0])
    if init is None:
        raise PlanError(f"{where}: table of layer {layer!r} is not stored as an initializer")
    role = {r: g.by_name.get(f"{layer}/{r}") for r in TABLE_ROLES}
    extra = [g.inits[n.input[0]] for r, n in role.items() if n is not None and r != TABLE_ROLES[0]
             and n.input[0] in g.inits]
    dtype = dtype_name(init)
    values = init_values(init)
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


def _table_output(g: Graph, node: onnx.NodeProto) -> str:
    """The tensor a Gather layer's decode chain ends in (the rows as float32)."""
    out = node.output[0]
    while True:
        users = [n for n in g.consumers.get(out, []) if n.name.startswith(f"{node.name}/")]
        if not users:
            return out
        out = users[-1].output[0]


QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def float_islands(path: Path, tmp: Path) -> list[str]:
    """Issue #22's float islands, in the graph onnxruntime runs (ORT_ENABLE_ALL, edgefit's
    session options; the optimised copy is written to directory ``tmp``).

    Nodes of the optimised graph that compute in float between quantised tensors: every
    activation input dequantised and every reader a QuantizeLinear (``DQ -> op -> Q``), and
    DequantizeLinear nodes read only by a QuantizeLinear (``DQ -> Q``)."""
    import onnxruntime as ort

    from techniques.onnx.writer import ort_session_options

    so = ort_session_options(ort.GraphOptimizationLevel.ORT_ENABLE_ALL, 1)
    so.log_severity_level = 3
    so.optimized_model_filepath = str(Path(tmp) / f"{Path(path).stem}.opt.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    g = onnx.load(so.optimized_model_filepath).graph
    inits = {i.name for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}

    def only_quantised(node: onnx.NodeProto) -> bool:
        rs = [r for o in node.output for r in readers.get(o, [])]
        return bool(rs) and all(r.op_type == "QuantizeLinear" for r in rs) and not any(
            o in outputs for o in node.output)

    def dequantised(name: str, seen: dict[str, bool]) -> bool:
        """Whether tensor ``name`` is float computed only from dequantised codes."""
        if name in seen:
            return seen[name]
        src = producer.get(name)
        seen[name] = src is not None and (src.op_type == "DequantizeLinear" or (
            src.op_type not in QDQ_OPS and all(dequantised(i, seen) for i in src.input
                                           if i and i not in inits)))
        return seen[name]

    def requantised(name: str, seen: dict[str, bool]) -> bool:
        """Whether every reader of float tensor ``name`` ends in a QuantizeLinear."""
        if name in seen:
            return seen[name]
        rs = readers.get(name, [])
        seen[name] = name not in outputs and bool(rs) and all(
            r.op_type == "QuantizeLinear" or (r.op_type not in QDQ_OPS and all(
                requantised(o, seen) for o in r.output)) for r in rs)
        return seen[name]

    down: dict[str, bool] = {}
    up: dict[str, bool] = {}
    found = []
    for n in g.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in producer and all(
                r.op_type == "QuantizeLinear" for r in readers.get(n.output[0], [])) and \
                readers.get(n.output[0]) and n.output[0] not in outputs:
            found.append(f"DequantizeLinear -> QuantizeLinear ({n.name})")
        elif n.op_type not in QDQ_OPS and n.output and all(
                dequantised(i, down) for i in n.input if i and i not in inits) and any(
                i and i not in inits for i in n.input) and all(
                requantised(o, up) for o in n.output):
            found.append(f"DequantizeLinear -> {n.op_type} -> QuantizeLinear ({n.name})")
    return found
