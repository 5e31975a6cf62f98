"""Every technique, once: its registry entry (config, offer, torch application) and its config
in the union plan.json reads. Option enumeration, simulation and apply dispatch through here;
adding a technique is its own file plus one line in each of the two lists below."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from techniques.lowrank import LOWRANK, LowRankConfig
from techniques.option import Technique
from techniques.prune import (
    CHANNELS,
    NM,
    UNSTRUCTURED,
    ChannelPruneConfig,
    NMPruneConfig,
    UnstructuredPruneConfig,
)
from techniques.quantize import QUANTIZE, QuantizeConfig
from techniques.share import SHARE, WeightSharingConfig

# In offer order: the options of a layer are listed technique by technique.
REGISTRY: dict[str, Technique] = {t.name: t for t in (
    QUANTIZE,
    UNSTRUCTURED,
    LOWRANK,
    SHARE,
    NM,
    CHANNELS,
)}

TechniqueConfig = Annotated[
    QuantizeConfig | UnstructuredPruneConfig | NMPruneConfig | ChannelPruneConfig
    | LowRankConfig | WeightSharingConfig,
    Field(discriminator="technique"),
]
"""Any technique's frozen config, told apart by its ``technique`` field (plan.json)."""


def technique(config: object) -> Technique:
    """The registry entry of a config (a PlanError for an unknown one)."""
    from edgefit_common.errors import PlanError

    name = getattr(config, "technique", None)
    if not isinstance(name, str) or name not in REGISTRY:
        raise PlanError(f"unknown technique {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]
