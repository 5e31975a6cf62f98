"""Application scenarios: a target, limits and an accuracy rule a product of that kind has.

One YAML per scenario in device_specs/scenarios/ (`plan --scenario NAME`, `edgefit scenarios`).
Like the device catalog, every number is a quantity with provenance (`source:` naming a key of
the file's `sources`, `derived:`, `measured:` or `unverified:` with a reason). A scenario is
data for a budget: `budget_fields()` turns it into the fields a budget file would hold, and the
command line's flags override them (edgefit/budgeting.py).

A battery scenario states the battery (capacity x voltage), the lifetime it must last and the
time between inferences; the energy per inference it allows follows from those
(`BatteryEnergy`): E_limit = capacity_mAh / 1000 x 3600 x voltage_V / (lifetime_days x 86400 /
period_s), printed with every intermediate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_serializer, model_validator

from device_specs.catalog import catalog_names, is_catalog_name
from device_specs.quantities import Count, Sourced, Strict
from edgefit_common import units
from edgefit_common.errors import SpecError, did_you_mean
from edgefit_common.fsutil import shown
from edgefit_common.yamlio import load_model

SCENARIO_SCHEMA_VERSION = 1
SCENARIOS_DIR = Path(__file__).parent / "scenarios"

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_DAY = 86_400.0


class _Dumped(Sourced):
    """A quantity that dumps as it is written: its exact value with its canonical unit
    (`100.0ms`), so a dumped scenario loads again (a bare number has no unit)."""

    @field_serializer("value")
    def _with_unit(self, value: float) -> str:
        assert self.family is not None
        return f"{value!r}{self.family.canonical}"


class Millis(_Dumped):
    family = units.TIME


class Bytes(_Dumped):
    family = units.BYTES


class Points(_Dumped):
    """Accuracy in percent or percentage points (`1pp`, `90%`), 0 to 100."""

    family = units.ACCURACY


class MilliJoules(_Dumped):
    family = units.ENERGY


class ScenarioLimits(Strict):
    """The scenario's hard limits, each a sourced quantity (all optional)."""

    latency: Millis | None = Field(default=None, description="per inference")
    flash: Bytes | None = Field(default=None, description="model + runtime storage")
    ram: Bytes | None = Field(default=None, description="peak RAM of model + runtime")
    energy: MilliJoules | None = Field(default=None, description="per inference; a battery "
                                       "scenario derives it instead (battery:)")
    update_time: Millis | None = Field(default=None, description="delivering the compressed "
                                       "model over the scenario's `link`")

    def given(self) -> dict[str, Sourced]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class AccuracyRule(Strict):
    """Either a largest drop (`max_drop: 1pp`) or a minimum absolute accuracy (`min_accuracy:
    90%`) measured against the uncompressed model's `reference_accuracy`; the planner's limit
    is a drop, so a minimum becomes reference - minimum (derived, and printed as such)."""

    metric: str = Field(description="what is measured, e.g. 'top-1 on Speech Commands v2'")
    max_drop: Points | None = None
    min_accuracy: Points | None = None
    reference_accuracy: Points | None = Field(
        default=None, description="the uncompressed model's accuracy (with min_accuracy)")

    @model_validator(mode="after")
    def _one_rule(self) -> AccuracyRule:
        if (self.max_drop is None) == (self.min_accuracy is None):
            raise ValueError("give exactly one of max_drop and min_accuracy")
        if self.min_accuracy is not None:
            if self.reference_accuracy is None:
                raise ValueError("min_accuracy needs reference_accuracy (the uncompressed "
                                 "model's accuracy the drop is counted from)")
            if self.reference_accuracy.value <= self.min_accuracy.value:
                raise ValueError(f"reference_accuracy {self.reference_accuracy.value:g} % must "
                                 f"be above min_accuracy {self.min_accuracy.value:g} %")
        return self

    def drop_pp(self) -> float:
        """The largest accuracy drop allowed, percentage points."""
        if self.max_drop is not None:
            return self.max_drop.value
        assert self.min_accuracy is not None and self.reference_accuracy is not None
        # rounded: 94.4 - 90 is 4.400000000000006 in binary floating point
        return round(self.reference_accuracy.value - self.min_accuracy.value, 9)

    def explain(self) -> str:
        if self.max_drop is not None:
            return f"drop <= {self.max_drop.value:g} pp ({self.max_drop.provenance})"
        assert self.min_accuracy is not None and self.reference_accuracy is not None
        return (f"accuracy >= {self.min_accuracy.value:g} % ({self.min_accuracy.provenance}) "
                f"from a reference of {self.reference_accuracy.value:g} % "
                f"({self.reference_accuracy.provenance}): drop <= {self.drop_pp():g} pp")


