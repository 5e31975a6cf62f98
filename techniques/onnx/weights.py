"""The per-layer techniques a model given only as ONNX gets on its initializers, and their
read-back: the ONNX route's counterpart of :func:`techniques.fakequant.pruned_copy`.

Every registered technique with an array form (``Technique.apply_weights``: unstructured
pruning's zeros, weight sharing's codebook values) is applied to the layer's float32 weight
initializer in the configs' order (:func:`with_weight_techniques`); the quantiser
(:func:`techniques.onnx.writer.quantize_onnx`) then starts from that float model, so a sparse
or shared layer is also quantised as its kernel says. Weights are handled with their output
channels first (torch's layout, the flash image's, the one the configs' tie-breaking is
defined on): a MatMul's ``(in, out)`` weight and a Gemm's without ``transB`` are transposed
there and back. A weight initializer another node also reads is copied first, so only the
layer's own weight changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgefit_common.errors import PlanError
from formats.onnx_io import save_atomic
from techniques.onnx.graph import (
    QLINEAR_OPS,
    Graph,
    float_weight,
    layer_node,
    load_model,
    trace,
    unique_name,
    weight_input,
)


def _transposed(node: onnx.NodeProto) -> bool:
    """Whether the node's weight is stored (in, out): a MatMul, a Gemm without transB."""
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return node.op_type == "MatMul" or (node.op_type == "Gemm" and not trans_b)


def layer_arrays(path: Path, layers: Sequence[str]
                 ) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """{layer: (float32 weight, output channels first; float32 bias or None)} of the planned
    nodes of a float ONNX model (a MatMul's bias: the Add that is its only consumer)."""
    g = Graph(load_model(Path(path)).graph)
    out = {}
    for layer in layers:
        node = layer_node(g, layer, str(path))
        w = float_weight(g, node, str(path)).astype(np.float32)
        bias_at = g.bias_input(node)
        bias = None
        if bias_at is not None and bias_at[0].input[bias_at[1]] in g.inits:
            bias = numpy_helper.to_array(g.inits[bias_at[0].input[bias_at[1]]])
        out[layer] = (np.ascontiguousarray(w.T if _transposed(node) else w),
                      None if bias is None else bias.astype(np.float32).reshape(-1))
    return out


def array_techniques(configs: Sequence[Any]) -> list[Any]:
    """The configs applied to the weight array (all but the kernel's quantisation, which the
    writer applies)."""
    return [c for c in configs if getattr(c, "technique", None) != "quantize"]


def weights_after(w: np.ndarray, configs: Sequence[Any], layer: str) -> np.ndarray:
    """``w`` (output channels first) after the layer's per-layer techniques, in their order,
    each through its registry entry's array form; PlanError naming a technique that has none
    (it needs the torch model)."""
    from techniques.registry import technique

    out = np.asarray(w, dtype=np.float32)
    for cfg in array_techniques(configs):
        entry = technique(cfg)
        if entry.apply_weights is None:
            raise PlanError(f"layer {layer!r}: {entry.name} is applied to torch models only; "
                            "this model is ONNX only (re-plan it from the torch model)")
        out = np.asarray(entry.apply_weights(out, cfg), dtype=np.float32)
    return out


def with_weight_techniques(src: Path, dst: Path, techniques: Mapping[str, Sequence[Any]]
                           ) -> list[str]:
    """Write ``src`` to ``dst`` with each layer's array techniques applied to its weight
    initializer (:func:`weights_after`); layers without any are untouched. Returns the layers
    changed."""
    model = load_model(Path(src))
    g = Graph(model.graph)
    changed = []
    for layer, configs in techniques.items():
        if not array_techniques(configs):
            continue
        node = layer_node(g, layer, str(src))
        w = float_weight(g, node, str(src))
        flip = _transposed(node)
        new = weights_after(w.T if flip else w, configs, layer)
        _set_weight(g, node, np.ascontiguousarray(new.T if flip else new))
        changed.append(layer)
    save_atomic(model, Path(dst))
    return changed


