"""Pilot-driven behaviour of `edgefit review`: edit, re-solve, undo, filter, sort, exclude,
diff, save, apply, quit, infeasible plans, the measured column."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

pytest.importorskip("textual")
pytest.importorskip("pytest_asyncio")

from textual.widgets import DataTable, Input, Log, Static  # noqa: E402

from edgefit.review import model as m  # noqa: E402
from edgefit.review.app import ReviewApp  # noqa: E402
from edgefit.review.screens import (  # noqa: E402
    ConfirmQuitScreen,
    DiffScreen,
    HelpScreen,
    PromptScreen,
)
from planner.plan import Plan  # noqa: E402

DATA = Path(__file__).parent / "data"
SIZE = (120, 40)

pytestmark = pytest.mark.asyncio


def make_app(path: Path, report: dict[str, Any] | None = None, **kwargs: Any) -> ReviewApp:
    return ReviewApp(Plan.load(path), path, report, time_limit_s=5.0, **kwargs)


def rows(app: ReviewApp) -> list[str]:
    table = app.query_one("#layers", DataTable)
    return [str(row.key.value) for row in table.ordered_rows]


def static_text(app: ReviewApp, selector: str) -> str:
    """A Static's content (Rich text or table) as plain text."""
    console = Console(width=200, file=io.StringIO(), record=True)
    console.print(app.query_one(selector, Static).content)
    return console.export_text()


async def settle(app: ReviewApp, pilot: Any) -> None:
    """Wait for the workers (re-solve, apply) and the messages they post."""
    await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


async def select(pilot: Any, app: ReviewApp, layer: str) -> None:
    table = app.query_one("#layers", DataTable)
    table.move_cursor(row=table.get_row_index(layer))
    await pilot.pause()
    assert app.selected == layer


async def test_opens_with_table_limits_and_detail(plan_file: Path, report: dict) -> None:
    app = make_app(plan_file, report)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert rows(app) == ["conv1", "conv2", "fc1", "fc2", "fc3"]
        table = app.query_one("#layers", DataTable)
        assert [c.key.value for c in table.ordered_columns][-1] == "measured"
        assert "56.04ms / 60ms" in static_text(app, "#limits")
        assert "6.6 % left" in static_text(app, "#limits")
        alts = app.query_one("#alts", DataTable)
        assert [r.key.value for r in alts.ordered_rows] == ["int8", "int4", "fp32"]
        assert str(alts.get_cell("int8", "mark")) == "●"
        assert "OPTIMAL" in static_text(app, "#status")
        assert "modified" not in static_text(app, "#status")


