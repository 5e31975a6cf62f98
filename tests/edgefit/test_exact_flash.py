"""A TFLite plan's flash is its model.tflite's exact size before apply (edgefit.exact_flash,
executors.tflite_exact; issue #17 item 2): the logic with the file's size substituted, and
once for real with the tool virtualenv (plan, then apply writes the same bytes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefit import exact_flash
from executors import tflite
from executors.tflite_exact import NOTE_KEY, exact_bytes, options_digest
from planner.resolve import resolve

DEMO_LIMITS = {"latency": "60ms", "flash": "1MB", "ram": "256KB", "accuracy_drop": "1pp"}
CALIB = np.zeros((1, 1, 28, 28), dtype=np.float32)


@pytest.fixture(scope="module")
def demo(lenet5_plan_factory):
    plan, ctx = lenet5_plan_factory(**DEMO_LIMITS)
    return plan, ctx.model


def _file_of(plan, extra: float = 0.0) -> int:
    """A file size for `plan`: its predicted model bytes (+ extra)."""
    layers = sum(lp.predicted.flash_bytes for lp in plan.layers.values())
    return round(layers + plan.fixed["tflite_frame_bytes"] + extra)


def test_the_built_files_size_becomes_the_plans_flash(demo, monkeypatch) -> None:
    """The framing is set from the file, the plan re-solved with it: the flash total moves by
    exactly the difference, the options stay, the note records the size for these options."""
    plan, loaded = demo
    monkeypatch.setattr(exact_flash, "available", lambda p, m: True)
    size = _file_of(plan, -146)  # the demo's file: 146 B below the fitted prediction
    monkeypatch.setattr(exact_flash, "tflite_bytes", lambda p, m, x: size)
    exact = exact_flash.with_exact_tflite(plan, loaded, CALIB)
    assert exact.options() == plan.options()
    assert exact.totals is not None and plan.totals is not None
    assert exact.totals.flash_bytes == pytest.approx(plan.totals.flash_bytes - 146, abs=1)
    assert exact_bytes(exact) == size and exact.uncertainty["flash"].startswith("exact")
    # a re-solve that changes the options makes the note stale: apply falls back to 2 %
    other = resolve(exact, pins={"conv2": "int8"})
    assert other.options() != exact.options() and exact_bytes(other) is None


def test_a_file_over_the_limit_re_solves_and_builds_again(demo, monkeypatch) -> None:
    """With the flash limit just above the prediction, a file larger than predicted pushes the
    plan over it: the re-solve picks other options, whose file is built in turn."""
    plan, loaded = demo
    assert plan.totals is not None
    limits = plan.limits.model_copy(update={"flash": plan.totals.flash_bytes + 100})
    tight = resolve(plan, limits=limits)
    assert tight.options() == plan.options()
    built: list[str] = []

    def fake(p, m, x) -> int:
        built.append(options_digest(p))
        return _file_of(p, 5000 if len(built) == 1 else 0)

    monkeypatch.setattr(exact_flash, "available", lambda p, m: True)
    monkeypatch.setattr(exact_flash, "tflite_bytes", fake)
    exact = exact_flash.with_exact_tflite(tight, loaded, CALIB)
    assert len(built) >= 2 and built[0] != built[1]
    assert exact.feasible and exact.options() != plan.options()
    assert exact.totals is not None and exact.totals.flash_bytes <= limits.flash


def test_nothing_changes_without_the_file(demo, monkeypatch) -> None:
    plan, loaded = demo
    monkeypatch.setattr(exact_flash, "available", lambda p, m: True)
    monkeypatch.setattr(exact_flash, "tflite_bytes", lambda p, m, x: None)
    assert exact_flash.with_exact_tflite(plan, loaded, CALIB) is plan
    assert exact_flash.with_exact_tflite(plan, loaded, None) is plan
    assert NOTE_KEY not in plan.provenance  # the suite plans with EDGEFIT_TFLITE=off


needs_tool = pytest.mark.skipif(
    tflite.tool_python() is None,
    reason="the TFLite tool virtualenv (.venv-tflite) is absent: `make tflite-venv` builds it "
           "(make test does)")


@needs_tool
def test_plan_builds_the_file_and_apply_writes_the_same_bytes(tmp_path: Path,
                                                               monkeypatch) -> None:
    """For real: `plan` on the demo's budget builds the plan's model.tflite and its flash
    total is the runtime + that file; `apply` writes the same number of bytes and checks it."""
    from device_specs.budget import Budget
    from edgefit.applying import apply_plan
    from edgefit.planning import make_plan

    monkeypatch.delenv(tflite.SWITCH_ENV, raising=False)
    budget = Budget(target="arduino-nano-33-ble", limits=DEMO_LIMITS, model="lenet5-mnist")
    plan, _ = make_plan(budget, "test")
    size = exact_bytes(plan)
    assert size is not None, plan.provenance
    runtime = plan.fixed["flash_bytes"] - plan.fixed["tflite_frame_bytes"] \
        - plan.fixed.get("unplanned_weight_bytes", 0.0)
    assert plan.totals is not None
    assert plan.totals.flash_bytes - runtime == pytest.approx(size, abs=1e-6)
    report = apply_plan(plan, tmp_path / "out")
    section = report["tflite"]
    assert section["ok"], section["summary"]
    assert section["bytes"] == size == section["flash"]["exact_before_apply_bytes"]
