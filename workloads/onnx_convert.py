"""Turn a real-world ONNX file into one edgefit can plan, with onnx's and onnxruntime's own
tools, each step saying what it did (the notes end up in the plan's provenance):

* symbolic sample dimensions (a dynamic image size or sequence length) are fixed from
  ``--input-shape``; a symbolic batch dimension is left alone (edgefit runs batch 1);
* an opset below :data:`MIN_OPSET` is upgraded with ``onnx.version_converter`` (the int8 writer
  writes per-channel QuantizeLinear / DequantizeLinear, whose ``axis`` needs opset 13);
* weights held in ``Constant`` nodes are lifted to initializers (onnx_ir's
  ``LiftConstantsToInitializersPass``), so the layers are found and quantised;
* a graph whose shapes cannot be inferred statically (a Reshape fed by Shape -> Gather -> Concat
  arithmetic) or whose weights are computed from constants is constant-folded by onnxruntime's
  basic graph optimisation at batch 1, and kept only if its outputs equal the original's.

What cannot be converted is refused with one line that says what to do.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from edgefit_common.errors import ModelLoadError
from formats.onnx_io import WEIGHTED_OPS

MIN_OPSET = 13  # per-channel Q/DQ (the int8 writer's `axis`) exists from opset 13
_FOLD_RTOL, _FOLD_ATOL = 1e-4, 1e-5  # basic fusions (Conv+BatchNorm) reorder float sums
_FOLD_MAX_INPUT = 1 << 26  # elements of the one random sample folding is checked on


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def default_opset(model: onnx.ModelProto) -> int | None:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return int(op.version)
    return None


# --------------------------------------------------------------------------------------------
# dimensions


def shape_text(dims: list[onnx.TensorShapeProto.Dimension]) -> str:
    return "x".join(str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
                    for d in dims)


def fix_sample_dims(model: onnx.ModelProto, inp: onnx.ValueInfoProto,
                    input_shape: tuple[int, ...] | None, where: str) -> list[str]:
    """Set the input's symbolic non-batch dims from ``input_shape`` (one sample's shape), and
    the same symbols wherever the graph's outputs / value_info use them. Fixed dims must match.
    Returns notes; without ``input_shape`` nothing changes (check_input refuses what remains)."""
    if input_shape is None:
        return []
    dims = list(inp.type.tensor_type.shape.dim)
    if len(input_shape) != len(dims) - 1:
        raise ModelLoadError(
            f"{where}: --input-shape {'x'.join(map(str, input_shape))} has {len(input_shape)} "
            f"dimensions; graph input {inp.name!r} ({shape_text(dims)}) has {len(dims) - 1} "
            "per sample (give one sample's shape, without the batch)")
    symbols: dict[str, int] = {}
    for axis, (d, size) in enumerate(zip(dims[1:], input_shape, strict=True), start=1):
        if d.HasField("dim_value") and d.dim_value > 0:
            if d.dim_value != size:
                raise ModelLoadError(
                    f"{where}: --input-shape {'x'.join(map(str, input_shape))} does not match "
                    f"graph input {inp.name!r} ({shape_text(dims)}): axis {axis} is fixed at "
                    f"{d.dim_value}")
            continue
        if d.dim_param:
            symbols[d.dim_param] = size
        d.Clear()
        d.dim_value = size
    for vi in [*model.graph.output, *model.graph.value_info]:
        for d in vi.type.tensor_type.shape.dim if vi.type.HasField("tensor_type") else ():
            if d.HasField("dim_param") and d.dim_param in symbols:
                size = symbols[d.dim_param]
                d.Clear()
                d.dim_value = size
    if not symbols:
        return []
    fixed = ", ".join(f"{k}={v}" for k, v in symbols.items())
    return [f"symbolic input dims fixed from --input-shape ({fixed})"]


def check_sample_dims_fit(original: onnx.ModelProto, fixed: onnx.ModelProto,
                          input_shape: tuple[int, ...], where: str) -> None:
    """Refuse sizes from ``--input-shape`` that the model cannot take (ModelLoadError naming
    the user's file, ``where``): strict ONNX shape inference passes on ``original`` (symbolic
    dims) and fails on ``fixed`` (those sizes). Without this the mismatch surfaced later, in a
    message naming edgefit's prepared copy of the file. A model whose shapes strict inference
    cannot check anyway (custom ops) is left to the later steps."""
    def problem(model: onnx.ModelProto) -> str | None:
        try:
            onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        except Exception as exc:
            return _first_line(exc).replace("[ShapeInferenceError] ", "")
        return None

    found = problem(fixed)
    if found is None or problem(original) is not None:
        return
    raise ModelLoadError(
        f"{where}: --input-shape {'x'.join(map(str, input_shape))} does not fit the model: "
        f"ONNX shape inference with these sizes fails ({found}); give the sample shape the "
        "model was built for")


def symbolic_dims_problem(inp: onnx.ValueInfoProto, where: str) -> str | None:
    """The one-line refusal for symbolic / unknown non-batch input dims, naming them and the
    flag that fixes them; None when every sample dim is fixed."""
    dims = list(inp.type.tensor_type.shape.dim)
    loose = [(axis, d.dim_param or "?") for axis, d in enumerate(dims[1:], start=1)
             if not d.HasField("dim_value")]
    if not loose:
        return None
    named = ", ".join(f"{name!r} (axis {axis})" for axis, name in loose)
    wanted = "x".join(str(d.dim_value) if d.HasField("dim_value") else f"<{d.dim_param or '?'}>"
                      for d in dims[1:])
    return (f"{where}: graph input {inp.name!r} ({shape_text(dims)}) has symbolic dimensions "
            f"{named}; pass --input-shape {wanted} with the sizes to plan for (one sample, "
            "without the batch)")


def _batch_one(model: onnx.ModelProto, input_name: str) -> None:
    for inp in model.graph.input:
        if inp.name == input_name:
            d0 = inp.type.tensor_type.shape.dim[0]
            if not d0.HasField("dim_value"):
                d0.Clear()
                d0.dim_value = 1


# --------------------------------------------------------------------------------------------
# opset


def upgrade_opset(model: onnx.ModelProto, where: str) -> tuple[onnx.ModelProto, list[str]]:
    current = default_opset(model)
    if current is None or current >= MIN_OPSET:
        return model, []
    try:
        converted = onnx.version_converter.convert_version(model, MIN_OPSET)
        onnx.checker.check_model(converted)
    except Exception as exc:  # the converter raises assorted RuntimeError/ValueError types
        raise ModelLoadError(
            f"{where}: opset {current} could not be upgraded to {MIN_OPSET} (the int8 writer's "
            f"minimum) by onnx.version_converter: {_first_line(exc)}; export the model with "
            f"opset >= {MIN_OPSET}") from None
    return converted, [f"opset upgraded from {current} to {MIN_OPSET} (onnx.version_converter)"]


# --------------------------------------------------------------------------------------------
# Constant-node weights


def _weight_slots(graph: onnx.GraphProto) -> set[str]:
    """Tensors read as a layer op's weight or bias."""
    return {t for n in graph.node if n.op_type in WEIGHTED_OPS and n.domain in ("", "ai.onnx")
            for t in n.input[1:] if t}