async def test_change_option_resolve_save_reload(plan_file: Path) -> None:
    app = make_app(plan_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("down", "down")  # conv1 -> fc1
        assert app.selected == "fc1"
        assert app.plan.layers["fc1"].option == "fp32"
        await pilot.press("o")  # next alternative, pinned
        fc1 = app.plan.layers["fc1"]
        assert fc1.option != "fp32" and fc1.pinned
        edited = fc1.option
        assert app.unsolved and app.modified
        status = static_text(app, "#status")
        assert "modified" in status and "not re-solved" in status
        assert "⚑" in str(app.query_one("#layers", DataTable).get_cell("fc1", "option"))
        await pilot.press("r")
        await settle(app, pilot)
        assert app.plan.feasible and not app.unsolved
        assert app.plan.layers["fc1"].option == edited and app.plan.layers["fc1"].pinned
        assert app.plan.solver.status in ("OPTIMAL", "FEASIBLE")
        await pilot.press("s")
        await pilot.pause()
        assert not app.modified
    saved = Plan.load(plan_file)
    assert saved.layers["fc1"].option == edited and saved.layers["fc1"].pinned
    assert saved.options() == app.plan.options()


async def test_limit_bars_follow_each_change(plan_file: Path) -> None:
    app = make_app(plan_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        before = static_text(app, "#limits")
        await select(pilot, app, "conv2")
        app.pick_option("fp32")  # 25 ms -> 75 ms: breaks the 60 ms limit
        await pilot.pause()
        after = static_text(app, "#limits")
        assert after != before and "% over" in after
        assert app.plan.status == m.OVER_BUDGET
        usage = {u.name: u for u in m.limit_usage(app.plan)}
        assert usage["latency"].level == "over"


async def test_undo_and_redo(plan_file: Path) -> None:
    app = make_app(plan_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await select(pilot, app, "fc2")
        await pilot.press("o")
        changed = app.plan.layers["fc2"].option
        assert changed != "fp32"
        await pilot.press("z")
        assert app.plan.layers["fc2"].option == "fp32"
        assert not app.plan.layers["fc2"].pinned
        assert not app.modified and not app.unsolved
        await pilot.press("y")
        assert app.plan.layers["fc2"].option == changed and app.plan.layers["fc2"].pinned
        # undo also reverts a re-solve
        await pilot.press("r")
        await settle(app, pilot)
        solved = app.plan
        await pilot.press("z")
        assert app.plan != solved and app.unsolved
        assert app.plan.layers["fc2"].option == changed


async def test_pick_from_detail_pane_and_unpin(plan_file: Path) -> None:
    app = make_app(plan_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        alts = app.query_one("#alts", DataTable)
        alts.focus()
        await pilot.press("down", "enter")  # conv1: int8 -> int4
        await pilot.pause()
        assert app.plan.layers["conv1"].option == "int4"
        assert app.plan.layers["conv1"].pinned
        assert str(alts.get_cell("int4", "mark")) == "●"
        # with the mouse: first click highlights, the second takes the option
        await pilot.click("#alts", offset=(6, 4))  # the fp32 row
        await pilot.pause(0.3)
        await pilot.click("#alts", offset=(6, 4))
        await pilot.pause()
        assert app.plan.layers["conv1"].option == "fp32"
        app.query_one("#layers", DataTable).focus()
        await pilot.press("u")
        assert not app.plan.layers["conv1"].pinned
        assert app.plan.layers["conv1"].option == "fp32"


async def test_filter_shows_only_matching_rows(plan_file: Path) -> None:
    app = make_app(plan_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("slash")
        assert app.query_one("#filter", Input).has_focus
        await pilot.press(*"conv")
        assert rows(app) == ["conv1", "conv2"]
        assert app.selected in ("conv1", "conv2")
        await pilot.press("enter")  # back to the table, filter kept
        assert app.query_one("#layers", DataTable).has_focus
        assert rows(app) == ["conv1", "conv2"]
        await pilot.press("escape")
        assert rows(app) == ["conv1", "conv2", "fc1", "fc2", "fc3"]
        box = app.query_one("#filter", Input)
        await pilot.press("slash")
        box.value = "LINEAR"  # by op type, any case
        await pilot.pause()
        assert rows(app) == ["fc1", "fc2", "fc3"]
        box.value = "int8"  # by option
        await pilot.pause()
        assert rows(app) == ["conv1", "conv2"]
        box.value = "nothing"
        await pilot.pause()
        assert rows(app) == [] and app.selected is None
        await pilot.press("escape", "slash", "q")  # typed into the filter: does not quit
        assert app.is_running and app.filter_text == "q"


async def test_sort_by_key_and_by_clicking_a_header(plan_file: Path) -> None:
    app = make_app(plan_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        by_latency = ["fc3", "fc2", "conv1", "fc1", "conv2"]
        table = app.query_one("#layers", DataTable)
        x = 1 + sum(c.get_render_width(table) for c in table.ordered_columns[:5]) + 2
        await pilot.click("#layers", offset=(x, 1))  # the latency header
        await pilot.pause()
        assert app.sort_column == "latency" and rows(app) == by_latency
        await pilot.click("#layers", offset=(x, 1))
        await pilot.pause()
        assert rows(app) == by_latency[::-1]
        await pilot.press("t")  # next column: flash
        assert app.sort_column == "flash"
        assert rows(app) == ["conv1", "conv2", "fc3", "fc2", "fc1"]
        await pilot.press("T")
        assert rows(app) == ["fc1", "fc2", "fc3", "conv2", "conv1"]


async def test_exclude_an_option_everywhere(plan_file: Path) -> None:
    app = make_app(plan_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("x")
        assert isinstance(app.screen, PromptScreen)
        await pilot.press(*"int8", "enter")
        await settle(app, pilot)
        assert app.excluded == ("int8",)
        assert app.plan.feasible
        assert "int8" not in app.plan.options().values()
        assert "excluded: int8" in static_text(app, "#status")
        alts = app.query_one("#alts", DataTable)
        assert "excluded" in str(alts.get_cell("int8", "note"))
        # an unknown name changes nothing
        await pilot.press("x", *"int3", "enter")
        await settle(app, pilot)
        assert app.excluded == ("int8",)
        # naming it again allows it again
        await pilot.press("x", *"int8", "enter")
        await settle(app, pilot)
        assert app.excluded == ()
        assert "int8" in app.plan.options().values()


async def test_exclusions_and_limits_are_saved_with_the_plan(plan_file: Path) -> None:
    app = make_app(plan_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("x")
        await pilot.pause()
        before = str(app.screen.query_one("#prompt-choices", Static).content)
        await pilot.press(*"t4")
        await pilot.pause()
        shown = str(app.screen.query_one("#prompt-choices", Static).content)
        assert "fp32" in before and "int4" in shown and "fp32" not in shown, "narrows as typed"
        await pilot.press("enter")  # "t4" is no name: nothing excluded
        await pilot.press("x", *"int4", "enter")
        await settle(app, pilot)
        assert app.excluded == ("int4",)
        await pilot.press("L", *"latency=2s", "enter")
        await settle(app, pilot)
        assert app.plan.limits.latency == 2000.0 and app.plan.feasible
        await pilot.press("L", *"latency=fast", "enter")  # bad input: a notice, no change
        await settle(app, pilot)
        assert app.plan.limits.latency == 2000.0
        await pilot.press("s")
        await pilot.pause()
    saved = Plan.load(plan_file)
    assert saved.excluded == ["int4"] and saved.limits.latency == 2000.0
    assert "int4" not in saved.options().values()
    again = make_app(plan_file)
    assert again.excluded == ("int4",)


async def test_diff_lists_changed_layers_and_totals(plan_file: Path) -> None:
    app = make_app(plan_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await select(pilot, app, "fc1")
        await pilot.press("o")
        await pilot.press("d")
        assert isinstance(app.screen, DiffScreen)
        layers = app.screen.query_one("#diff-layers", DataTable)
        assert [r.key.value for r in layers.ordered_rows] == ["fc1"]
        assert "fp32 → int8" in str(layers.get_row("fc1")[1])
        totals = app.screen.query_one("#diff-totals", DataTable)
        assert totals.row_count == 6  # 4 metrics, acc cost, status
        await pilot.press("escape")
        assert not isinstance(app.screen, DiffScreen)


async def test_help_screen_lists_every_binding(plan_file: Path, screen_text) -> None:
    app = make_app(plan_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for description in ("Re-solve", "Undo", "Redo", "Save as", "Exclude", "dominated"):
            assert description in text
        await pilot.press("r")  # app keys do not leak through the dialog
        assert not app.solving
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_infeasible_plan_opens_with_its_explanation(infeasible_file: Path) -> None:
    app = make_app(infeasible_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        limits = static_text(app, "#limits")
        assert "cannot be met" in limits
        assert "needs 132.6KB instead of 4KB" in limits
        table = app.query_one("#layers", DataTable)
        assert str(table.get_cell("conv1", "option")) == "—"
        # a pin on an infeasible plan survives an infeasible re-solve
        await pilot.press("o")
        assert app.plan.layers["conv1"].option == "int8" and app.plan.layers["conv1"].pinned
        await pilot.press("r")
        await settle(app, pilot)
        assert not app.plan.feasible
        assert app.plan.layers["conv1"].option == "int8" and app.plan.layers["conv1"].pinned
        await pilot.press("a")  # nothing to apply
        assert not isinstance(app.screen, PromptScreen)


async def test_measured_flash_is_highlighted_when_off_by_more_than_20_percent(
        plan_file: Path, report: dict) -> None:
    for row in report["verification"]["layers"]:
        if row["layer"] == "conv2":
            row["image_bytes"] = int(row["planned_bytes"] * 1.5)
    app = make_app(plan_file, report)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.query_one("#layers", DataTable)
        bad = table.get_cell("conv2", "measured")
        good = table.get_cell("conv1", "measured")
        assert "+50%" in str(bad) and "red" in str(bad.style)
        assert str(good).strip() == "198B" and "red" not in str(good.style)


async def test_apply_streams_the_subprocess_output(plan_file: Path) -> None:
    def command(plan: Path, out: Path) -> list[str]:
        script = ("import shutil, sys, pathlib; print('applying', sys.argv[1]); "
                  "out = pathlib.Path(sys.argv[2]); out.mkdir(parents=True); "
                  "shutil.copy(sys.argv[3], out / 'report.json'); print('wrote report')")
        return [sys.executable, "-c", script, str(plan), str(out), str(DATA / "report.json")]

    app = make_app(plan_file, apply_command=command)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.report is None
        await pilot.press("a")
        assert isinstance(app.screen, PromptScreen)
        await pilot.press("enter")  # default: out/ beside the plan
        await settle(app, pilot)
        lines = list(app.query_one("#log", Log).lines)
        assert any(line.startswith("applying") for line in lines)
        assert "wrote report" in lines and lines[-1] == "[done]"
        assert "apply: done" in static_text(app, "#status")
        assert app.report is not None  # the new report feeds the measured column
        table = app.query_one("#layers", DataTable)
        assert "measured" in [c.key.value for c in table.ordered_columns]


async def test_apply_failure_and_unsaved_plan(plan_file: Path) -> None:
    app = make_app(plan_file, apply_command=lambda plan, out: [
        sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("a", "enter")
        await settle(app, pilot)
        assert list(app.query_one("#log", Log).lines)[-2:] == ["boom", "[failed (exit 3)]"]
        await pilot.press("o")  # unsaved edit: apply asks to save first
        await pilot.press("a")
        assert not isinstance(app.screen, PromptScreen)


async def test_save_as_writes_another_file(plan_file: Path, tmp_path: Path) -> None:
    app = make_app(plan_file)
    target = tmp_path / "edited" / "plan2.json"
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("o", "S")
        assert isinstance(app.screen, PromptScreen)
        app.screen.query_one(Input).value = str(target)
        await pilot.press("enter")
        await pilot.pause()
        assert app.plan_path == target and not app.modified
    assert Plan.load(target).layers["conv1"].pinned
    assert not Plan.load(plan_file).layers["conv1"].pinned


async def test_quit_asks_when_there_are_unsaved_changes(plan_file: Path) -> None:
    app = make_app(plan_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("o", "q")
        assert isinstance(app.screen, ConfirmQuitScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, ConfirmQuitScreen)
        await pilot.press("q", "s")  # save and quit
        await pilot.pause()
    assert app.return_code == 0
    assert Plan.load(plan_file).layers["conv1"].pinned


async def test_quit_without_changes(plan_file: Path) -> None:
    app = make_app(plan_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0
    assert json.loads(plan_file.read_text()) == json.loads((DATA / "plan.json").read_text())


async def test_a_key_right_after_a_cursor_move_acts_on_the_row_shown(plan_file: Path) -> None:
    app = make_app(plan_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.query_one("#layers", DataTable)
        table.move_cursor(row=3)  # no pause: the highlight message is not handled yet
        app.action_cycle_option(1)
        assert app.plan.layers["fc2"].pinned and not app.plan.layers["conv1"].pinned


async def test_dominated_alternatives_are_greyed(plan_file: Path) -> None:
    plan = Plan.load(plan_file)
    conv1 = plan.layers["conv1"]
    int8 = conv1.alternative("int8")
    worse = int8.model_copy(update={"option": "int4", "latency_ms": int8.latency_ms * 2,
                                    "acc_loss": int8.acc_loss * 2})
    alts = [int8, worse, conv1.alternative("fp32")]
    plan = plan.model_copy(update={"layers": {**plan.layers, "conv1": conv1.model_copy(
        update={"alternatives": alts})}})
    app = ReviewApp(plan, plan_file)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.query_one("#alts", DataTable)
        assert "dominated" in str(table.get_cell("int4", "note"))
        assert "dim" in str(table.get_cell("int4", "latency").style)
        assert "dim" not in str(table.get_cell("fp32", "latency").style)
        assert str(table.get_cell("fp32", "note")) == ""
