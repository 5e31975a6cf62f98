"""Technique: quantisation of a layer's weights and activations (fp16, int8, int4).

One technique = one module: the frozen config (what the plan stores), the torch executor that
applies it as fake quantisation for accuracy evaluation, and the check that reads an artifact and
confirms the precision is really there. The exact number formats live in quant_math, shared with
the ONNX writer and the flash image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from torch import nn

Precision = Literal["fp32", "fp16", "int8", "int4"]


class QuantizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    technique: Literal["quantize"] = "quantize"
    weights: Precision
    activations: Precision
    granularity: Literal["per_channel"] = "per_channel"
    symmetric: bool = True




def fake_quantize_weights(module: nn.Module, config: QuantizeConfig) -> nn.Module:
    """Replace the module's weight by its quantised-then-dequantised value (in place)."""
    import torch

    from executors import quant_math

    weight = module.weight.detach().cpu().numpy()  # type: ignore[union-attr, operator]
    if config.weights == "fp16":
        new = quant_math.to_fp16_and_back(weight)
    elif config.weights in ("int8", "int4"):
        flat = weight.reshape(weight.shape[0], -1)
        new = quant_math.fake_quantize(flat, quant_math.BITS[config.weights]).reshape(weight.shape)
    else:
        return module
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(new))  # type: ignore[union-attr, operator]
        if config.weights == "fp16" and getattr(module, "bias", None) is not None:
            bias = module.bias.detach().numpy()  # type: ignore[union-attr, operator]
            fp16_bias = torch.from_numpy(quant_math.to_fp16_and_back(bias))
            module.bias.copy_(fp16_bias)  # type: ignore[union-attr, operator]
    return module


class ActivationFakeQuant:
    """Forward hook: per-tensor symmetric int8 (scale from calibration max) or fp16 rounding."""

    def __init__(self, precision: str) -> None:
        self.precision = precision
        self.max_abs = 0.0
        self.calibrating = True

    def __call__(self, module: Any, inputs: Any, output: Any) -> Any:
        import torch

        if self.precision == "fp16":
            return output.half().float()
        if self.precision != "int8":
            return output
        if self.calibrating:
            self.max_abs = max(self.max_abs, float(output.detach().abs().max()))
            return output
        scale = max(self.max_abs, 1e-12) / 127.0
        return torch.clamp(torch.round(output / scale), -127, 127) * scale


def quantize_config(techniques: Sequence[Any]) -> QuantizeConfig | None:
    """The layer's quantisation among its techniques (None: left in fp32)."""
    return next((t for t in techniques if isinstance(t, QuantizeConfig)), None)


def weight_precision(techniques: Sequence[Any]) -> str:
    cfg = quantize_config(techniques)
    return "fp32" if cfg is None else cfg.weights


def onnx_option(configs: Sequence[Any]) -> str:
    """The storage/graph form of a layer in the runnable ONNX (executors.onnx_quant options)."""
    from edgefit.errors import PlanError

    cfg = quantize_config(configs)
    if cfg is None:
        return "fp32"
    if cfg.weights == "int8" and cfg.activations == "int8":
        return "int8"
    if cfg.weights in ("fp16", "int4"):
        return cfg.weights  # host runnable form: weight storage; activations stay float
    raise PlanError(f"weights {cfg.weights} with activations {cfg.activations} has no runnable "
                    "ONNX form yet")
