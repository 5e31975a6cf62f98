"""The options a layer can take: a device kernel (precision) combined with a storage
technique (unstructured sparsity), and the technique configs that realise each one."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from cost_models.channels import LayerCoupling, width_tag
from cost_models.graph import Layer
from device_specs.schema import Kernel, NMSparsity
from edgefit_common.errors import PlanError
from techniques.lowrank import LowRankConfig
from techniques.prune import (
    ChannelPruneConfig,
    NMPruneConfig,
    UnstructuredPruneConfig,
    nm_applicable,
)
from techniques.quantize import QuantizeConfig
from techniques.share import WeightSharingConfig

# Unstructured sparsity levels offered per layer. Dense kernels gain no speed from zeros, so
# these relieve flash only (stored as bitmask/CSR, whichever is smaller).
SPARSITY_LEVELS: tuple[float, ...] = (0.5, 0.75)
MIN_WEIGHTS_FOR_SPARSITY = 1024  # below this the index overhead eats the saving
# Low-rank factorisation: the factors keep about this fraction of the layer's weights (ranks
# from techniques.lowrank.rank_for_fraction). Unlike zeros, fewer MACs are fewer MACs: these
# relieve flash and latency.
RANK_LEVELS: tuple[float, ...] = (0.5, 0.25)
MIN_WEIGHTS_FOR_LOWRANK = 1024  # smaller layers: the extra op costs more than the MACs saved
# Weight sharing (techniques.share): (index bits, sparsity pruned first) per option, named
# "fp32+k4" / "fp32+k4+s75" (k-means codebook of 2**4 values, Huffman-coded indices). The
# weights are decoded to the kernel's float precision at load time, so only kernels with fp32 /
# fp16 weights take them: flash shrinks, latency is that kernel's. Two levels keep the option
# count (and the KL measured per option) bounded.
SHARE_LEVELS: tuple[tuple[int, float], ...] = ((4, 0.0), (4, 0.75))
MIN_WEIGHTS_FOR_SHARING = 1024  # below this the codebook and code tables eat the saving
SHARE_KERNEL_WEIGHTS = ("fp32", "fp16")


@dataclass(frozen=True)
class OptionSpec:
    name: str  # "int8", or "int8+s50" for int8 with 50 % of the weights pruned to zero
    kernel: str  # key in the device profile's kernels
    sparsity: float = 0.0
    lowrank: float = 0.0  # "int8+r50": factorised, the factors keep ~50 % of the weights
    # channel coupling (cost_models.channels): (group, kept channels) of the groups the layer's
    # geometry depends on; "int8+w12+in24" keeps 12 output channels and reads 24 input channels
    widths: tuple[tuple[str, int], ...] = ()
    out_fraction: float = 1.0  # kept fraction of the layer's output channels
    weight_fraction: float = 1.0  # kept fraction of its weights and MACs
    in_fraction: float = 1.0  # kept fraction of the input tensor it reads
    channel_prune: ChannelPruneConfig | None = None  # when its own output channels shrink
    base: str = ""  # the full-width option it prunes (its latency scales with the MACs kept)
    share_bits: int = 0  # "fp32+k4": weights on a 2**4-value k-means codebook (0: no sharing)
    nm: tuple[int, int] | None = None  # "int8+nm24": 2 of every 4 weights kept (N:M kernels)
    gather: bool = False  # an Embedding's table: weight storage only, read by a gather


def option_specs(kernels: Mapping[str, Kernel], layer: Layer,
                 sparsity_levels: tuple[float, ...] = SPARSITY_LEVELS,
                 rank_levels: tuple[float, ...] = (),
                 coupling: LayerCoupling | None = None,
                 share_levels: tuple[tuple[int, float], ...] = (),
                 nm_sparsity: NMSparsity | None = None) -> list[OptionSpec]:
    """rank_levels: low-rank options for Linear / non-depthwise Conv2d layers (whether a level
    really lowers params and MACs depends on the shape: the caller drops those that do not).
    coupling: the layer's channel groups; every option is then offered at every width
    combination too (the full product: kernel x storage technique x widths; an N:M option
    only where the kept input width is still a multiple of m).
    share_levels: (bits, sparsity) weight-sharing options, on float-weight kernels only.
    nm_sparsity: the profile's N:M sparse kernels: their kernels get an N:M option on layers
    whose input dimension is a multiple of m (only there do zeros buy speed as well as flash;
    elsewhere unstructured sparsity stores as small and keeps more accuracy).
    An Embedding gets its storage forms only (gather_specs)."""
    if layer.op_type == "Embedding":
        return gather_specs(kernels)
    specs = [OptionSpec(name, name) for name in kernels]
    if layer.weight_numel >= MIN_WEIGHTS_FOR_SPARSITY:  # sparse codes are symmetric (0 = zero)
        specs += [OptionSpec(f"{name}+s{round(100 * s)}", name, s)
                  for s in sparsity_levels for name, k in kernels.items() if k.symmetric]
    if lowrank_candidate(layer):
        specs += [OptionSpec(f"{name}+r{round(100 * f)}", name, lowrank=f)
                  for f in rank_levels for name in kernels]
    if layer.weight_numel >= MIN_WEIGHTS_FOR_SHARING:
        specs += [OptionSpec(share_name(name, bits, s), name, s, share_bits=bits)
                  for bits, s in share_levels for name, k in kernels.items()
                  if k.weights in SHARE_KERNEL_WEIGHTS]
    if nm_sparsity is not None and nm_candidate(layer, nm_sparsity):
        n, m = nm_sparsity.n, nm_sparsity.m
        specs += [OptionSpec(f"{name}+nm{n}{m}", name, 1 - n / m, nm=(n, m))
                  for name in kernels if name in nm_sparsity.kernels]
    return _with_widths(specs, coupling, layer) if coupling and coupling.groups else specs


def gather_specs(kernels: Mapping[str, Kernel]) -> list[OptionSpec]:
    """An embedding table's options: one per distinct weight storage form, named after the
    first kernel that stores it. A gather computes nothing, so the kernel's activation type
    does not apply: int8 (w8a8) and int8a16 store the same int8 codes, one option. Sparsity,
    low rank, sharing, channel and N:M options are not offered (not implemented for tables)."""
    seen: dict[str, OptionSpec] = {}
    for name, k in kernels.items():
        seen.setdefault(k.storage, OptionSpec(name, name, gather=True))
    return list(seen.values())


def nm_candidate(layer: Layer, nm: NMSparsity) -> bool:
    return (layer.op_type in ("Linear", "Conv2d") and layer.op_class != "depthwise"
            and bool(layer.weight_shape) and layer.weight_numel >= MIN_WEIGHTS_FOR_SPARSITY
            and nm_applicable(layer.weight_shape, NMPruneConfig(n=nm.n, m=nm.m)))


def _with_widths(specs: list[OptionSpec], coupling: LayerCoupling, layer: Layer
                 ) -> list[OptionSpec]:
    """The full-width specs naming their groups at full width, plus each spec at every other
    width combination ("int8+s50+w12": int8, half the weights zero, 12 output channels kept).
    Channels go first (executors.apply), so the storage technique works on the kept weights."""
    full = tuple((g.name, g.channels) for g in coupling.groups)
    out = [replace(s, widths=full, base=s.name) for s in specs]
    for combo in itertools.product(*(g.widths for g in coupling.groups)):
        kept = dict(zip((g.name for g in coupling.groups), combo, strict=True))
        if all(kept[g] == c for g, c in full):
            continue
        f_out, f_weight, f_in = coupling.fractions(kept)
        own = coupling.out
        prune = (own.prune_config(kept[own.name])
                 if own is not None and kept[own.name] < own.channels else None)
        out += [replace(s, name=f"{s.name}{width_tag(coupling, kept)}", widths=tuple(kept.items()),
                        out_fraction=f_out, weight_fraction=f_weight, in_fraction=f_in,
                        channel_prune=prune, base=s.name) for s in specs
                if s.nm is None or nm_applicable(
                    pruned_weight_shape(layer.weight_shape, f_out, f_weight),
                    NMPruneConfig(n=s.nm[0], m=s.nm[1]))]
    return out


def pruned_weight_shape(shape: tuple[int, ...], out_fraction: float, weight_fraction: float
                        ) -> tuple[int, ...]:
    """A weight's shape with its output channels at out_fraction and its weights at
    weight_fraction (the input dimension takes the rest; kernel dims unchanged)."""
    if not shape:
        return shape
    kept_out = round(shape[0] * out_fraction)
    kept_numel = round(math.prod(shape) * weight_fraction)
    rest = math.prod(shape[2:])
    return (kept_out, kept_numel // (kept_out * rest) if kept_out * rest else 0, *shape[2:])


def share_name(kernel: str, bits: int, sparsity: float) -> str:
    """"fp32+k4", or "fp32+k4+s75" when 75 % of the weights are pruned before sharing."""
    return f"{kernel}+k{bits}" + (f"+s{round(100 * sparsity)}" if sparsity else "")


def kernel_share_config(kernel: Kernel, bits: int) -> WeightSharingConfig:
    """The sharing a float kernel decodes at load time: an fp16 kernel's codebook is float16
    (the ONNX then holds exactly the stored values), an fp32 kernel's float32."""
    if kernel.weights == "fp16":
        return WeightSharingConfig(bits=bits, entropy="huffman", codebook_dtype="float16")
    return WeightSharingConfig(bits=bits, entropy="huffman")


