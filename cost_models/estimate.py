"""The accuracy estimator interface: what each (layer, option) costs in accuracy. No torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AccuracyEstimate:
    loss: dict[tuple[str, str], float]  # (layer, option) -> cost, >= 0
    unit: str
    provenance: str
