"""The options a layer can take, enumerated once: every kernel of the device profile, each
technique's offers on it (through techniques.registry), at every width of the layer's coupled
channel groups; low-rank fractions resolved to ranks on the shape each option leaves."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import replace

from cost_models.channels import LayerCoupling, width_tag
from cost_models.graph import Layer, LayerGraph
from device_specs.schema import Kernel, TfliteFormat
from techniques.lowrank import LowRankConfig
from techniques.option import Offer, OfferContext, Option
from techniques.prune import NMPruneConfig, nm_applicable
from techniques.quantize import kernel_config
from techniques.registry import REGISTRY

RankResolver = Callable[[Layer, Option, float], LowRankConfig | None]
"""``(layer, option, fraction) -> ranks`` of a low-rank option on the shape it leaves (None:
the layer cannot be factorised there, or the fraction saves nothing)."""


def layer_options(kernels: Mapping[str, Kernel], layer: Layer,
                  ctx: OfferContext | None = None, coupling: LayerCoupling | None = None,
                  ranks: RankResolver | None = None,
                  tflite: TfliteFormat | None = None) -> list[Option]:
    """Every kernel as it is, then each technique's offers (technique by technique, level by
    level, kernel by kernel); with coupled channel groups each option at every width
    combination too (an N:M option only where the kept input width is still a multiple of m).
    Low-rank options are kept where ``ranks`` resolves them. An Embedding gets its storage
    forms only (:func:`gather_options`)."""
    if layer.op_type == "Embedding":
        return gather_options(kernels)
    kernels = runnable_kernels(kernels, layer, tflite)
    options = _offered(kernels, layer, ctx or OfferContext())
    if coupling is not None and coupling.groups:
        options = _with_widths(options, coupling, layer)
    return _with_ranks(options, layer, ranks)


def graph_options(graph: LayerGraph, kernels: Mapping[str, Kernel],
                  ctx: OfferContext | None = None,
                  coupling: Mapping[str, LayerCoupling] | None = None,
                  ranks: RankResolver | None = None,
                  tflite: TfliteFormat | None = None) -> dict[str, list[Option]]:
    """layer -> its options (:func:`layer_options`), in execution order."""
    return {layer.name: layer_options(kernels, layer, ctx, (coupling or {}).get(layer.name),
                                      ranks, tflite) for layer in graph.layers}


def tflite_op(layer: Layer) -> str:
    """The TFLite builtin operator a layer converts to: a Linear is FULLY_CONNECTED; a conv
    with one input channel per group (depthwise, or a single-channel input) DEPTHWISE_CONV_2D
    (what litert-torch writes); other convs CONV_2D."""
    if layer.op_type == "Linear":
        return "FULLY_CONNECTED"
    shape = layer.weight_shape
    if layer.op_class == "depthwise" or (len(shape) == 4 and shape[1] == 1):
        return "DEPTHWISE_CONV_2D"
    return "CONV_2D"


def runnable_kernels(kernels: Mapping[str, Kernel], layer: Layer,
                     tflite: TfliteFormat | None) -> Mapping[str, Kernel]:
    """The kernels a TFLite runtime can run this layer on: int4 weights only on its
    `int4_weight_ops` (the profile's data; apply refuses the rest for the .tflite)."""
    if tflite is None:
        return kernels
    int4_ops = set(tflite.int4_weight_ops.value if tflite.int4_weight_ops else ())
    return {name: k for name, k in kernels.items()
            if k.weights != "int4" or tflite_op(layer) in int4_ops}


def plain_option(name: str, kernel: Kernel, offer: Offer | None = None,
                 gather: bool = False) -> Option:
    """A kernel's option with one technique offer (or none): the offer's configs, then the
    kernel's quantisation."""
    quant = kernel_config(kernel, gather)
    configs = (offer.configs if offer else ()) + ((quant,) if quant is not None else ())
    return Option(kernel=name, techniques=configs, tags=(offer.tag,) if offer else (),
                  gather=gather)


def _offered(kernels: Mapping[str, Kernel], layer: Layer, ctx: OfferContext) -> list[Option]:
    out = [plain_option(name, k) for name, k in kernels.items()]
    for technique in REGISTRY.values():
        if technique.offer is None or (not ctx.modules and technique.apply_weights is None):
            continue  # not offered per kernel, or (an ONNX-only model) torch only
        offers = [(name, k, technique.offer(layer, name, k, ctx)) for name, k in kernels.items()]
        for level in range(max((len(o) for _, _, o in offers), default=0)):
            out += [plain_option(name, k, o[level]) for name, k, o in offers if level < len(o)]
    return out


def gather_options(kernels: Mapping[str, Kernel]) -> list[Option]:
    """An embedding table's options: one per distinct weight storage form, named after the
    first kernel that stores it. A gather computes nothing, so the kernel's activation type
    does not apply: int8 (w8a8) and int8a16 store the same int8 codes, one option. Sparsity,
    low rank, sharing, channel and N:M options are not offered (not implemented for tables)."""
    seen: dict[str, Option] = {}
    for name, k in kernels.items():
        seen.setdefault(k.storage, plain_option(name, k, gather=True))
    return list(seen.values())


def _with_widths(options: list[Option], coupling: LayerCoupling, layer: Layer) -> list[Option]:
    """The full-width options naming their groups at full width, plus each at every other
    width combination ("int8+s50+w12": int8, half the weights zero, 12 output channels kept).
    Channels go first (executors.apply), so the storage technique works on the kept weights."""
    full = tuple((g.name, g.channels) for g in coupling.groups)
    out = [replace(o, widths=full) for o in options]
    for combo in itertools.product(*(g.widths for g in coupling.groups)):
        kept = dict(zip((g.name for g in coupling.groups), combo, strict=True))
        if all(kept[g] == c for g, c in full):
            continue
        f_out, f_weight, f_in = coupling.fractions(kept)
        own = coupling.out
        prune = ((own.prune_config(kept[own.name]),)
                 if own is not None and kept[own.name] < own.channels else ())
        shape = pruned_weight_shape(layer.weight_shape, f_out, f_weight)
        out += [replace(o, techniques=prune + o.techniques, widths=tuple(kept.items()),
                        width_tag=width_tag(coupling, kept), out_fraction=f_out,
                        weight_fraction=f_weight, in_fraction=f_in)
                for o in options if _nm_fits(o, shape)]
    return out


def _nm_fits(option: Option, shape: tuple[int, ...]) -> bool:
    nm = option.config(NMPruneConfig)
    return nm is None or nm_applicable(shape, nm)


def _with_ranks(options: list[Option], layer: Layer, ranks: RankResolver | None
                ) -> list[Option]:
    """Low-rank options with their fraction resolved to ranks; unresolvable ones dropped."""
    out = []
    for o in options:
        cfg = o.config(LowRankConfig)
        if cfg is None or cfg.fraction is None:
            out.append(o)
            continue
        resolved = ranks(layer, o, cfg.fraction) if ranks is not None else None
        if resolved is not None:
            out.append(replace(o, techniques=tuple(resolved if c is cfg else c
                                                   for c in o.techniques)))
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


def pruned_shape(layer: Layer, option: Option) -> tuple[int, ...] | None:
    """The weight shape a channel-pruned option leaves (None: it keeps every weight)."""
    if not option.narrowed:
        return None
    return pruned_weight_shape(layer.weight_shape, option.out_fraction, option.weight_fraction)
