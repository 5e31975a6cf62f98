"""Screens of `edgefit review` as text snapshots (snapshots/*.txt, rewritten with
EDGEFIT_UPDATE_SNAPSHOTS=1), plus what the SVG screenshot contains. The SVG snapshots proper
are in test_review_svg_snapshots.py (pytest-textual-snapshot)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

pytest.importorskip("textual")
pytest.importorskip("pytest_asyncio")

from edgefit.review.app import ReviewApp  # noqa: E402
from planner.plan import Plan  # noqa: E402

pytestmark = pytest.mark.asyncio
SIZE = (120, 40)


def svg_text(svg: str) -> str:
    """The characters an SVG screenshot draws, in order, without markup."""
    return html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")


async def settled(pilot, app: ReviewApp, screen_text) -> None:
    """Wait until the footer is drawn: it fills in after the first frame, on a loaded machine
    several frames later (both a main-screen and an infeasible-screen flake in fresh-clone runs)."""
    await pilot.pause()
    for _ in range(60):
        if "Re-solve" in screen_text(app):
            return
        await pilot.pause(0.05)


async def test_main_screen(plan_file: Path, report: dict, screen_text, text_snapshot) -> None:
    app = ReviewApp(Plan.load(plan_file), plan_file, report)
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app, screen_text)
        text_snapshot("main", screen_text(app))
        svg = app.export_screenshot()
    assert svg.startswith("<svg")
    drawn = svg_text(svg)
    for expected in ("layers", "conv1", "fc3", "measured", "56.04ms", "60ms", "OPTIMAL",
                     "156 params", "Re-solve"):
        assert expected in drawn, expected


async def test_help_screen(plan_file: Path, screen_text, text_snapshot) -> None:
    app = ReviewApp(Plan.load(plan_file), plan_file)
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app, screen_text)
        await pilot.press("question_mark")
        await pilot.pause()
        text_snapshot("help", screen_text(app))
        drawn = svg_text(app.export_screenshot())
    for expected in ("keys", "Re-solve", "Undo", "Exclude", "pinned", "dominated"):
        assert expected in drawn, expected


async def test_infeasible_screen(infeasible_file: Path, screen_text, text_snapshot) -> None:
    app = ReviewApp(Plan.load(infeasible_file), infeasible_file)
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot, app, screen_text)
        text_snapshot("infeasible", screen_text(app))
        drawn = svg_text(app.export_screenshot())
    assert "INFEASIBLE" in drawn and "cannot" in drawn
