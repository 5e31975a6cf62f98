"""The accuracy-planning benchmark's summary (benchmarks/accuracy_planning.py): the measured
search's bullets are computed from the table's rows. The benchmark itself is run by hand."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).parents[2]


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("accuracy_planning",
                                                  ROOT / "benchmarks" / "accuracy_planning.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _row(method: str, accuracy: float, options: dict[str, str], applies: int = 0,
         limit: float = 1000.0, wall_s: float = 60.0) -> dict[str, Any]:
    return {"model": "m", "limit": limit, "method": method, "fits": True, "accuracy": accuracy,
            "flash": 900.0, "options": options, "applies": applies, "wall_s": wall_s}


def test_measured_search_bullets_follow_the_rows() -> None:
    mod = _module()
    a_plan, other = {"l": "int8"}, {"l": "int4"}
    rows = [_row("(a) solver", 0.98, a_plan), _row("(b) closed loop", 0.97, other, 3),
            _row("(e) Optuna TPE, measured", 0.985, other, 4),
            _row("(a) solver", 0.95, a_plan, limit=800.0),
            _row("(e) Optuna TPE, measured", 0.95, a_plan, 4, limit=800.0)]
    text = "\n".join(mod.summary(rows))
    assert "+0.00 to +0.50 pp over 2 budgets" in text
    assert "better in 1, equal in 1, worse in 0" in text
    assert "(a)'s own plan, its first trial, in 1)" in text
    assert "(e) 8 in 2.0 min, (b) 3 in 1.0 min" in text
    assert mod.MEASURED.applies == mod.LOOP.rounds  # matched to the loop's apply budget
