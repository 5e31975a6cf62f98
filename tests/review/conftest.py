"""Fixtures of the review TUI tests: real plans from the CLI (data/), plain-text screens and
text snapshots (snapshots/, rewritten with EDGEFIT_UPDATE_SNAPSHOTS=1).

data/plan.json and data/plan-infeasible.json come from
  plan --target arduino-nano-33-ble --max-latency 60ms [--max-flash 4KB] --model lenet5-mnist
and data/report.json from `edgefit apply data/plan.json`.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"
SNAPSHOTS = Path(__file__).parent / "snapshots"
SIZE = (120, 40)


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    """A copy of the feasible LeNet-5 plan (OPTIMAL, latency limit 60 ms)."""
    path = tmp_path / "plan.json"
    shutil.copy(DATA / "plan.json", path)
    return path


@pytest.fixture
def infeasible_file(tmp_path: Path) -> Path:
    """A copy of the infeasible plan (flash limit 4 KB cannot be met)."""
    path = tmp_path / "plan-infeasible.json"
    shutil.copy(DATA / "plan-infeasible.json", path)
    return path


@pytest.fixture
def report() -> dict[str, Any]:
    return json.loads((DATA / "report.json").read_text(encoding="utf-8"))


def _screen_text(app: Any) -> str:
    """The current screen as plain text (what export_screenshot draws, without styles)."""
    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), record=True,
                      force_terminal=True, color_system="truecolor", legacy_windows=False)
    console.print(app.screen._compositor.render_update(
        full=True, screen_stack=app._background_screens))
    return console.export_text()


@pytest.fixture
def screen_text() -> Callable[[Any], str]:
    return _screen_text


@pytest.fixture
def text_snapshot() -> Callable[[str, str], None]:
    """Compare `text` with snapshots/NAME.txt (EDGEFIT_UPDATE_SNAPSHOTS=1 rewrites it)."""

    def check(name: str, text: str) -> None:
        path = SNAPSHOTS / f"{name}.txt"
        text = "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
        if os.environ.get("EDGEFIT_UPDATE_SNAPSHOTS") == "1":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            return
        if not path.exists():
            pytest.fail(f"no snapshot {path}; run with EDGEFIT_UPDATE_SNAPSHOTS=1 to create it")
        expected = path.read_text(encoding="utf-8")
        if text != expected:
            import difflib

            diff = "\n".join(difflib.unified_diff(expected.splitlines(), text.splitlines(),
                                                  "snapshot", "now", lineterm=""))
            pytest.fail(f"screen differs from {path.name} (EDGEFIT_UPDATE_SNAPSHOTS=1 "
                        f"rewrites it):\n{diff}")

    return check