class Battery(Strict):
    """The battery a sensor runs on and how long it must last."""

    description: str = Field(description="e.g. '2x Energizer L91 lithium AA in series'")
    capacity_mah: Count = Field(description="rated capacity, mAh")
    voltage_v: Count = Field(description="voltage over the discharge, V")
    lifetime_days: Count = Field(description="how long one battery must last, days")


@dataclass(frozen=True)
class BatteryEnergy:
    """The arithmetic from a battery to an energy-per-inference limit, every step named."""

    battery_energy_j: float
    lifetime_s: float
    period_s: float
    inferences_per_lifetime: float
    average_power_limit_mw: float
    energy_per_inference_limit_mj: float

    def lines(self) -> list[str]:
        return [
            f"battery energy = capacity x voltage = {self.battery_energy_j:,.0f} J",
            f"lifetime = {self.lifetime_s:,.0f} s; inferences over it = lifetime / period "
            f"({self.period_s:g} s) = {self.inferences_per_lifetime:,.0f}",
            f"average power allowed = battery energy / lifetime = "
            f"{self.average_power_limit_mw:.3f} mW",
            f"energy per inference allowed = battery energy / inferences = "
            f"{self.energy_per_inference_limit_mj:.3f} mJ (idle floor included)",
        ]

    def lifetime_days_at(self, energy_per_inference_mj: float) -> float:
        """How long the battery lasts when every inference (idle time included) costs
        `energy_per_inference_mj`, days."""
        inferences = self.battery_energy_j * 1000.0 / energy_per_inference_mj
        return inferences * self.period_s / SECONDS_PER_DAY


def battery_energy(battery: Battery, period_ms: float) -> BatteryEnergy:
    battery_energy_j = (battery.capacity_mah.value / 1000.0 * SECONDS_PER_HOUR
                        * battery.voltage_v.value)
    lifetime_s = battery.lifetime_days.value * SECONDS_PER_DAY
    period_s = period_ms / 1000.0
    inferences = lifetime_s / period_s
    return BatteryEnergy(
        battery_energy_j=battery_energy_j,
        lifetime_s=lifetime_s,
        period_s=period_s,
        inferences_per_lifetime=inferences,
        average_power_limit_mw=battery_energy_j / lifetime_s * 1000.0,
        energy_per_inference_limit_mj=battery_energy_j * 1000.0 / inferences,
    )


class ScenarioLink(Strict):
    """The link a scenario's model updates travel over (device_specs/links.yaml) and why that
    link: `source:` (a key of the file's `sources`, then the reason) or `unverified:` (the
    reason, where no source says it)."""

    name: str = Field(description="a link of device_specs/links.yaml, e.g. ble-1m")
    source: str | None = Field(default=None, description="a key of `sources`, then why")
    unverified: str | None = Field(default=None, description="why, without a source")

    @model_validator(mode="after")
    def _known_and_argued(self) -> ScenarioLink:
        from device_specs.links import link_names

        if self.name not in link_names():
            raise ValueError(f"unknown link {self.name!r}; known: {', '.join(link_names())}")
        if (self.source is None) == (self.unverified is None):
            raise ValueError("give the link exactly one reason: source: (a key of sources, "
                             "then why) or unverified: (why, with no source)")
        return self

    @property
    def provenance(self) -> str:
        return f"source: {self.source}" if self.source is not None else \
            f"unverified: {self.unverified}"


