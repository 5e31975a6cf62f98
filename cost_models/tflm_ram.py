"""The planner's RAM terms for a TensorFlow Lite Micro profile (Profile.tflite.micro), kept
linear in the choices: TFLM's arena (cost_models.tflm_arena) as liveness steps + constants.

* RAM steps: per step of the layer graph, the tensors of the *converted* graph (litert-torch's
  QUANTIZE of the model input, its NHWC copy, explicit PADs, flatten's TRANSPOSE + RESHAPE)
  alive at that step's busiest TFLite operator (judged at one byte per element), each in
  16-byte units as TFLM aligns them, charged at its owner's chosen bytes per element;
* the float model input (4 bytes per element whatever the plan) while it is alive: the same
  bytes for every option of the first layer (step_extra);
* the persistent tail (TfLiteEvalTensor per tensor, a node per operator, op data, the model's
  input / output structs, the allocator's own objects): a constant (fixed ram_bytes), except
  the per-channel output multiplier and shift arrays an integer layer allocates, which depend
  on the option (integer or float, kept channels): step_extra on every step.

Not linear, hence not in the solver: the greedy planner's fragmentation (its plan can exceed
the liveness peak; measured in docs/cost-model-accuracy.md, TFLM arena section) -- the plan's
exact arena is tflm_arena.predict_arena on the chosen element bytes, which `apply` reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cost_models.graph import LayerGraph
from cost_models.table import CostTable, OptionCost
from cost_models.tflm_arena import (
    ConvertedGraph,
    aligned,
    converted_graph,
    has_arrays,
    op_scratch_bytes,
    per_channel_bytes,
    prepare_temp_bytes,
    tail_bytes,
)
from cost_models.tflm_structs import HOST_BUILD, TflmBuild, fully_connected_persistent_bytes

Entry = tuple[str, int]
PairCopy = tuple[str, tuple[str, ...], str, tuple[str, ...], float]


@dataclass(frozen=True)
class TflmTerms:
    fixed_ram_bytes: float  # the tail without any option's per-channel arrays
    ram_steps: tuple[tuple[Entry, ...], ...]
    step_extra: tuple[dict[tuple[str, str], float], ...]
    step_pairs: tuple[tuple[PairCopy, ...], ...]  # precision-boundary copies


def _scopes(conv: ConvertedGraph) -> list[tuple[int, int]]:
    """Each converted tensor's (first, last) scope as TFLM marks it (tflm_arena.lifetimes)."""
    first: dict[int, int] = {t: 0 for t in conv.inputs + conv.outputs}
    last: dict[int, int] = dict(first)
    for i, op in enumerate(conv.ops):
        for t in op.outputs:
            first[t] = i + 1
        for t in (*op.inputs, *op.outputs):
            last[t] = i + 1
    for t in conv.outputs:
        last[t] = len(conv.ops)
    return [(first.get(t, 0), last.get(t, 0)) for t in range(len(conv.tensors))]


def _live_int8(conv: ConvertedGraph, scopes: list[tuple[int, int]], scope: int) -> int:
    """Bytes alive at a scope, every tensor int8 but the float input."""
    return sum(aligned(t.numel * (4 if t.owner is None else 1))
               for t, (a, b) in zip(conv.tensors, scopes, strict=True) if a <= scope <= b)


def _step_scopes(graph: LayerGraph, conv: ConvertedGraph, scopes: list[tuple[int, int]]
                 ) -> list[int]:
    """Per layer-graph step, the scope of its busiest TFLite operator (one byte per element,
    the float input four); a step with no operator of its own (a fused activation, a view)
    keeps the scope before it."""
    def live(scope: int) -> int:
        return _live_int8(conv, scopes, scope)

    by_step: dict[int, list[int]] = {}
    for i, op in enumerate(conv.ops):
        by_step.setdefault(op.step, []).append(i + 1)
    out, current = [], 0
    for s in range(len(graph.steps)):
        if s in by_step:
            current = max(by_step[s], key=live)
        out.append(current)
    return out


