"""Every unit parses, formats and parses back; bad quantities fail with the field named."""

from __future__ import annotations

import math

import pytest

from edgefit_common import units
from edgefit_common.errors import UnitError

CASES = [
    ("30ms", units.TIME, 30.0), ("0.5s", units.TIME, 500.0), ("250us", units.TIME, 0.25),
    ("250µs", units.TIME, 0.25), ("2min", units.TIME, 120_000.0),
    ("256KB", units.BYTES, 256_000), ("256KiB", units.BYTES, 262_144), ("1MB", units.BYTES, 1e6),
    ("1MiB", units.BYTES, 1_048_576), ("2GB", units.BYTES, 2e9), ("4GiB", units.BYTES, 4 * 2**30),
    ("512B", units.BYTES, 512), ("5mJ", units.ENERGY, 5.0), ("2J", units.ENERGY, 2000.0),
    ("300uJ", units.ENERGY, 0.3), ("1pp", units.ACCURACY, 1.0), ("1%", units.ACCURACY, 1.0),
    ("0pp", units.ACCURACY, 0.0), ("65mW", units.POWER, 0.065), ("9.6MMAC/s", units.RATE, 9.6e6),
    ("25.6GB/s", units.BANDWIDTH, 25.6e9), ("64MHz", units.FREQUENCY, 64e6),
    (" 30 ms ", units.TIME, 30.0), ("1e3us", units.TIME, 1.0),
]


@pytest.mark.parametrize(("text", "family", "canonical"), CASES)
def test_parse(text: str, family: units.Family, canonical: float) -> None:
    assert units.parse(text, family) == pytest.approx(canonical)


@pytest.mark.parametrize("family", units.FAMILIES)
def test_every_unit_round_trips(family: units.Family) -> None:
    for unit in family.factors:
        for number in (1, 2.5, 1234.5, 0.001):
            if number * family.factors[unit] > family.high:  # 1234.5pp: beyond the bounds
                continue
            value = units.parse(f"{number}{unit}", family)
            for out_unit in (unit, None):
                text = units.format_quantity(value, family, out_unit)
                assert units.parse(text, family) == pytest.approx(value, rel=1e-5), text


@pytest.mark.parametrize(
    ("text", "family", "needle"),
    [
        ("30", units.TIME, "has no unit"),
        ("thirty ms", units.TIME, "cannot parse"),
        ("30 parsecs", units.TIME, "unknown unit 'parsecs'"),
        ("30xs", units.TIME, "unknown unit 'xs'"),
        ("-5ms", units.TIME, "greater than zero"),
        ("0ms", units.TIME, "greater than zero"),
        ("nanms", units.TIME, "finite"),
        ("infms", units.TIME, "finite"),
        ("30KB", units.TIME, "is in bytes units, but time is needed"),
        ("5ms", units.ENERGY, "is in time units, but energy is needed"),
        ("-1pp", units.ACCURACY, "zero or more"),
    ],
)
def test_bad_quantities(text: str, family: units.Family, needle: str) -> None:
    with pytest.raises(UnitError, match="--max-x") as info:
        units.parse(text, family, field="--max-x")
    assert needle in str(info.value)


def test_numbers_with_default_unit() -> None:
    assert units.parse(3, units.TIME, default_unit="ms") == 3.0
    with pytest.raises(UnitError):
        units.parse(True, units.TIME, default_unit="ms")
    assert math.isclose(units.parse("0B", units.BYTES, allow_zero=True), 0.0)
