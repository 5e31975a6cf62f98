"""What model updates cost a fleet: bytes over the link, billed per MB (plan --data-price).

A cellular contract bills the bytes a device moves. The price is the user's contract, never
catalog data (edgefit has no sourced tariff): `--data-price 0.05USD/MB` is read as a number per
MB (10^6 bytes) or per GB, with an optional three-letter currency code that edgefit only echoes
(it converts nothing). The bytes an update moves are the compressed artifact plus the update
protocol's overhead (device_specs/links.yaml, `overhead`):

    billed bytes per update   = transfer bytes x (1 + overhead)
    cost per device per month = billed bytes x updates per month x price per byte
    cost of the fleet a month = cost per device per month x fleet size

The cost is linear in the transfer bytes, so a cost limit (`--max-update-cost`, per device per
month) is a limit on the artifact's bytes, which the solver plans as it plans the update time
(`max_transfer_bytes`, planner.resolve.delivery_limits).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema, field_serializer, model_validator

from device_specs.quantities import Strict

BYTES_PER_MB = 1e6
MAX_FLEET_SIZE = 10**9
"""More devices than this is a typo, not a fleet."""
MAX_UPDATES_PER_MONTH = 44_640.0
"""One update a minute (31 days x 1440 minutes); more is not an over-the-air update."""
MIN_PRICE_PER_MB = 1e-9
MAX_PRICE_PER_MB = 1e4
"""10,000 per MB is above any satellite tariff; larger is a typo (or a price per byte)."""
MAX_COST = 1e9

_PER = {"KB": 1e-3, "kB": 1e-3, "MB": 1.0, "GB": 1e3}  # MB per unit of the price's "/unit"
_NUMBER = r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_PRICE = re.compile(rf"\s*({_NUMBER})\s*([A-Za-z]{{3}})?\s*/\s*([kKMG]B)\s*", re.ASCII)
_AMOUNT = re.compile(rf"\s*({_NUMBER})\s*([A-Za-z]{{3}})?\s*", re.ASCII)


_PRICE_PATTERN = r"^\s*[0-9.eE+-]+\s*([A-Za-z]{3})?\s*/\s*[kKMG]B\s*$"
PriceText = Annotated[float | None, WithJsonSchema(
    {"anyOf": [{"type": "string", "pattern": _PRICE_PATTERN}, {"type": "null"}]},
    mode="validation")]
"""A price as a file writes it: '0.05USD/MB' (validated by parse_price)."""
AmountText = Annotated[float | None, WithJsonSchema(
    {"anyOf": [{"type": "number", "exclusiveMinimum": 0},
               {"type": "string", "pattern": r"^\s*[0-9.eE+-]+\s*([A-Za-z]{3})?\s*$"},
               {"type": "null"}]}, mode="validation")]
"""An amount as a file writes it: 0.10 or '0.10USD' (validated by parse_amount)."""


def parse_price(text: object, field: str = "data_price") -> tuple[float, str | None]:
    """`0.05USD/MB`, `0.05/MB`, `10EUR/GB` -> (price per MB, currency code or None)."""
    m = _PRICE.fullmatch(text) if isinstance(text, str) and len(text) <= 64 else None
    if m is None:
        raise ValueError(f"{field}: cannot read {str(text)[:40]!r} as a price per MB; write "
                         "e.g. 0.05USD/MB or 0.05/MB (or per GB: 10EUR/GB)")
    per_mb = float(m.group(1)) / _PER[m.group(3)]
    if not math.isfinite(per_mb) or per_mb <= 0:
        raise ValueError(f"{field}: {text!r} must be a price greater than zero")
    if not MIN_PRICE_PER_MB <= per_mb <= MAX_PRICE_PER_MB:
        raise ValueError(f"{field}: {text!r} is {per_mb:.3g} per MB, outside "
                         f"{MIN_PRICE_PER_MB:g} to {MAX_PRICE_PER_MB:g} per MB (a typo?)")
    return per_mb, _code(m.group(2))


def parse_amount(text: object, field: str) -> tuple[float, str | None]:
    """A money amount, `0.10` or `0.10USD` -> (amount, currency code or None)."""
    if isinstance(text, bool):
        raise ValueError(f"{field}: expected an amount such as 0.10 or 0.10USD, got {text!r}")
    if isinstance(text, int | float):
        value, code = float(text), None
    else:
        m = _AMOUNT.fullmatch(text) if isinstance(text, str) and len(text) <= 64 else None
        if m is None:
            raise ValueError(f"{field}: cannot read {str(text)[:40]!r} as an amount; write "
                             "e.g. 0.10 or 0.10USD (per device per month)")
        value, code = float(m.group(1)), _code(m.group(2))
    if not math.isfinite(value) or not 0 < value <= MAX_COST:
        raise ValueError(f"{field}: {text!r} must be greater than zero and at most "
                         f"{MAX_COST:g}")
    return value, code


def _code(text: str | None) -> str | None:
    return None if text is None else text.upper()


class Fleet(Strict):
    """The fleet an update goes to and what its data costs (plan --fleet-size,
    --updates-per-month, --data-price, --max-update-cost)."""

    size: int | None = Field(default=None, ge=1, le=MAX_FLEET_SIZE, description="devices "
                             "receiving each update (null: per device only)")
    updates_per_month: float | None = Field(
        default=None, gt=0, le=MAX_UPDATES_PER_MONTH, allow_inf_nan=False,
        description="model updates each device receives a month (null: 1)")
    data_price: PriceText = Field(
        default=None, description="the data contract's price per MB (10^6 B), written "
        "'0.05USD/MB', '0.05/MB' or '10EUR/GB': the user's figure, never catalog data")
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$", description="the "
                                 "price's currency code as written (echoed, not converted)")
    max_cost: AmountText = Field(
        default=None, description="limit: the update data's cost per device per month, in "
        "the price's currency, e.g. 0.10 or '0.10USD'; needs data_price")

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("data_price"), str):
            data["data_price"], code = parse_price(data["data_price"])
            if code is not None:
                if data.get("currency") not in (None, code):
                    raise ValueError(f"currency {data['currency']!r} and the price's {code!r} "
                                     "differ")
                data["currency"] = code
        elif data.get("data_price") is not None:
            raise ValueError("data_price: write it with its unit, e.g. 0.05USD/MB or 0.05/MB")
        if data.get("max_cost") is not None:
            data["max_cost"], code = parse_amount(data["max_cost"], "max_cost")
            if code is not None and data.get("currency") not in (None, code):
                raise ValueError(f"max_cost is in {code}, the data price in "
                                 f"{data['currency']}: give both in one currency")
        return data

    @model_validator(mode="after")
    def _cost_needs_price(self) -> Fleet:
        if self.max_cost is not None and self.data_price is None:
            raise ValueError("a cost limit needs a data price: pass --data-price, e.g. "
                             "0.05USD/MB (your contract's price per MB)")
        return self

    @field_serializer("data_price")
    def _dump_price(self, value: float | None) -> str | None:
        return None if value is None else f"{value!r}{self.currency or ''}/MB"

    @property
    def unit(self) -> str:
        """How amounts are shown: the user's currency code, or 'currency units'."""
        return self.currency or "(your currency)"

    @property
    def updates(self) -> float:
        return 1.0 if self.updates_per_month is None else self.updates_per_month

    def per_byte(self) -> float | None:
        return None if self.data_price is None else self.data_price / BYTES_PER_MB

    def cost_per_device_month(self, transfer_bytes: float, overhead: float) -> float | None:
        """What the updates of one month cost one device (None without a price)."""
        per_byte = self.per_byte()
        if per_byte is None:
            return None
        return transfer_bytes * (1.0 + overhead) * self.updates * per_byte

    def max_transfer_bytes(self, overhead: float) -> float | None:
        """The largest artifact whose monthly updates stay within `max_cost` (None: no limit)."""
        per_byte = self.per_byte()
        if self.max_cost is None or per_byte is None:
            return None
        return self.max_cost / ((1.0 + overhead) * self.updates * per_byte)

    def describe(self) -> str:
        """One line: the inputs and whose they are."""
        given = "given by you"
        parts = [f"{self.updates:g} update(s) per device per month ("
                 f"{'default' if self.updates_per_month is None else given})"]
        if self.size is not None:
            parts.append(f"fleet of {self.size:,} devices ({given})")
        if self.data_price is not None:
            parts.append(f"data price {fmt_money(self.data_price, self.currency)}/MB ({given})")
        return ", ".join(parts)


def fmt_money(value: float, currency: str | None) -> str:
    """An amount with enough digits to be read: 0.000123 USD, 12.35 USD."""
    digits = f"{value:,.2f}" if value >= 1 else f"{value:.3g}"
    return f"{digits} {currency}" if currency else digits
