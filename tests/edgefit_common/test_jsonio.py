"""JSON input is read strictly: NaN/Infinity, huge integers, duplicate keys and deep nesting are
refused with one line naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgefit_common.errors import SpecError
from edgefit_common.jsonio import read_json


def refused(text: str, tmp_path: Path) -> str:
    path = tmp_path / "plan.json"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        read_json(path, "plan file")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}:")
    return message


def test_plain_json_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.json"
    path.write_text(json.dumps({"a": [1, 2.5, None, "x"], "b": {"c": -3}}))
    assert read_json(path) == {"a": [1, 2.5, None, "x"], "b": {"c": -3}}


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(constant: str, tmp_path: Path) -> None:
    assert refused(f'{{"latency_ms": {constant}}}', tmp_path).endswith(
        f"refused JSON: {constant} is not a number JSON allows (write a finite number)")


def test_a_float_that_overflows_is_refused(tmp_path: Path) -> None:
    assert "1e999 is out of range" in refused('{"latency_ms": 1e999}', tmp_path)


def test_a_5000_digit_integer_is_refused(tmp_path: Path) -> None:
    assert refused('{"params": ' + "7" * 5000 + "}", tmp_path).endswith(
        "refused JSON: an integer of 5000 digits (at most 64)")


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    assert refused('{"margin": 0.1, "margin": -5}', tmp_path).endswith(
        "refused JSON: duplicate key 'margin' in an object")


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deep_nesting_is_refused(depth: int, tmp_path: Path) -> None:
    assert "nested deeper than 64 levels" in refused("[" * depth + "]" * depth, tmp_path)


def test_malformed_json_names_the_line(tmp_path: Path) -> None:
    assert ":2: not valid JSON" in refused('{"a": 1,\n}', tmp_path)


def test_a_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "plan.json")
    with pytest.raises(SpecError, match="plan file is a named pipe"):
        read_json(tmp_path / "plan.json", "plan file")
