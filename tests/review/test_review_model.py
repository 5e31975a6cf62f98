"""The review TUI's logic without widgets: local evaluation of edits, dominance, limit usage,
diffs, the measured column; `run_review` on bad files; a light start-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgefit.review import model as m
from planner.plan import Alternative, Plan

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def plan() -> Plan:
    return Plan.load(DATA / "plan.json")


def test_evaluate_reproduces_the_solver_totals(plan: Plan) -> None:
    again = m.evaluate(plan)
    assert plan.totals is not None and again.totals is not None
    for metric in ("latency_ms", "flash_bytes", "energy_mj", "acc_loss", "ram_bytes"):
        assert getattr(again.totals, metric) == pytest.approx(getattr(plan.totals, metric))
    for name, lp in plan.layers.items():
        assert again.layers[name].predicted == lp.predicted
    assert again.status == "FEASIBLE" and again.binding == plan.binding


def test_choose_pins_and_over_budget_status(plan: Plan) -> None:
    edited = m.choose(plan, "conv2", "fp32")
    assert edited.layers["conv2"].option == "fp32" and edited.layers["conv2"].pinned
    assert edited.layers["conv2"].techniques == []
    assert edited.totals is not None and plan.totals is not None
    delta = (plan.layers["conv2"].alternative("fp32").latency_ms
             - plan.layers["conv2"].alternative("int8").latency_ms)
    assert edited.totals.latency_ms == pytest.approx(plan.totals.latency_ms + delta)
    assert edited.status == m.OVER_BUDGET and "latency_ms" in edited.binding
    assert not edited.feasible  # `edgefit apply` refuses it
    assert plan.layers["conv2"].option == "int8"  # the input is not mutated
    assert m.pins(edited) == {"conv2": "fp32"}
    assert m.set_pinned(edited, "conv2", False).layers["conv2"].pinned is False


def test_cycle_wraps_around(plan: Plan) -> None:
    options = [a.option for a in plan.layers["fc1"].alternatives]
    seen = []
    p = plan
    for _ in options:
        p = m.cycle(p, "fc1")
        seen.append(p.layers["fc1"].option)
    assert sorted(seen) == sorted(options) and seen[-1] == plan.layers["fc1"].option
    assert m.cycle(plan, "fc1", -1).layers["fc1"].option == options[
        (options.index("fp32") - 1) % len(options)]


def _alt(option: str, latency: float, flash: float, acc: float, act: int = 1) -> Alternative:
    return Alternative(option=option, kernel=option, latency_ms=latency, flash_bytes=flash,
                       energy_mj=latency, acc_loss=acc, act_bytes=act)


def test_dominated_alternatives() -> None:
    alts = [_alt("a", 1, 10, 0.1), _alt("b", 2, 20, 0.2), _alt("c", 0.5, 30, 0.0),
            _alt("d", 1, 10, 0.1, act=4)]
    assert m.dominated(alts) == {"b", "d"}  # d: same costs as a but more RAM per element
    assert m.dominated([_alt("x", 1, 1, 1), _alt("y", 1, 1, 1)]) == set()  # ties: neither


def test_limit_usage_levels(plan: Plan) -> None:
    rows = {u.name: u for u in m.limit_usage(plan)}
    lat = rows["latency"]
    assert lat.limit == 60 and lat.used == pytest.approx(56.043, abs=1e-3)
    assert lat.level == "tight" and lat.headroom == pytest.approx(0.066, abs=1e-3)
    assert rows["flash"].limit is None and rows["flash"].level == "none"
    loose = plan.model_copy(update={"limits": plan.limits.model_copy(update={"latency": 100.0})})
    assert {u.name: u for u in m.limit_usage(loose)}["latency"].level == "ok"
    over = m.choose(plan, "conv2", "fp32")
    assert {u.name: u for u in m.limit_usage(over)}["latency"].level == "over"


def test_limit_usage_counts_every_slot_and_the_update(plan: Plan) -> None:
    """The TUI's limit bars say what `plan` prints for a delivery budget (issue #20): the flash
    of the runtime once plus every A/B slot, and the update time over the link."""
    from planner.plan import Delivery

    assert plan.totals is not None
    flash = plan.totals.flash_bytes
    delivery = Delivery(ab_slots=2, runtime_flash_bytes=1000.0, link="ble-1m",
                        link_bytes_per_s=10_000.0)
    totals = plan.totals.model_copy(update={"transfer_bytes": 5_000.0})
    both = plan.model_copy(update={"delivery": delivery, "totals": totals,
                                   "limits": plan.limits.model_copy(update={"update_time": 400.0})})
    rows = {u.name: u for u in m.limit_usage(both)}
    assert rows["flash"].used == pytest.approx(1000.0 + 2 * (flash - 1000.0))
    assert rows["flash"].label == "flash x2"  # the runtime once + 2 model images
    update = rows["update_time"]
    assert update.used == pytest.approx(500.0) and update.limit == 400.0
    assert update.level == "over" and update.label == "update ble-1m"


def test_explanation_of_an_infeasible_plan() -> None:
    plan = Plan.load(DATA / "plan-infeasible.json")
    assert m.limit_usage(plan) == []
    lines = m.explanation_lines(plan)
    assert lines[0].startswith("The budget cannot be met")
    assert any("needs 132.6KB instead of 4KB" in line for line in lines)
    assert m.evaluate(plan) is plan  # no options: nothing to evaluate


def test_diff(plan: Plan) -> None:
    edited = m.choose(plan, "fc1", "int8")
    changes = m.diff_layers(plan, edited)
    assert [(c.layer, c.before, c.after, c.pinned_after) for c in changes] == [
        ("fc1", "fp32", "int8", True)]
    totals = {label: (before, after) for label, before, after, _ in m.diff_totals(plan,
                                                                                   edited)}
    assert totals["flash"][1] < totals["flash"][0]
    assert m.diff_layers(plan, plan) == []


def test_measured_flash_and_filter(plan: Plan) -> None:
    report = json.loads((DATA / "report.json").read_text())
    measured = m.measured_flash(plan, report)
    assert set(measured) == set(plan.layers)
    assert not any(v.deviates for v in measured.values())
    assert m.measured_flash(plan, None) == {}
    lp = plan.layers["conv1"]
    assert m.matches("conv1", lp, "CONV") and m.matches("conv1", lp, "int8")
    assert m.matches("conv1", lp, "") and not m.matches("conv1", lp, "fc")


def test_known_exclusions_and_pins_survive_infeasible_resolve(plan: Plan) -> None:
    assert {"int8", "int4", "fp32", "quantize"} <= set(m.known_exclusions(plan))
    pinned = m.choose(plan, "fc1", "int4")
    infeasible = Plan.load(DATA / "plan-infeasible.json")
    kept = m.keep_pinned_options(pinned, infeasible)
    assert kept.layers["fc1"].option == "int4" and kept.layers["fc1"].pinned
    assert kept.layers["conv1"].option is None


def test_run_review_missing_and_corrupt_files(tmp_path: Path, capsys) -> None:
    pytest.importorskip("textual")
    from edgefit.review.app import run_review

    assert run_review(tmp_path / "nope.json") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plan file not found" in err and "Traceback" not in err

    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    assert run_review(bad) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not valid JSON" in err and err.count("\n") == 1

    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"status": "OPTIMAL"}', encoding="utf-8")
    assert run_review(wrong) == 2
    assert "Traceback" not in capsys.readouterr().err

    assert run_review(DATA / "plan.json", tmp_path / "no-report.json") == 2
    assert "report file not found" in capsys.readouterr().err


def test_start_up_imports_neither_torch_nor_ortools() -> None:
    pytest.importorskip("textual")
    script = f"""
