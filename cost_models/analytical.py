"""Analytical per-layer x per-option costs for one device profile.

latency = per-layer overhead + max(compute, memory) (a roofline per layer), with the constants
taken from the device spec (each carries its provenance, which the table repeats). Flash is the
bytes the packed image stores (formats.quant_math defines the formats), energy = board power
during inference x latency.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from cost_models.channels import LayerCoupling
from cost_models.graph import Layer, LayerGraph, Step
from cost_models.options import graph_options, pruned_weight_shape
from cost_models.ram_terms import _memory_provenance
from cost_models.runtime_memory import (
    RuntimeMemory,
    copies_weight,
    dequantized_kernel,
    int8_float_output,
    kernel_scratch_bytes,
)
from cost_models.table import CostTable, OptionCost
from cost_models.tflite_size import frame_bytes, graph_constant_bytes, layer_tflite_bytes
from cost_models.tflm_arena import converted_graph
from device_specs.schema import BITS, DeviceSpec, Kernel, Profile
from edgefit_common.units import fmt_rate
from formats.quant_math import (
    SCALE_BYTES,
    int_format,
    packed_bytes,
    stored_bias_bytes,
    stored_weight_bytes,
)
from techniques.flash_image import entry_bytes
from techniques.option import OfferContext, Option


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
    """The factors of a factorised layer (``techniques.lowrank.lowrank_cost_delta``'s
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


def pruned_layer(layer: Layer, opt: Option) -> Layer:
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


def option_costs(layer: Layer, opt: Option, kernel: Kernel, profile: Profile,
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
    if opt.has("prune_nm") and profile.nm_sparsity is not None:
        return flash, nm_latency_ms(geom, kernel, profile, flash, ops)
    return flash, layer_latency_ms(geom, kernel, profile, dense_flash, ops)


def _charged_ops(graph: LayerGraph) -> dict[str, list[tuple[Step, int]]]:
    out: dict[str, list[tuple[Step, int]]] = {name: [] for name in graph.layer_names}
    for s in graph.steps:
        if s.kind == "op" and s.owner is not None:
            elems = graph.tensors[s.output].numel + sum(graph.tensors[t].numel for t in s.inputs)
            out[s.owner].append((s, elems))
    return out


def tflite_layer_bytes(layer: Layer, kernel: Kernel) -> int:
    """The layer's weights, bias and per-channel quantisation parameters in model.tflite
    (cost_models.tflite_size): dense at the kernel's bit width (a .tflite stores no sparsity
    and no codebook: sparse and shared weights take their dense size)."""
    floats = ("fp32", "fp16")
    bits = None if kernel.weights in floats else BITS[kernel.weights]
    acts = 8 if kernel.activations in floats else BITS[kernel.activations]
    return layer_tflite_bytes(layer.weight_numel, layer.out_channels, bits, acts)


def tflite_option_bytes(layer: Layer, opt: Option, kernel: Kernel,
                        factors: Sequence[Layer] | None) -> int:
    """An option's bytes in model.tflite: its factors' (low rank) or its geometry's at the
    option's widths (channel pruning), dense."""
    if factors is not None:
        return sum(tflite_layer_bytes(f, kernel) for f in factors)
    geom = pruned_layer(layer, opt) if opt.weight_fraction < 1.0 else layer
    return tflite_layer_bytes(geom, kernel)


def _option_cost(layer: Layer, opt: Option, kernel: Kernel, profile: Profile,
                 memory: RuntimeMemory, charged: list[tuple[Step, int]], layer_power_w: float,
                 acc_loss: float, sparse_bytes: int | None,
                 factors: Sequence[Layer] | None, tflite: bool = False) -> OptionCost:
    """One option's row of the cost table (tflite: flash_bytes are model.tflite's)."""
    image, latency = option_costs(layer, opt, kernel, profile, charged, sparse_bytes,
                                  factors)
    flash = tflite_option_bytes(layer, opt, kernel, factors) if tflite else image
    float_out = not opt.gather and int8_float_output(layer, kernel, memory)
    return OptionCost(
        option=opt.name,
        latency_ms=latency,
        flash_bytes=flash,
        energy_mj=layer_power_w * latency,  # W x ms = mJ
        act_bytes=(GATHER_ACT_BYTES if opt.gather else
                   (4 if float_out else activation_bytes(kernel)) * opt.out_fraction),
        acc_loss=acc_loss,
        widths=opt.widths,
        # the input is quantised inside the graph: the caller's buffer stays fp32
        # (a gather's indices are read as the caller gives them: float32)
        in_act_bytes=4 if memory.fp32_input or opt.gather else activation_bytes(kernel),
        mac_fraction=opt.weight_fraction, base=opt.base,
        dequantized_weight_numel=round(layer.weight_numel * opt.weight_fraction)
        if memory.dequantized_weight_copies and dequantized_kernel(kernel)
        and copies_weight(layer) and not opt.gather else 0,
        blocked=memory.channel_block > 1 and kernel.activations in ("fp32", "fp16")
        and not dequantized_kernel(kernel) and not opt.gather,
        kernel_scratch_bytes=0.0 if opt.gather else kernel_scratch_bytes(
            layer, kernel, memory, opt.out_fraction, opt.in_fraction)
        + (memory.rounded(layer.output_numel * opt.out_fraction) if float_out else 0.0),
        float_output=float_out,
        int8_activations=kernel.activations == "int8",
        latency_of=opt.kernel if opt.name != opt.kernel and opt.weight_fraction >= 1.0
        and not opt.gather else "",
        image_bytes=image,
    )


def build_cost_table(graph: LayerGraph, spec: DeviceSpec, profile_name: str | None = None,
                     acc_loss: Mapping[tuple[str, str], float] | None = None,
                     accuracy: str = "none",
                     sparse_flash: Mapping[tuple[str, str], int] | None = None,
                     period_ms: float | None = None,
                     factored: Mapping[tuple[str, str], Sequence[Layer]] | None = None,
                     coupling: Mapping[str, LayerCoupling] | None = None,
                     layer_options: Mapping[str, Sequence[Option]] | None = None,
                     flash_format: str = "image") -> CostTable:
    """layer_options: each layer's options (cost_models.options.graph_options); default: the
    profile's kernels and every technique offer, no low rank (its ranks need the weights).

    flash_format: "image" -- flash_bytes are the layers' bytes in edgefit's packed image
    (exact); "tflite" -- in the model.tflite apply writes for a TFLite profile (the file the
    device loads; cost_models.tflite_size), each option's image bytes kept beside them.

    sparse_flash: exact stored bytes of each (layer, sparse or weight-shared option),
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
    memory = RuntimeMemory.of_profile(profile, spec.core)
    if layer_options is None:
        layer_options = graph_options(graph, profile.kernels,
                                      OfferContext(nm=profile.nm_sparsity), coupling,
                                      tflite=profile.tflite)
    for layer in graph.layers:
        row = []
        for opt in layer_options[layer.name]:
            kernel = profile.kernels[opt.kernel]
            if opt.stored_from_weights and (layer.name, opt.name) not in (sparse_flash or {}):
                continue  # sparse and shared sizes come from the real weights
            if opt.has("lowrank") and (layer.name, opt.name) not in (factored or {}):
                continue
            row.append(_option_cost(layer, opt, kernel, profile, memory, charged[layer.name],
                                    layer_power_w,
                                    (acc_loss or {}).get((layer.name, opt.name), 0.0),
                                    (sparse_flash or {}).get((layer.name, opt.name)),
                                    (factored or {}).get((layer.name, opt.name)),
                                    flash_format == "tflite"))
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
        provenance={**_provenance(spec, profile, profile_name, period_ms),
                    **({"flash": TFLITE_FLASH_PROVENANCE + f"; runtime "
                                 f"{profile.runtime_flash.value:.0f} B "
                                 f"({profile.runtime_flash.provenance})"}
                       if flash_format == "tflite" else {}),
                    # what edgefit converted in the user's ONNX file (opset, folding...)
                    **({"model": graph.meta["prepared"]} if graph.meta.get("prepared") else {})},
        accuracy=accuracy,
        memory=memory,
        flash_format=flash_format,
        tflite_frame_bytes=tflite_frame_bytes(graph) if flash_format == "tflite" else 0.0,
        **_boundary_constants(profile),
    )


def _boundary_constants(profile: Profile) -> dict[str, float]:
    """A precision boundary's node is an elementwise op: the profile's per-op overhead, the
    bytes it moves at its memory bandwidth (as the ops charged to a layer)."""
    return {"boundary_overhead_ms": profile.layer_overhead.value,
            "boundary_ms_per_byte": 1e3 / profile.memory_bandwidth.value}


TFLITE_FLASH_PROVENANCE = (
    "bytes of the model.tflite apply writes (cost_models.tflite_size): each layer's weights "
    "at its bit width, bias and per-channel quantisation parameters (exact; stored dense: a "
    ".tflite keeps no sparsity or codebook, so sparse and shared options save no flash here) "
    "+ the all-integer graph's framing (fitted: within 0.5 % of the written files, "
    "docs/cost-model-accuracy.md); apply checks the file")


def tflite_frame_bytes(graph: LayerGraph) -> float:
    """model.tflite beyond its layers' weights: the converted graph's own constants and its
    framing (tables, names, alignment), for the all-integer graph (a float layer among int8
    ones adds its QUANTIZE / DEQUANTIZE ops, ~0.2 KB each, which the solver does not see)."""
    conv = converted_graph(graph, graph.layer_names)
    return graph_constant_bytes(conv) + frame_bytes(conv)


def _with_latency_of(row: list[OptionCost]) -> list[OptionCost]:
    """Full-width technique options ("int8+s50", "fp32+k4", "int8+r50") name the kernel option
    they run ("int8", "fp32") and their latency's ratio to it."""
    plain = {c.option: c.latency_ms for c in row}
    return [dataclasses.replace(c, latency_ratio=c.latency_ms / plain[c.latency_of])
            if plain.get(c.latency_of) else dataclasses.replace(c, latency_of="") for c in row]


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
