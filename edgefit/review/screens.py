"""Modal screens of the review TUI: help, diff, a one-line prompt, and the quit confirmation."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Label, Static

from edgefit.review.model import diff_layers, diff_totals, fmt_acc
from edgefit_common.units import fmt_bytes, fmt_ms
from planner.plan import Costs, Plan

LEGEND = (
    ("⚑", "pinned: re-solving keeps this layer's option"),
    ("(int8)", "measured flash of the option applied, when the layer has another now"),
    ("●", "the chosen option (detail pane)"),
    ("dim", "an option another one beats in every cost and accuracy (dominated)"),
    ("red", "bar: a limit is broken; measured flash > 20 % off the prediction"),
    ("yellow", "bar: within 10 % of the limit, or binding"),
    ("green", "bar: headroom left"),
)
OTHER_KEYS = (
    ("↑ ↓ / mouse", "Move", "in a table; click a row to select it"),
    ("enter", "Take option", "in the detail pane: give the layer that option (pins it)"),
    ("click twice", "Take option", "the same with the mouse, in the detail pane"),
    ("click header", "Sort", "by that column (click again: reverse)"),
    ("tab", "Focus", "move between the layer table and the detail pane"),
    ("escape", "Close", "close a dialog"),
    ("ctrl+p", "Palette", "command palette (theme, screenshot, quit)"),
)


class HelpScreen(ModalScreen[None]):
    """Every key binding (from the app's BINDINGS data) and what the marks mean."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss_help", "Close"),
    ]

    def __init__(self, bindings: Iterable[tuple[str, str, str]]) -> None:
        super().__init__()
        self.binding_rows = list(bindings)

    def compose(self) -> ComposeResult:
        keys: DataTable[Any] = DataTable(id="help-keys", cursor_type="none", zebra_stripes=True)
        keys.add_columns("key", "action", "")
        for key, description, detail in (*self.binding_rows, *OTHER_KEYS):
            keys.add_row(Text(key, style="bold"), description, Text(detail, style="dim"))
        legend = Text()
        for mark, meaning in LEGEND:
            style = {"dim": "dim", "red": "bold red", "yellow": "bold yellow",
                     "green": "bold green"}.get(mark, "bold")
            legend.append(f"{mark:>6}  ", style=style)
            legend.append(f"{meaning}\n")
        with VerticalScroll(id="help-box") as box:
            box.border_title = "edgefit review — keys"
            box.border_subtitle = "escape to close"
            yield keys
            yield Static(legend, id="help-legend")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)


class DiffScreen(ModalScreen[None]):
    """What changed against the plan the review opened: layers and totals."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,d", "close", "Close")]

    def __init__(self, original: Plan, current: Plan) -> None:
        super().__init__()
        self.original = original
        self.current = current

    def compose(self) -> ComposeResult:
        changes = diff_layers(self.original, self.current)
        with Vertical(id="diff-box") as box:
            box.border_title = "changes against the opened plan"
            box.border_subtitle = "escape to close"
            if not changes:
                yield Label("no layer changed", id="diff-empty")
            layers: DataTable[Any] = DataTable(id="diff-layers", cursor_type="row")
            layers.add_columns("layer", "option", "pinned", "Δ latency", "Δ flash", "Δ acc")
            for c in changes:
                pinned = ("yes" if c.pinned_after else "no") if c.pinned_before == \
                    c.pinned_after else f"{'yes' if c.pinned_before else 'no'} → " \
                    f"{'yes' if c.pinned_after else 'no'}"
                layers.add_row(c.layer, f"{c.before or '—'} → {c.after or '—'}", pinned,
                               _delta(_get(c.before_costs, "latency_ms"),
                                      _get(c.after_costs, "latency_ms"), fmt_ms),
                               _delta(_get(c.before_costs, "flash_bytes"),
                                      _get(c.after_costs, "flash_bytes"), fmt_bytes),
                               _delta(_get(c.before_costs, "acc_loss"),
                                      _get(c.after_costs, "acc_loss"), fmt_acc),
                               key=c.layer)
            yield layers
            totals: DataTable[Any] = DataTable(id="diff-totals", cursor_type="none")
            totals.add_columns("total", "before", "after", "change")
            for label, before, after, fmt in diff_totals(self.original, self.current):
                totals.add_row(label, "—" if before is None else fmt(before),
                               "—" if after is None else fmt(after),
                               _delta(before, after, fmt))
            totals.add_row("status", self.original.status, self.current.status, "")
            yield totals

    def action_close(self) -> None:
        self.dismiss(None)


def _get(costs: Costs | None, metric: str) -> float | None:
    return None if costs is None else getattr(costs, metric)


def _delta(before: float | None, after: float | None, fmt: Callable[[float], str]) -> Text:
    if before is None or after is None:
        return Text("—", style="dim")
    change = after - before
    if abs(change) < 1e-12:
        return Text("=", style="dim")
    text = ("+" if change > 0 else "-") + fmt(abs(change))
    if before:
        text += f" ({100 * change / before:+.0f} %)"
    return Text(text, style="red" if change > 0 else "green")


class PromptScreen(ModalScreen[str | None]):
    """Ask for one line (exclusion, file name, output directory). Enter: done; escape: cancel."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    SHOWN_CHOICES = 12

    def __init__(self, title: str, hint: str = "", value: str = "",
                 placeholder: str = "", choices: list[str] | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.hint = hint
        self.value = value
        self.placeholder = placeholder
        self.choices = choices or []

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-box") as box:
            box.border_title = self.title_text
            box.border_subtitle = "enter to confirm · escape to cancel"
            yield Input(value=self.value, placeholder=self.placeholder, id="prompt-input")
            if self.hint:
                yield Static(self.hint, id="prompt-hint", markup=False)
            if self.choices:
                yield Static(self.matching(self.value), id="prompt-choices", markup=False)

    def matching(self, typed: str) -> str:
        """The choices containing what was typed (the first few, and how many match)."""
        found = [c for c in self.choices if typed.strip() in c]
        shown = ", ".join(found[: self.SHOWN_CHOICES])
        more = len(found) - self.SHOWN_CHOICES
        return f"{shown}{f' (+{more} more)' if more > 0 else ''}" if found else "no match"

    @on(Input.Changed, "#prompt-input")
    def _changed(self, event: Input.Changed) -> None:
        if self.choices:
            self.query_one("#prompt-choices", Static).update(self.matching(event.value))

    @on(Input.Submitted, "#prompt-input")
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmQuitScreen(ModalScreen[str]):
    """Unsaved changes: save and quit, quit without saving, or stay."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "choose('save')", "Save and quit"),
        Binding("y,q", "choose('quit')", "Quit without saving"),
        Binding("escape,n", "choose('cancel')", "Stay"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box") as box:
            box.border_title = "unsaved changes"
            yield Label("The plan has changes that are not saved.")
            with Horizontal(id="confirm-buttons"):
                yield Button("Save and quit (s)", id="save", variant="primary")
                yield Button("Quit without saving (y)", id="quit", variant="error")
                yield Button("Stay (esc)", id="cancel")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id or "cancel")

    def action_choose(self, what: str) -> None:
        self.dismiss(what)
