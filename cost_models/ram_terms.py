"""Peak-RAM terms beyond each tensor's own buffer, per RAM step of the execution order: the
copies at precision boundaries (DequantizeLinear / QuantizeLinear), the NCHWc reorder copies of
blocked layouts, each option's workspace. Pair terms (a product of two layers' choices) go to
the planner as ``Problem.step_pairs``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TypeVar

from cost_models.graph import LayerGraph, Step, Tensor
from cost_models.runtime_memory import RuntimeMemory
from cost_models.table import CostTable, OptionCost
from device_specs.schema import Profile


def layer_steps(graph: LayerGraph) -> dict[str, int]:
    """Layer name -> index of the step that runs it."""
    out: dict[str, int] = {}
    for i, s in enumerate(graph.steps):
        if s.kind == "layer" and s.owner is not None:
            out.setdefault(s.owner, i)
    return out


def blocked_entries(graph: LayerGraph, memory: RuntimeMemory) -> dict[int, tuple[str, int]]:
    """Step -> (layer, elements) of the blocked-layout buffer a conv writes at that step
    beside its plain output (the runtime pads the channels, then reorders back), sized at
    4 bytes/element in the allocator's grain. Charged at the layer's act_bytes."""
    out = {}
    for name, i in layer_steps(graph).items():
        n = memory.padded_numel(graph.layer(name))
        if n:
            out[i] = (name, round(memory.rounded(4 * n) / 4))
    return out


# activations a runtime fuses into the layer before them (a new node: FusedConv, FusedGemm)
_FUSED_ACTIVATIONS = frozenset({"ReLU", "ReLU6", "Hardtanh"})


def _int8_act(cost: OptionCost) -> bool:
    """An option whose kernel's activations are int8 codes (w8a8, w4a8)."""
    return cost.int8_activations


_Term = tuple[str, tuple[str, ...], str, tuple[str, ...], float]
_K = TypeVar("_K")


def boundary_terms(graph: LayerGraph, table: CostTable) -> list[list[_Term]]:
    """Per step, the precision-boundary copies as (producer, its options, consumer, its
    options, bytes): a layer reading an int8 layer's codes with a float kernel reads
    DequantizeLinear's fp32 copy of them; an int8 layer reading a float tensor reads
    QuantizeLinear's int8 copy. Both are live at the consumer's step beside the tensor the
    RAM steps charge at its producer's precision. A product of two layers' choices:
    planner.Problem.step_pairs. Needs a QDQ runtime (Profile.qdq_fp32_boundaries: edgefit's
    export quantises inside the graph) with the int8 memory probe (Profile.int8_conv_paths)."""
    mem = table.memory
    terms: list[list[_Term]] = [[] for _ in graph.steps]
    if mem.int8_conv_paths is None or not mem.fp32_input:
        return terms
    for t, consumer, producer, tensor in _layer_reads(graph, table):
        ints = tuple(c.option for c in table.options[consumer] if _int8_act(c))
        floats = tuple(c.option for c in table.options[consumer] if not _int8_act(c))
        sized = []
        for c in table.options[producer]:
            int8 = _int8_act(c) and not c.float_output  # its tensor holds codes
            elements = tensor.numel * c.act_bytes / (1.0 if int8 else 4.0)
            sized.append(((mem.rounded(4 * elements) if int8 else mem.rounded(elements), int8),
                          c.option))
        for (copy, int8), options in _grouped(sized).items():
            readers = floats if int8 else ints
            if copy and readers:
                terms[t].append((producer, options, consumer, readers, copy))
    if mem.channel_block > 1:
        _reordered_outputs(graph, table, terms)
        _reordered_inputs(graph, table, terms)
    return terms


