"""Technique: weight sharing -- each layer's nonzero weights clustered to at most 2**bits values
(k-means), indices (and, for a pruned layer, positions) optionally entropy coded. The config is
data (plan.json); clustering, storage and the torch application are :mod:`executors.share`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from formats.entropy import EntropyCoding

PositionFormat = Literal["auto", "bitmask", "relative"]


class WeightSharingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    technique: Literal["share"] = "share"
    bits: int = Field(ge=2, le=8, description="index bits: at most 2**bits shared values")
    entropy: EntropyCoding = Field(
        default="none", description="entropy coding of the stored indices and positions")
    codebook_dtype: Literal["float32", "float16"] = "float32"
    positions: PositionFormat = Field(
        default="auto", description="how a pruned layer stores where its nonzeros are")
    index_bits: int | None = Field(
        default=None, ge=2, le=16, description="relative-index bits (None: best of 2..8)")
    iterations: int = Field(default=100, ge=1, le=10_000, description="k-means iterations")


__all__ = ["PositionFormat", "WeightSharingConfig"]
