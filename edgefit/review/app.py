"""`edgefit review plan.json`: inspect, edit and re-solve a plan in the terminal (Textual).

Keyboard first (footer of bindings, `?` for help), mouse works. Start-up stays light: the
solver (OR-Tools) is imported inside the re-solve worker, torch never (`edgefit apply` runs as
a subprocess).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.coordinate import Coordinate
from textual.css.query import NoMatches
from textual.markup import escape
from textual.widgets import (
    DataTable,
    Footer,
    Header,
    Input,
    LoadingIndicator,
    Log,
    Static,
    TabbedContent,
    TabPane,
)
from textual.worker import get_current_worker

from device_specs.budget import Limits
from edgefit.review import model as m
from edgefit.review.screens import ConfirmQuitScreen, DiffScreen, HelpScreen, PromptScreen
from edgefit_common.errors import EdgefitError, SpecError
from edgefit_common.units import fmt_bytes, fmt_mj, fmt_ms
from planner.plan import LayerPlan, Plan

EXIT_BAD_INPUT = 2
PIN_MARK = "⚑"
CHOSEN_MARK = "●"
HAVE_PLOTEXT = importlib.util.find_spec("textual_plotext") is not None

ApplyCommand = Callable[[Path, Path], list[str]]


def default_apply_command(plan: Path, out_dir: Path) -> list[str]:
    """`edgefit apply PLAN --out DIR`, with the edgefit of this interpreter when there is one."""
    script = Path(sys.executable).with_name("edgefit")
    exe = str(script) if script.exists() else shutil.which("edgefit")
    if exe:
        return [exe, "apply", str(plan), "--out", str(out_dir)]
    return [sys.executable, "-c", "from edgefit.cli import main; main()", "apply", str(plan),
            "--out", str(out_dir)]


def load_report(path: Path) -> dict[str, Any]:
    """report.json written by `edgefit apply` (SpecError with one line when unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"{path}: report file not found") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: an apply report is a JSON object")
    return data


@dataclass(frozen=True)
class Snapshot:
    """One entry of the undo stack: the plan, the session's exclusions, and whether the plan
    has hand edits the solver has not seen yet."""

    plan: Plan
    excluded: tuple[str, ...]
    unsolved: bool


# Layer table: column key -> (label, sort key). Sort keys put missing values last.
def _num(value: float | None) -> tuple[bool, float]:
    return (value is None, 0.0 if value is None else value)


def _cost(lp: LayerPlan, attr: str) -> tuple[bool, float]:
    return _num(None if lp.predicted is None else getattr(lp.predicted, attr))


COLUMNS: dict[str, tuple[str, Callable[[str, LayerPlan], Any]]] = {
    "layer": ("layer", lambda n, lp: n),
    "type": ("type", lambda n, lp: lp.op_type),
    "params": ("params", lambda n, lp: lp.params),
    "macs": ("MACs", lambda n, lp: lp.macs),
    "option": ("option", lambda n, lp: (lp.option is None, lp.option or "")),
    "latency": ("latency", lambda n, lp: _cost(lp, "latency_ms")),
    "flash": ("flash", lambda n, lp: _cost(lp, "flash_bytes")),
    "ram": ("peak RAM", lambda n, lp: _cost(lp, "ram_bytes")),
    "energy": ("energy", lambda n, lp: _cost(lp, "energy_mj")),
    "acc": ("acc cost", lambda n, lp: _cost(lp, "acc_loss")),
}
MEASURED_COLUMN = "measured"
LEVEL_STYLE = {"ok": "green", "tight": "yellow", "over": "bold red", "none": "dim"}


