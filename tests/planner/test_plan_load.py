"""Plan files as a hostile user writes them: read by the one safe JSON reader, schema_version
required, numbers bounded as a budget's are, every chosen option one of its layer's
alternatives; each refusal one line naming the file, before torch is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgefit_common.errors import SpecError
from planner.plan import Plan

DATA = Path(__file__).parents[1] / "review" / "data" / "plan.json"


def doc() -> dict[str, Any]:
    return json.loads(DATA.read_text())


def refused(tmp_path: Path, text: str) -> str:
    path = tmp_path / "plan.json"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        Plan.load(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}:"), message
    return message


def edited(tmp_path: Path, edit: Callable[[dict[str, Any]], object]) -> str:
    d = doc()
    edit(d)
    return refused(tmp_path, json.dumps(d))


def test_the_fixture_plan_loads() -> None:
    plan = Plan.load(DATA)
    assert plan.options()["conv1"] == "int8"


def test_schema_version_is_required(tmp_path: Path) -> None:
    message = edited(tmp_path, lambda d: d.pop("schema_version"))
    assert "schema_version is missing" in message and "re-plan" in message
    assert "schema_version is missing" in edited(
        tmp_path, lambda d: d.update(schema_version=None))
    assert "schema_version True is not supported" in edited(
        tmp_path, lambda d: d.update(schema_version=True))


def test_a_chosen_option_must_be_an_alternative(tmp_path: Path) -> None:
    message = edited(tmp_path, lambda d: d["layers"]["conv2"].update(option="telepathy"))
    assert message.endswith("layers.conv2.option 'telepathy' is not one of the layer's "
                            "alternatives (int8, int4, fp32)")


def test_an_option_without_alternatives_is_kept(tmp_path: Path) -> None:
    d = doc()
    d["layers"]["conv2"].update(option="int4", alternatives=[])
    (tmp_path / "plan.json").write_text(json.dumps(d))
    assert Plan.load(tmp_path / "plan.json").layers["conv2"].option == "int4"


@pytest.mark.parametrize("margin", [-5.0, 1.0, 2.5])
def test_margin_has_the_budget_bounds(margin: float, tmp_path: Path) -> None:
    message = edited(tmp_path, lambda d: d.update(margin=margin))
    assert ": margin: " in message


@pytest.mark.parametrize(("where", "value", "needle"), [
    ("totals.latency_ms", 1e300, "is above one day (86400s)"),
    ("totals.flash_bytes", -1.0, "-1.0 must be zero or more"),
    ("totals.ram_bytes", 2e15, "is above one petabyte"),
    ("alt.latency_ms", 1e300, "is above one day"),
    ("alt.energy_mj", 1e12, "is above one megajoule"),
    ("alt.act_bytes", -4.0, "must be zero or more"),
    ("layer.params", -1, "greater than or equal to 0"),
    ("fixed.flash_bytes", 1e300, "is above one petabyte"),
])
def test_costs_are_finite_and_bounded(where: str, value: float, needle: str,
                                      tmp_path: Path) -> None:
    def edit(d: dict[str, Any]) -> None:
        kind, key = where.split(".")
        target = {"totals": d["totals"], "alt": d["layers"]["fc1"]["alternatives"][1],
                  "layer": d["layers"]["fc1"], "fixed": d["fixed"]}[kind]
        target[key] = value

    assert needle in edited(tmp_path, edit)


SENTINEL = 123456.789  # replaced in the JSON text by what json.dumps cannot write


@pytest.mark.parametrize(("where", "raw", "needle"), [
    ("totals.latency_ms", "NaN", "refused JSON: NaN is not a number JSON allows"),
    ("totals.energy_mj", "-Infinity", "refused JSON: -Infinity is not a number"),
    ("layer.params", "9" * 5000, "refused JSON: an integer of 5000 digits (at most 64)"),
    ("top.margin", '0.0, "margin": -5.0', "refused JSON: duplicate key 'margin' in an object"),
])
def test_hostile_json(where: str, raw: str, needle: str, tmp_path: Path) -> None:
    d = doc()
    kind, key = where.split(".")
    {"totals": d["totals"], "layer": d["layers"]["fc1"], "top": d}[kind][key] = SENTINEL
    text = json.dumps(d, indent=2)
    assert text.count(str(SENTINEL)) == 1
    assert needle in refused(tmp_path, text.replace(str(SENTINEL), raw))


def test_a_fifo_plan_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "plan.json")
    with pytest.raises(SpecError, match="plan file is a named pipe"):
        Plan.load(tmp_path / "plan.json")


def test_loading_and_refusing_a_plan_import_no_torch(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    d = doc()
    del d["schema_version"]
    bad.write_text(json.dumps(d))
    code = (
        "import sys\n"
        "from planner.plan import Plan\n"
        "from edgefit_common.errors import SpecError\n"
        f"Plan.load({str(DATA)!r})\n"
        "try:\n"
        f"    Plan.load({str(bad)!r})\n"
        "except SpecError as e:\n"
        "    print(e)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).parents[2])
    assert out.returncode == 0, out.stderr
    assert "schema_version is missing" in out.stdout