def lowrank_candidate(layer: Layer) -> bool:
    return (layer.op_type in ("Linear", "Conv2d") and layer.op_class != "depthwise"
            and layer.weight_numel >= MIN_WEIGHTS_FOR_LOWRANK)


def techniques(spec: OptionSpec, kernel: Kernel, lowrank: LowRankConfig | None = None
               ) -> list[Any]:
    """In application order: prune, factorise, share, then quantise (the order of the
    techniques issue). ``lowrank``: the ranks of a low-rank option (they depend on the layer's
    shape)."""
    out: list[Any] = [spec.channel_prune] if spec.channel_prune is not None else []
    if spec.nm is not None:
        out.append(NMPruneConfig(n=spec.nm[0], m=spec.nm[1]))
    elif spec.sparsity:
        out.append(UnstructuredPruneConfig(sparsity=spec.sparsity))
    if spec.lowrank:
        if lowrank is None:
            raise PlanError(f"option {spec.name} needs the layer's ranks (a LowRankConfig)")
        out.append(lowrank)
    if spec.share_bits:
        out.append(kernel_share_config(kernel, spec.share_bits))
    if spec.gather:  # weight-only: the rows are decoded to float32 (techniques.quantize)
        if kernel.weights != "fp32":
            out.append(QuantizeConfig(weights=kernel.weights, activations="fp32",
                                      symmetric=kernel.symmetric))
    elif not (kernel.weights == "fp32" and kernel.activations == "fp32"):
        out.append(QuantizeConfig(weights=kernel.weights, activations=kernel.activations,
                                  symmetric=kernel.symmetric))
    return out