def lift_constant_weights(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Constant nodes (tensor ``value``) become initializers when any of them holds a layer's
    weight; the model is returned unchanged when none does."""
    slots = _weight_slots(model.graph)
    held = [n for n in model.graph.node
            if n.op_type == "Constant" and n.output and n.output[0] in slots]
    if not held:
        return model, []
    import onnx_ir as ir
    from onnx_ir.passes.common import LiftConstantsToInitializersPass

    ir_model = ir.from_proto(model)
    LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1)(ir_model)
    lifted = ir.to_proto(ir_model)
    return lifted, [f"{len(held)} layer weight/bias tensor(s) held in Constant nodes lifted to "
                    "initializers "
                    "(onnx_ir LiftConstantsToInitializersPass)"]


# --------------------------------------------------------------------------------------------
# constant folding


def _input_dependent(graph: onnx.GraphProto, input_name: str) -> set[str]:
    live = {input_name}
    for node in graph.node:  # graph order is topological (the checker enforces it)
        if any(t in live for t in node.input):
            live.update(t for t in node.output if t)
    return live


def folding_reason(model: onnx.ModelProto, input_name: str) -> str | None:
    """Why the graph needs constant folding: a layer weight computed from constants, or a
    tensor fed by the input whose shape ONNX shape inference cannot fix at batch 1."""
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    live = _input_dependent(graph, input_name)
    for node in graph.node:
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1:
            w = node.input[1]
            if w not in inits and w not in live:
                return f"the weight of {node.name or node.op_type!r} is computed from constants"
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    _batch_one(probe, input_name)
    del probe.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    except Exception:  # capture reports shape-inference failures with their own message
        return None
    known = {vi.name for vi in [*inferred.graph.value_info, *inferred.graph.output,
                                *inferred.graph.input]
             if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape")
             and all(d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)}
    for node in graph.node:
        for out in node.output:
            if out and out in live and out not in known:
                return f"the shape of {out!r} (from {node.op_type}) needs constant folding"
    return None


def _run(path: Path, input_name: str, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, {input_name: x})]


def fold_constants(model: onnx.ModelProto, input_name: str, reason: str,
                   where: str) -> tuple[onnx.ModelProto, list[str]]:
    """onnxruntime's basic graph optimisation (constant folding, Constant -> initializer,
    redundant-node removal) at batch 1, written out with ``optimized_model_filepath``; kept
    only when its outputs equal the original's on a random input."""
    import onnxruntime as ort

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    _batch_one(fixed, input_name)
    inp = next(i for i in fixed.graph.input if i.name == input_name)
    shape = [int(d.dim_value) for d in inp.type.tensor_type.shape.dim]
    if int(np.prod(shape, dtype=np.float64)) > _FOLD_MAX_INPUT:  # the check runs one sample
        raise ModelLoadError(f"{where}: {reason}, and the input ({'x'.join(map(str, shape))}) "
                             "is too large to check the folded model against the original")
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "folded.onnx"
        onnx.save(fixed, str(src))
        try:
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
            so.optimized_model_filepath = str(dst)
            ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
            before, after = _run(src, input_name, x), _run(dst, input_name, x)
            folded = onnx.load(str(dst))
        except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph types
            raise ModelLoadError(f"{where}: {reason}, and onnxruntime could not fold it: "
                                 f"{_first_line(exc)}") from None
    worst = max((float(np.max(np.abs(a - b))) for a, b in zip(before, after, strict=True)
                 if a.size), default=0.0)
    if len(before) != len(after) or not all(
            a.shape == b.shape and np.allclose(a, b, rtol=_FOLD_RTOL, atol=_FOLD_ATOL)
            for a, b in zip(before, after, strict=True)):
        raise ModelLoadError(f"{where}: {reason}; onnxruntime's constant folding changed the "
                             f"outputs (max difference {worst:.3g}), so the model is refused")
    return folded, [f"{reason}: batch fixed to 1 and constants folded (onnxruntime basic graph "
                    f"optimisation; outputs equal before/after, max difference {worst:.2g})"]


__all__ = ["MIN_OPSET", "default_opset", "fix_sample_dims", "fold_constants", "folding_reason",
           "lift_constant_weights", "shape_text", "symbolic_dims_problem", "upgrade_opset"]
