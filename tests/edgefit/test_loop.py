"""The closed loop's logic, driven by a fake evaluator (no torch): it walks the front, learns
from measured rounds, and answers honestly when the accuracy limit cannot be met."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from device_specs.budget import Limits
from edgefit.loop import LoopSettings, Measurement, _front, closed_loop
from edgefit_common.errors import PlanError
from planner.plan import Plan
from planner.resolve import problem_from_plan, resolve

DATA = Path(__file__).parents[1] / "review" / "data" / "plan.json"
# accuracy cost per option, chosen so that cheaper plans really cost accuracy
ACC = {"fp32": 0.0, "int8": {"conv1": 0.004, "conv2": 0.002, "fc1": 0.001, "fc2": 0.0005,
                             "fc3": 0.003},
       "int4": {"conv1": 0.03, "conv2": 0.01, "fc1": 0.006, "fc2": 0.004, "fc3": 0.02}}


def _plan(latency: str = "60ms", drop: str | None = "1pp") -> Plan:
    plan = Plan.load(DATA)
    layers = {}
    for name, lp in plan.layers.items():
        alts = [a.model_copy(update={"acc_loss": 0.0 if a.option == "fp32"
                                     else ACC[a.option][name]})  # type: ignore[index]
                for a in lp.alternatives]
        layers[name] = lp.model_copy(update={"alternatives": alts})
    plan = plan.model_copy(update={"layers": layers})
    return resolve(plan, limits=Limits(latency=latency, accuracy_drop=drop))


def _fake(pp_per_unit: float, latency_scale: float = 1.0, calls: list[Plan] | None = None):
    """Measured drop = pp_per_unit x predicted accuracy cost; latency measured at a scale."""

    def evaluate(plan: Plan, number: int) -> Measurement:
        if calls is not None:
            calls.append(plan)
        assert plan.totals is not None
        costs = {"flash_bytes": plan.totals.flash_bytes,
                 "latency_ms": plan.totals.latency_ms * latency_scale}
        return Measurement(drop_pp=pp_per_unit * plan.totals.acc_loss, accuracy=0.98,
                           fp32_accuracy=0.99, costs=costs)

    return evaluate


def _true_best(plan: Plan, pp_per_unit: float, limit_pp: float) -> float:
    """The cheapest front plan that the fake would pass (the loop's target)."""
    front = _front(plan, problem_from_plan(plan), "latency_ms", LoopSettings())
    ok = [c.totals["latency_ms"] for c in front
          if c.within_limits and pp_per_unit * c.totals["acc_loss"] <= limit_pp]
    return min(ok)


def test_loop_finds_the_cheapest_passing_plan() -> None:
    plan = _plan()
    calls: list[Plan] = []
    result = closed_loop(plan, _fake(40.0, calls=calls), LoopSettings(rounds=6))
    assert result.status == "met"
    assert calls[0].options() == plan.options(), "round 1 is the ordinary solve"
    best = result.best_plan
    assert best is not None and best.totals is not None
    assert 40.0 * best.totals.acc_loss <= 1.0
    assert best.totals.latency_ms < plan.totals.latency_ms  # type: ignore[union-attr]
    assert best.totals.latency_ms == pytest.approx(_true_best(plan, 40.0, 1.0))
    assert best.limits == plan.limits, "the user's limits stay in the written plan"


def test_rounds_never_repeat_a_plan_and_stay_in_the_bracket() -> None:
    plan = _plan()
    calls: list[Plan] = []
    result = closed_loop(plan, _fake(40.0, calls=calls), LoopSettings(rounds=8))
    seen = [tuple(sorted(p.options().items())) for p in calls]
    assert len(seen) == len(set(seen))
    assert len(result.rounds) == len(calls) <= 8
    for r in result.rounds:
        assert r.verdict == "pass" or r.verdict.startswith("fail: accuracy")


def test_one_round_is_the_ordinary_solve() -> None:
    plan = _plan()
    result = closed_loop(plan, _fake(1.0), LoopSettings(rounds=1))
    assert [r.number for r in result.rounds] == [1]
    assert result.status == "met" and result.best_round == 1


def test_unreachable_accuracy_is_an_answer_with_the_miss_and_what_it_needs() -> None:
    plan = _plan(latency="50ms", drop="0.5pp")
    result = closed_loop(plan, _fake(400.0), LoopSettings(rounds=3))
    assert result.status == "not met"
    assert "over the 0.5 pp limit" in result.summary
    beyond = [r for r in result.rounds if not r.within_limits]
    assert beyond, "a round beyond the limits says what the latency limit would need"
    assert beyond[0].predicted["latency_ms"] > 50.0
    if beyond[0].verdict.startswith("fail: beyond"):
        assert "meets it" in result.summary
    assert result.best_plan is not None and result.best_plan.feasible


def test_measured_latency_above_prediction_tightens_later_rounds() -> None:
    plan = _plan(latency="60ms")
    result = closed_loop(plan, _fake(1.0, latency_scale=1.25), LoopSettings(rounds=5))
    later = result.rounds[1:]
    for r in later:
        assert r.predicted["latency_ms"] * 1.25 <= 60.0 + 1e-9 or not r.within_limits
    assert "latency_ms measured 1.250x" in result.rounds[0].learned
    if result.status == "met":
        assert result.best_plan is not None and result.best_plan.totals is not None
        assert result.best_plan.totals.latency_ms * 1.25 <= 60.0 + 1e-9


def test_needs_an_accuracy_limit_and_a_round() -> None:
    with pytest.raises(PlanError, match="accuracy limit"):
        closed_loop(_plan(drop=None), _fake(1.0))
    with pytest.raises(PlanError, match="at least 1"):
        LoopSettings(rounds=0)
    with pytest.raises(PlanError, match="--objective"):
        LoopSettings(objective="speed")


def test_loop_report_round_trips_through_json(tmp_path: Path) -> None:
    result = closed_loop(_plan(), _fake(40.0), LoopSettings(rounds=3))
    path = tmp_path / "loop.json"
    result.save(path)
    data = json.loads(path.read_text())
    assert data["status"] == result.status
    assert [r["number"] for r in data["rounds"]] == [r.number for r in result.rounds]
    assert all("measured" in r and "predicted" in r for r in data["rounds"])


def test_the_summary_quotes_measured_costs_as_measured() -> None:
    """Issue #22: a met loop quotes the measured latency (and the prediction beside it); one
    that fails on a measured cost says so instead of blaming accuracy."""
    plan = _plan()
    met = closed_loop(plan, _fake(1.0, latency_scale=0.5), LoopSettings(rounds=1))
    assert met.status == "met" and "(measured; predicted" in met.summary
    slow = closed_loop(plan, _fake(1.0, latency_scale=5.0), LoopSettings(rounds=2))
    assert slow.status == "not met"
    assert "meets the accuracy limit" in slow.summary and "latency_ms measured" in slow.summary
    assert "over the" not in slow.summary


def _fake_layers(pp_per_unit: float, slow: tuple[str, str], factor: float,
                 calls: list[Plan] | None = None, load: float = 1.0):
    """Per-layer latencies measured as predicted, except `slow` (layer, option): x factor;
    everything (the fp32 model too) x load, as on a busy machine."""
    from planner.resolve import fp32_latency_ms

    def evaluate(plan: Plan, number: int) -> Measurement:
        if calls is not None:
            calls.append(plan)
        assert plan.totals is not None
        layer_ms = {name: load * lp.cost.latency_ms * (factor if (name, lp.option) == slow
                                                       else 1.0)
                    for name, lp in plan.layers.items()}
        extra = sum(layer_ms.values()) - sum(lp.cost.latency_ms for lp in plan.layers.values())
        costs = {"flash_bytes": plan.totals.flash_bytes,
                 "latency_ms": plan.totals.latency_ms + extra}
        fp32_ms = fp32_latency_ms(plan)
        return Measurement(drop_pp=pp_per_unit * plan.totals.acc_loss, accuracy=0.98,
                           fp32_accuracy=0.99, costs=costs, layer_ms=layer_ms,
                           fp32_latency_ms=None if fp32_ms is None else load * fp32_ms)

    return evaluate


def test_an_option_measured_over_its_prediction_is_dropped_and_the_loop_goes_on() -> None:
    """Issue #22: the loop drops the options whose measurements miss and goes on (it used to
    scale every plan's latency by the miss and stop when none fitted)."""
    plan = _plan()
    first = plan.options()
    layer = next(n for n, o in first.items() if o != "fp32")
    slow = (layer, first[layer])
    calls: list[Plan] = []
    result = closed_loop(plan, _fake_layers(40.0, slow, 5.0, calls), LoopSettings(rounds=4))
    assert result.rounds[0].dropped == [f"{layer}:{first[layer]}"]
    assert "dropped from later rounds" in result.rounds[0].learned
    assert len(calls) >= 2, "the loop went on after the miss"
    for p in calls[1:]:
        assert p.options()[layer] != first[layer]
    assert "latency_ms measured" not in result.rounds[0].learned  # not scaled: attributed
    data = result.to_json()
    assert data["rounds"][0]["dropped"] == [f"{layer}:{first[layer]}"]


def test_within_noise_or_the_baseline_nothing_is_dropped() -> None:
    plan = _plan()
    first = plan.options()
    layer = next(n for n, o in first.items() if o != "fp32")
    near = closed_loop(plan, _fake_layers(40.0, (layer, first[layer]), 1.2),
                       LoopSettings(rounds=2))
    assert near.rounds[0].dropped == []
    # a busy machine (the fp32 model measured 3x its profile too) is no option's fault
    busy = closed_loop(plan, _fake_layers(40.0, (layer, first[layer]), 1.2, load=3.0),
                       LoopSettings(rounds=1))
    assert busy.rounds[0].dropped == []
    slow_and_busy = closed_loop(plan, _fake_layers(40.0, (layer, first[layer]), 5.0, load=3.0),
                                LoopSettings(rounds=1))
    assert slow_and_busy.rounds[0].dropped == [f"{layer}:{first[layer]}"]
    fp32_layer = next((n for n, o in first.items() if o == "fp32"), None)
    if fp32_layer is not None:
        base = closed_loop(plan, _fake_layers(40.0, (fp32_layer, "fp32"), 10.0),
                           LoopSettings(rounds=1))
        assert base.rounds[0].dropped == []


def test_two_candidates_a_step_apply_both_ends_first_and_agree_with_one_by_one() -> None:
    """candidates=2: step 1 applies the ordinary solve and the cheapest plan within the
    limits; later steps the two next picks; evaluate_many sees each step's plans together and
    gives the same rounds as applying them one by one."""
    plan = _plan()
    settings = LoopSettings(rounds=6, candidates=2)
    one_by_one = closed_loop(plan, _fake(40.0), settings)
    steps: list[list[int]] = []

    def many(batch: list[tuple[Plan, int]]) -> list[Measurement]:
        steps.append([n for _, n in batch])
        return [_fake(40.0)(p, n) for p, n in batch]

    together = closed_loop(plan, _fake(40.0), settings, many)
    assert together.to_json() == one_by_one.to_json()
    assert steps[0] == [1, 2] and all(len(s) <= 2 for s in steps)
    assert sum(steps, []) == [r.number for r in together.rounds]
    first, second = together.rounds[:2]
    assert first.options == plan.options() and (first.batch, second.batch) == (1, 1)
    front = _front(plan, problem_from_plan(plan), "latency_ms", settings)
    cheapest = min(c.totals["latency_ms"] for c in front if c.within_limits)
    assert second.predicted["latency_ms"] == pytest.approx(cheapest)
    assert together.status == "met" and together.best_plan is not None
    best = together.best_plan.totals
    assert best is not None and best.latency_ms == pytest.approx(_true_best(plan, 40.0, 1.0))
    assert closed_loop(plan, _fake(40.0), LoopSettings(rounds=3)).rounds[0].batch is None
    with pytest.raises(PlanError, match="at least 1"):
        LoopSettings(candidates=0)