import asyncio, sys
from pathlib import Path
import edgefit.review.app as review
from planner.plan import Plan
path = Path({str(DATA / "plan.json")!r})
app = review.ReviewApp(Plan.load(path), path)
heavy = sorted(m for m in ("torch", "ortools", "onnx", "onnxruntime") if m in sys.modules)
assert not heavy, heavy
async def run():
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
asyncio.run(run())
heavy = sorted(m for m in ("torch", "ortools", "onnx", "onnxruntime") if m in sys.modules)
assert not heavy, heavy
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_the_solvers_choice_is_never_tagged_and_widths_are_compared_apart(
        lenet5_plan_factory) -> None:
    plan, _ = lenet5_plan_factory(latency="60ms")
    assert plan.channel_groups, "LeNet-5 with data has coupled channel groups"
    never = m.never_picked(plan)
    for name, lp in plan.layers.items():
        assert lp.option not in never[name], name
    assert any(never.values()), "presolve removes something on a real plan"
    # a narrower option that costs more in every way than a full-width one is not dominated by it
    full = _alt("int8", 1, 10, 0.1)
    narrow = _alt("int8+w4", 2, 20, 0.2).model_copy(update={"widths": {"conv1": 4}})
    assert m.dominated([full.model_copy(update={"widths": {"conv1": 6}}), narrow]) == set()


def test_a_looser_limit_than_fp32_shows_the_cap_it_holds(plan: Plan) -> None:
    """Issue #22: the limits panel says what `plan` prints, the fp32 plan's latency as the
    limit the solver holds when the asked one is looser."""
    from planner.resolve import fp32_latency_ms

    loose = plan.model_copy(update={"limits": plan.limits.model_copy(update={"latency": 1e4})})
    rows = {u.name: u for u in m.limit_usage(loose)}
    cap = rows["latency_cap"]
    assert cap.limit == pytest.approx(fp32_latency_ms(loose)) and cap.label == "fp32 cap"
    assert cap.used == rows["latency"].used and not rows["latency"].binding
    assert "latency_cap" not in {u.name for u in m.limit_usage(plan)}  # 60 ms: under fp32's
