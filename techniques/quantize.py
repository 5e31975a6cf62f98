"""Technique: quantisation of a layer's weights and activations.

Weights: fp16, or per-channel integer codes at 8, 6, 4, 3 or 2 bits, symmetric (``int<b>``) or
asymmetric with a zero point (``symmetric=False``, stored as ``uint<b>``). Activations: float,
int8 (w8a8, static QDQ) or int16 (w8a16).

One technique = one file: the frozen config (what the plan stores), the config a kernel runs
(:func:`kernel_config`: quantisation is offered per kernel, not per technique), the torch
executor that applies it as fake quantisation for accuracy evaluation, and its registry entry.
The exact number formats live in quant_math, shared with the ONNX writer and the flash image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from device_specs.schema import ActivationPrecision, Kernel, Precision
from formats.quant_math import storage_option
from techniques.option import Technique

if TYPE_CHECKING:
    from torch import nn

# ---------------------------------------------------------------------------------------------
# the config (what plan.json stores)


class QuantizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    technique: Literal["quantize"] = "quantize"
    weights: Precision
    activations: ActivationPrecision
    granularity: Literal["per_channel"] = "per_channel"
    symmetric: bool = Field(default=True, description="weights without a zero point; False: "
                            "asymmetric codes + a zero point per channel (weight-only forms)")

    @property
    def storage(self) -> str:
        """The weight storage form (formats.quant_math options): int4, uint4, fp16..."""
        return storage_option(self.weights, self.symmetric)


def fake_quantize_weights(module: nn.Module, config: QuantizeConfig) -> nn.Module:
    """Replace the module's weight by its quantised-then-dequantised value (in place)."""
    import torch

    from formats import quant_math

    weight = module.weight.detach().cpu().numpy()  # type: ignore[union-attr, operator]
    if config.weights == "fp32":
        return module
    flat = weight.reshape(weight.shape[0], -1)
    new = quant_math.apply_option(flat, config.storage).reshape(weight.shape)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(new))  # type: ignore[union-attr, operator]
        if config.weights == "fp16" and getattr(module, "bias", None) is not None:
            bias = module.bias.detach().numpy()  # type: ignore[union-attr, operator]
            fp16_bias = torch.from_numpy(quant_math.to_fp16_and_back(bias))
            module.bias.copy_(fp16_bias)  # type: ignore[union-attr, operator]
    return module


ACTIVATION_QMAX = {"int8": 127, "int16": 32767}


class ActivationFakeQuant:
    """Forward hook: per-tensor symmetric int8 / int16 (scale from calibration max) or fp16
    rounding."""

    def __init__(self, precision: str) -> None:
        self.precision = precision
        self.max_abs = 0.0
        self.calibrating = True

    def __call__(self, module: Any, inputs: Any, output: Any) -> Any:
        import torch

        if self.precision == "fp16":
            return output.half().float()
        qmax = ACTIVATION_QMAX.get(self.precision)
        if qmax is None:
            return output
        if self.calibrating:
            self.max_abs = max(self.max_abs, float(output.detach().abs().max()))
            return output
        scale = max(self.max_abs, 1e-12) / qmax
        return torch.clamp(torch.round(output / scale), -qmax, qmax) * scale


def quantize_config(techniques: Sequence[Any]) -> QuantizeConfig | None:
    """The layer's quantisation among its techniques (None: left in fp32)."""
    return next((t for t in techniques if isinstance(t, QuantizeConfig)), None)


def weight_precision(techniques: Sequence[Any]) -> str:
    """The layer's weight storage form (quant_math options: fp32, fp16, int4, uint4, ...)."""
    cfg = quantize_config(techniques)
    return "fp32" if cfg is None else cfg.storage


def onnx_option(configs: Sequence[Any]) -> str:
    """The storage/graph form of a layer in the runnable ONNX (techniques.onnx.writer options)."""
    from edgefit_common.errors import PlanError

    cfg = quantize_config(configs)
    if cfg is None:
        return "fp32"
    if cfg.weights == "int8" and cfg.symmetric and cfg.activations in ("int8", "int16"):
        return "int8" if cfg.activations == "int8" else "int8a16"  # static QDQ
    if cfg.weights != "int8" or not cfg.symmetric:
        # host runnable form of the weight storage (DequantizeLinear); activations stay float
        return cfg.storage
    if cfg.activations == "fp32":
        # weight-only int8: the form of an embedding table (a gather has no activations to
        # quantise); quantize_onnx writes "int8" on a Gather layer as int8 codes + row scales
        return "int8"
    raise PlanError(f"weights {cfg.weights} with activations {cfg.activations} has no runnable "
                    "ONNX form yet")


def kernel_config(kernel: Kernel, gather: bool = False) -> QuantizeConfig | None:
    """The quantisation a kernel runs (None: fp32 weights and activations). A gather (an
    Embedding's table) only stores: its rows are decoded to float32, so only the weights
    count."""
    if gather:
        return None if kernel.weights == "fp32" else QuantizeConfig(
            weights=kernel.weights, activations="fp32", symmetric=kernel.symmetric)
    if kernel.weights == "fp32" and kernel.activations == "fp32":
        return None
    return QuantizeConfig(weights=kernel.weights, activations=kernel.activations,
                          symmetric=kernel.symmetric)


QUANTIZE = Technique("quantize", QuantizeConfig)  # offered per kernel; simulated by hooks
