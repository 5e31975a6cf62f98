"""Budget files (and `edgefit.yaml`): target, limits with units, model and data."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema, field_serializer, field_validator, model_validator

from device_specs.catalog import target_relative_to
from device_specs.fleet import Fleet
from device_specs.quantities import Strict
from edgefit_common import units
from edgefit_common.errors import UnitError
from edgefit_common.yamlio import load_model

BUDGET_SCHEMA_VERSION = 1

Margin = Annotated[float, Field(ge=0.0, lt=1.0)]
"""The safety margin on limits (a fraction): the same bounds in a budget and in a plan."""

MAX_AB_SLOTS = 8
"""Model slots in flash (A/B updates use 2); more than a handful is a typo."""

MAX_INPUT_DIMS = 8
MAX_INPUT_ELEMENTS = 1 << 26
"""One sample's input: at most 8 dimensions and 2**26 (67M) values (256 MiB as float32); a
larger shape is bad input, not something to allocate."""


def input_shape_problem(dims: list[int] | tuple[int, ...]) -> str | None:
    """Why `dims` is not one sample's input shape, or None."""
    if not dims or len(dims) > MAX_INPUT_DIMS:
        return f"give 1 to {MAX_INPUT_DIMS} dimensions, e.g. [1, 28, 28]"
    if any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in dims):
        return "every dimension must be a positive integer, e.g. [1, 28, 28]"
    total = 1
    for d in dims:
        total *= d
        if total > MAX_INPUT_ELEMENTS:
            return (f"{' x '.join(str(d)[:12] for d in dims)} is more than {MAX_INPUT_ELEMENTS} "
                    "values, the largest sample edgefit accepts")
    return None


LIMIT_FAMILIES: dict[str, units.Family] = {
    "latency": units.TIME,
    "flash": units.BYTES,
    "ram": units.BYTES,
    "energy": units.ENERGY,
    "accuracy_drop": units.ACCURACY,
    "update_time": units.TIME,
}


LimitValue = Annotated[float | None, WithJsonSchema(
    {"anyOf": [*units.QUANTITY_JSON_SCHEMA["anyOf"], {"type": "null"}]}, mode="validation")]
"""A limit as written: a number in canonical units, a string with a unit, or null."""


class Limits(Strict):
    """Hard limits. Written with units (`30ms`, `256KiB`, `5mJ`, `1pp`); stored canonically."""

    latency: LimitValue = Field(default=None, description="per inference, e.g. '30ms', '0.5s'")
    flash: LimitValue = Field(default=None, description="model + runtime storage, e.g. '1MB'")
    ram: LimitValue = Field(default=None, description="peak RAM, e.g. '256KiB'")
    energy: LimitValue = Field(default=None, description="per inference, e.g. '5mJ'")
    accuracy_drop: LimitValue = Field(
        default=None, description="percentage points, e.g. '1pp' ('1%' is read as points)"
    )
    update_time: LimitValue = Field(
        default=None, description="delivering the compressed model over the budget's `link`, "
        "e.g. '30s' (device_specs/links.yaml)")

    @field_validator("latency", "flash", "ram", "energy", "accuracy_drop", "update_time",
                     mode="before")
    @classmethod
    def _parse(cls, value: Any, info: Any) -> float | None:
        if value is None:
            return None
        try:
            return units.parse(value, LIMIT_FAMILIES[info.field_name], field=info.field_name)
        except UnitError as exc:
            raise ValueError(str(exc).split(": ", 1)[1]) from None

    @field_serializer("latency", "flash", "ram", "energy", "accuracy_drop", "update_time")
    def _dump(self, value: float | None, info: Any) -> str | None:
        if value is None:
            return None
        fam = LIMIT_FAMILIES[info.field_name]
        return units.format_quantity(value, fam, fam.canonical)

    def given(self) -> dict[str, float]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class Preprocess(Strict):
    """Per-channel normalisation the model was trained with: x' = (x - mean) / std, channel
    axis 1, applied to the data set's [0, 1] inputs before planning, calibration and apply
    (one value: every channel)."""

    mean: list[float] = Field(min_length=1, description="per channel (or one for all)")
    std: list[float] = Field(min_length=1, description="per channel (or one for all), > 0")

    @field_validator("std")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(not v > 0 for v in value):
            raise ValueError("every std must be > 0")
        return value

    @model_validator(mode="after")
    def _same_length(self) -> Preprocess:
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values, std {len(self.std)}: give one "
                             "per channel for both (or one each)")
        return self


MAX_SPARSITY_LEVELS = 6


