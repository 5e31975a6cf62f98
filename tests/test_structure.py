"""The shape of the code base (issue #15): short functions in the library packages."""

from __future__ import annotations

import ast
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("planner", "techniques", "cost_models", "executors")
MAX_LINES = 80


def _functions() -> list[tuple[str, int]]:
    out = []
    for package in LIBRARY:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
                    out.append((where, node.end_lineno - node.lineno + 1))  # type: ignore[operator]
    return out


def test_no_function_over_80_lines_and_a_short_median() -> None:
    functions = _functions()
    assert len(functions) > 100
    assert [f for f in functions if f[1] > MAX_LINES] == []
    assert statistics.median(n for _, n in functions) <= 15
