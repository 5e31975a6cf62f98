"""Techniques: pruning -- unstructured magnitude pruning (zeros stored sparsely), N:M structured
sparsity, and structured channel pruning over dependency-coupled groups. The configs are data
(plan.json); masks, sparse storage and the torch application are :mod:`executors.prune` and
:mod:`formats.sparse_format`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class UnstructuredPruneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    technique: Literal["prune_unstructured"] = "prune_unstructured"
    sparsity: float = Field(ge=0.0, le=0.99, description="fraction of the layer's weights zeroed")
    scope: Literal["layer", "global"] = Field(
        default="layer", description="layer: this layer's own smallest weights; global: the "
        "sparsity one magnitude threshold over several layers gave this layer "
        "(global_sparsities)")


class NMPruneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    technique: Literal["prune_nm"] = "prune_nm"
    n: int = Field(default=2, ge=1, description="weights kept in each group")
    m: int = Field(default=4, ge=2, le=32, description="group size along the input dimension")

    @model_validator(mode="after")
    def _n_below_m(self) -> NMPruneConfig:
        if self.n >= self.m:
            raise ValueError(f"N:M pruning needs n < m, got {self.n}:{self.m}")
        return self


class ChannelPruneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    technique: Literal["prune_channels"] = "prune_channels"
    ratio: float = Field(ge=0.0, le=0.9, description="fraction of output channels removed")
    round_to: int = Field(default=1, ge=1, description="kept channels: a multiple of this")


PruneConfig = Annotated[UnstructuredPruneConfig | NMPruneConfig | ChannelPruneConfig,
                        Field(discriminator="technique")]
"""Any pruning config (a discriminated union on ``technique``)."""


__all__ = ["ChannelPruneConfig", "NMPruneConfig", "PruneConfig", "UnstructuredPruneConfig"]