def _set_weight(g: Graph, node: onnx.NodeProto, values: np.ndarray) -> None:
    """Replace the node's weight initializer by ``values`` (a copy of its own when another
    node reads the same initializer)."""
    name = node.input[1]
    init = numpy_helper.from_array(values.astype(np.float32), name)
    if len(g.consumers.get(name, [])) > 1:
        init.name = unique_name(f"{name}_{node.name}", g.names)
        node.input[1] = init.name
        g.graph.initializer.append(init)
        return
    g.inits[name].CopyFrom(init)


def flash_layer(layer: str, configs: Sequence[Any], weight: np.ndarray,
                bias: np.ndarray | None) -> Any:
    """The layer as the flash image stores it (``weight``: already pruned / shared, output
    channels first): its kernel's storage form, sparse when pruned, on its codebook when
    shared (techniques.flash_image.FlashLayer)."""
    from techniques.flash_image import FlashLayer
    from techniques.quantize import weight_precision
    from techniques.share import share_config

    pruned = any(getattr(c, "technique", "") in ("prune_unstructured", "prune_nm")
                 for c in configs)
    return FlashLayer(layer, weight_precision(configs), np.ascontiguousarray(weight), bias,
                      sparse=pruned, share=share_config(configs))


def stored_layer_bytes(layer: str, configs: Sequence[Any], weight: np.ndarray,
                       bias: np.ndarray | None) -> int:
    """What the flash image holds for a layer of an ONNX-only model after its techniques
    (``weight`` as :func:`layer_arrays` reads it): the writer's exact bytes, its header entry
    included (techniques.flash_image.layer_file_bytes, as for a torch model)."""
    from techniques.flash_image import layer_file_bytes

    return layer_file_bytes(flash_layer(layer, configs, weights_after(weight, configs, layer),
                                        bias))


def stored_weights(path: Path, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """{layer: its weight as the file stores it} -- the initializer its node reads, through
    any Cast / DequantizeLinear, as codes for an integer weight, with the weight zero point
    subtracted (0 is a zero weight) -- for the read-back checks of zeros and codebooks."""
    from techniques.onnx.inspect import init_values

    model = load_model(Path(path))
    g = Graph(model.graph)
    out = {}
    for layer in layers:
        node = layer_node(g, layer, str(path))
        init, chain = trace(g, weight_input(node))
        if init is None:
            raise PlanError(f"{path}: weight of layer {layer!r} is not stored as an initializer")
        values = init_values(init).astype(np.float64)
        zero = _zero_point(g, node, chain)
        out[layer] = values if zero is None else values - _broadcast(zero, values, node, chain)
    return out


def _zero_point(g: Graph, node: onnx.NodeProto, chain: list[onnx.NodeProto]
                ) -> np.ndarray | None:
    """The weight's zero point (QLinear op input 5, or the DequantizeLinear's third input)."""
    if node.op_type in QLINEAR_OPS:
        name = node.input[5] if len(node.input) > 5 else ""
    else:
        dq = next((n for n in chain if n.op_type == "DequantizeLinear"), None)
        name = dq.input[2] if dq is not None and len(dq.input) > 2 else ""
    if not name or name not in g.inits:
        return None
    from techniques.onnx.inspect import init_values

    return init_values(g.inits[name]).astype(np.float64)


def _broadcast(zero: np.ndarray, values: np.ndarray, node: onnx.NodeProto,
               chain: list[onnx.NodeProto]) -> np.ndarray:
    """A per-channel zero point shaped to broadcast over the weight along its channel axis."""
    if zero.size <= 1:
        return zero.reshape(())
    dq = next((n for n in chain if n.op_type == "DequantizeLinear"), None)
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1) if dq is not None else 0
    shape = [1] * values.ndim
    shape[axis] = zero.size
    return zero.reshape(shape)


__all__ = ["array_techniques", "flash_layer", "layer_arrays", "stored_layer_bytes",
           "stored_weights", "weights_after", "with_weight_techniques"]
