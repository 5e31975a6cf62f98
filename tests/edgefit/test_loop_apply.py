"""The closed loop for real on the trained LeNet-5: every round applied, measured, recorded."""

from __future__ import annotations

import json

import pytest

from edgefit.loop import LoopSettings, apply_evaluator, closed_loop


@pytest.fixture(scope="module")
def looped(lenet5_plan_factory, image_target, tmp_path_factory: pytest.TempPathFactory):
    # the Nano as a packed-image target: the suite writes no .tflite (EDGEFIT_TFLITE=off), and
    # the image is what apply then measures flash on
    plan, _ = lenet5_plan_factory(target=image_target, latency="60ms", accuracy_drop="0.5pp")
    out = tmp_path_factory.mktemp("loop")
    result = closed_loop(plan, apply_evaluator(out), LoopSettings(rounds=2, objective="flash"))
    return plan, result, out


def test_each_round_is_an_applied_plan_with_its_report(looped) -> None:
    plan, result, out = looped
    assert 1 <= len(result.rounds) <= 2
    for r in result.rounds:
        report = json.loads((out / f"round-{r.number}" / "report.json").read_text())
        assert r.measured is not None
        assert r.measured.drop_pp == pytest.approx(report["accuracy"]["drop_pp"])
        assert report["options"] == r.options
        # flash is measured on the stored image: it equals the prediction (exact format)
        assert r.measured.costs["flash_bytes"] == pytest.approx(r.predicted["flash_bytes"])
        assert "latency_ms" not in r.measured.costs, "the Nano 33 is not this machine"


def test_second_round_is_cheaper_in_the_objective(looped) -> None:
    _, result, _ = looped
    if len(result.rounds) == 2:
        first, second = result.rounds
        assert second.predicted["flash_bytes"] < first.predicted["flash_bytes"]


def test_best_plan_meets_the_measured_limit(looped) -> None:
    _, result, _ = looped
    if result.status == "met":
        best = result.rounds[result.best_round - 1]
        assert best.measured is not None and best.measured.drop_pp <= 0.5
        assert result.best_plan is not None and result.best_plan.options() == best.options
