"""Embedding tables: the forms of Gather layers.

An nn.Embedding exports as Gather(table, ids), the table (rows, dim) a float32 initializer;
:func:`techniques.onnx.names.name_nodes_by_module` names that Gather after the module. Its forms
keep the table stored as the option says and decode only the rows looked up, never the whole
table (a DequantizeLinear of the table before the Gather would decode all of it on every run):

* fp16 -- float16 table; Gather, then Cast to float.
* 8-bit codes (int8, uint8) -- int8/uint8 table; Gather, Cast, (- gathered zero point),
  x gathered row scale. A gather has no activations to quantise, so the static forms int8
  and int8a16 store a table as these weight-only int8 codes (:func:`table_form`).
* b < 8 bits -- each row's codes bit-packed LSB first into bytes (a uint8 table of
  (rows, ceil(dim / 8) * b) bytes: the flash image's layout when dim * b is a multiple of 8);
  Gather of the rows' bytes, each byte looked up in a 256 x 8 bit table, the bits of each
  code summed with their place values (two's complement for the signed forms: the top
  bit's place is -2**(b-1)) by one MatMul, then zero point and scale as above.

Scales are float32 (rows, 1), zero points uint8 (rows, 1). The nodes are named
``<layer>/<role>`` so :func:`techniques.onnx.inspect.table_storage` reads the form back from the
file (:data:`TABLE_ROLES`: the roles it reads).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgefit_common.errors import PlanError
from formats import quant_math as qm
from techniques.onnx.graph import Graph, unique_name
from techniques.onnx.names import is_table_gather

TABLE_ROLES = ("codes_matmul", "scale_gather", "zero_point_gather")
_BITS_LUT = "edgefit_bits_lut"


def table_form(option: str) -> str:
    """The storage form (quant_math option) a Gather layer takes for an ONNX option."""
    return "int8" if option in ("int8", "int8a16") else option


def table_layers(model: onnx.ModelProto, layers: Iterable[str]) -> list[str]:
    """The planned layers of ``model`` that are Gather nodes (embedding tables)."""
    ops = {n.name: n.op_type for n in model.graph.node}
    return [layer for layer in layers if ops.get(layer) == "Gather"]


class _TableWriter:
    """Adds one Gather layer's decode nodes (named ``<layer>/<role>``, the layer's torch scope
    metadata copied so profiling charges them to the layer) and initializers."""

    def __init__(self, g: Graph, node: onnx.NodeProto) -> None:
        self.g, self.node, self.layer = g, node, node.name
        self.index = g.index_of(node) + 1
        self.meta = list(node.metadata_props)

    def init(self, role: str, arr: np.ndarray | onnx.TensorProto) -> str:
        name = unique_name(f"{self.node.input[0]}_{role}", self.g.names)
        tensor = (numpy_helper.from_array(arr, name) if isinstance(arr, np.ndarray) else arr)
        tensor.name = name
        self.g.graph.initializer.append(tensor)
        return name

    def add(self, op: str, inputs: list[str], role: str, out: str | None = None,
            before: bool = False, **attrs: int) -> str:
        """Insert a node after the ones added so far (before: in front of the Gather)."""
        out = out or unique_name(f"{self.layer}/{role}_output", self.g.names)
        node = helper.make_node(op, inputs, [out], name=unique_name(f"{self.layer}/{role}",
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


def _bits_lut(g: Graph) -> str:
    if _BITS_LUT not in g.inits:
        lut = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(np.float32)
        g.inits[_BITS_LUT] = numpy_helper.from_array(lut, _BITS_LUT)
        g.graph.initializer.append(g.inits[_BITS_LUT])
        g.names.add(_BITS_LUT)
    return _BITS_LUT


def to_table_form(g: Graph, layer: str, form: str, where: str) -> None:
    """Rewrite Gather layer ``layer`` so its table is stored as ``form`` (see above)."""
    node = g.by_name.get(layer)
    if node is None or not is_table_gather(node, g.inits):
        raise PlanError(f"{where}: layer {layer!r} is not a Gather of a float32 table")
    if form == "fp32":
        return
    table_name, ids, out = node.input[0], node.input[1], node.output[0]
    table = numpy_helper.to_array(g.inits[table_name])
    w = _TableWriter(g, node)
    if form == "fp16":
        qm.check_fp16_range(table, f"layer {layer!r} table")
        node.input[0] = w.init("fp16", table.astype(np.float16))
        node.output[0] = unique_name(f"{layer}/rows", g.names)
        w.add("Cast", [node.output[0]], "rows_cast", out, to=TensorProto.FLOAT)
        g.drop_if_unused(table_name)
        return
    codes = qm.quantize_option(table, form, axis=0)
    bits, signed = qm.INT_FORMATS[form]
    rows_out = unique_name(f"{layer}/rows", g.names)
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