def _input_derived(conv: ConvertedGraph) -> set[int]:
    """Tensors made from the model input before the first planned layer's operator."""
    first_layer_op = next((i for i, op in enumerate(conv.ops) if op.layer), len(conv.ops))
    return {t for op in conv.ops[:first_layer_op] for t in op.outputs}


def _integer(cost: OptionCost) -> bool:
    """An option whose layer runs integer kernels in the .tflite (int8 activations)."""
    return cost.int8_activations and not cost.float_output


def _kept_channels(layer_channels: int, cost: OptionCost) -> int:
    """An option's kept output channels (act_bytes is bytes per element x the kept fraction:
    1 per int8 element, else taken as fp32's 4)."""
    return max(1, round(layer_channels * cost.act_bytes / (1.0 if _integer(cost) else 4.0)))


def tflm_terms(graph: LayerGraph, table: CostTable, input_suffix: str) -> TflmTerms:
    """The RAM terms of a TFLM profile; ``input_suffix`` marks an entry charged at the first
    layer's model-input bytes (planner.problem.INPUT_SUFFIX)."""
    build = table.memory.tflm_build or HOST_BUILD
    conv = converted_graph(graph)
    scopes = _scopes(conv)
    at = _step_scopes(graph, conv, scopes)
    derived = _input_derived(conv)
    first_layer = graph.layer_names[0]
    ram_steps: list[tuple[Entry, ...]] = []
    extra: list[dict[tuple[str, str], float]] = []
    arrays = _array_terms(graph, table, conv, build)
    for scope in at:
        entries: list[Entry] = []
        step: dict[tuple[str, str], float] = dict(arrays)
        for t, (tensor, (a, b)) in enumerate(zip(conv.tensors, scopes, strict=True)):
            if not a <= scope <= b:
                continue
            if tensor.owner is None:  # the float model input
                for c in table.options[first_layer]:
                    key = (first_layer, c.option)
                    step[key] = step.get(key, 0.0) + aligned(4 * tensor.numel)
                continue
            owner = tensor.owner + (input_suffix if t in derived else "")
            entries.append((owner, aligned(tensor.numel)))
        ram_steps.append(tuple(entries))
        extra.append(step)
    _prepare_terms(graph, table, conv, scopes, extra, build)
    _scratch_terms(table, conv, extra, build)
    pairs = boundary_terms(graph, table, conv, at)
    fixed = tail_bytes(conv, _no_arrays(conv), build) + _unowned_scratch(conv, build)
    return TflmTerms(float(fixed), tuple(ram_steps), tuple(extra),
                     tuple(tuple(p) for p in pairs))


def _scratch_terms(table: CostTable, conv: ConvertedGraph,
                   extra: list[dict[tuple[str, str], float]], build: TflmBuild) -> None:
    """A layer's kernel scratch (CMSIS-NN: tflm_structs) exists while its operator runs,
    for its integer options: charged at its step on top of the tensors alive there (at full
    input channels: pruning the layer before only shrinks it)."""
    for op in conv.ops:
        scratch = op_scratch_bytes(op, build)
        if op.layer is None or scratch <= 0 or op.step >= len(extra):
            continue
        for c in table.options.get(op.layer, []):
            if _integer(c):
                key = (op.layer, c.option)
                extra[op.step][key] = extra[op.step].get(key, 0.0) + aligned(scratch)


def _unowned_scratch(conv: ConvertedGraph, build: TflmBuild) -> int:
    """The largest scratch of an operator no planned layer owns (a pooling's accumulators):
    held as a constant, as if always alive (a few bytes per channel)."""
    return max((aligned(op_scratch_bytes(op, build)) for op in conv.ops if op.layer is None),
               default=0)


