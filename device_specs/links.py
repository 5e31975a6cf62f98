"""Links a model update travels over: sourced data in device_specs/links.yaml.

`plan --link NAME --max-update-time 30s` plans the update as a limit: the compressed model
image the device receives must arrive within the time. A link states its application-level
throughput (payload bytes per second, the link layer's framing and gaps taken out), the update
protocol's overhead on top of it (a fraction of the payload) and, where regulation limits it,
the duty cycle the channel may be used at; every number with provenance, as in the device
catalog:

    update time = artifact bytes x (1 + overhead) / (throughput x duty_cycle)

so a time limit is a limit on the artifact's bytes (`max_artifact_bytes`), which the solver
plans like the flash limit.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from device_specs.quantities import Bandwidth, Count, Sourced, Strict
from edgefit_common.errors import SpecError, did_you_mean
from edgefit_common.yamlio import load_model

LINKS_FILE = Path(__file__).parent / "links.yaml"
_MS_PER_S = 1e3


class Link(Strict):
    """One link: what moves the update's bytes, and how fast."""

    title: str
    phy_rate: Bandwidth = Field(description="the radio's raw rate (for reference)")
    throughput: Bandwidth = Field(description="application payload bytes per second")
    overhead: Count = Field(description="update-protocol bytes per payload byte (a fraction)")
    duty_cycle: Count | None = Field(default=None, description="fraction of time the channel "
                                     "may carry the update (regulatory); null: 1")

    @model_validator(mode="after")
    def _ranges(self) -> Link:
        if not self.throughput.value > 0:
            raise ValueError("throughput must be > 0")
        if self.throughput.value > self.phy_rate.value * (1 + 1e-9):
            raise ValueError("throughput above the PHY rate")
        if not 0 <= self.overhead.value < 10:
            raise ValueError("overhead is a fraction of the payload: 0 to 10")
        if self.duty_cycle is not None and not 0 < self.duty_cycle.value <= 1:
            raise ValueError("duty_cycle must be in (0, 1]")
        return self

    @property
    def duty(self) -> float:
        return 1.0 if self.duty_cycle is None else self.duty_cycle.value

    @property
    def effective_bytes_per_s(self) -> float:
        """Artifact bytes delivered per second of wall time (overhead and duty cycle in)."""
        return self.throughput.value * self.duty / (1.0 + self.overhead.value)

    def update_time_ms(self, artifact_bytes: float) -> float:
        return artifact_bytes / self.effective_bytes_per_s * _MS_PER_S

    def max_artifact_bytes(self, update_time_ms: float) -> float:
        """The largest artifact that arrives within `update_time_ms`."""
        return update_time_ms / _MS_PER_S * self.effective_bytes_per_s

    def quantities(self) -> list[tuple[str, Sourced]]:
        named = [("phy_rate", self.phy_rate), ("throughput", self.throughput),
                 ("overhead", self.overhead), ("duty_cycle", self.duty_cycle)]
        return [(k, v) for k, v in named if v is not None]

    def provenance(self) -> str:
        """One line: the formula's inputs, each with its kind of provenance and sources."""
        duty = (f", duty cycle {self.duty:g} ({_kind(self.duty_cycle)})"
                if self.duty_cycle is not None else "")
        return (f"throughput {self.throughput.value:,.0f} B/s ({_kind(self.throughput)}), "
                f"overhead {100 * self.overhead.value:g} % ({_kind(self.overhead)}){duty}")


def _kind(quantity: Sourced) -> str:
    """`derived from S-BTCORE`, `source S-CATM`, `unverified`: the kind and the source keys."""
    kind, _, text = quantity.provenance.partition(": ")
    keys = sorted(set(re.findall(r"\bS-[A-Z0-9]+", text)))
    return kind + (f" {', '.join(keys)}" if keys else "")


class LinkCatalog(Strict):
    schema_version: Literal[1] = 1
    links: dict[str, Link]
    sources: dict[str, str]

    @model_validator(mode="after")
    def _sources_named(self) -> LinkCatalog:
        for name, link in self.links.items():
            for field, q in link.quantities():
                if q.source is not None and q.source.split(" ", 1)[0] not in self.sources:
                    raise ValueError(f"links.{name}.{field}: source {q.source.split()[0]!r} "
                                     "is not a key of `sources`")
        return self


@cache
def link_catalog(path: Path = LINKS_FILE) -> LinkCatalog:
    return load_model(path, LinkCatalog, "link catalog")


def link_names() -> list[str]:
    return sorted(link_catalog().links)


def load_link(name: str) -> Link:
    """The catalog's link `name`; SpecError naming the known ones otherwise."""
    links = link_catalog().links
    if name not in links:
        raise SpecError(f"unknown link {name[:60]!r}{did_you_mean(name, list(links))}; known "
                        f"links: {', '.join(sorted(links))}")
    return links[name]
