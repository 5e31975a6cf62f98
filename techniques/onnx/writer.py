"""Turn an fp32 ONNX model into the runnable mixed-precision model a plan asks for.

Input contract (see :func:`techniques.onnx.names.name_nodes_by_module`): every planned layer's
Conv / Gemm / MatMul node is named after the torch module (``conv1``, ``features.0.conv``,
``fc1``) and the model carries a ``metadata_props`` entry ``edgefit.layers`` = JSON list of those
names. The weight is the node's second input and is an initializer (for a ``MatMul`` it is
``W^T``, shape (in, out), and the bias lives in the ``Add`` that is the MatMul's only consumer).

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
  ``QLinearMatMul`` by edgefit itself (:func:`techniques.onnx.int8.qlinear_form`: onnxruntime
  does not fuse them when several layers read one quantised tensor), reading the uint8 twin of
  their int8 input codes. The int8 weight codes and scales equal
  :func:`quant_math.quantize_per_channel` (same formula, same guard for zero channels).
* ``int4`` -- weight-only: an ONNX ``INT4`` initializer (packed two per byte, low nibble first)
  + float32 per-output-channel scales + ``DequantizeLinear`` (axis = the output-channel axis, no
  zero point) feeding the node; activations and bias stay float32. Needs opset >= 21, so a model
  with any int4 layer is converted with ``onnx.version_converter`` (or, if that fails and no op
  in the graph changes meaning in opset 21, its opset number is bumped). onnxruntime CPU runs
  Conv as DequantizeLinear + Conv; a weight-only Gemm layer is written as MatMul (+ Add) with
  its codes in the MatMul layout (in, out) (and a Relu right after it as ``Max(x, 0)``), so
  that, like a MatMul layer, onnxruntime fuses it into ``MatMulNBits`` (see
  :func:`techniques.onnx.matmulnbits.matmulnbits_form`), which quantises activations to int8
  unless the session sets ``ORT_SESSION_CONFIG`` (use :func:`ort_session_options`).

fp16 and int4 rewrites are applied before int8 calibration, so the int8 activation ranges are
those of the mixed model. Node metadata (torch name scopes) dropped by the converter/quantiser
is restored on every node that kept its name. Gather layers (embedding tables) take the forms of
:mod:`techniques.onnx.tables`.

The output keeps ``edgefit.layers`` and adds ``edgefit.options`` (JSON {layer: option}, every
planned layer, ``fp32`` for those the plan leaves out).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx

from edgefit_common.errors import PlanError
from edgefit_measure import session_config
from formats import quant_math as qm
from formats.onnx_io import LAYERS_KEY, OPTIONS_KEY, planned_layers, save_atomic, set_meta
from techniques.onnx.graph import Graph, float_weight, layer_node, load_model, trace, weight_input
from techniques.onnx.inspect import dtype_name, table_storage
from techniques.onnx.int8 import qlinear_form, quantize_int8
from techniques.onnx.matmulnbits import matmulnbits_form
from techniques.onnx.rewrite import (
    INT2_MIN_OPSET,
    INT4_MIN_OPSET,
    PACKED_TYPES,
    WEIGHT_ONLY_OPTIONS,
    ensure_opset,
    to_fp16,
    to_weight_only,
)
from techniques.onnx.tables import table_form, table_layers, to_table_form

GRAPH_FORM_VERSION = 8
"""Bumped when a per-layer graph form changes (its measured latency then changes):
2: weight-only Linear layers as MatMul (onnxruntime's MatMulNBits), 6/3/2-bit forms;
3: packed embedding rows decoded by one 2-D MatMul (was a MatMul with a 1-D right side);
4: static int8 MatMul layers written as QLinearMatMul (uint8 activations, int8 weights);
5: static int8 Conv layers written as QLinearConv the same way;
6: where this CPU's u8 x s8 kernels saturate, the QLinear layers read int8 codes (s8 x s8);
7: int2 Linear layers with output features not a multiple of 4 stay Gemm (MatMulNBits bug);
8: static int8 on asymmetric uint8 activations with 7-bit weight codes, ReLU folded, pooling
   and residual adds between int8 layers quantised (u8 x s8 exact everywhere, issue #22)."""
ONNX_OPTIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "int8a16", *WEIGHT_ONLY_OPTIONS)
"""The per-layer forms :func:`quantize_onnx` writes."""


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
    ``int8.CALIBRATION_BATCH`` for a dynamic batch dimension, whole batches for a fixed one).
    The output is written atomically (temp file + ``os.replace``).
    """
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if _quantize_with_tables(fp32_path, out_path, options, calibration):  # embedding tables
        return
    where = str(fp32_path)
    model = load_model(fp32_path)
    layers = planned_layers(model, where)
    full = validate_options(dict(options), layers)
    g = Graph(model.graph)
    for layer in layers:
        node = layer_node(g, layer, where)
        if full[layer] != "fp32":
            float_weight(g, node, where)

    # onnx.version_converter and quantize_static drop node metadata_props (torch name scopes,
    # stack traces); keep them to put back on every node that keeps its name.
    node_meta = {n.name: list(n.metadata_props) for n in model.graph.node if n.name}
    chosen = set(full.values())
    if chosen & {"int2", "uint2"}:
        model = ensure_opset(model, INT2_MIN_OPSET)
    elif chosen & set(PACKED_TYPES):
        model = ensure_opset(model, INT4_MIN_OPSET)
    # fp16 / int4 first, so int8 calibration sees the activations the mixed model produces.
    g = Graph(model.graph)
    for layer in layers:
        if full[layer] == "fp16":
            to_fp16(g, layer, where)
        elif full[layer] in WEIGHT_ONLY_OPTIONS:
            to_weight_only(g, layer, full[layer], where)
    int8_layers = [layer for layer in layers if full[layer] == "int8"]
    if int8_layers:
        model = quantize_int8(model, int8_layers, calibration, where)
    a16_layers = [layer for layer in layers if full[layer] == "int8a16"]
    if a16_layers:
        model = quantize_int8(model, a16_layers, calibration, where, "int16", int8_layers)
    model = matmulnbits_form(model, full, where)
    qlinear_form(model, full)
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


def _check_storage(model: onnx.ModelProto, full: dict[str, str], where: str) -> None:
    """Every layer's weight is stored as its option says (guards against ORT rewriting ours)."""
    g = Graph(model.graph)
    for layer, option in full.items():
        node = layer_node(g, layer, where)
        init, _ = trace(g, weight_input(node))
        got = dtype_name(init) if init is not None else "not an initializer"
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
    if option in PACKED_TYPES or option in ("fp32", "fp16"):
        return qm.weight_dtype(option)
    fmt = qm.INT_FORMATS[option]
    return "int8" if fmt[1] else "uint8"


def _check_tables(model: onnx.ModelProto, forms: dict[str, str], where: str) -> None:
    """Every Gather layer stores its table as its form says (read back from the model)."""
    g = Graph(model.graph)
    inputs = {i.name for i in model.graph.input}
    for layer, option in forms.items():
        got = table_storage(g, layer, inputs, where).option
        if got != table_form(option):
            raise PlanError(f"layer {layer!r} of {where} should store a {table_form(option)} "
                            f"table for {option}, but the rewritten model stores {got}")


def _quantize_with_tables(fp32_path: Path, out_path: Path, options: dict[str, str],
                          calibration: np.ndarray) -> bool:
    """quantize_onnx for a model whose planned layers include embedding tables: their forms
    are written here, the other layers by quantize_onnx on a copy that lists only those; the
    result lists every layer and option again. False (nothing written): no table layer."""
    where = str(fp32_path)
    model = load_model(fp32_path)
    layers = planned_layers(model, where)
    tables = table_layers(model, layers)
    if not tables:
        return False
    full = validate_options(dict(options), layers)
    g = Graph(model.graph)
    for layer in tables:
        to_table_form(g, layer, table_form(full[layer]), where)
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
