"""The options a layer can take: a device kernel (precision) combined with a storage
technique (unstructured sparsity), and the technique configs that realise each one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cost_models.graph import Layer
from device_specs.schema import Kernel
from executors.prune import UnstructuredPruneConfig
from executors.quantize import QuantizeConfig

# Unstructured sparsity levels offered per layer. Dense kernels gain no speed from zeros, so
# these relieve flash only (stored as bitmask/CSR, whichever is smaller).
SPARSITY_LEVELS: tuple[float, ...] = (0.5, 0.75)
MIN_WEIGHTS_FOR_SPARSITY = 1024  # below this the index overhead eats the saving


@dataclass(frozen=True)
class OptionSpec:
    name: str  # "int8", or "int8+s50" for int8 with 50 % of the weights pruned to zero
    kernel: str  # key in the device profile's kernels
    sparsity: float = 0.0


def option_specs(kernels: Mapping[str, Kernel], layer: Layer,
                 sparsity_levels: tuple[float, ...] = SPARSITY_LEVELS) -> list[OptionSpec]:
    specs = [OptionSpec(name, name) for name in kernels]
    if layer.weight_numel >= MIN_WEIGHTS_FOR_SPARSITY:
        specs += [OptionSpec(f"{name}+s{round(100 * s)}", name, s)
                  for s in sparsity_levels for name in kernels]
    return specs


def techniques(spec: OptionSpec, kernel: Kernel) -> list[Any]:
    """In application order: prune, then quantise (the default order of the techniques issue)."""
    out: list[Any] = []
    if spec.sparsity:
        out.append(UnstructuredPruneConfig(sparsity=spec.sparsity))
    if not (kernel.weights == "fp32" and kernel.activations == "fp32"):
        out.append(QuantizeConfig(weights=kernel.weights, activations=kernel.activations))
    return out
