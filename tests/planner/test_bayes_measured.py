"""TPE against a measured objective (planner.bayes_measured), with a cheap stand-in for apply."""

from __future__ import annotations

import pytest

from planner.bayes_measured import measured_search
from planner.problem import Choice, Problem


def _choice(option: str, latency_ms: float, acc_loss: float) -> Choice:
    return Choice(option=option, latency_ms=latency_ms, flash_bytes=100.0, energy_mj=0.1,
                  act_bytes=1.0, acc_loss=acc_loss)


def disagreeing_problem() -> Problem:
    """Two layers of three options; the prediction ranks o0 best on both layers; o2 on both
    breaks the latency limit (8 of the 9 plans meet it)."""
    choices = {ly: (_choice("o0", 1.0, 0.0), _choice("o1", 1.0, 0.5),
                    _choice("o2", 3.0, 1.0)) for ly in ("a", "b")}
    steps = ((("a", 10),), (("b", 10),))
    return Problem(("a", "b"), choices, {"latency_ms": 5.0}, {"ram_bytes": 0.0}, steps)


# what "measuring" finds: layer a is hurt least by o2, the option the prediction likes least
MEASURED = {("o0", "o0"): 2.0, ("o1", "o0"): 1.5, ("o2", "o0"): 0.3, ("o0", "o1"): 2.5,
            ("o1", "o1"): 2.2, ("o2", "o1"): 0.9, ("o0", "o2"): 3.0, ("o1", "o2"): 2.9,
            ("o2", "o2"): 9.0}


def test_picks_what_the_measurement_favours_against_the_prediction() -> None:
    problem = disagreeing_problem()
    applied: list[dict[str, str]] = []

    def measure(number: int, picks: dict[str, str], totals: dict[str, float]) -> float:
        assert number == len(applied) + 1 and problem.feasible(totals)
        applied.append(picks)
        return MEASURED[(picks["a"], picks["b"])]

    found = measured_search(problem, applies=8, measure=measure, seed=0,
                            hint={"a": "o0", "b": "o0"})
    assert applied[0] == {"a": "o0", "b": "o0"}  # the solver's plan is the first trial
    assert found.result.picks != {"a": "o0", "b": "o0"}  # the prediction's favourite lost
    assert len(applied) == found.applies == 8
    assert {"a": "o2", "b": "o2"} not in applied  # over the latency limit: never applied
    best = min(MEASURED[(p["a"], p["b"])] for p in applied)
    assert found.best_value == best == MEASURED[(found.result.picks["a"],
                                                 found.result.picks["b"])]
    assert found.result.picks == {"a": "o2", "b": "o0"}  # the measured best of all 8 plans
    assert found.result.status == "FEASIBLE" and "measured" in found.result.backend


def test_over_the_limits_and_repeats_cost_no_apply() -> None:
    problem = disagreeing_problem()
    calls: list[tuple[str, str]] = []

    def measure(number: int, picks: dict[str, str], totals: dict[str, float]) -> float:
        calls.append((picks["a"], picks["b"]))
        return MEASURED[calls[-1]]

    found = measured_search(problem, applies=50, measure=measure, seed=3, max_trials=60)
    assert len(calls) == len(set(calls)) == found.applies <= 8  # 8 plans fit: each once
    outcomes = {t.outcome for t in found.trials}
    assert outcomes <= {"applied", "repeat", "over the limits"}
    assert len(found.trials) == 60  # the trial cap ended it: the space has fewer plans
    over = [t for t in found.trials if t.outcome == "over the limits"]
    assert over and all(t.totals["latency_ms"] > 5.0 and t.value is None for t in over)
    repeats = [t for t in found.trials if t.outcome == "repeat"]
    assert all(t.value == MEASURED[(t.picks["a"], t.picks["b"])] for t in repeats)


def test_ties_keep_the_earlier_apply_and_no_plan_is_infeasible() -> None:
    problem = disagreeing_problem()
    found = measured_search(problem, applies=3, measure=lambda n, p, t: 1.0,
                            hint={"a": "o1", "b": "o1"})
    assert found.best_apply == 1 and found.result.picks == {"a": "o1", "b": "o1"}
    tight = problem.with_limits({"latency_ms": 1.5})  # below any plan's latency
    none = measured_search(tight, applies=2, measure=lambda n, p, t: pytest.fail("applied"),
                           max_trials=20)
    assert none.result.status == "INFEASIBLE" and none.applies == 0


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="applies"):
        measured_search(disagreeing_problem(), applies=0, measure=lambda n, p, t: 0.0)