class Scenario(Strict):
    """An application scenario: what such a product asks of a model on its device."""

    schema_version: Literal[1] = 1  # SCENARIO_SCHEMA_VERSION
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str
    application: str = Field(description="what the product does, in a sentence or two")
    target: str = Field(description="a device catalog name (see `edgefit devices`)")
    target_note: str | None = Field(default=None, description="why this target (e.g. the "
                                    "closest catalog board to the product's device)")
    profile: str | None = Field(default=None, description="device profile; default: the spec's")
    period: Millis | None = Field(default=None, description="time between inferences (duty "
                                  "cycle); energy per inference then includes the idle floor")
    limits: ScenarioLimits = Field(default_factory=ScenarioLimits)
    accuracy: AccuracyRule | None = None
    battery: Battery | None = None
    link: ScenarioLink | None = Field(
        default=None, description="the link model updates travel over (device_specs/links.yaml) "
        "with its reason; needed by limits.update_time")
    ab_slots: int = Field(default=1, ge=1, le=8, description="model images the flash holds "
                          "(2: A/B updates)")
    example_model: str = Field(description="the --model of the example run (built-in name or "
                               "module:factory with --input-shape)")
    example_input_shape: list[int] | None = Field(
        default=None, description="--input-shape of the example run, for a factory")
    example_note: str | None = None
    sources: dict[str, str] = Field(description="Source key -> URL, for every key the file "
                                    "cites.")

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        if not is_catalog_name(self.target) or self.target == "host":
            raise ValueError(f"target {self.target!r} is not a board of the device catalog "
                             f"({', '.join(n for n in catalog_names() if n != 'host')})")
        if self.battery is not None:
            if self.period is None:
                raise ValueError("battery: needs period: (the time between inferences)")
            if self.limits.energy is not None:
                raise ValueError("battery: derives the energy limit; remove limits.energy")
        if self.limits.update_time is not None and self.link is None:
            raise ValueError("limits.update_time needs link: (device_specs/links.yaml)")
        if not self.limits.given() and self.accuracy is None and self.battery is None:
            raise ValueError("a scenario needs at least one limit, an accuracy rule or a battery")
        self._check_sources()
        return self

    def _check_sources(self) -> None:
        """Every `source:` starts with a key of `sources` (as the device catalog's cite
        shared/reference keys), so a cited source can always be looked up."""
        cited = [(where, q.source) for where, q in self.quantities()]
        if self.link is not None:
            cited.append(("link", self.link.source))
        for where, source in cited:
            if source is None:
                continue
            key = re.split(r"[\s(,;:]", source.strip(), maxsplit=1)[0]
            if key not in self.sources:
                raise ValueError(f"{where}: source {key!r} is not a key of sources: "
                                 f"({', '.join(sorted(self.sources)) or 'none'})")

    def quantities(self) -> list[tuple[str, Sourced]]:
        """Every number of the file with its place, e.g. ('limits.latency', Millis)."""
        found: list[tuple[str, Sourced]] = []
        if self.period is not None:
            found.append(("period", self.period))
        found += [(f"limits.{k}", v) for k, v in self.limits.given().items()]
        for part in ("accuracy", "battery"):
            block = getattr(self, part)
            if block is not None:
                found += [(f"{part}.{k}", v) for k, v in block.__dict__.items()
                          if isinstance(v, Sourced)]
        return found

    def battery_energy(self) -> BatteryEnergy | None:
        if self.battery is None or self.period is None:
            return None
        return battery_energy(self.battery, self.period.value)

    def limit_values(self) -> dict[str, float]:
        """The limits in canonical units (ms, bytes, mJ, pp), the derived ones included."""
        values = {k: v.value for k, v in self.limits.given().items()}
        if (energy := self.battery_energy()) is not None:
            values["energy"] = energy.energy_per_inference_limit_mj
        if self.accuracy is not None:
            values["accuracy_drop"] = self.accuracy.drop_pp()
        return values

    def limit_provenance(self) -> dict[str, str]:
        """Where each limit comes from, one line each."""
        found = {k: v.provenance for k, v in self.limits.given().items()}
        if self.battery is not None:
            found["energy"] = (f"derived: {self.battery.description}, "
                               f"{self.battery.lifetime_days.value:g} days at one inference "
                               f"every {self.period.value / 1000.0 if self.period else 0:g} s")
        if self.accuracy is not None:
            found["accuracy_drop"] = self.accuracy.explain()
        return found

    def limit_kinds(self) -> dict[str, str]:
        """The kind of provenance of each limit, short: source, derived or unverified (the
        accuracy rule's parts named when a minimum accuracy was turned into a drop)."""
        kind = {k: _kind(v) for k, v in self.limits.given().items()}
        if self.battery is not None:
            kind["energy"] = "derived from the battery"
        if (rule := self.accuracy) is not None:
            if rule.max_drop is not None:
                kind["accuracy_drop"] = _kind(rule.max_drop)
            elif rule.min_accuracy is not None and rule.reference_accuracy is not None:
                kind["accuracy_drop"] = (f"derived: reference {rule.reference_accuracy.value:g} % "
                                         f"({_kind(rule.reference_accuracy)}) - minimum "
                                         f"{rule.min_accuracy.value:g} % "
                                         f"({_kind(rule.min_accuracy)})")
        return kind

    def budget_fields(self) -> dict[str, object]:
        """The fields of a budget file this scenario stands for (device_specs.budget.Budget):
        every number exact (its repr) with its canonical unit, as a budget file must write it."""
        limits = {key: f"{value!r}{LIMIT_UNITS[key]}" for key, value in self.limit_values().items()}
        fields: dict[str, object] = {"target": self.target, "limits": limits}
        if self.profile is not None:
            fields["profile"] = self.profile
        if self.period is not None:
            fields["period"] = f"{self.period.value!r}ms"
        if self.link is not None:
            fields["link"] = self.link.name
        if self.ab_slots != 1:
            fields["ab_slots"] = self.ab_slots
        return fields