class ReviewApp(App[int]):
    """Review one plan: a layer table, limit bars, a detail pane, and edits that re-solve."""

    CSS_PATH = "review.tcss"
    TITLE = "edgefit review"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("o", "cycle_option(1)", "Option",
                tooltip="give the selected layer its next option (pins it)"),
        Binding("O", "cycle_option(-1)", "Prev option", show=False,
                tooltip="give the selected layer its previous option (pins it)"),
        Binding("u", "unpin", "Unpin", tooltip="let the solver choose this layer again"),
        Binding("x", "exclude", "Exclude",
                tooltip="exclude an option or technique everywhere (asks), then re-solve"),
        Binding("L", "limit", "Limit", show=False,
                tooltip="change a limit (asks: latency=40ms, ram=none), then re-solve"),
        Binding("r", "resolve", "Re-solve",
                tooltip="solve again with the pins and exclusions (runs in the background)"),
        Binding("z", "undo", "Undo", tooltip="undo the last edit or re-solve"),
        Binding("y", "redo", "Redo", show=False, tooltip="redo what undo took back"),
        Binding("d", "diff", "Diff", tooltip="changes against the plan as it was opened"),
        Binding("s", "save", "Save", tooltip="save to the same file (atomic)"),
        Binding("S", "save_as", "Save as", show=False, tooltip="save to another file (asks)"),
        Binding("a", "apply", "Apply",
                tooltip="run edgefit apply on the saved plan; output in the Apply log"),
        Binding("slash", "filter", "Filter", tooltip="filter layers by name, type or option"),
        Binding("t", "sort(1)", "Sort", show=False,
                tooltip="sort by the next column (then back to execution order)"),
        Binding("T", "sort(-1)", "Reverse sort", show=False, tooltip="reverse the sort"),
        Binding("escape", "clear_filter", "Clear filter", show=False,
                tooltip="clear and close the filter"),
        Binding("question_mark", "help", "Help", tooltip="this screen"),
        Binding("q", "quit_review", "Quit", tooltip="quit (asks when there are unsaved changes)"),
    ]

    def __init__(self, plan: Plan, path: Path, report: Mapping[str, Any] | None = None, *,
                 time_limit_s: float = 10.0, apply_command: ApplyCommand | None = None) -> None:
        super().__init__()
        self.original = plan
        self.plan = plan
        self.plan_path = Path(path)
        self.report: Mapping[str, Any] | None = report
        self.time_limit_s = time_limit_s
        self.apply_command = apply_command or default_apply_command
        self.excluded: tuple[str, ...] = tuple(plan.excluded)  # saved with the plan
        self.unsolved = False  # hand edits not re-solved yet
        self.saved_plan = plan
        self.undo_stack: list[Snapshot] = []
        self.redo_stack: list[Snapshot] = []
        self._want: str | None = next(iter(plan.layers), None)  # selection before mount
        self._detail_layer: str | None = None  # the layer the detail pane shows
        self.sort_column: str | None = None  # None: execution order
        self.sort_reverse = False
        self.filter_text = ""
        self.solving = False
        self.applying = False
        self.apply_state = ""
        self._proc: subprocess.Popen[str] | None = None

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False, icon="≡")
        with Horizontal(id="statusbar"):
            yield Static(id="status")
            yield LoadingIndicator(id="spinner")
        yield Input(placeholder="filter by name, type or option", id="filter")
        yield DataTable(id="layers", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="middle"):
            yield Static(id="limits")
            yield DataTable(id="alts", cursor_type="row")
        with TabbedContent(id="bottom"):
            with TabPane("Latency chart", id="tab-chart"):
                if HAVE_PLOTEXT:
                    from edgefit.review.chart import LatencyChart

                    yield LatencyChart(id="chart")
                else:
                    yield Static("the chart needs textual-plotext "
                                 "(pip install textual-plotext)", id="chart-missing")
            with TabPane("Apply log", id="tab-log"):
                yield Log(id="log", highlight=False)
            with TabPane("Report", id="tab-report"):
                yield Static(id="report")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.sub_title = self._subtitle()
        self.query_one("#limits").border_title = "limits (runtime included)"
        self.query_one("#log", Log).border_title = "edgefit apply"
        self.refresh_all()
        self.query_one("#layers", DataTable).focus()

    def on_unmount(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()

    def _subtitle(self) -> str:
        p = self.plan
        return (f"{self.plan_path.name} — {p.model.name} on {p.target.device}/"
                f"{p.target.profile}")

    # ------------------------------------------------------------------ state helpers

    @property
    def selected(self) -> str | None:
        """The layer under the table's cursor (read from the table itself, so a key pressed
        right after a cursor move acts on the row the user sees)."""
        try:
            table = self.query_one("#layers", DataTable)
        except NoMatches:
            return self._want
        if table.row_count == 0:
            return None
        row_key, _ = table.coordinate_to_cell_key(Coordinate(table.cursor_row, 0))
        return row_key.value

    @property
    def modified(self) -> bool:
        return self.plan != self.saved_plan

    def _snapshot(self) -> Snapshot:
        return Snapshot(self.plan, self.excluded, self.unsolved)

    def _restore(self, snap: Snapshot) -> None:
        self.plan, self.excluded, self.unsolved = snap.plan, snap.excluded, snap.unsolved

    def _commit(self, plan: Plan, *, unsolved: bool, excluded: tuple[str, ...] | None = None,
                ) -> None:
        """Make `plan` current, remembering the previous state for undo."""
        if plan == self.plan and (excluded is None or excluded == self.excluded):
            return
        self.undo_stack.append(self._snapshot())
        self.redo_stack.clear()
        self.plan = plan
        self.unsolved = unsolved
        if excluded is not None:
            self.excluded = excluded
        self.refresh_all()

    def _busy(self) -> bool:
        if self.solving:
            self.notify("the solver is running; wait for it", severity="warning")
            return True
        return False

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Grey out what cannot run now (the footer shows it disabled)."""
        if action == "undo":
            return bool(self.undo_stack) or None
        if action == "redo":
            return bool(self.redo_stack) or None
        if action == "apply":
            return (not self.applying) or None
        if action == "resolve":
            return (not self.solving) or None
        return True

    # ------------------------------------------------------------------ rendering

    def refresh_all(self) -> None:
        self._fill_layers()
        self._fill_detail()
        self._fill_limits()
        self._fill_status()
        self._fill_report()
        if HAVE_PLOTEXT:
            from edgefit.review.chart import LatencyChart

            self.query_one("#chart", LatencyChart).show(self.plan)
        self.refresh_bindings()

    def visible_layers(self) -> list[str]:
        names = [n for n, lp in self.plan.layers.items() if m.matches(n, lp, self.filter_text)]
        if self.sort_column is not None:
            key = COLUMNS[self.sort_column][1] if self.sort_column in COLUMNS else None
            if key is None:  # the measured column
                measured = m.measured_flash(self.plan, self.report)
                names.sort(key=lambda n: _num(measured[n].image_bytes if n in measured
                                              else None), reverse=self.sort_reverse)
            else:
                names.sort(key=lambda n: key(n, self.plan.layers[n]), reverse=self.sort_reverse)
        return names

    def _fill_layers(self) -> None:
        table = self.query_one("#layers", DataTable)
        want = self.selected if table.row_count else self._want
        measured = m.measured_flash(self.plan, self.report)
        table.clear(columns=True)
        columns = [(k, label) for k, (label, _) in COLUMNS.items()]
        if self.report is not None:
            columns.append((MEASURED_COLUMN, "measured flash"))
        for key, label in columns:
            if key == self.sort_column:
                label += " ▼" if self.sort_reverse else " ▲"
            table.add_column(label, key=key)
        names = self.visible_layers()
        for name in names:
            table.add_row(*self._layer_cells(name, self.plan.layers[name], measured), key=name)
        table.border_title = (f"layers ({len(names)} of {len(self.plan.layers)})"
                              if self.filter_text else f"layers ({len(names)})")
        if want not in names:
            want = names[0] if names else None
        self._want = want
        if want is not None:
            table.move_cursor(row=names.index(want), animate=False)

    def _layer_cells(self, name: str, lp: LayerPlan,
                     measured: Mapping[str, m.Measured]) -> list[Text]:
        def right(text: str, style: str = "") -> Text:
            return Text(text, style=style, justify="right")

        option = Text(lp.option or "—", style="" if lp.option else "dim")
        if lp.pinned:
            option.append(f" {PIN_MARK}", style="bold yellow")
        p = lp.predicted
        cells = [Text(name), Text(lp.op_type), right(m.fmt_int(lp.params)),
                 right(m.fmt_int(lp.macs)), option]
        if p is None:
            cells += [right("—", "dim")] * 5
        else:
            cells += [right(fmt_ms(p.latency_ms)), right(fmt_bytes(p.flash_bytes)),
                      right(fmt_bytes(p.ram_bytes) if p.ram_bytes is not None else "—"),
                      right(fmt_mj(p.energy_mj)), right(m.fmt_acc(p.acc_loss))]
        if self.report is not None:
            cells.append(self._measured_cell(lp, measured.get(name)))
        return cells

    @staticmethod
    def _measured_cell(lp: LayerPlan, meas: m.Measured | None) -> Text:
        if meas is None:
            return Text("—", style="dim", justify="right")
        text = fmt_bytes(meas.image_bytes)
        style = ""
        if meas.deviates:
            dev = meas.deviation or 0.0
            text += f" {dev * 100:+.0f}%"
            style = "bold white on red"
        if meas.option != lp.option:  # measured for another option than the current one
            text += f" ({meas.option})"
            style = style or "dim"
        return Text(text, style=style, justify="right")

    def _fill_detail(self) -> None:
        alts = self.query_one("#alts", DataTable)
        alts.clear(columns=True)
        layer = self._detail_layer = self.selected
        if layer is None:
            alts.border_title = "no layer selected"
            alts.border_subtitle = ""
            return
        lp = self.plan.layers[layer]
        title = (f"[b]{escape(layer)}[/b] {escape(lp.op_type)} · "
                 f"{m.fmt_int(lp.params)} params · {m.fmt_int(lp.macs)} MACs")
        if lp.pinned:
            title += f" · [b yellow]{PIN_MARK} pinned[/]"
        alts.border_title = title
        dominated = m.never_picked(self.plan)[layer]
        for key, label in (("mark", " "), ("option", "option"), ("latency", "latency"),
                           ("flash", "flash"), ("energy", "energy"), ("acc", "acc cost"),
                           ("act", "act B"), ("note", "")):
            alts.add_column(label, key=key)
        chosen_row = 0
        for i, alt in enumerate(lp.alternatives):
            chosen = alt.option == lp.option
            chosen_row = i if chosen else chosen_row
            notes = []
            if alt.option in dominated:
                notes.append("dominated")
            if m.is_excluded(alt, self.excluded):
                notes.append("excluded")
            style = "bold" if chosen else ("dim" if alt.option in dominated else "")

            def cell(text: str, style: str = style, left: bool = False) -> Text:
                return Text(text, style=style, justify="left" if left else "right")

            alts.add_row(Text(CHOSEN_MARK if chosen else "", style="bold green"),
                         cell(alt.option, left=True), cell(fmt_ms(alt.latency_ms)),
                         cell(fmt_bytes(alt.flash_bytes)), cell(fmt_mj(alt.energy_mj)),
                         cell(m.fmt_acc(alt.acc_loss)), cell(f"{alt.act_bytes:g}"),
                         cell(", ".join(notes), "dim italic", left=True), key=alt.option)
        if lp.alternatives:
            alts.move_cursor(row=chosen_row, animate=False)
        self._fill_techniques()

    def _fill_techniques(self) -> None:
        """The highlighted alternative's techniques, under the detail pane."""
        alts = self.query_one("#alts", DataTable)
        if self._detail_layer is None or alts.row_count == 0:
            alts.border_subtitle = ""
            return
        lp = self.plan.layers[self._detail_layer]
        alt = lp.alternatives[min(alts.cursor_row, len(lp.alternatives) - 1)]
        if not alt.techniques:
            alts.border_subtitle = f"{escape(alt.option)}: left as fp32"
            return
        parts = [" ".join(str(v) for k, v in t.model_dump().items()
                          if v is not None and not isinstance(v, bool))
                 for t in alt.techniques]
        alts.border_subtitle = f"{escape(alt.option)}: " + escape("; ".join(parts))

    def _fill_limits(self) -> None:
        panel = self.query_one("#limits", Static)
        plan = self.plan
        if plan.totals is None:
            lines = m.explanation_lines(plan)
            body = Text(f"{plan.status}\n", style="bold red")
            body.append(lines[0] + "\n", style="bold")
            for line in lines[1:]:
                body.append(f"• {line}\n")
            panel.update(body)
            panel.border_subtitle = "pin or exclude options, then re-solve (r)"
            panel.set_class(True, "infeasible")
            return
        panel.set_class(False, "infeasible")
        panel.border_subtitle = ""
        grid = Table.grid(padding=(0, 1))
        for _ in range(4):
            grid.add_column()
        width = 14
        for row in m.limit_usage(plan):
            if row.limit is None:
                grid.add_row(row.label, Text("no limit", style="dim"), row.fmt(row.used), "")
                continue
            frac = row.fraction or 0.0
            filled = min(width, round(min(frac, 1.0) * width))
            style = LEVEL_STYLE[row.level]
            bar = Text("█" * filled, style=style)
            bar.append("░" * (width - filled), style="dim")
            head = row.headroom or 0.0
            note = f"{100 * head:.1f} % left" if head >= 0 else f"{-100 * head:.1f} % over"
            if row.binding:
                note += " · binds"
            grid.add_row(Text(row.label, style="bold"), bar,
                         f"{row.fmt(row.used)} / {row.fmt(row.limit)}", Text(note, style=style))
        given = plan.limits.given()
        grid.add_row(Text("acc cost", style="bold"), m.fmt_acc(plan.totals.acc_loss),
                     Text(plan.accuracy_unit, style="dim"), "")
        if "accuracy_drop" in given:
            limit = given["accuracy_drop"]
            measured = (self.report or {}).get("accuracy", {}).get("drop_pp")
            if measured is None:
                grid.add_row(Text("acc drop", style="bold"), Text("checked after apply",
                                                                  style="dim"),
                             f"limit {limit:g}pp", "")
            else:
                ok = measured <= limit
                grid.add_row(Text("acc drop", style="bold"),
                             Text("measured", style="green" if ok else "bold red"),
                             f"{measured:.2f}pp / {limit:g}pp", Text("met" if ok else "NOT met",
                                                                     style="green" if ok
                                                                     else "bold red"))
        if plan.margin:
            grid.add_row(Text("margin", style="dim"),
                         Text(f"{100 * plan.margin:g} % kept free", style="dim"), "", "")
        panel.update(grid)

    def _fill_status(self) -> None:
        plan = self.plan
        sv = plan.solver
        style = "bold green" if plan.feasible else "bold red"
        text = Text.assemble(("plan ", "dim"), (plan.status, style),
                             ("  solver ", "dim"),
                             f"{sv.backend} {sv.status} {sv.wall_time_s:.2f} s "
                             f"({sv.options_considered} options)")
        pinned = len(m.pins(plan))
        if pinned:
            text.append(f"  {PIN_MARK} {pinned} pinned", style="yellow")
        if self.excluded:
            text.append(f"  excluded: {', '.join(self.excluded)}", style="magenta")
        if self.unsolved:
            text.append("  edited, not re-solved (r)", style="yellow")
        if self.modified:
            text.append("  ● modified", style="bold yellow")
        if self.solving:
            text.append("  solving…", style="bold cyan")
        if self.apply_state:
            text.append(f"  apply: {self.apply_state}",
                        style="bold red" if "failed" in self.apply_state else "cyan")
        self.query_one("#status", Static).update(text)
        self.query_one("#spinner").display = self.solving or self.applying

    def _fill_report(self) -> None:
        panel = self.query_one("#report", Static)
        report = self.report
        if not report:
            panel.update(Text("no apply report: pass --report REPORT, or apply (a)",
                              style="dim"))
            return
        parts: list[Any] = []
        acc = report.get("accuracy") or {}
        if acc:
            parts.append(Text(f"accuracy: fp32 {100 * acc.get('fp32', 0):.2f} % -> compressed "
                              f"{100 * acc.get('compressed', 0):.2f} % (drop "
                              f"{acc.get('drop_pp', 0):.2f} pp)"))
        rows = (report.get("host_check") or {}).get("rows") or []
        if rows:
            table = Table(title="host check (this machine, not the target)",
                          title_justify="left", expand=False)
            for col in ("quantity", "predicted", "measured", "ratio"):
                table.add_column(col, justify="left" if col == "quantity" else "right")
            for row in rows:
                fmt = fmt_ms if row.get("unit") == "ms" else fmt_bytes
                pred, meas = row.get("predicted"), row.get("measured")
                ratio = f"{meas / pred:.2f}" if pred and meas is not None else "-"
                table.add_row(str(row.get("quantity")), fmt(pred) if pred is not None else "-",
                              fmt(meas) if meas is not None else "-", ratio)
            parts.append(table)
        for check in report.get("checks") or []:
            ok = check.get("ok")
            parts.append(Text(f"[{'ok' if ok else 'FAIL'}] {check.get('check')}",
                              style="green" if ok else "bold red"))
        panel.update(Group(*parts))

    # ------------------------------------------------------------------ table events

    @on(DataTable.RowHighlighted, "#layers")
    def _layer_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.selected != self._detail_layer:
            self._fill_detail()

    @on(DataTable.RowHighlighted, "#alts")
    def _alt_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._fill_techniques()

    @on(DataTable.RowSelected, "#alts")
    def _alt_selected(self, event: DataTable.RowSelected) -> None:
        option = event.row_key.value
        if option is not None:
            self.pick_option(option)

    @on(DataTable.HeaderSelected, "#layers")
    def _header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = event.column_key.value
        if key == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = key, False
        self._fill_layers()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self._fill_layers()
        self._fill_detail()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self.query_one("#layers", DataTable).focus()

    # ------------------------------------------------------------------ edits

    def pick_option(self, option: str) -> None:
        """Give the layer the detail pane shows `option` and pin it."""
        layer = self._detail_layer
        if layer is None or self._busy():
            return
        self._commit(m.choose(self.plan, layer, option), unsolved=True)

    def action_cycle_option(self, step: int) -> None:
        layer = self.selected
        if layer is None or self._busy():
            return
        self._commit(m.cycle(self.plan, layer, step), unsolved=True)

    def action_unpin(self) -> None:
        layer = self.selected
        if layer is None or self._busy():
            return
        if not self.plan.layers[layer].pinned:
            self.notify(f"{layer} is not pinned")
            return
        self._commit(m.set_pinned(self.plan, layer, False), unsolved=True)

    def action_exclude(self) -> None:
        if self._busy():
            return
        known = m.known_exclusions(self.plan)
        hint = (f"an option, kernel or technique no layer may take ({len(known)} known: type "
                f"to narrow them). Excluded now: {', '.join(self.excluded) or 'none'} (naming "
                "one again allows it again). Re-solves right away.")
        self.push_screen(PromptScreen("exclude everywhere", hint, placeholder="e.g. int4",
                                      choices=known), self._exclude_answer)

    def _exclude_answer(self, value: str | None) -> None:
        if not value:
            return
        known = m.known_exclusions(self.plan)
        if value not in known and value not in self.excluded:
            self.notify(f"{value!r} is neither an option nor a technique of this plan "
                        f"({', '.join(known)})", severity="error")
            return
        if value in self.excluded:
            excluded = tuple(e for e in self.excluded if e != value)
            self.notify(f"{value} allowed again")
        else:
            excluded = (*self.excluded, value)
        self.start_resolve(excluded)

    def action_limit(self) -> None:
        if self._busy():
            return
        now = ", ".join(f"{k} {v}" for k, v in self.plan.limits.model_dump().items()
                        if v is not None) or "none"
        hint = (f"NAME=VALUE with a unit: latency, flash, ram, energy, accuracy_drop (e.g. "
                f"latency=40ms, ram=none removes it). Now: {now}. Re-solves right away.")
        self.push_screen(PromptScreen("change a limit", hint, placeholder="e.g. latency=40ms"),
                         self._limit_answer)

    def _limit_answer(self, value: str | None) -> None:
        if not value:
            return
        try:
            limits = m.with_limit(self.plan.limits, value)
        except EdgefitError as exc:
            self.notify(str(exc), severity="error")
            return
        self.start_resolve(self.excluded, limits)

    def action_undo(self) -> None:
        if not self.undo_stack or self._busy():
            return
        self.redo_stack.append(self._snapshot())
        self._restore(self.undo_stack.pop())
        self.refresh_all()

    def action_redo(self) -> None:
        if not self.redo_stack or self._busy():
            return
        self.undo_stack.append(self._snapshot())
        self._restore(self.redo_stack.pop())
        self.refresh_all()

    # ------------------------------------------------------------------ re-solve

    def action_resolve(self) -> None:
        if self._busy():
            return
        self.start_resolve(self.excluded)

    def start_resolve(self, excluded: tuple[str, ...], limits: Limits | None = None) -> None:
        self.solving = True
        self._fill_status()
        self.refresh_bindings()
        self._solve_worker(self.plan, excluded, limits)

    @work(thread=True, exclusive=True, group="solve", exit_on_error=False)
    def _solve_worker(self, plan: Plan, excluded: tuple[str, ...],
                      limits: Limits | None = None) -> None:
        try:
            from planner.resolve import resolve
            from planner.result import SolverOptions

            # the exclusions are the plan's own (saved with it): the set here replaces them
            new = resolve(plan.model_copy(update={"excluded": list(excluded)}),
                          pins=m.pins(plan), limits=limits,
                          options=SolverOptions(time_limit_s=self.time_limit_s))
            new = m.keep_pinned_options(plan, new)
        except EdgefitError as exc:
            self.call_from_thread(self._solve_failed, str(exc))
            return
        except Exception as exc:  # a solver crash must not take the session down
            self.call_from_thread(self._solve_failed, f"{type(exc).__name__}: {exc}")
            return
        self.call_from_thread(self._solved, new, excluded)

    def _solved(self, new: Plan, excluded: tuple[str, ...]) -> None:
        self.solving = False
        if new == self.plan and excluded == self.excluded:
            self.unsolved = False
            self.refresh_all()
        else:
            self._commit(new, unsolved=False, excluded=excluded)
        sv = new.solver
        self.notify(f"re-solved: {new.status} ({sv.backend}, {sv.wall_time_s:.2f} s)",
                    severity="information" if new.feasible else "warning")

    def _solve_failed(self, message: str) -> None:
        self.solving = False
        self.refresh_all()
        self.notify(f"re-solve failed: {message}", severity="error", timeout=8)

    # ------------------------------------------------------------------ diff, help, filter, sort

    def action_diff(self) -> None:
        self.push_screen(DiffScreen(self.original, self.plan))

    def action_help(self) -> None:
        rows = []
        for b in self.BINDINGS:
            if isinstance(b, Binding):
                rows.append((self.get_key_display(b), b.description, b.tooltip))
        self.push_screen(HelpScreen(rows))

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if not box.display and not self.filter_text:
            return
        box.value = ""
        box.display = False
        self.filter_text = ""
        self._fill_layers()
        self._fill_detail()
        self.query_one("#layers", DataTable).focus()

    def action_sort(self, step: int) -> None:
        """`t`: sort by the next column (after the last: execution order); `T`: reverse."""
        if step < 0:
            if self.sort_column is None:
                self.sort_column = "layer"
            self.sort_reverse = not self.sort_reverse
        else:
            keys: list[str | None] = [None, *COLUMNS]
            if self.report is not None:
                keys.append(MEASURED_COLUMN)
            at = keys.index(self.sort_column) if self.sort_column in keys else 0
            self.sort_column = keys[(at + 1) % len(keys)]
            self.sort_reverse = False
        self._fill_layers()
        what = self.sort_column or "execution order"
        self.notify(f"sorted by {what}{' (reversed)' if self.sort_reverse else ''}",
                    timeout=2)

    # ------------------------------------------------------------------ save, apply, quit

    def save_to(self, path: Path) -> bool:
        try:
            self.plan.save(path)
        except OSError as exc:
            self.notify(f"cannot save {path}: {exc}", severity="error", timeout=8)
            return False
        self.plan_path = path
        self.saved_plan = self.plan
        self.sub_title = self._subtitle()
        self._fill_status()
        note = ""
        if self.plan.status == m.OVER_BUDGET:
            note = " — its totals break a limit: re-solve (r) before applying"
        elif self.unsolved:
            note = " — edited by hand, not re-solved"
        self.notify(f"saved {path}{note}", severity="warning" if note else "information")
        return True

    def action_save(self) -> None:
        if not self._busy():
            self.save_to(self.plan_path)

    def action_save_as(self) -> None:
        if self._busy():
            return
        self.push_screen(PromptScreen("save plan as", "a path; the file is written atomically",
                                      value=str(self.plan_path)), self._save_as_answer)

    def _save_as_answer(self, value: str | None) -> None:
        if value:
            self.save_to(Path(value).expanduser())

    def action_apply(self) -> None:
        if self.applying:
            self.notify("apply is already running", severity="warning")
            return
        if self._busy():
            return
        if not self.plan.feasible:
            self.notify(f"the plan's status is {self.plan.status}: nothing to apply "
                        "(re-solve first)", severity="error")
            return
        if self.modified:
            self.notify("save the plan first (s): apply runs on the saved file",
                        severity="warning")
            return
        default = self.plan_path.parent / "out"
        self.push_screen(PromptScreen("apply: output directory",
                                      f"runs edgefit apply {self.plan_path} --out DIR",
                                      value=str(default)), self._apply_answer)

    def _apply_answer(self, value: str | None) -> None:
        if not value:
            return
        out_dir = Path(value).expanduser()
        argv = self.apply_command(self.plan_path, out_dir)
        log = self.query_one("#log", Log)
        log.clear()
        log.write_line("$ " + " ".join(argv))
        self.query_one("#bottom", TabbedContent).active = "tab-log"
        self.applying = True
        self.apply_state = "running…"
        log.border_title = "edgefit apply: running…"
        self._fill_status()
        self.refresh_bindings()
        self._apply_worker(argv, out_dir)

    @work(thread=True, exclusive=True, group="apply", exit_on_error=False)
    def _apply_worker(self, argv: list[str], out_dir: Path) -> None:
        worker = get_current_worker()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True, bufsize=1, env=env)
        except OSError as exc:
            self.call_from_thread(self._apply_finished, None, out_dir, str(exc))
            return
        self._proc = proc
        assert proc.stdout is not None
        for line in proc.stdout:
            if worker.is_cancelled:
                proc.terminate()
                break
            self.call_from_thread(self._apply_line, line.rstrip("\n"))
        code = proc.wait()
        if not worker.is_cancelled:
            self.call_from_thread(self._apply_finished, code, out_dir, None)

    def _apply_line(self, line: str) -> None:
        self.query_one("#log", Log).write_line(line)

    def _apply_finished(self, code: int | None, out_dir: Path, error: str | None) -> None:
        self.applying = False
        self._proc = None
        log = self.query_one("#log", Log)
        if error is not None:
            self.apply_state = "failed"
            log.write_line(f"cannot start edgefit apply: {error}")
        elif code == 0:
            self.apply_state = "done"
        else:
            self.apply_state = f"failed (exit {code})"
        log.write_line(f"[{self.apply_state}]")
        log.border_title = f"edgefit apply: {self.apply_state}"
        report_file = out_dir / "report.json"
        if error is None and report_file.exists():
            try:
                self.report = load_report(report_file)
            except SpecError as exc:
                log.write_line(f"cannot read the report: {exc}")
        self.refresh_all()
        self.notify(f"edgefit apply {self.apply_state}",
                    severity="information" if code == 0 else "error")

    def action_quit_review(self) -> None:
        if not self.modified:
            self.exit(0)
            return
        self.push_screen(ConfirmQuitScreen(), self._quit_answer)

    def _quit_answer(self, answer: str | None) -> None:
        if answer == "save":
            if self.save_to(self.plan_path):
                self.exit(0)
        elif answer == "quit":
            self.exit(0)


def run_review(plan_path: Path, report_path: Path | None = None) -> int:
    """`edgefit review PLAN [--report REPORT]`: 0 after a normal quit, 2 for a bad file (one
    line on stderr, no traceback)."""
    try:
        plan = Plan.load(Path(plan_path))
        report = load_report(Path(report_path)) if report_path is not None else None
    except EdgefitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    app = ReviewApp(plan, Path(plan_path), report)
    code = app.run()
    return int(code or 0)
