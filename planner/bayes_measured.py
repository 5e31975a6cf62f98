"""Optuna's TPE against *measured* accuracy (issue #20, item 4): the closed-loop search.

The decision space, the coupling-consistent parameters, the hint and the limits are those of
`planner.bayes` (`plan --search bayes`); what differs is the objective. There each trial is
scored by the predicted accuracy cost; here a trial that meets every limit is handed to
``measure`` (the caller applies the plan and measures it: edgefit.measured_search), and its
measured value (the accuracy drop on a validation split, in pp) is the objective. The costs
(flash, latency, RAM, energy) stay the predicted ones, hard limits as in the solver: a trial
that breaks one is not applied, only marked infeasible for TPE (its constraint values, as in
`planner.bayes`).

The budget is the number of applies, since each is what costs (minutes, against milliseconds
for a trial): a trial over the limits, or one that repeats an applied plan (its measurement
reused), costs none and does not count. A search also stops after ``max_trials`` trials, so a
small space that holds fewer distinct plans than the budget ends.

No torch here: ``measure`` is a callable (tests give a cheap one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import optuna

from edgefit_common.progress import task
from planner.bayes import _ctrl_c_between_trials, _hint_params, _layer_param, violations
from planner.problem import Problem
from planner.result import SolveResult

BACKEND = "optuna-tpe (measured)"
# the objective of a trial over the limits: never applied, so it has no measurement; TPE ranks
# such trials by their constraint violations, after every feasible one, whatever this value is
NOT_APPLIED = 1e6

Measure = Callable[[int, dict[str, str], dict[str, float]], float]
"""(apply number from 1, layer -> option, predicted totals) -> the measured value to minimise."""


@dataclass(frozen=True)
class MeasuredTrial:
    trial: int  # Optuna's trial number
    picks: dict[str, str]
    totals: dict[str, float]  # predicted
    outcome: str  # "applied", "repeat" (the plan of an earlier apply), "over the limits"
    value: float | None = None  # measured (None: over the limits)
    apply: int | None = None  # the apply that measured it (1-based)


@dataclass(frozen=True)
class MeasuredSearch:
    result: SolveResult  # the best applied plan (its totals predicted); INFEASIBLE: none
    trials: list[MeasuredTrial] = field(default_factory=list)
    applies: int = 0
    best_apply: int | None = None
    best_value: float | None = None


def measured_search(problem: Problem, applies: int, measure: Measure, seed: int = 0,
                    hint: Mapping[str, str] | None = None,
                    max_trials: int | None = None) -> MeasuredSearch:
    """Run TPE until ``applies`` plans within the limits were measured (or ``max_trials``
    trials, default 50 per apply and at least 200, ran) and return the plan with the lowest
    measured value; ties go to the earlier apply, so a hint (tried first) is kept unless
    something measures better."""
    if applies < 1:
        raise ValueError(f"applies must be >= 1, got {applies}")
    start = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed),
                                direction="minimize")
    if hint:
        known = {ly: o for ly, o in hint.items()
                 if any(c.option == o for c in problem.choices.get(ly, ()))}
        params = _hint_params(problem, known)
        if params:
            study.enqueue_trial(params)
    log: list[MeasuredTrial] = []
    seen: dict[tuple[tuple[str, str], ...], MeasuredTrial] = {}

    def objective(trial: optuna.Trial) -> float:
        picks = _suggest(problem, trial)
        totals = problem.totals({ly: _index(problem, ly, o) for ly, o in picks.items()})
        over = violations(problem, totals)
        for limit, value in over.items():
            trial.set_constraint(limit, value)
        if any(v > 0 for v in over.values()) or not problem.feasible(totals):
            log.append(MeasuredTrial(trial.number, picks, totals, "over the limits"))
            return NOT_APPLIED
        key = tuple(sorted(picks.items()))
        if key in seen:
            first = seen[key]
            log.append(MeasuredTrial(trial.number, picks, totals, "repeat", first.value,
                                     first.apply))
            assert first.value is not None
            return first.value
        number = len(seen) + 1
        done = MeasuredTrial(trial.number, picks, totals, "applied",
                             float(measure(number, dict(picks), dict(totals))), number)
        seen[key] = done
        log.append(done)
        bar.advance()
        assert done.value is not None
        return done.value

    def enough(study: optuna.Study, _trial: object) -> None:
        if len(seen) >= applies:
            study.stop()

    cap = max_trials if max_trials is not None else max(200, 50 * applies)
    with task("measured search: applies", applies) as bar, \
            _ctrl_c_between_trials() as stop_if_asked:
        study.optimize(objective, n_trials=cap, gc_after_trial=False,
                       callbacks=[enough, stop_if_asked])
    return _answer(problem, log, len(seen), time.perf_counter() - start)


def _suggest(problem: Problem, trial: optuna.Trial) -> dict[str, str]:
    """One option per layer, coupled groups first (as planner.bayes samples them)."""
    width = {g: trial.suggest_categorical(f"width:{g}", list(ws))
             for g, ws in problem.groups.items()}
    picks = {}
    for ly in problem.layers:
        name, allowed = _layer_param(problem, ly, width)
        picks[ly] = str(trial.suggest_categorical(name, allowed))
    return picks


def _index(problem: Problem, layer: str, option: str) -> int:
    return next(i for i, c in enumerate(problem.choices[layer]) if c.option == option)


def _answer(problem: Problem, log: list[MeasuredTrial], applies: int,
            took: float) -> MeasuredSearch:
    considered = sum(len(c) for c in problem.choices.values())
    applied = [t for t in log if t.outcome == "applied"]
    if not applied:
        return MeasuredSearch(SolveResult(status="INFEASIBLE", wall_time_s=took, backend=BACKEND,
                                          options_considered=considered), log, 0)
    best = min(applied, key=lambda t: (t.value, t.apply))
    result = SolveResult(status="FEASIBLE", picks=dict(best.picks), totals=dict(best.totals),
                         wall_time_s=took, backend=BACKEND, options_considered=considered,
                         note=f"the lowest measured value of {applies} applied plans "
                              "(a search proves nothing)")
    return MeasuredSearch(result, log, applies, best.apply, best.value)
