"""Every number goes through one parser: ASCII digits only, finite, within its family's bounds;
each refusal is one line naming the field and, for a bound, the bound."""

from __future__ import annotations

import pytest

from edgefit_common import units
from edgefit_common.errors import UnitError


def refused(text: object, family: units.Family, **kwargs: object) -> str:
    with pytest.raises(UnitError) as info:
        units.parse(text, family, field="--max-x", **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith("--max-x: ") and "\n" not in message and len(message) < 300
    return message


@pytest.mark.parametrize("text", ["３０ms", "٣٠ms", "3０ms", "৩ms"])
def test_non_ascii_digits_are_refused(text: str) -> None:
    assert "has digits other than 0-9" in refused(text, units.TIME)


def test_unicode_spaces_and_trailing_newlines_are_refused() -> None:
    assert "cannot parse" in refused("30\u3000ms", units.TIME)
    assert "cannot parse" in refused("30ms\n", units.TIME)


@pytest.mark.parametrize(
    ("text", "family", "bound"),
    [
        ("1e300ms", units.TIME, "one day (86400s)"),
        ("1e308s", units.TIME, "one day (86400s)"),  # finite, but inf once in milliseconds
        ("1441min", units.TIME, "one day (86400s)"),
        ("2000000GB", units.BYTES, "one petabyte (1e15 B)"),
        ("1e20B", units.BYTES, "one petabyte (1e15 B)"),
        ("1e10J", units.ENERGY, "one megajoule (1000000J)"),
        ("101pp", units.ACCURACY, "100 percentage points"),
        ("1e9W", units.POWER, "100 kilowatts"),
        ("1e30MAC/s", units.RATE, "1000000TMAC/s"),
        ("1e20B/s", units.BANDWIDTH, "10000000GB/s"),
        ("1e20Hz", units.FREQUENCY, "10000GHz"),
    ],
)
def test_above_the_family_bound(text: str, family: units.Family, bound: str) -> None:
    message = refused(text, family)
    assert f"is above {bound}, the largest {family.name} edgefit accepts" in message


def test_the_bounds_themselves_are_accepted() -> None:
    assert units.parse("86400s", units.TIME) == 86_400e3
    assert units.parse("1000000GB", units.BYTES) == 1e15
    assert units.parse("100pp", units.ACCURACY) == 100.0


def test_below_the_smallest_nonzero() -> None:
    assert "the smallest nonzero time" in refused("1e-300ms", units.TIME)
    assert units.parse("0pp", units.ACCURACY) == 0.0


def test_bare_numbers_are_bounded_too() -> None:
    assert "above one day" in refused(1e300, units.TIME, default_unit="ms")
    assert "above one day" in refused(10**100, units.TIME, default_unit="ms")
    assert "above one day" in refused(10**400, units.TIME, default_unit="ms")  # no float
    assert "finite" in refused(float("nan"), units.TIME, default_unit="ms")


def test_counts_are_bare_finite_and_bounded() -> None:
    assert units.parse(4, units.COUNT, default_unit="") == 4.0
    assert units.parse("0.5", units.COUNT, default_unit="") == 0.5
    assert "above 1e12" in refused(1e13, units.COUNT, default_unit="")
    assert "finite" in refused(float("inf"), units.COUNT, default_unit="")
    assert "zero or more" in refused(-1, units.COUNT, default_unit="")


@pytest.mark.parametrize(("value", "needle"), [
    (["30ms"] * 100_000, "got a list"),
    ({"a": 1}, "got a dict"),
    (None, "got None"),
    ("3" * 5000 + "ms", "cannot parse '3333"),
])
def test_other_values_get_a_short_line(value: object, needle: str) -> None:
    assert needle in refused(value, units.TIME)


def test_check_range_for_canonical_numbers() -> None:
    assert units.check_range(60.0, units.TIME) == 60.0
    with pytest.raises(UnitError, match="margin_ms: 1e\\+300 is above one day"):
        units.check_range(1e300, units.TIME, field="margin_ms")
