"""Technique: low-rank factorisation -- a Linear as two thinner Linears (truncated SVD), a
Conv2d as a Tucker-2 chain (1x1, core, 1x1). The config is data (plan.json); the factorisation
itself is :mod:`executors.lowrank`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LowRankConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    technique: Literal["lowrank"] = "lowrank"
    rank: int | None = Field(default=None, ge=1, description=(
        "Linear: the inner dimension of the two factors; Conv2d: the output-channel rank of "
        "the Tucker-2 core"))
    rank_in: int | None = Field(default=None, ge=1, description=(
        "Conv2d only: the input-channel rank of the core (default: rank, capped at the "
        "layer's input channels)"))
    energy: float | None = Field(default=None, gt=0.0, le=1.0, description=(
        "instead of rank: the fraction of the squared singular values the factors retain"))

    @model_validator(mode="after")
    def _one_way(self) -> LowRankConfig:
        if (self.rank is None) == (self.energy is None):
            raise ValueError("lowrank needs exactly one of rank (an integer >= 1) or energy "
                             "(a fraction in (0, 1])")
        if self.rank_in is not None and self.rank is None:
            raise ValueError("lowrank rank_in goes with rank, not with energy")
        return self


__all__ = ["LowRankConfig"]
