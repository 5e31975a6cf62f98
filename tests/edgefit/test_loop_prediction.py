"""The closed loop predicts a plan's accuracy drop only between measured rounds, monotone in
the predicted cost, never below zero, never beyond the largest measured cost (issue #21: a
round extrapolated "-41.4 pp" and spent itself on a plan that dropped 31 pp)."""

from __future__ import annotations

from edgefit.loop import LoopSettings, Measurement, Round, _Candidate, _State
from planner.problem import Problem


def _state(measured: list[tuple[float, float]]) -> _State:
    problem = Problem(layers=(), choices={}, limits={}, fixed={}, ram_steps=())
    state = _State(problem, 1.0, LoopSettings())
    for i, (cost, drop) in enumerate(measured):
        cand = _Candidate({}, {"acc_loss": cost}, True)
        state.measured.append((cand, Round(i + 1, "", {}, {}, True, Measurement(
            drop, 0.9, 0.9 + drop / 100))))
    return state


def _at(state: _State, cost: float) -> float | None:
    return state._predicted_drop(_Candidate({}, {"acc_loss": cost}, True))


def test_interpolates_between_rounds_and_never_beyond() -> None:
    state = _state([(0.1, 0.5), (0.4, 2.0)])
    assert _at(state, 0.05) == 0.25
    assert abs(_at(state, 0.25) - 1.25) < 1e-12
    assert _at(state, 0.4) == 2.0
    assert _at(state, 0.41) is None, "no extrapolation"
    assert _at(state, 0.0) == 0.0


def test_monotone_and_never_negative() -> None:
    state = _state([(0.1, -0.3), (0.2, 1.0), (0.3, 0.6)])  # noise: a drop below a smaller cost's
    values = [_at(state, c) for c in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)]
    assert all(v is not None and v >= 0 for v in values)
    assert values == sorted(values)