def _layer_reads(graph: LayerGraph, table: CostTable
                 ) -> Iterator[tuple[int, str, str, Tensor]]:
    """(step, consumer, producer, tensor) for every tensor a planned layer reads that another
    planned layer's option sets the type of."""
    for t, step in enumerate(graph.steps):
        consumer = step.owner
        if step.kind != "layer" or consumer is None or consumer not in table.options:
            continue
        for name in dict.fromkeys(step.inputs):
            tensor = graph.tensors.get(name)
            producer = tensor.owner if tensor is not None else None
            if tensor is not None and producer is not None and producer != consumer \
                    and producer in table.options:
                yield t, consumer, producer, tensor


def _grouped(keyed: Iterable[tuple[_K, str]]) -> dict[_K, tuple[str, ...]]:
    """Options grouped by what they cost (one pair term per group), in first-seen order."""
    out: dict[_K, list[str]] = {}
    for key, option in keyed:
        out.setdefault(key, []).append(option)
    return {key: tuple(options) for key, options in out.items()}


def _step_after(graph: LayerGraph, at: Mapping[str, int], layer: str) -> int:
    """The step right after a layer's when it is a view of the layer's output (its fused
    activation: the layer's input is freed by then), else the layer's own step."""
    p = at[layer]
    nxt = graph.steps[p + 1] if p + 1 < len(graph.steps) else None
    return p + 1 if nxt is not None and nxt.kind == "alias" and \
        graph.steps[p].output in nxt.inputs else p


_BLOCKED_CLASSES = ("conv", "pointwise", "depthwise")


def _reordered_outputs(graph: LayerGraph, table: CostTable, terms: list[list[_Term]]) -> None:
    """A float conv running in the blocked layout (NCHWc) whose output an int8 layer reads:
    the int8 kernel cannot read NCHWc, so a ReorderOutput writes the plain NCHW copy while the
    blocked buffer is still held (between the two, after the conv's input is freed: charged
    at the step after the conv when that step is a view of its output, else at the conv)."""
    at = layer_steps(graph)
    for _, consumer, producer, tensor in _layer_reads(graph, table):
        ints = tuple(c.option for c in table.options[consumer] if _int8_act(c))
        if not ints or producer not in at or \
                graph.layer(producer).op_class not in _BLOCKED_CLASSES:
            continue
        sized = [(table.memory.rounded(tensor.numel * c.act_bytes), c.option)
                 for c in table.options[producer] if c.blocked]
        for copy, options in _grouped(sized).items():
            terms[_step_after(graph, at, producer)].append(
                (producer, options, consumer, ints, copy))


def _reordered_inputs(graph: LayerGraph, table: CostTable, terms: list[list[_Term]]) -> None:
    """An int8 conv whose tensor reaches a float conv through ops (a pool): onnxruntime
    dequantises right after the int8 conv's activation and runs the ops in float, in the
    blocked layout, so a ReorderInput writes a blocked copy of the int8 conv's whole output
    beside its fp32 copy (charged at the step after the int8 conv when that step is a view of
    its output, like the fp32 copy of its ReLU)."""
    at = layer_steps(graph)
    produced_by = {st.output: st for st in graph.steps}
    for _, consumer, producer, tensor in _layer_reads(graph, table):
        floats = tuple(c.option for c in table.options[consumer]
                       if c.blocked and not _int8_act(c))
        if not floats or producer not in at or \
                graph.layer(consumer).op_class not in _BLOCKED_CLASSES or \
                graph.layer(producer).op_class not in _BLOCKED_CLASSES or \
                not _through_ops(tensor.name, produced_by):
            continue
        out = graph.tensors[graph.steps[at[producer]].output]
        sized = [(table.memory.rounded(4 * out.numel * c.act_bytes), c.option)
                 for c in table.options[producer] if _int8_act(c) and not c.float_output]
        for copy, options in _grouped(sized).items():
            terms[_step_after(graph, at, producer)].append(
                (producer, options, consumer, floats, copy))


