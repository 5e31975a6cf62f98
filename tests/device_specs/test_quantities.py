"""Every number of a device spec goes through the one parser, counts included."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_specs.catalog import CATALOG_DIR, load_spec
from edgefit_common.errors import SpecError

SPEC = (CATALOG_DIR / "esp32-s3.yaml").read_text()


@pytest.mark.parametrize(("old", "new", "needle"), [
    ("cores: {value: 2,", "cores: {value: .inf,", "cores: value: inf must be a finite number"),
    ("cores: {value: 2,", "cores: {value: 1e13,", "cores: value: '1e13' is above 1e12"),
    ("cores: {value: 2,", "cores: {value: -2,", "cores: value: -2 must be zero or more"),
    ("cores: {value: 2,", "cores: {value: '２',", "has digits other than 0-9"),
    ("ram: {value: 512KB,", "ram: {value: 1e30B,", "is above one petabyte"),
])
def test_spec_numbers_are_bounded(old: str, new: str, needle: str, tmp_path: Path) -> None:
    assert old in SPEC, old
    path = tmp_path / "board.yaml"
    path.write_text(SPEC.replace(old, new, 1).replace("name: esp32-s3", "name: board"))
    with pytest.raises(SpecError) as info:
        load_spec(str(path))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}:")
    assert needle in message, message


def test_the_catalog_is_within_bounds() -> None:
    for path in sorted(CATALOG_DIR.glob("*.yaml")):
        assert load_spec(path.stem).name == path.stem