def _kind(quantity: Sourced) -> str:
    return quantity.provenance.split(":", 1)[0]


LIMIT_UNITS = {"latency": "ms", "flash": "B", "ram": "B", "energy": "mJ", "accuracy_drop": "pp",
               "update_time": "ms"}
"""The canonical unit of each limit (device_specs.budget.LIMIT_FAMILIES)."""


def scenario_files() -> list[Path]:
    return sorted(SCENARIOS_DIR.glob("*.yaml"))


def scenario_names() -> list[str]:
    return [p.stem for p in scenario_files()]


@cache
def _load_file(path: Path) -> Scenario:
    scenario = load_model(path, Scenario, "scenario file")
    if scenario.name != path.stem:
        raise SpecError(f"{path}: name {scenario.name!r} must equal the file name "
                        f"{path.stem!r}")
    return scenario


def load_scenario(name: str) -> Scenario:
    """A scenario of the catalog by name; an unknown name is one line naming the known ones."""
    if name not in scenario_names():
        known = scenario_names()
        raise SpecError(f"unknown scenario '{shown(name, 60)}'{did_you_mean(name, known)}; "
                        f"known scenarios: {', '.join(known)} (see `edgefit scenarios`)")
    return _load_file(SCENARIOS_DIR / f"{name}.yaml")


def load_scenario_file(path: Path) -> Scenario:
    """A scenario file anywhere (tests, a user's own); its name must equal its file name."""
    return _load_file(Path(path).resolve())
