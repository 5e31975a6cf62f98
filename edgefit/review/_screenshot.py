"""Write an SVG screenshot of the review TUI's main screen (the one in the README).

    python -m edgefit.review._screenshot PLAN OUT.svg [--report REPORT] [--layer fc1]
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from textual.widgets import DataTable

from edgefit.review.app import ReviewApp, load_report
from planner.plan import Plan


async def screenshot(plan_path: Path, out: Path, report_path: Path | None = None,
                     layer: str | None = None, size: tuple[int, int] = (120, 40)) -> Path:
    report = load_report(report_path) if report_path is not None else None
    app = ReviewApp(Plan.load(plan_path), plan_path, report)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        if layer is not None:
            table = app.query_one("#layers", DataTable)
            table.move_cursor(row=table.get_row_index(layer))
            await pilot.pause()
        out.parent.mkdir(parents=True, exist_ok=True)
        app.save_screenshot(filename=out.name, path=str(out.parent))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("plan", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument("--layer", default=None, help="the layer to select")
    args = parser.parse_args(argv)
    print(asyncio.run(screenshot(args.plan, args.out, args.report, args.layer)))


if __name__ == "__main__":
    main()
