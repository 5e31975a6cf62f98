"""Analytical per-layer x per-option costs for one device profile.

latency = per-layer overhead + max(compute, memory) (a roofline per layer), with the constants
taken from the device spec (each carries its provenance, which the table repeats). Flash is the
bytes the packed image stores (executors.quant_math defines the formats), energy = board power
during inference x latency.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cost_models.channels import LayerCoupling
from cost_models.graph import Layer, LayerGraph, Step, Tensor
from cost_models.options import (
    RANK_LEVELS,
    SHARE_LEVELS,
    OptionSpec,
    option_specs,
    pruned_weight_shape,
)
from device_specs.schema import BITS, DeviceSpec, Kernel, Profile
from edgefit_common.units import fmt_rate
from executors.flash_image import entry_bytes
from executors.quant_math import (
    SCALE_BYTES,
    int_format,
    packed_bytes,
    stored_bias_bytes,
    stored_weight_bytes,
)


@dataclass(frozen=True)
class OptionCost:
    option: str
    latency_ms: float
    flash_bytes: int  # weights + scales + bias as stored
    energy_mj: float
    act_bytes: float  # bytes per activation element of tensors this layer owns (x kept
    # fraction of its output channels)
    acc_loss: float  # from the accuracy estimator (see CostTable.accuracy)
    widths: tuple[tuple[str, int], ...] = ()  # channel groups' kept widths (OptionSpec.widths)
    in_act_bytes: float | None = None  # bytes per element of the model input it may own
    mac_fraction: float = 1.0  # kept fraction of the layer's MACs (channel pruning)
    base: str = ""  # the full-width option of the same kernel ("" = itself)
    # runtime memory (CostTable.memory): weights dequantised to fp32 every run, and whether
    # the kernel runs in the blocked activation layout
    dequantized_weight_numel: int = 0
    blocked: bool = False
    kernel_scratch_bytes: float = 0.0  # the integer kernel's buffers while the layer runs
    # a full-width storage technique runs its kernel (dense zeros, weights decoded at load) or
    # a factorised form of it: latency = latency_of's x latency_ratio (the model's ratio), so a
    # measured kernel latency carries over (edgefit.planning.derived_latency)
    latency_of: str = ""
    latency_ratio: float = 1.0
    # an int8 layer whose consumers read an fp32 tensor (DequantizeLinear + its bias added in
    # float: int8_float_output), so act_bytes is 4 and its codes are kernel scratch
    float_output: bool = False
    # the kernel's activations are int8 codes (Kernel.activations; never read from a name)
    int8_activations: bool = False


@dataclass(frozen=True)
class RuntimeMemory:
    """The profile's activation-memory behaviour (Profile.activation_channel_block ...) as
    plain numbers. The defaults are a runtime holding exactly one buffer per live tensor."""

    channel_block: int = 1
    round_bytes: int = 1
    outputs_outside_plan: bool = False
    exact_shape_reuse: bool = False  # Profile.exact_shape_buffer_reuse (LayerGraph.held_tensors)
    fp32_input: bool = False
    dequantized_weight_copies: bool = False
    conv_workspace_bytes: int = 0
    # Profile.int8_conv_paths: (input multiple, min outputs, output multiple, depthwise
    # multiple, pointer bytes); None: integer kernel scratch is not modelled
    int8_conv_paths: tuple[int, int, int, int, int] | None = None
    # Profile.weight_only_matmul_scratch: (k_block, block_bytes, align_bytes, extra_bytes)
    matmul_scratch: tuple[int, int, int, int] | None = None

    @classmethod
    def of_profile(cls, profile: Profile) -> RuntimeMemory:
        def flag(f: Any) -> bool:
            return bool(f is not None and f.value)

        return cls(
            channel_block=int(profile.activation_channel_block.value)
            if profile.activation_channel_block else 1,
            round_bytes=int(profile.arena_round_bytes.value) if profile.arena_round_bytes else 1,
            outputs_outside_plan=flag(profile.outputs_outside_plan),
            exact_shape_reuse=flag(profile.exact_shape_buffer_reuse),
            fp32_input=flag(profile.qdq_fp32_boundaries),
            dequantized_weight_copies=flag(profile.dequantized_weight_copies),
            conv_workspace_bytes=int(profile.conv_workspace_bytes.value)
            if profile.conv_workspace_bytes else 0,
            int8_conv_paths=_int8_paths(profile),
            matmul_scratch=_matmul_scratch(profile))

    def rounded(self, nbytes: float) -> float:
        """Bytes the runtime's allocator really takes for a buffer of nbytes."""
        return -(-nbytes // self.round_bytes) * self.round_bytes if nbytes > 0 else 0.0

    def padded_numel(self, layer: Layer) -> int:
        """Elements of a conv's output in the blocked layout (0: none, channels already fit)."""
        c, b = layer.out_channels, self.channel_block
        if b <= 1 or layer.op_class not in ("conv", "pointwise") or c % b == 0 or c == 0:
            return 0
        return -(-c // b) * b * (layer.output_numel // c)


def _int8_paths(profile: Profile) -> tuple[int, int, int, int, int] | None:
    p = profile.int8_conv_paths
    if p is None:
        return None
    return (int(p.input_channel_multiple.value), int(p.min_output_channels.value),
            int(p.output_channel_multiple.value), int(p.depthwise_channel_multiple.value),
            int(p.pointer_bytes.value))


def _matmul_scratch(profile: Profile) -> tuple[int, int, int, int] | None:
    p = profile.weight_only_matmul_scratch
    if p is None:
        return None
    return (int(p.k_block.value), int(p.block_bytes.value), int(p.align_bytes.value),
            int(p.extra_bytes.value))


def kernel_scratch_bytes(layer: Layer, kernel: Kernel, memory: RuntimeMemory,
                         out_fraction: float = 1.0, in_fraction: float = 1.0) -> float:
    """What a layer's kernel allocates beside its output while it runs: an int8 layer's
    (int8_scratch_bytes) or a weight-only Linear's fused kernel's (matmul_scratch_bytes)."""
    return (int8_scratch_bytes(layer, kernel, memory, out_fraction, in_fraction)
            + matmul_scratch_bytes(layer, kernel, memory, in_fraction))


def int8_float_output(layer: Layer, kernel: Kernel, memory: RuntimeMemory) -> bool:
    """An int8 Linear over token rows is written as QLinearMatMul, which has no bias input
    (executors.onnx_quant): DequantizeLinear turns its codes to fp32 and the bias is added in
    float, so what its consumers read is an fp32 tensor. (A Linear on one row is a Gemm,
    which onnxruntime fuses into QGemm, bias inside: its consumers read codes.) On a QDQ
    runtime with the int8 memory probe (Profile.qdq_fp32_boundaries, int8_conv_paths)."""
    rows = layer.output_numel // max(1, layer.out_channels)
    return (memory.int8_conv_paths is not None and memory.fp32_input
            and kernel.activations == "int8" and layer.op_type == "Linear" and rows > 1)


def matmul_scratch_bytes(layer: Layer, kernel: Kernel, memory: RuntimeMemory,
                         in_fraction: float = 1.0) -> float:
    """A weight-only integer Linear (written as MatMul, fused with its DequantizeLinear into
    onnxruntime's MatMulNBits) quantises its activations in blocks while it runs
    (Profile.weight_only_matmul_scratch), in the allocator's grain."""
    p = memory.matmul_scratch
    if p is None or layer.op_class != "linear" or len(layer.weight_shape) != 2 or not (
            _dequantized(kernel) and kernel.activations == "fp32"):
        return 0.0
    k_block, block_bytes, align, extra = p
    rows = max(1, layer.output_numel // max(1, layer.out_channels))
    k = max(1, round(layer.weight_shape[1] * in_fraction))
    quantized = rows * -(-k // k_block) * block_bytes
    return memory.rounded(-(-quantized // align) * align + extra)


def int8_scratch_bytes(layer: Layer, kernel: Kernel, memory: RuntimeMemory,
                       out_fraction: float = 1.0, in_fraction: float = 1.0) -> float:
    """Scratch an int8 (w8a8) layer's kernel allocates while it runs, in the allocator's grain.

    onnxruntime (qlinearconv.cc, channels-last QLinearConv): the symmetric kernel
    (Profile.int8_conv_paths) takes an indirection buffer, one pointer per tap and output
    pixel (none for a pointwise conv); the other path an int32 accumulator per output element
    plus a u8 im2col buffer (taps x input channels per pixel; none for a pointwise conv). A
    Linear's QGemm / QLinearMatMul accumulates every output in int32 first."""
    paths = memory.int8_conv_paths
    if paths is None or not (kernel.weights == "int8" and kernel.activations == "int8"):
        return 0.0
    cout = max(1, round(layer.out_channels * out_fraction))
    out_numel = layer.output_numel * out_fraction
    if layer.op_class == "linear":
        return memory.rounded(4 * out_numel)
    if layer.op_class not in ("conv", "pointwise", "depthwise") or len(layer.weight_shape) != 4:
        return 0.0
    in_mult, min_out, out_mult, dw_mult, ptr = paths
    taps = layer.weight_shape[2] * layer.weight_shape[3]
    pixels = layer.output_numel // max(1, layer.out_channels)
    if layer.op_class == "depthwise":
        symmetric, cin = cout % dw_mult == 0, 1
    else:
        cin = max(1, round(layer.weight_shape[1] * in_fraction))
        symmetric = cin % in_mult == 0 and cout >= min_out and cout % out_mult == 0
    gather = 0.0 if taps == 1 and layer.op_class != "depthwise" else (
        ptr * taps * pixels if symmetric or layer.op_class == "depthwise" else cin * taps * pixels)
    accumulator = 0.0 if symmetric else 4 * out_numel
    return memory.rounded(gather) + memory.rounded(accumulator)


def _dequantized(kernel: Kernel) -> bool:
    """Integer weights feeding a float kernel go through DequantizeLinear at run time."""
    return kernel.weights.startswith("int") and kernel.activations in ("fp32", "fp16")


def _copies_weight(layer: Layer) -> bool:
    """Whether a dequantised weight is materialised: a conv takes the fp32 copy; a Linear is
    written as MatMul (executors.onnx_quant), which onnxruntime fuses with its
    DequantizeLinear into MatMulNBits (reads the packed codes directly)."""
    return layer.op_class != "linear"


@dataclass
class CostTable:
    device: str
    profile: str
    options: dict[str, list[OptionCost]]  # layer name -> its options, in kernel order
    runtime_flash_bytes: int
    runtime_ram_bytes: int
    run_overhead_ms: float  # per inference, added once to the total latency
    power_w: float  # power that scales with latency (active, or active - idle with a period)
    weights_in_ram: bool
    idle_energy_mj: float = 0.0  # P_idle x period, when a duty cycle is given
    provenance: dict[str, str] = field(default_factory=dict)
    accuracy: str = "none"  # which estimator produced acc_loss, and its unit
    memory: RuntimeMemory = field(default_factory=RuntimeMemory)

    def cost(self, layer: str, option: str) -> OptionCost:
        for c in self.options[layer]:
            if c.option == option:
                return c
        raise KeyError(f"{layer}: no option {option!r}")


def activation_bytes(kernel: Kernel) -> int:
    return max(1, BITS[kernel.activations] // 8)


def layer_flash_bytes(layer: Layer, kernel: Kernel) -> int:
    """The layer's blobs in the flash image: weights (+ scales, zero points) and bias."""
    return stored_weight_bytes(kernel.storage, layer.weight_numel, layer.out_channels) + (
        stored_bias_bytes(kernel.storage, layer.bias_numel)
    )


def image_entry_bytes(layer: Layer, kernel: Kernel) -> int:
    """The layer's entry in the flash image's header (exact: the writer builds the same
    entry); 0 for a layer without a recorded weight shape (no image is predicted)."""
    if not layer.weight_shape:
        return 0
    storage = kernel.storage
    fmt = int_format(storage)
    scale_bytes = SCALE_BYTES * layer.out_channels if fmt else 0
    zp_bytes = packed_bytes(layer.out_channels, fmt[0]) if fmt and not fmt[1] else 0
    weight_bytes = stored_weight_bytes(storage, layer.weight_numel, layer.out_channels)
    blobs = {"weight": weight_bytes - scale_bytes - zp_bytes}
    if scale_bytes:
        blobs["scales"] = scale_bytes
    if zp_bytes:
        blobs["zero_points"] = zp_bytes
    if layer.bias_numel:
        blobs["bias"] = stored_bias_bytes(storage, layer.bias_numel)
    return entry_bytes(layer.name, storage, layer.weight_shape, blobs)


def layer_latency_ms(layer: Layer, kernel: Kernel, profile: Profile, flash_bytes: int,
                     charged_ops: list[tuple[Step, int]]) -> float:
    """Roofline for the layer plus the elementwise/pool steps charged to it.

    charged_ops: (step, elements read + written) for non-fused ops that run in this layer's
    element type, e.g. max-pooling after the conv.
    """
    act_b = activation_bytes(kernel)
    efficiency = kernel.op_efficiency[layer.op_class].value if (
        layer.op_class in kernel.op_efficiency) else 1.0
    compute_s = layer.macs / (kernel.macs_per_s.value * efficiency)
    moved_bytes = flash_bytes + act_b * (layer.input_numel + layer.output_numel)
    memory_s = moved_bytes / profile.memory_bandwidth.value
    layer_ms = profile.layer_overhead.value + 1e3 * max(compute_s, memory_s)
    ops_ms = sum(
        profile.layer_overhead.value + 1e3 * act_b * elems / profile.memory_bandwidth.value
        for _, elems in charged_ops
    )
    return layer_ms + ops_ms


GATHER_ACT_BYTES = 4  # a gather decodes its rows to float32, whatever the table stores


def gather_latency_ms(layer: Layer, kernel: Kernel, profile: Profile,
                      charged_ops: list[tuple[Step, int]]) -> float:
    """An embedding lookup: no MACs; one table row read per index at the stored width (with
    its scale and zero point), the indices read and the float32 rows written, at the memory
    bandwidth, plus one layer overhead. Decoding the codes is not modelled (a few ops on the
    rows read). The ops charged to the layer move float32 elements."""
    rows = max(layer.out_channels, 1)
    row_bytes = stored_weight_bytes(kernel.storage, layer.weight_numel, layer.out_channels) / rows
    moved = layer.input_numel * row_bytes + GATHER_ACT_BYTES * (layer.input_numel
                                                                + layer.output_numel)
    bandwidth = profile.memory_bandwidth.value
    return (profile.layer_overhead.value + 1e3 * moved / bandwidth
            + sum(profile.layer_overhead.value + 1e3 * GATHER_ACT_BYTES * elems / bandwidth
                  for _, elems in charged_ops))


def nm_latency_ms(layer: Layer, kernel: Kernel, profile: Profile, sparse_flash_bytes: int,
                  charged_ops: list[tuple[Step, int]]) -> float:
    """An N:M sparse kernel: the MACs at the profile's sparse rate (``nm_sparsity.mac_speedup``
    x the dense rate), the compressed weights moved."""
    assert profile.nm_sparsity is not None
    speedup = profile.nm_sparsity.mac_speedup.value
    sparse = dataclasses.replace(layer, macs=round(layer.macs / speedup))
    return layer_latency_ms(sparse, kernel, profile, sparse_flash_bytes, charged_ops)


def factor_layers(layer: Layer, factors: Sequence[Mapping[str, Any]]) -> list[Layer]:
    """The factors of a factorised layer (``executors.lowrank.lowrank_cost_delta``'s
    ``factors``) as layers of their own, named ``<layer>.<suffix>`` like the ONNX nodes."""
    return [Layer(name=f"{layer.name}.{f['suffix']}", op_type=f["op_type"],
                  op_class=f["op_class"], params=f["weight_numel"] + f["bias_numel"],
                  weight_numel=f["weight_numel"], bias_numel=f["bias_numel"],
                  out_channels=f["out_channels"], macs=f["macs"], input_numel=f["input_numel"],
                  output_numel=f["output_numel"],
                  weight_shape=tuple(int(d) for d in f["weight_shape"])) for f in factors]


def factored_costs(factors: Sequence[Layer], kernel: Kernel, profile: Profile,
                   charged_ops: list[tuple[Step, int]]) -> tuple[int, float]:
    """(flash_bytes, latency_ms) of a factorised layer: every factor is a dense layer of its
    own (its own roofline and per-layer overhead); the ops charged to the layer run after the
    last factor."""
    flash = [layer_flash_bytes(f, kernel) for f in factors]
    latency = sum(layer_latency_ms(f, kernel, profile, b, charged_ops if i == len(factors) - 1
                                   else []) for i, (f, b) in enumerate(zip(factors, flash,
                                                                              strict=True)))
    return sum(flash) + sum(image_entry_bytes(f, kernel) for f in factors), latency


def pruned_layer(layer: Layer, opt: OptionSpec) -> Layer:
    """The layer's geometry with its channel groups at the option's widths: weights and MACs
    x kept out x kept in (a depthwise conv: x kept once), outputs x kept out. Exact counts:
    kept channels are integers and every weight belongs to one (out, in) channel pair."""
    return dataclasses.replace(
        layer,
        weight_shape=pruned_weight_shape(layer.weight_shape, opt.out_fraction,
                                         opt.weight_fraction),
        params=round(layer.weight_numel * opt.weight_fraction
                     + layer.bias_numel * opt.out_fraction),
        weight_numel=round(layer.weight_numel * opt.weight_fraction),
        bias_numel=round(layer.bias_numel * opt.out_fraction),
        out_channels=round(layer.out_channels * opt.out_fraction),
        macs=round(layer.macs * opt.weight_fraction),
        input_numel=round(layer.input_numel * opt.in_fraction),
        output_numel=round(layer.output_numel * opt.out_fraction))


def option_costs(layer: Layer, opt: OptionSpec, kernel: Kernel, profile: Profile,
                 charged_ops: list[tuple[Step, int]], stored_bytes: int | None = None,
                 factors: Sequence[Layer] | None = None) -> tuple[int, float]:
    """(flash_bytes, latency_ms) of one option. Channel pruning first: the layer's geometry at
    the option's widths (its charged ops, pooling after it, move the kept fraction of their
    elements); on that geometry the storage technique. stored_bytes: the exact size of a sparse
    or weight-shared option (from the weights); factors: a low-rank option's factor layers.
    Dense kernels compute the zeros and decode shared weights at load time: their latency is
    the dense layer's."""
    geom = pruned_layer(layer, opt) if opt.weight_fraction < 1.0 else layer
    ops = ([(step, round(n * opt.out_fraction)) for step, n in charged_ops]
           if opt.out_fraction < 1.0 else charged_ops)
    if factors is not None:
        return factored_costs(factors, kernel, profile, ops)
    dense_flash = layer_flash_bytes(geom, kernel)
    flash = (stored_bytes if stored_bytes is not None
             else dense_flash + image_entry_bytes(geom, kernel))
    if opt.gather:
        return flash, gather_latency_ms(geom, kernel, profile, ops)
    if opt.nm is not None and profile.nm_sparsity is not None:
        return flash, nm_latency_ms(geom, kernel, profile, flash, ops)
    return flash, layer_latency_ms(geom, kernel, profile, dense_flash, ops)


def _charged_ops(graph: LayerGraph) -> dict[str, list[tuple[Step, int]]]:
    out: dict[str, list[tuple[Step, int]]] = {name: [] for name in graph.layer_names}
    for s in graph.steps:
        if s.kind == "op" and s.owner is not None:
            elems = graph.tensors[s.output].numel + sum(graph.tensors[t].numel for t in s.inputs)
            out[s.owner].append((s, elems))
    return out


def build_cost_table(graph: LayerGraph, spec: DeviceSpec, profile_name: str | None = None,
                     acc_loss: Mapping[tuple[str, str], float] | None = None,
                     accuracy: str = "none",
                     sparse_flash: Mapping[tuple[str, str], int] | None = None,
                     period_ms: float | None = None,
                     factored: Mapping[tuple[str, str], Sequence[Layer]] | None = None,
                     coupling: Mapping[str, LayerCoupling] | None = None) -> CostTable:
    """sparse_flash: exact stored bytes of each (layer, sparse or weight-shared option),
    computed from the weights; such options without an entry are not offered (e.g. ONNX-only
    models). A shared layer runs its kernel's dense latency (decoded at load time).

    factored: the factor layers (:func:`factor_layers`) of each (layer, low-rank option);
    low-rank options without an entry are not offered. Their flash is the factors' dense
    bytes (exact from the shapes), their latency the factors' rooflines (fewer MACs).

    period_ms: time between inferences (duty cycle). Energy per inference is then
    E = P_idle x period + (P_active - P_idle) x latency: each layer carries the second term and
    the idle floor is a constant (`idle_energy_mj`). Without it, inferences run back to back
    (period = latency) and E = P_active x latency."""
    profile_name = profile_name or spec.default_profile
    profile = spec.profile(profile_name)
    power_w = (profile.power_active or spec.power_active).value
    charged = _charged_ops(graph)
    idle_w = spec.power_idle.value
    layer_power_w = power_w - idle_w if period_ms else power_w
    options: dict[str, list[OptionCost]] = {}
    memory = RuntimeMemory.of_profile(profile)
    for layer in graph.layers:
        row = []
        for opt in option_specs(profile.kernels, layer, rank_levels=RANK_LEVELS,
                                coupling=(coupling or {}).get(layer.name),
                                share_levels=SHARE_LEVELS, nm_sparsity=profile.nm_sparsity):
            kernel = profile.kernels[opt.kernel]
            if (opt.sparsity or opt.share_bits) and (layer.name, opt.name) not in (
                    sparse_flash or {}):
                continue  # sparse and shared sizes come from the real weights
            if opt.lowrank and (layer.name, opt.name) not in (factored or {}):
                continue
            flash, latency = option_costs(layer, opt, kernel, profile, charged[layer.name],
                                          (sparse_flash or {}).get((layer.name, opt.name)),
                                          (factored or {}).get((layer.name, opt.name)))
            float_out = not opt.gather and int8_float_output(layer, kernel, memory)
            row.append(OptionCost(
                option=opt.name,
                latency_ms=latency,
                flash_bytes=flash,
                energy_mj=layer_power_w * latency,  # W x ms = mJ
                act_bytes=(GATHER_ACT_BYTES if opt.gather else
                           (4 if float_out else activation_bytes(kernel)) * opt.out_fraction),
                acc_loss=(acc_loss or {}).get((layer.name, opt.name), 0.0),
                widths=opt.widths,
                # the input is quantised inside the graph: the caller's buffer stays fp32
                # (a gather's indices are read as the caller gives them: float32)
                in_act_bytes=4 if memory.fp32_input or opt.gather else activation_bytes(kernel),
                mac_fraction=opt.weight_fraction, base=opt.base,
                dequantized_weight_numel=round(layer.weight_numel * opt.weight_fraction)
                if memory.dequantized_weight_copies and _dequantized(kernel)
                and _copies_weight(layer) and not opt.gather else 0,
                blocked=memory.channel_block > 1 and kernel.activations in ("fp32", "fp16")
                and not _dequantized(kernel) and not opt.gather,
                kernel_scratch_bytes=0.0 if opt.gather else kernel_scratch_bytes(
                    layer, kernel, memory, opt.out_fraction, opt.in_fraction)
                + (memory.rounded(layer.output_numel * opt.out_fraction) if float_out else 0.0),
                float_output=float_out,
                int8_activations=kernel.activations == "int8",
                latency_of=opt.kernel if opt.name != opt.kernel and opt.weight_fraction >= 1.0
                and not opt.gather else "",
            ))
        options[layer.name] = _with_latency_of(row)
    return CostTable(
        device=spec.name,
        profile=profile_name,
        options=options,
        runtime_flash_bytes=int(profile.runtime_flash.value),
        run_overhead_ms=profile.run_overhead.value if profile.run_overhead else 0.0,
        power_w=layer_power_w,
        idle_energy_mj=idle_w * period_ms if period_ms else 0.0,
        runtime_ram_bytes=int(profile.runtime_ram.value),
        weights_in_ram=profile.weights_in_ram,
        provenance=_provenance(spec, profile, profile_name, period_ms),
        accuracy=accuracy,
        memory=memory,
    )


def _with_latency_of(row: list[OptionCost]) -> list[OptionCost]:
    """Full-width technique options ("int8+s50", "fp32+k4", "int8+r50") name the kernel option
    they run ("int8", "fp32") and their latency's ratio to it."""
    plain = {c.option: c.latency_ms for c in row}
    return [dataclasses.replace(c, latency_ratio=c.latency_ms / plain[c.latency_of])
            if plain.get(c.latency_of) else dataclasses.replace(c, latency_of="") for c in row]


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
    QuantizeLinear (symmetric activation codes cannot fold the clip; executors.onnx_quant):
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
    return "; runtime layout: " + "; ".join(used) if used else ""


def _provenance(spec: DeviceSpec, profile: Profile, profile_name: str,
                period_ms: float | None = None) -> dict[str, str]:
    kernels = "; ".join(f"{k} {fmt_rate(v.macs_per_s.value)} ({v.macs_per_s.provenance})"
                        for k, v in profile.kernels.items())
    return {
        "latency": f"analytical roofline on {spec.name}/{profile_name}: {kernels}; "
                   f"layer overhead {profile.layer_overhead.value} ms "
                   f"({profile.layer_overhead.provenance}); bandwidth "
                   f"{profile.memory_bandwidth.value / 1e9:.4g} GB/s "
                   f"({profile.memory_bandwidth.provenance})",
        "flash": "bytes of the packed image (exact format; computed, then checked on the file); "
                 f"runtime {profile.runtime_flash.value:.0f} B "
                 f"({profile.runtime_flash.provenance})",
        "ram": "activation liveness over the execution order + runtime "
               f"{profile.runtime_ram.value:.0f} B ({profile.runtime_ram.provenance})"
               + ("; weights held in RAM" if profile.weights_in_ram else "; weights execute "
                  "from flash") + _memory_provenance(profile),
        "energy": (f"P_idle x period + (P_active - P_idle) x latency, period {period_ms:g} ms, "
                   if period_ms else "P_active x latency (back-to-back inference), ")
                  + f"P_active {(profile.power_active or spec.power_active).value} W "
                  f"({(profile.power_active or spec.power_active).provenance}), P_idle "
                  f"{spec.power_idle.value} W ({spec.power_idle.provenance})",
    }
