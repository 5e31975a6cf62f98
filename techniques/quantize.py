"""Technique: quantisation -- integer or float16 weights, optionally integer activations, per
output channel. The config is data (plan.json); how the weights are coded is
:mod:`formats.quant_math`; simulating and applying it in torch is :mod:`executors.quantize`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from device_specs.schema import ActivationPrecision, Precision
from formats.quant_math import storage_option


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


__all__ = ["ActivationPrecision", "Precision", "QuantizeConfig"]
