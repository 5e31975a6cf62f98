"""Quantities with units: parse `30ms`, `256KiB`, `5mJ`, `1pp` and format them back.

Canonical units inside edgefit: milliseconds, bytes, millijoules, percentage points, watts,
MAC/s, bytes/s. Parsing and formatting round-trip: parse(format(x)) == x up to float precision.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from edgefit_common.errors import UnitError


@dataclass(frozen=True)
class Family:
    name: str
    canonical: str
    factors: dict[str, float]  # unit suffix -> canonical units per 1 of that unit
    allow_zero: bool = False


TIME = Family("time", "ms", {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3, "min": 60e3})
BYTES = Family(
    "bytes",
    "B",
    {
        "B": 1, "KB": 1e3, "kB": 1e3, "MB": 1e6, "GB": 1e9,
        "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3,
    },
)
ENERGY = Family("energy", "mJ", {"uJ": 1e-3, "µJ": 1e-3, "mJ": 1.0, "J": 1e3})
ACCURACY = Family("accuracy drop", "pp", {"pp": 1.0, "%": 1.0}, allow_zero=True)
POWER = Family("power", "W", {"mW": 1e-3, "W": 1.0})
RATE = Family("ops rate", "MAC/s", {"MAC/s": 1.0, "kMAC/s": 1e3, "MMAC/s": 1e6, "GMAC/s": 1e9,
                                    "TMAC/s": 1e12})
BANDWIDTH = Family("bandwidth", "B/s", {"B/s": 1.0, "KB/s": 1e3, "MB/s": 1e6, "GB/s": 1e9})
FREQUENCY = Family("frequency", "Hz", {"Hz": 1.0, "kHz": 1e3, "MHz": 1e6, "GHz": 1e9})

FAMILIES = (TIME, BYTES, ENERGY, ACCURACY, POWER, RATE, BANDWIDTH, FREQUENCY)

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan"
_QUANTITY = re.compile(rf"^\s*({_NUMBER})\s*([A-Za-zµ%/]*)\s*$", re.IGNORECASE)


def _family_of(unit: str) -> Family | None:
    for fam in FAMILIES:
        if unit in fam.factors:
            return fam
    return None


def parse(text: str | float | int, family: Family, *, field: str = "value",
          default_unit: str | None = None, allow_zero: bool | None = None) -> float:
    """Parse `text` as a quantity of `family`, returning canonical units.

    A bare number is accepted only when `default_unit` is given (spec files store canonical
    numbers); on the command line and in budgets a unit is required.
    """
    if isinstance(text, bool):
        raise UnitError(
            f"{field}: expected a {family.name} such as {_example(family)}, got {text!r}")
    if isinstance(text, int | float):
        if default_unit is None:
            raise UnitError(
                f"{field}: {text!r} has no unit; write it with one, e.g. {_example(family)}"
            )
        number, unit = float(text), default_unit
    else:
        m = _QUANTITY.match(str(text))
        if not m:
            raise UnitError(f"{field}: cannot parse {text!r} as a {family.name} "
                            f"(e.g. {_example(family)})")
        number, unit = float(m.group(1)), m.group(2)
        if unit == "":
            if default_unit is None:
                raise UnitError(f"{field}: {text!r} has no unit; write it with one, "
                                f"e.g. {_example(family)}")
            unit = default_unit
    if unit not in family.factors:
        other = _family_of(unit)
        allowed = ", ".join(family.factors)
        if other is not None:
            raise UnitError(f"{field}: {text!r} is in {other.name} units, but {family.name} is "
                            f"needed (units: {allowed})")
        raise UnitError(f"{field}: unknown unit {unit!r} in {text!r} (units: {allowed})")
    if math.isnan(number) or math.isinf(number):
        raise UnitError(f"{field}: {text!r} must be a finite number")
    zero_ok = family.allow_zero if allow_zero is None else allow_zero
    if number < 0 or (number == 0 and not zero_ok):
        bound = "zero or more" if zero_ok else "greater than zero"
        raise UnitError(f"{field}: {text!r} must be {bound}")
    return number * family.factors[unit]


def _example(family: Family) -> str:
    unit = next(iter(family.factors))
    return f"'10{unit}'"


def format_quantity(value: float, family: Family, unit: str | None = None,
                    digits: int = 6) -> str:
    """Format canonical `value` in `unit` (or a readable one); with the default 6 significant
    digits it parses back to the same value (to that precision)."""
    if unit is None:
        unit = _readable_unit(value, family)
    number = _positional(value / family.factors[unit], digits)
    return f"{number}{unit}" if family is not ACCURACY else f"{number}pp"


def _positional(number: float, digits: int) -> str:
    """`digits` significant digits without an exponent (8000000, not 8e+06); whole numbers
    exactly, so byte counts survive a round trip."""
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    text = f"{number:.{digits}g}"
    if "e" in text:
        text = f"{float(text):.{max(0, digits + 2)}f}".rstrip("0").rstrip(".")
    return text


def _readable_unit(value: float, family: Family) -> str:
    if family is BYTES:
        candidates = ["B", "KB", "MB", "GB"]
    elif family is TIME:
        candidates = ["us", "ms", "s"]
    elif family is ACCURACY:
        return "pp"
    else:
        candidates = list(family.factors)
        candidates = [u for u in candidates if u not in ("µs", "µJ")]
    best = candidates[0]
    for u in sorted(candidates, key=lambda u: family.factors[u]):
        if abs(value) >= family.factors[u]:
            best = u
    return best


def fmt_ms(value: float) -> str:
    """For tables: 4 significant digits."""
    return format_quantity(value, TIME, digits=4)


def fmt_bytes(value: float) -> str:
    return format_quantity(value, BYTES, digits=4)


def fmt_mj(value: float) -> str:
    return format_quantity(value, ENERGY, digits=4)


def fmt_rate(value: float) -> str:
    return format_quantity(value, RATE, digits=3)
