"""Numbers with provenance, as they appear in catalog files.

Every number in a device spec goes through `units.parse` (ASCII digits, finite, within its unit
family's bounds) and is a mapping `{value: <quantity>, <provenance>}` where provenance
is exactly one of `source: <key from shared/reference/devices.md or URL>`, `derived: <formula>`,
`measured: <how and when>` or `unverified: <why it is still used>`.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, WithJsonSchema, model_validator

from edgefit_common import units
from edgefit_common.errors import UnitError

PROVENANCE_KEYS = ("source", "derived", "measured", "unverified")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Sourced(Strict):
    """A number and where it comes from. Subclasses fix the unit family."""

    family: ClassVar[units.Family | None] = None
    default_unit: ClassVar[str | None] = None

    value: Annotated[float, WithJsonSchema(units.QUANTITY_JSON_SCHEMA, mode="validation")]
    source: str | None = None
    derived: str | None = None
    measured: str | None = None
    unverified: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _parse_value(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "value" not in data:
            return data
        raw = data["value"]
        if cls.family is not None:
            try:
                value = units.parse(raw, cls.family, field="value", default_unit=cls.default_unit,
                                    allow_zero=True)
            except UnitError as exc:
                raise ValueError(str(exc)) from None
            data = {**data, "value": value}
        return data

    @model_validator(mode="after")
    def _one_provenance(self) -> Sourced:
        given = [k for k in PROVENANCE_KEYS if getattr(self, k) not in (None, "")]
        if len(given) != 1:
            raise ValueError(
                f"needs exactly one of {', '.join(PROVENANCE_KEYS)} (got {given or 'none'})"
            )
        return self

    @property
    def provenance(self) -> str:
        for key in PROVENANCE_KEYS:
            text = getattr(self, key)
            if text:
                return f"{key}: {text}"
        raise AssertionError("validated above")


class Count(Sourced):
    """A dimensionless count or ratio (cores, efficiency factor): a bare number, 0 to 1e12."""

    family = units.COUNT
    default_unit = ""


class Bytes(Sourced):
    family = units.BYTES


class Millis(Sourced):
    family = units.TIME


class Watts(Sourced):
    family = units.POWER


class MacRate(Sourced):
    family = units.RATE


class Bandwidth(Sourced):
    family = units.BANDWIDTH


class Hertz(Sourced):
    family = units.FREQUENCY