def _through_ops(tensor: str, produced_by: Mapping[str, Step]) -> bool:
    """Whether an op step (not only views) lies between the tensor and the layer it is from."""
    step = produced_by.get(tensor)
    while step is not None and step.kind != "layer":
        if step.kind == "op":
            return True
        step = produced_by.get(step.inputs[0]) if step.inputs else None
    return False


def boundary_copies(graph: LayerGraph, table: CostTable, picks: Mapping[str, str]
                    ) -> list[float]:
    """Per step, the bytes of the boundary copies (boundary_terms) a full plan holds."""
    return [sum(nbytes for a, ao, b, bo, nbytes in step if picks[a] in ao and picks[b] in bo)
            for step in boundary_terms(graph, table)]


def _float_activation_copies(graph: LayerGraph, table: CostTable,
                             steps: list[dict[tuple[str, str], float]]) -> None:
    """A ReLU / ReLU6 after an int8 (w8a8) layer runs in float between DequantizeLinear and
    QuantizeLinear (symmetric activation codes cannot fold the clip; techniques.onnx.int8):
    the fp32 copy of the layer's output is live beside its int8 codes at that step. Needs the
    runtime-memory probe (Profile.int8_conv_paths), like the kernel scratch."""
    mem = table.memory
    if mem.int8_conv_paths is None:
        return
    for t, step in enumerate(graph.steps):
        if step.op not in _FUSED_ACTIVATIONS or not step.inputs:
            continue
        source = graph.tensors.get(step.inputs[0])
        if source is None or source.owner is None or source.owner not in table.options:
            continue
        for c in table.options[source.owner]:
            if _int8_act(c) and c.act_bytes and not c.float_output:
                key = (source.owner, c.option)
                steps[t][key] = steps[t].get(key, 0.0) + mem.rounded(4 * source.numel
                                                                     * c.act_bytes)


def _copy_from_start(graph: LayerGraph, step: int, memory: RuntimeMemory) -> bool:
    """Whether a layer's weight-only DequantizeLinear runs at the start of the run.

    onnxruntime orders nodes by a reverse DFS from the outputs that visits a node's inputs
    highest node index first. The export puts each DequantizeLinear just before its layer,
    after the layer's input producer, so the DFS reaches it first -- at the very start --
    unless that producer is a node an optimiser created later (higher index): a layer with
    its activation fused, or a max-pool moved to the blocked layout (a new Reorder node)."""
    producer = {s.output: s for s in graph.steps}
    tensor, fused = graph.steps[step].inputs[0], False
    while (s := producer.get(tensor)) is not None:
        if s.kind == "alias" and s.op in _FUSED_ACTIVATIONS | {"Identity"}:
            fused = fused or s.op != "Identity"
        elif s.kind == "layer":
            return not fused
        elif s.kind == "op" and s.op == "MaxPool2d" and memory.channel_block > 1:
            return not _from_aligned_layer(graph, s, memory.channel_block, producer)
        else:
            return True  # any other node (reshape, add, reduce) keeps its place
        tensor = s.inputs[0]
    return True  # the graph input


def _from_aligned_layer(graph: LayerGraph, step: Step, block: int,
                        producer: dict[str, Step]) -> bool:
    """Whether the layer feeding `step` has a multiple of `block` output channels."""
    s: Step | None = step
    while s is not None and s.kind != "layer":
        s = producer.get(s.inputs[0]) if s.inputs else None
    return s is not None and s.owner is not None and graph.layer(s.owner).out_channels % block == 0


