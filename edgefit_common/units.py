"""Quantities with units: parse `30ms`, `256KiB`, `5mJ`, `1pp` and format them back.

Canonical units inside edgefit: milliseconds, bytes, millijoules, percentage points, watts,
MAC/s, bytes/s. Parsing and formatting round-trip: parse(format(x)) == x up to float precision.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from edgefit_common.errors import UnitError


@dataclass(frozen=True)
class Family:
    """A unit family. Every value parsed in it lies in [low, high] (or is zero, where zero is
    allowed): a latency above a day or a flash size above a petabyte is bad input, not a
    number to solve with (finite but huge values overflow the solvers' integer scaling)."""

    name: str
    canonical: str
    factors: dict[str, float]  # unit suffix -> canonical units per 1 of that unit
    high: float  # the largest value accepted, canonical units
    high_text: str  # ... as the messages name it
    low: float = 0.0  # the smallest nonzero magnitude accepted, canonical units
    allow_zero: bool = False


TIME = Family("time", "ms", {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3, "min": 60e3},
              high=86_400e3, high_text="one day (86400s)", low=1e-6)
BYTES = Family(
    "bytes",
    "B",
    {
        "B": 1, "KB": 1e3, "kB": 1e3, "MB": 1e6, "GB": 1e9,
        "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3,
    },
    high=1e15, high_text="one petabyte (1e15 B)", low=1e-3,
)
ENERGY = Family("energy", "mJ", {"uJ": 1e-3, "µJ": 1e-3, "mJ": 1.0, "J": 1e3},
                high=1e9, high_text="one megajoule (1000000J)", low=1e-9)
ACCURACY = Family("accuracy drop", "pp", {"pp": 1.0, "%": 1.0}, high=100.0,
                  high_text="100 percentage points", allow_zero=True)
POWER = Family("power", "W", {"mW": 1e-3, "W": 1.0}, high=1e5, high_text="100 kilowatts",
               low=1e-9)
RATE = Family("ops rate", "MAC/s", {"MAC/s": 1.0, "kMAC/s": 1e3, "MMAC/s": 1e6, "GMAC/s": 1e9,
                                    "TMAC/s": 1e12},
              high=1e18, high_text="1000000TMAC/s", low=1e-3)
BANDWIDTH = Family("bandwidth", "B/s", {"B/s": 1.0, "KB/s": 1e3, "MB/s": 1e6, "GB/s": 1e9},
                   high=1e16, high_text="10000000GB/s", low=1e-3)
FREQUENCY = Family("frequency", "Hz", {"Hz": 1.0, "kHz": 1e3, "MHz": 1e6, "GHz": 1e9},
                   high=1e13, high_text="10000GHz", low=1e-3)
COUNT = Family("count", "", {"": 1.0}, high=1e12, high_text="1e12", allow_zero=True)
"""Dimensionless numbers of a device spec (cores, efficiency factors): bare numbers only."""

FAMILIES = (TIME, BYTES, ENERGY, ACCURACY, POWER, RATE, BANDWIDTH, FREQUENCY)

MAX_TEXT = 64
"""Longest quantity text parsed (`1.5e-3 ms` is ten characters); longer input is refused."""

_NUMBER = r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?inf|nan"
_QUANTITY = re.compile(rf"[ \t]*({_NUMBER})[ \t]*([A-Za-zµ%/]*)[ \t]*", re.IGNORECASE | re.ASCII)


def _family_of(unit: str) -> Family | None:
    for fam in FAMILIES:
        if unit in fam.factors:
            return fam
    return None


def parse(text: str | float | int, family: Family, *, field: str = "value",
          default_unit: str | None = None, allow_zero: bool | None = None) -> float:
    """Parse `text` as a quantity of `family`, returning canonical units: the one parser every
    number from a user's file or flag goes through (ASCII digits only, finite, within the
    family's bounds; every refusal one line naming `field`).

    A bare number is accepted only when `default_unit` is given (spec files store canonical
    numbers); on the command line and in budgets a unit is required.
    """
    number, unit = _split(text, family, field, default_unit)
    if unit not in family.factors:
        other = _family_of(unit)
        allowed = ", ".join(family.factors)
        if other is not None:
            raise UnitError(f"{field}: {_shown(text)} is in {other.name} units, but "
                            f"{family.name} is needed (units: {allowed})")
        raise UnitError(f"{field}: unknown unit {unit!r} in {_shown(text)} (units: {allowed})")
    if math.isnan(number) or math.isinf(number):
        raise UnitError(f"{field}: {_shown(text)} must be a finite number")
    zero_ok = family.allow_zero if allow_zero is None else allow_zero
    if number < 0 or (number == 0 and not zero_ok):
        bound = "zero or more" if zero_ok else "greater than zero"
        raise UnitError(f"{field}: {_shown(text)} must be {bound}")
    return check_range(number * family.factors[unit], family, field=field, text=text)


def check_range(value: float, family: Family, *, field: str = "value",
                text: object = None) -> float:
    """`value` (canonical units) if it lies within the family's bounds (or is zero), else a
    one-line UnitError `field: problem` naming the bound."""
    problem = range_problem(value, family, shown=None if text is None else _shown(text))
    if problem is not None:
        raise UnitError(f"{field}: {problem}")
    return value


def range_problem(value: float, family: Family, *, low: bool = True,
                  shown: str | None = None) -> str | None:
    """What is wrong with canonical `value` for `family` (not finite, above the family's bound,
    or, with `low`, nonzero below its smallest magnitude), or None. `shown`: the user's text
    the value was parsed from. Numbers stored canonically (plan files) pass low=False: the
    predicted cost of a tiny layer may be below `low`."""
    overflowed = shown is not None  # from parse: the number was finite, so inf is an overflow
    shown = _shown(value) if shown is None else shown
    if math.isnan(value) or (math.isinf(value) and not overflowed):
        return f"{shown} must be a finite number"
    if abs(value) > family.high:
        return f"{shown} is above {family.high_text}, the largest {family.name} edgefit accepts"
    if low and 0 < abs(value) < family.low:
        return (f"{shown} is below {format_quantity(family.low, family)}, the smallest nonzero "
                f"{family.name} edgefit accepts")
    return None


def _split(text: object, family: Family, field: str,
           default_unit: str | None) -> tuple[float, str]:
    """(number, unit) of a quantity given as text or as a bare number."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        got = repr(text) if isinstance(text, bool) or text is None else f"a {type(text).__name__}"
        raise UnitError(f"{field}: expected a {family.name} such as {_example(family)}, "
                        f"got {got}")
    if isinstance(text, int | float):
        if default_unit is None:
            raise UnitError(f"{field}: {_shown(text)} has no unit; write it with one, e.g. "
                            f"{_example(family)}")
        try:
            return float(text), default_unit
        except OverflowError:  # an int beyond float range
            raise UnitError(f"{field}: {_shown(text)} is above {family.high_text}, the largest "
                            f"{family.name} edgefit accepts") from None
    if any(c.isdigit() and not c.isascii() for c in text):
        raise UnitError(f"{field}: {_shown(text)} has digits other than 0-9; write numbers in "
                        f"ASCII, e.g. {_example(family)}")
    m = _QUANTITY.fullmatch(text) if len(text) <= MAX_TEXT else None
    if not m:
        raise UnitError(f"{field}: cannot parse {_shown(text)} as a {family.name} "
                        f"(e.g. {_example(family)})")
    unit = m.group(2)
    if unit == "":
        if default_unit is None:
            raise UnitError(f"{field}: {_shown(text)} has no unit; write it with one, "
                            f"e.g. {_example(family)}")
        unit = default_unit
    return float(m.group(1)), unit


def _shown(value: object) -> str:
    """repr of a value for a one-line message, shortened."""
    text = repr(value)
    return text if len(text) <= MAX_TEXT + 2 else f"{text[:30]}...({len(text)} characters)"


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


QUANTITY_JSON_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "number"},
    {"type": "string", "pattern": r"^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"
                                  r"\s*[A-Za-z%/\u00b5]*\s*$"},
]}
"""How a quantity is written in a file, for the JSON Schemas: a number in the field's canonical
unit, or a string with a unit ("30ms", "256KiB", "64MHz"); :func:`parse` checks the rest."""
