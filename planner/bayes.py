"""Bayesian-optimisation baseline (issue #5, part 3): Optuna's TPE over the per-layer choices.

One categorical parameter per layer (its option names) -- with coupled channel groups, first
one per group (its kept width, ``width:<group>``), then per layer one among the options of the
sampled widths (``<layer>@<widths>``), so every trial is coupling-consistent instead of most
being rejected; the objective is the plan's total
accuracy loss, evaluated exactly by `Problem.totals`; every limit is an Optuna constraint
set with `Trial.set_constraint` (Optuna 5 deprecates `constraints_func`): (total - limit) /
limit, <= 0 feasible. TPE ranks infeasible trials by their summed violation, so each is taken
relative to its limit: otherwise bytes would swamp milliseconds.

The answer is the best feasible trial, reported as FEASIBLE, never OPTIMAL: a search proves
nothing. INFEASIBLE here means only that no trial met the limits (not that no plan does): run
the CP-SAT explanation to find out which limit is the cause.

A study kept in SQLite (`storage="sqlite:///path.db"`) can be resumed (another call with the
same storage and study name adds `trials` more trials) or inspected with Optuna's own tools;
each trial carries its totals in its user attributes. Without storage the study is in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import optuna

from edgefit_common.progress import task
from planner.problem import METRICS, Problem
from planner.result import SolveResult

BACKEND = "optuna-tpe"
_FINGERPRINT = "edgefit_problem"
_TOL = 1e-9  # Problem.feasible's tolerance


def fingerprint(problem: Problem) -> str:
    """A hash of everything the search sees: layers, their options and costs, limits, fixed
    terms and RAM steps. A stored study is resumed only for the same problem."""
    data = {
        "layers": list(problem.layers),
        "choices": {ly: [[c.option, c.latency_ms, c.flash_bytes, c.energy_mj, c.act_bytes,
                          c.acc_loss] for c in problem.choices[ly]] for ly in problem.layers},
        "limits": sorted(problem.limits.items()),
        "fixed": sorted(problem.fixed.items()),
        "ram_steps": [list(map(list, step)) for step in problem.ram_steps],
        "weights_in_ram": problem.weights_in_ram,
    }
    if problem.step_extra:  # only then, so fingerprints of problems without it stay the same
        data["step_extra"] = [sorted([*k, v] for k, v in s.items()) for s in problem.step_extra]
    if any(c.transfer_bytes for cs in problem.choices.values() for c in cs):  # likewise
        data["transfer"] = {ly: [c.transfer_bytes for c in problem.choices[ly]]
                            for ly in problem.layers}
    if problem.step_pairs:  # likewise
        data["step_pairs"] = [[[t.a, list(t.a_options), t.b, list(t.b_options), t.nbytes]
                               for t in terms] for terms in problem.step_pairs]
    if problem.latency_pairs:  # likewise
        data["latency_pairs"] = [[t.a, list(t.a_options), t.b, list(t.b_options), t.latency_ms,
                                  t.energy_mj] for t in problem.latency_pairs]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _limit_names(problem: Problem) -> list[str]:
    return [m for m in METRICS if m in problem.limits]


def violations(problem: Problem, totals: Mapping[str, float]) -> dict[str, float]:
    """Per limit, (total - limit) / |limit|: <= 0 exactly when `Problem.feasible` accepts it."""
    return {m: (totals[m] - problem.limits[m] - _TOL) / max(abs(problem.limits[m]), _TOL)
            for m in _limit_names(problem)}


def _open_study(problem: Problem, storage: str | None, study_name: str | None,
                seed: int) -> optuna.Study:
    from edgefit_common.errors import PlanError

    key = fingerprint(problem)
    name = study_name or f"edgefit-{key}"
    existing: list[optuna.trial.FrozenTrial] = []
    if storage is not None:
        try:
            previous = optuna.load_study(study_name=name, storage=storage)
        except KeyError:  # no such study yet
            previous = None
        if previous is not None:
            stored = previous.user_attrs.get(_FINGERPRINT)
            if stored != key:
                raise PlanError(f"study {name!r} in {storage} was run on a different problem "
                                "(other layers, options or limits); give another study name")
            existing = previous.get_trials(deepcopy=False)
    # A resumed study gets a fresh sampler; offsetting the seed by the trials already run keeps
    # the run reproducible without replaying the first run's random start-up trials.
    # Optuna 5's TPE is multivariate by default for one objective, and reads the constraints
    # each trial sets.
    sampler = optuna.samplers.TPESampler(seed=seed + len(existing))
    study = optuna.create_study(storage=storage, sampler=sampler, study_name=name,
                                direction="minimize", load_if_exists=True)
    study.set_user_attr(_FINGERPRINT, key)
    study.set_user_attr("limits", _limit_names(problem))
    return study


def search(problem: Problem, trials: int, timeout_s: float | None,
           storage: str | None = None, study_name: str | None = None, seed: int = 0,
           hint: Mapping[str, str] | None = None) -> SolveResult:
    """Run up to `trials` TPE trials (fewer if `timeout_s` runs out first) and return the best
    feasible plan found in the whole study, including trials of earlier calls on the same
    stored study.

    storage: an SQLAlchemy URL such as ``sqlite:///plan-search.db`` (None: in memory).
    study_name: defaults to one derived from the problem, so the same problem resumes the same
    study; a stored study made for another problem raises PlanError.
    hint: layer -> option to try first (options a layer does not have are ignored).
    """
    start = time.perf_counter()
    if trials < 0:
        raise ValueError(f"trials must be >= 0, got {trials}")
    # ERROR: a trial that fails (a Ctrl-C, a bug) re-raises from optimize; Optuna's own warning
    # would print its traceback on stderr first
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    names = {ly: [c.option for c in problem.choices[ly]] for ly in problem.layers}
    for ly, opts in names.items():
        if len(set(opts)) != len(opts):
            raise ValueError(f"layer {ly} has duplicate option names: {opts}")
    index = {ly: {o: i for i, o in enumerate(opts)} for ly, opts in names.items()}
    study = _open_study(problem, storage, study_name, seed)

    groups = problem.groups
    if hint:
        params = _hint_params(problem, {ly: o for ly, o in hint.items() if o in index.get(ly, {})})
        if params:
            study.enqueue_trial(params, skip_if_exists=True)

    def objective(trial: optuna.Trial) -> float:
        width = {g: trial.suggest_categorical(f"width:{g}", list(ws)) for g, ws in groups.items()}
        picks = {}
        for ly in problem.layers:
            name, allowed = _layer_param(problem, ly, width)
            picks[ly] = index[ly][trial.suggest_categorical(name, allowed)]
        trial.set_user_attr("picks", {ly: names[ly][i] for ly, i in picks.items()})
        totals = problem.totals(picks)
        for limit, value in violations(problem, totals).items():
            trial.set_constraint(limit, value)
        trial.set_user_attr("totals", totals)
        return totals["acc_loss"]

    if trials:
        with task("Optuna trials", trials) as bar, _ctrl_c_between_trials() as stop_if_asked:
            study.optimize(objective, n_trials=trials, timeout=timeout_s, gc_after_trial=False,
                           callbacks=[lambda _study, _trial: bar.advance(), stop_if_asked])
    return _best(problem, study.get_trials(deepcopy=False), index, time.perf_counter() - start)


@contextlib.contextmanager
def _ctrl_c_between_trials() -> Iterator[Callable[[optuna.Study, Any], None]]:
    """Ctrl-C stops the study after the running trial, then raises KeyboardInterrupt.

    Optuna 5.0 turns a KeyboardInterrupt that lands while it records a trial into an
    UnboundLocalError (`updated_state` in `_run_trial`), so the signal is only noted here and
    the yielded callback stops the study between trials."""
    interrupted = False

    def stop_if_asked(study: optuna.Study, _trial: Any) -> None:
        if interrupted:
            study.stop()

    if (threading.current_thread() is not threading.main_thread()
            or not callable(signal.getsignal(signal.SIGINT))):  # ignored or the default action
        yield stop_if_asked
        return

    def note(_signum: int, _frame: object) -> None:
        nonlocal interrupted
        interrupted = True

    previous = signal.signal(signal.SIGINT, note)
    try:
        yield stop_if_asked
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        raise KeyboardInterrupt


def _best(problem: Problem, done: Sequence[optuna.trial.FrozenTrial],
          index: Mapping[str, Mapping[str, int]], took: float) -> SolveResult:
    """The best feasible complete trial, re-evaluated exactly (not read from the storage)."""
    considered = sum(len(c) for c in problem.choices.values())
    best: tuple[float, dict[str, int], dict[str, float]] | None = None
    for t in done:
        if t.state != optuna.trial.TrialState.COMPLETE:
            continue
        picks = _picks(t.params, index, problem.layers, t.user_attrs)
        if picks is None:
            continue
        totals = problem.totals(picks)
        if problem.feasible(totals) and (best is None or totals["acc_loss"] < best[0] - 1e-12):
            best = (totals["acc_loss"], picks, totals)
    if best is None:
        return SolveResult(status="INFEASIBLE", wall_time_s=took, backend=BACKEND,
                           options_considered=considered)
    _, picks, totals = best
    return SolveResult(
        status="FEASIBLE",
        picks={ly: problem.choices[ly][i].option for ly, i in picks.items()},
        totals=totals, wall_time_s=took, backend=BACKEND, options_considered=considered)


def _layer_param(problem: Problem, layer: str, width: Mapping[str, int]
                 ) -> tuple[str, list[str]]:
    """The layer's parameter name and options given the groups' sampled widths (a layer in no
    group: its own name and every option)."""
    groups = [g for g, _ in problem.choices[layer][0].widths]
    if not groups:
        return layer, [c.option for c in problem.choices[layer]]
    allowed = [c.option for c in problem.choices[layer]
               if all(width[g] == w for g, w in c.widths)]
    tag = ",".join(f"{g}={width[g]}" for g in sorted(groups))
    return f"{layer}@{tag}", allowed or [c.option for c in problem.choices[layer]]


def _hint_params(problem: Problem, hint: Mapping[str, str]) -> dict[str, str]:
    """Trial parameters that reproduce a (complete, coupling-consistent) hint."""
    groups = problem.groups
    if not groups:
        return dict(hint)
    if set(hint) != set(problem.layers):
        return {}
    chosen = {ly: next(c for c in problem.choices[ly] if c.option == o) for ly, o in hint.items()}
    width: dict[str, int] = {}
    for c in chosen.values():
        for g, w in c.widths:
            if width.setdefault(g, w) != w:
                return {}  # the hint breaks a group's coupling
    params: dict[str, Any] = {f"width:{g}": w for g, w in width.items()}
    for ly, o in hint.items():
        params[_layer_param(problem, ly, width)[0]] = o
    return params


def _picks(params: Mapping[str, Any], index: Mapping[str, Mapping[str, int]],
           layers: Sequence[str], attrs: Mapping[str, Any] | None = None
           ) -> dict[str, int] | None:
    chosen = (attrs or {}).get("picks") or params
    try:
        return {ly: index[ly][chosen[ly]] for ly in layers}
    except KeyError:
        return None