def option_workspace(graph: LayerGraph, table: CostTable) -> list[dict[tuple[str, str], float]]:
    """Per step, bytes each (layer, option) adds beyond the live tensors of the RAM steps:
    one constant per option and step, so linear in the solver's choice variables (the
    planner.Problem RAM steps have no such term yet). Terms, from table.memory:
    * a weight dequantised every run: its fp32 copy, live until its layer has run, from the
      run's start when the runtime schedules the DequantizeLinear first (_copy_from_start);
    * that layer's conv, outside the blocked layout: the conv working buffer while it runs,
      and minus the blocked buffer the RAM steps charge every option of the layer;
    * an int8 layer's kernel scratch while it runs (OptionCost.kernel_scratch_bytes);
    * an int8 layer's clipping activation, run in float (_float_activation_copies)."""
    mem = table.memory
    steps: list[dict[tuple[str, str], float]] = [{} for _ in graph.steps]
    _float_activation_copies(graph, table, steps)
    blocked = {name: (i, n) for i, (name, n) in blocked_entries(graph, mem).items()}
    for name, i in layer_steps(graph).items():
        layer = graph.layer(name)
        for c in table.options[name]:
            if c.dequantized_weight_numel:
                copy = mem.rounded(4 * c.dequantized_weight_numel)
                for t in range(0 if _copy_from_start(graph, i, mem) else i, i + 1):
                    steps[t][name, c.option] = copy
                if layer.op_class in ("conv", "depthwise"):
                    steps[i][name, c.option] += mem.conv_workspace_bytes
            if c.kernel_scratch_bytes:
                steps[i][name, c.option] = (steps[i].get((name, c.option), 0.0)
                                            + c.kernel_scratch_bytes)
            if name in blocked and not c.blocked:
                key = (name, c.option)
                steps[i][key] = steps[i].get(key, 0.0) - blocked[name][1] * c.act_bytes
    return steps


def _memory_provenance(profile: Profile) -> str:
    """The runtime-memory fields the RAM steps apply ("" when the profile sets none)."""
    fields = [("activation_channel_block", "channel block"), ("arena_round_bytes", "grain B"),
              ("outputs_outside_plan", "outputs beside the plan"),
              ("qdq_fp32_boundaries", "fp32 model input")]
    used = [f"{label}{'' if isinstance(q.value, bool) else f' {q.value:g}'} ({q.provenance})"
            for name, label in fields if (q := getattr(profile, name)) is not None
            and q.value is not False]
    if (paths := profile.int8_conv_paths) is not None:
        used.append("int8 kernel scratch by path (symmetric conv: input channels a multiple of "
                    f"{paths.input_channel_multiple.value:g}, >= "
                    f"{paths.min_output_channels.value:g} outputs in steps of "
                    f"{paths.output_channel_multiple.value:g}; depthwise: "
                    f"channels a multiple of {paths.depthwise_channel_multiple.value:g}; "
                    f"{paths.input_channel_multiple.provenance}), the fp32 copy a ReLU after an "
                    "int8 layer runs on, and precision-boundary copies between int8 and float "
                    "layers")
    if (mm := profile.weight_only_matmul_scratch) is not None:
        used.append("a weight-only Linear's fused-kernel scratch: align(rows x ceil(K / "
                    f"{mm.k_block.value:g}) x {mm.block_bytes.value:g} B, "
                    f"{mm.align_bytes.value:g} B) + {mm.extra_bytes.value:g} B "
                    f"({mm.k_block.provenance})")
    if profile.tflite is not None and profile.tflite.micro:
        kernels = profile.tflite.micro_kernels or "reference"
        used.append("TFLite Micro's arena (cost_models.tflm_ram): the tensors of the converted "
                    ".tflite graph per step in 16-byte units, the persistent tail (per tensor, "
                    "operator and op data: measured with tflite-micro 0.dev20261023182759 on "
                    "x86-64, laid out for the board's pointer width from TFLM's structs: "
                    "derived), each integer option's per-channel arrays, "
                    + ("each integer layer's CMSIS-NN scratch (its get_buffer_size functions "
                       "for the core's DSP / Helium: derived, not measured)"
                       if kernels == "cmsis-nn" else f"no kernel scratch ({kernels} kernels"
                       + (": ESP-NN's not modelled)" if kernels == "esp-nn" else ")"))
                    + "; TFLM's greedy fragmentation is not in the solver (apply prints the "
                    "arena model with it)")
    return "; runtime layout: " + "; ".join(used) if used else ""
