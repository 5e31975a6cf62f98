"""A layer option as a value: the device kernel it runs on, the technique configs that realise
it (in application order) and the channel widths it keeps. Its name ("int8+s50+w12") is derived
for display and as the key of plan.json and the cost table; nothing parses it back, and no
decision reads the kernel's key: costs read the kernel's fields and the configs.

Each technique offers its options for a layer (:class:`Offer`: the name part and the configs,
``offer`` in its file, dispatched through :data:`techniques.registry.REGISTRY`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from device_specs.schema import Kernel, NMSparsity

C = TypeVar("C")


class LayerShape(Protocol):
    """What an offer needs to know about a layer (cost_models.graph.Layer has these)."""

    @property
    def op_type(self) -> str: ...
    @property
    def op_class(self) -> str: ...
    @property
    def weight_numel(self) -> int: ...
    @property
    def weight_shape(self) -> tuple[int, ...]: ...


@dataclass(frozen=True)
class Offer:
    """One technique's contribution to an option: its part of the name ("s50", "k4+s75",
    "r50", "nm24") and the configs it adds, in application order."""

    tag: str
    configs: tuple[Any, ...]


@dataclass(frozen=True)
class OfferContext:
    """What the enumeration knows besides the layer and the kernel.

    weights: the real weights are at hand (a torch model, or an ONNX file's initializers):
    sparse and shared sizes are counted from them, so only then are those options offered.
    modules: the layers are torch modules; False (a model given only as ONNX): only techniques
    with an array form (Technique.apply_weights) are offered, the others need the module.
    ranks: low-rank options can be resolved to ranks (the layer is a module that can be swapped
    for its factors). levels: per technique name, the levels to offer instead of its defaults
    (``()``: none). nm: the profile's N:M sparse kernels."""

    weights: bool = True
    modules: bool = True
    ranks: bool = True
    levels: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    nm: NMSparsity | None = None

    def levels_of(self, technique: str, default: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(self.levels.get(technique, default))


@dataclass(frozen=True)
class Option:
    """kernel: the key of the kernel in the device profile (display and lookup only).
    techniques: the configs applied to the layer, in order (channel pruning, per-layer
    pruning / factorisation / sharing, then the kernel's quantisation; empty: fp32).
    tags: each technique offer's part of the name. widths: the coupled channel groups'
    kept widths (empty: the layer has none); width_tag their part of the name ("+w12+in24").
    out/weight/in_fraction: the kept fraction of the layer's output channels, of its weights
    and MACs, and of the input tensor it reads. gather: an Embedding's table (storage only)."""

    kernel: str
    techniques: tuple[Any, ...] = ()
    tags: tuple[str, ...] = ()
    widths: tuple[tuple[str, int], ...] = ()
    width_tag: str = ""
    out_fraction: float = 1.0
    weight_fraction: float = 1.0
    in_fraction: float = 1.0
    gather: bool = False

    @property
    def full_name(self) -> str:
        """The name without the width part: the full-width option this one prunes."""
        return "+".join((self.kernel, *self.tags))

    @property
    def name(self) -> str:
        return self.full_name + self.width_tag

    @property
    def base(self) -> str:
        """The full-width option a channel-coupled option narrows ("" without groups)."""
        return self.full_name if self.widths else ""

    @property
    def narrowed(self) -> bool:
        return self.weight_fraction < 1.0

    def config(self, kind: type[C]) -> C | None:
        """The first config of this type among the option's techniques."""
        return next((c for c in self.techniques if isinstance(c, kind)), None)

    def has(self, technique: str) -> bool:
        return any(getattr(c, "technique", None) == technique for c in self.techniques)

    @property
    def sparsity(self) -> float:
        """Fraction of the kept weights that are zero (unstructured or N:M pruning)."""
        for c in self.techniques:
            if c.technique == "prune_unstructured":
                return float(c.sparsity)
            if c.technique == "prune_nm":
                return 1.0 - c.n / c.m
        return 0.0

    @property
    def stored_from_weights(self) -> bool:
        """Its stored size depends on the weights' values (a technique sized by weights)."""
        return sized_by_weights(self.techniques)

    def per_layer(self) -> list[Any]:
        """The configs applied layer by layer (all but channel pruning, a model-level step)."""
        return [c for c in self.techniques if c.technique != "prune_channels"]

    def to_list(self) -> list[Any]:
        return list(self.techniques)


OfferFn = Callable[[LayerShape, str, Kernel, OfferContext], list[Offer]]
"""``(layer, kernel key, kernel, context) -> offers``: the options a technique adds for a layer
on one kernel."""


@dataclass(frozen=True)
class Technique:
    """A registry entry (:data:`techniques.registry.REGISTRY`): what the dispatchers need.

    name: its config's ``technique`` value. config: the frozen config class (plan.json).
    offer: its options for a layer on a kernel (None: it is not offered per kernel -- the
    kernel's own quantisation, channel pruning offered per coupled group). apply_layer:
    ``(module, config, layer name) -> module`` in torch, the module itself or its replacement,
    for a factorised layer every factor (None: not applied layer by layer -- quantisation is
    simulated by hooks, channel pruning is model-level). verify_image: ``(layer name, config,
    the layer as read back from the flash image, the report row) -> problems``: that the
    technique is really in the stored weights (it may add columns to the row; None: apply's
    shared checks -- stored form, bytes, ONNX node -- are all it needs). sized_by_weights:
    the stored size depends on the weights' values (zeros, a codebook), so the planner counts
    it on the real weights (the flash image writer's exact bytes) and offers it only when they
    are at hand. apply_weights: ``(weight array, config) -> new array``, its numpy form on a
    weight with the output channels first (as torch holds it) -- the same values apply_layer
    writes; what a model given only as ONNX gets on its initializers (None: torch only, not
    offered for ONNX-only models)."""

    name: str
    config: type
    offer: OfferFn | None = None
    apply_layer: Callable[[Any, Any, str], Any] | None = None
    verify_image: Callable[[str, Any, Any, dict[str, Any]], list[str]] | None = None
    sized_by_weights: bool = False
    apply_weights: Callable[[Any, Any], Any] | None = None


def sized_by_weights(configs: Any) -> bool:
    """Whether some config's technique is sized on the real weights (Technique.sized_by_weights)."""
    from techniques.registry import technique

    return any(technique(c).sized_by_weights for c in configs)
