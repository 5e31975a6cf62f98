"""SVG snapshots of the main screens (pytest-textual-snapshot): any visual change shows up as a
diff; accept an intended one with `pytest tests/review --snapshot-update`."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pytest_textual_snapshot")

from edgefit.review.app import ReviewApp  # noqa: E402
from planner.plan import Plan  # noqa: E402

SIZE = (120, 40)


def test_main_screen_svg(plan_file: Path, report: dict, snap_compare) -> None:
    assert snap_compare(ReviewApp(Plan.load(plan_file), plan_file, report), terminal_size=SIZE)


def test_help_screen_svg(plan_file: Path, snap_compare) -> None:
    assert snap_compare(ReviewApp(Plan.load(plan_file), plan_file), press=["question_mark"],
                        terminal_size=SIZE)


def test_infeasible_screen_svg(infeasible_file: Path, snap_compare) -> None:
    assert snap_compare(ReviewApp(Plan.load(infeasible_file), infeasible_file),
                        terminal_size=SIZE)
