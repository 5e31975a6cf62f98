"""benchmarks/scale_out_plan.py's own logic on small plan.json-shaped dicts: what counts as
the same plan (options per layer, predicted costs, the other fields), and the printed table.
The three plans themselves are made by hand (docs/scale-out.md), not here."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_scale_out_plan",
                                                  ROOT / "benchmarks/scale_out_plan.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _plan() -> dict[str, Any]:
    layer = {"option": "int8", "predicted": {"latency_ms": 2.0, "flash_bytes": 100.0}}
    return {"status": "OPTIMAL", "model": {"path": "/a/model.pt"},
            "solver": {"wall_time_s": 0.5, "backend": "cp-sat"},
            "layers": {"q": copy.deepcopy(layer), "k": {**copy.deepcopy(layer), "option": "fp32"}},
            "totals": {"latency_ms": 4.0, "flash_bytes": 200.0}}


def test_the_same_plan_differs_only_in_the_expected_fields(bench: ModuleType) -> None:
    other = _plan()
    other["model"]["path"], other["solver"]["wall_time_s"] = "/b/model.pt", 0.7
    got = bench.compare(_plan(), other)
    assert got["same_layers"] and got["options_differ"] == []
    assert got["max_rel_cost_diff"] == 0.0
    assert got["fields_differ"] == ["model.path", "solver.wall_time_s"]
    assert set(got["fields_differ"]) <= set(bench.EXPECTED_DIFFERENT)


def test_another_option_and_cost_are_reported(bench: ModuleType) -> None:
    other = _plan()
    other["layers"]["k"]["option"] = "int8"
    other["totals"]["flash_bytes"] = 150.0
    got = bench.compare(_plan(), other)
    assert got["options_differ"] == ["k"]
    assert got["max_rel_cost_diff"] == pytest.approx(0.25)  # 50 of 200 bytes
    assert "totals.flash_bytes" in got["fields_differ"]


def test_the_table_names_each_run_and_what_differs(bench: ModuleType,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    other = _plan()
    other["layers"]["q"]["option"] = "fp32"
    other["status"] = "FEASIBLE"
    runs = [{"name": "serial", "wall_s": 10.0, "cpu_s": 8.0, "head_cpu_s": None,
             "plan": _plan()},
            {"name": "cluster", "wall_s": 6.0, "cpu_s": 2.0, "head_cpu_s": 7.5, "plan": other}]
    bench.report(runs, "plan --model m")
    out = capsys.readouterr().out
    assert "| serial | 10.0 | 8.0 | - | 0 of 2 | 0 | none |" in out
    assert "| cluster | 6.0 | 2.0 | 7.5 | 1 of 2 | 0 | status |" in out
    assert "1 x fp32, 1 x int8" in out and "flash 0.00 MB" in out