class Budget(Strict):
    """What the user asks for. CLI flags override the fields of a budget file."""

    schema_version: Literal[1] = 1  # BUDGET_SCHEMA_VERSION
    target: str = Field(description="catalog name (see `edgefit devices`) or path to a spec YAML")
    profile: str | None = Field(default=None, description="device profile; default: the spec's")
    limits: Limits = Field(default_factory=Limits)
    model: str | None = Field(
        default=None,
        description="built-in model name (e.g. lenet5-mnist), a .pt2 / .onnx file, or "
        "'module:factory' with a state_dict given as `weights`",
    )
    weights: str | None = Field(default=None, description="state_dict file for module:factory")
    input_shape: list[int] | None = Field(
        default=None, description="one sample's input shape for module:factory, e.g. [1, 28, 28]")

    allow_factory: bool = Field(
        default=False, description="only in ./edgefit.yaml (the project's own file): `model:` "
        "may be a module:factory, which edgefit then imports and runs; a budget file elsewhere "
        "may not say so (a factory comes from --model)")

    @field_validator("input_shape")
    @classmethod
    def _positive_dims(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (problem := input_shape_problem(value)) is not None:
            raise ValueError(problem)
        return value
    data: str | None = Field(default=None, description="built-in data set name or a data file")
    preprocess: Preprocess | None = Field(
        default=None, description="normalisation the model expects on the data's [0, 1] inputs "
        "(mean/std per channel); recorded in the plan, applied by plan and apply")
    margin: Margin = Field(default=0.0, description="safety margin on limits")
    period: float | None = Field(
        default=None, description="time between inferences (duty cycle), e.g. '1s': energy "
        "per inference then includes the idle floor P_idle x period")

    @field_validator("period", mode="before")
    @classmethod
    def _parse_period(cls, value: Any) -> float | None:
        if value is None:
            return None
        try:
            return units.parse(value, units.TIME, field="period")
        except UnitError as exc:
            raise ValueError(str(exc).split(": ", 1)[1]) from None

    link: str | None = Field(
        default=None, description="the link model updates travel over (device_specs/links.yaml, "
        "e.g. ble-1m): the plan reports the update time, and `limits.update_time` limits it")
    ab_slots: int = Field(
        default=1, ge=1, le=MAX_AB_SLOTS, description="model images the flash holds at once "
        "(2: an A/B update keeps the running model while the new one arrives); the flash limit "
        "then holds the runtime plus ab_slots x the model image")
    fleet: Fleet | None = Field(
        default=None, description="the fleet updates go to and the data's price per MB (the "
        "user's contract): the plan reports each update's bytes and the cost per device and "
        "per fleet a month; `max_cost` limits it (docs/delivery.md, Fleet cost)")

    allow_unmeasured: bool = Field(
        default=False, description="without data, offer compressed options anyway, their "
        "accuracy cost unmeasured (counted as 0, flagged in the plan); by default a plan "
        "without data offers each layer only its uncompressed option")
    sparsity_levels: list[float] | None = Field(
        default=None, description="unstructured sparsity levels offered per layer, percent of "
        "the weights pruned (default 50, 75); e.g. [50, 75, 90, 95] for Deep Compression "
        "ratios")

    @field_validator("sparsity_levels")
    @classmethod
    def _levels_in_range(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return None
        if not value or len(value) > MAX_SPARSITY_LEVELS:
            raise ValueError(f"give 1 to {MAX_SPARSITY_LEVELS} levels")
        bad = [v for v in value if not (math.isfinite(v) and 0 < v < 100)]
        if bad:
            raise ValueError(f"{bad[0]:g} is not a percentage strictly between 0 and 100")
        return sorted(set(value))

    @field_validator("link")
    @classmethod
    def _known_link(cls, value: str | None) -> str | None:
        from device_specs.links import link_names

        if value is not None and value not in link_names():
            raise ValueError(f"unknown link {value[:60]!r}; known links: "
                             f"{', '.join(link_names())}")
        return value

    @model_validator(mode="after")
    def _update_time_needs_link(self) -> Budget:
        if self.limits.update_time is not None and self.link is None:
            raise ValueError("an update-time limit needs a link to time it on: pass --link NAME "
                             "(or `link:` in the budget file); see device_specs/links.yaml")
        if self.fleet is not None and self.link is None:
            raise ValueError("a fleet's update cost needs the link its bytes travel over: pass "
                             "--link NAME (or `link:`); see device_specs/links.yaml")
        return self

    @field_serializer("period")
    def _dump_period(self, value: float | None) -> str | None:
        return None if value is None else units.format_quantity(value, units.TIME, "ms")


def load_budget(path: Path) -> Budget:
    """A budget file; a `target:` path is read from the file's own folder."""
    budget = load_model(path, Budget, "budget file")
    target = target_relative_to(budget.target, Path(path).parent)
    return budget if target == budget.target else budget.model_copy(update={"target": target})


def find_project_file(directory: Path) -> Path | None:
    candidate = directory / "edgefit.yaml"
    return candidate if candidate.is_file() else None