def _prepare_terms(graph: LayerGraph, table: CostTable, conv: ConvertedGraph,
                   scopes: list[tuple[int, int]], extra: list[dict[tuple[str, str], float]],
                   build: TflmBuild) -> None:
    """An integer layer's Prepare holds temporary tensors at the head before the plan exists
    (tflm_arena.prepare_temp_bytes): where they exceed what its own step holds (at int8), the
    excess is charged at that step for its integer options, so the step's RAM covers the
    tail + the temporaries (conservative for wider activations)."""
    for i, op in enumerate(conv.ops):
        if op.layer is None or op.step >= len(extra):
            continue
        live = _live_int8(conv, scopes, i + 1)
        for c in table.options[op.layer]:
            if not _integer(c):
                continue
            kept = _kept_channels(graph.layer(op.layer).out_channels, c)
            excess = prepare_temp_bytes(op, kept, build) - live
            if excess > 0:
                key = (op.layer, c.option)
                extra[op.step][key] = extra[op.step].get(key, 0.0) + excess


def _no_arrays(conv: ConvertedGraph) -> Mapping[str, int]:
    return {op.layer: 0 for op in conv.ops if op.layer is not None}


def _array_terms(graph: LayerGraph, table: CostTable, conv: ConvertedGraph, build: TflmBuild
                 ) -> dict[tuple[str, str], float]:
    """(layer, option) -> its per-channel multiplier and shift arrays, and with Helium a
    fully connected layer's kernel sums (every step: the tail lives as long as the
    interpreter). tail_bytes counts a zero-channel layer's arrays as 2 x 0 B, so the fixed
    part plus these is the tail of the chosen plan."""
    codes = {op.layer: op.code for op in conv.ops if op.layer is not None}
    out: dict[tuple[str, str], float] = {}
    for name in graph.layer_names:
        if name not in codes:
            continue
        channels = graph.layer(name).out_channels
        for c in table.options[name]:
            kept = _kept_channels(channels, c)
            total = per_channel_bytes(kept) if has_arrays(codes[name], _integer(c)) else 0
            if build.kernels == "cmsis-nn" and codes[name] == "FULLY_CONNECTED" and _integer(c):
                total += aligned(fully_connected_persistent_bytes(kept, build.simd))
            if total:
                out[name, c.option] = float(total)
    return out


def boundary_terms(graph: LayerGraph, table: CostTable, conv: ConvertedGraph,
                   at: list[int]) -> list[list[PairCopy]]:
    """Per layer-graph step, the copy ai-edge-quantizer adds where a float layer reads an
    integer layer's codes (tflm_arena._Converter.boundary: DEQUANTIZE's fp32 copy); it exists
    only for that pair of choices (planner.Problem.step_pairs). Charged at the consumer's step
    when that step's scope is the consumer's operator. (An integer layer reading floats reads
    QUANTIZE's int8 copy, smaller than the float source the step charges: not added.)"""
    out: list[list[PairCopy]] = [[] for _ in at]
    producer_of = {t: op for op in conv.ops for t in op.outputs}
    for i, op in enumerate(conv.ops):
        if op.layer is None or op.layer not in table.options:
            continue
        src = op.inputs[0]
        while src in producer_of and producer_of[src].layer is None and \
                producer_of[src].code in ("PAD", "RESHAPE", "TRANSPOSE"):
            src = producer_of[src].inputs[0]  # the layer's own layout ops read the same copy
        owner = conv.tensors[src].owner
        if owner is None or owner == op.layer or owner not in table.options:
            continue
        numel = conv.tensors[src].numel
        ints = tuple(c.option for c in table.options[owner] if _integer(c))
        to_float = tuple(c.option for c in table.options[op.layer] if not _integer(c))
        step = op.step
        if at[step] != i + 1:
            continue
        # the copy is live at the consumer's operator, its source (read by the DEQUANTIZE /
        # QUANTIZE just before) no longer, though the step charges it: net of the source for
        # a DEQUANTIZE (+3 B per element); a QUANTIZE's int8 copy is smaller than the float
        # source the step already charges (a negative pair term would let the solver claim
        # it without the pair), so none
        if ints and to_float:
            out[step].append((owner, ints, op.layer, to_float,
                              float(aligned(4 * numel) - aligned(numel))))
    return out
