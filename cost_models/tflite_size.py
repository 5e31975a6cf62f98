"""The size of the model.tflite ``apply`` writes, predicted from the layer graph and each
layer's weight bit width (pure python: the planner side can use it).

A .tflite is a flatbuffer: the constants' bytes (weights at their bit width, int4 two to a
byte; int32 biases -- int64 with int16 activations --; fp32 for a float layer; the shape,
permutation and padding constants of the converted graph), each integer layer's per-channel
quantisation parameters (a float32 scale and an int64 zero point per output channel, for the
weight and for the bias) and the graph's framing (tensor and operator tables, names,
signature, metadata, 16-byte alignment of every buffer). The first two are exact; the framing
is the tensors' names (computed: apply writes ``edgefit[<layer>]:t<i>``) + ``FRAME_BYTES +
FRAME_PER_TENSOR_BYTES x tensors + FRAME_PER_OP_BYTES x operators`` of the converted graph
(cost_models.tflm_arena.converted_graph), least squares on the files of
benchmarks/tflm_arena.py's fit set: flatbuffer tables, vtables shared between tables of one
shape and 16-byte alignment padding are not computed, so the size is not exact (the error
is reported in docs/cost-model-accuracy.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cost_models.tflm_arena import ConvertedGraph, converted_graph

QUANT_PARAM_BYTES = 4 + 8  # float32 scale + int64 zero point, per channel
# the framing beyond the names: least squares on the eight fit-set files of
# benchmarks/tflm_arena.py (litert-torch 0.10.0, ai-edge-quantizer 0.10.0, apply's repacking;
# it prints the fit and each model left out: within 0.5 % of the file)
FRAME_BYTES = 390.0
FRAME_PER_TENSOR_BYTES = 97.0
FRAME_PER_OP_BYTES = 48.1


@dataclass(frozen=True)
class TfliteSize:
    constant_bytes: int  # weights, biases, graph constants (exact)
    quant_param_bytes: int  # per-channel scales and zero points (exact)
    frame_bytes: float  # tables, names, alignment (fitted)

    @property
    def total_bytes(self) -> int:
        return round(self.constant_bytes + self.quant_param_bytes + self.frame_bytes)


def layer_constant_bytes(weight_numel: int, channels: int, weight_bits: int | None,
                         activation_bits: int = 8) -> int:
    """A layer's weights and bias as the .tflite stores them (None: a float layer)."""
    if weight_bits is None:
        return 4 * (weight_numel + channels)
    bias = 8 if activation_bits == 16 else 4
    return -(-weight_numel * weight_bits // 8) + bias * channels


def layer_quant_param_bytes(channels: int, weight_bits: int | None) -> int:
    """Per-channel scale and zero point of the weight and of the bias (none when float)."""
    return 0 if weight_bits is None else 2 * QUANT_PARAM_BYTES * channels


def layer_tflite_bytes(weight_numel: int, channels: int, weight_bits: int | None,
                       activation_bits: int = 8) -> int:
    """What one planned layer adds to the .tflite beyond the graph's framing."""
    return (layer_constant_bytes(weight_numel, channels, weight_bits, activation_bits)
            + layer_quant_param_bytes(channels, weight_bits))


def graph_constant_bytes(conv: ConvertedGraph) -> int:
    """The converted graph's own constants (shapes, permutations, paddings: int32)."""
    sizes = {"shape": lambda c: 4 * (len(c) - 1), "perm": lambda c: 16,
             "paddings": lambda c: 32, "axes": lambda c: 8}
    return sum(sizes[str(c[0])](c) for c in conv.constants if str(c[0]) in sizes)


def _string_bytes(text: str) -> int:
    """A flatbuffer string: its length (4 B), the bytes and a NUL, padded to 4 bytes."""
    return 4 + -(-(len(text) + 1) // 4) * 4


def name_bytes(conv: ConvertedGraph) -> int:
    """The tensors' names as apply writes them (scripts/tflite_tool.py short_names):
    ``edgefit[<layer>]:t<index>``; the model input and its QUANTIZE copy (made by the
    quantiser) carry no layer."""
    bare = {*conv.inputs, *(t for op in conv.ops[:1] if op.code == "QUANTIZE"
                            for t in op.outputs)}
    owners = [None if i in bare else t.owner for i, t in enumerate(conv.tensors)]
    owners += list(conv.constants.values())
    return sum(_string_bytes(("" if layer is None else f"edgefit[{layer}]:") + f"t{i}")
               for i, layer in enumerate(owners))


def frame_bytes(conv: ConvertedGraph) -> float:
    """Tables, vectors and alignment (fitted) + the names (computed)."""
    return (FRAME_BYTES + FRAME_PER_TENSOR_BYTES * conv.tensor_count
            + FRAME_PER_OP_BYTES * len(conv.ops) + name_bytes(conv))


def predict_tflite_bytes(graph: Any, weight_bits: Mapping[str, int | None],
                         activation_bits: Mapping[str, int] | None = None) -> TfliteSize:
    """The model.tflite of a layer graph with each layer's weight bits (None: float)."""
    acts = activation_bits or {}
    conv = converted_graph(graph, [n for n in graph.layer_names
                                   if weight_bits.get(n, 8) is not None])
    constants = graph_constant_bytes(conv)
    params = 0
    for layer in graph.layers:
        bits = weight_bits.get(layer.name, 8)
        constants += layer_constant_bytes(layer.weight_numel, layer.out_channels, bits,
                                          acts.get(layer.name, 8))
        params += layer_quant_param_bytes(layer.out_channels, bits)
    return TfliteSize(constants, params, frame_bytes(conv))
