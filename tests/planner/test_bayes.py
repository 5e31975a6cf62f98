"""The Optuna/TPE baseline against brute force on small random problems; resumable studies."""

from __future__ import annotations

import random
import warnings

import optuna
import pytest

from edgefit_common.errors import PlanError
from planner.bayes import search, violations
from planner.bruteforce import brute_force
from planner.problem import Choice, Problem


def small_problem(seed: int, n_layers: int | None = None, squeeze: float | None = None
                  ) -> Problem:
    """3-6 layers of 2-4 options with random costs; each limit somewhere between the smallest
    and largest total it can take (`squeeze` places it there; random when None)."""
    rng = random.Random(seed)
    layers = tuple(f"l{i}" for i in range(n_layers or rng.randint(3, 6)))
    choices = {
        ly: tuple(Choice(option=f"o{j}", latency_ms=rng.uniform(0.1, 5.0),
                         flash_bytes=float(rng.randint(100, 5000)),
                         energy_mj=rng.uniform(0.01, 1.0), act_bytes=rng.choice([0.5, 1, 2, 4]),
                         acc_loss=rng.uniform(0.0, 1.0))
                  for j in range(rng.randint(2, 4)))
        for ly in layers
    }
    steps = tuple(tuple((layers[k], rng.randint(10, 300)) for k in sorted({max(0, i - 1), i}))
                  for i in range(len(layers)))
    free = Problem(layers, choices, {}, {"ram_bytes": 100.0}, steps)

    def extreme(metric: str, best: bool) -> float:
        pick = min if best else max
        if metric == "ram_bytes":
            act = {ly: [c.act_bytes for c in cs] for ly, cs in choices.items()}
            return free.totals({ly: a.index(pick(a)) for ly, a in act.items()})[metric]
        return sum(pick(c.metric(metric) for c in cs) for cs in choices.values())

    limits = {}
    for metric in ("latency_ms", "flash_bytes", "ram_bytes", "energy_mj"):
        lo, hi = extreme(metric, True), extreme(metric, False)
        limits[metric] = lo + (rng.uniform(0.2, 0.9) if squeeze is None else squeeze) * (hi - lo)
    return Problem(layers, choices, limits, free.fixed, steps)


def as_indices(problem: Problem, picks: dict[str, str]) -> dict[str, int]:
    return {ly: [c.option for c in problem.choices[ly]].index(o) for ly, o in picks.items()}


@pytest.mark.parametrize("seed", range(8))
def test_feasible_and_never_better_than_brute_force(seed: int) -> None:
    problem = small_problem(seed)
    reference = brute_force(problem)
    result = search(problem, trials=40, timeout_s=None, seed=seed)
    assert result.backend == "optuna-tpe"
    assert result.options_considered == sum(len(c) for c in problem.choices.values())
    assert result.gap is None and result.wall_time_s > 0
    if result.status == "INFEASIBLE":
        assert not result.picks and not result.totals
        return
    assert result.status == "FEASIBLE"  # never OPTIMAL: a search proves nothing
    assert reference is not None
    picks = as_indices(problem, result.picks)
    assert set(picks) == set(problem.layers)
    assert result.totals == problem.totals(picks)
    assert problem.feasible(result.totals)
    assert result.totals["acc_loss"] >= reference[0] - 1e-12


def test_finds_the_optimum_of_a_three_layer_problem() -> None:
    problem = small_problem(3, n_layers=3, squeeze=0.5)
    reference = brute_force(problem)
    assert reference is not None
    result = search(problem, trials=200, timeout_s=None, seed=1)
    assert result.status == "FEASIBLE"
    assert result.totals["acc_loss"] == pytest.approx(reference[0], abs=1e-12)


def test_infeasible_instance() -> None:
    problem = small_problem(5)
    tight = Problem(problem.layers, problem.choices,
                    {**problem.limits, "flash_bytes": 1.0}, problem.fixed, problem.ram_steps)
    result = search(tight, trials=15, timeout_s=None)
    assert result.status == "INFEASIBLE"
    assert result.picks == {} and result.totals == {}
    assert not result.feasible


def test_constraints_agree_with_problem_feasible() -> None:
    problem = small_problem(7)
    for seed in range(30):
        rng = random.Random(seed)
        picks = {ly: rng.randrange(len(cs)) for ly, cs in problem.choices.items()}
        totals = problem.totals(picks)
        values = violations(problem, totals)
        assert list(values) == [m for m in ("latency_ms", "flash_bytes", "ram_bytes",
                                            "energy_mj") if m in problem.limits]
        assert all(v <= 0 for v in values.values()) == problem.feasible(totals)


def test_seeded_search_is_reproducible() -> None:
    problem = small_problem(11)
    a = search(problem, trials=25, timeout_s=None, seed=4)
    b = search(problem, trials=25, timeout_s=None, seed=4)
    assert (a.status, a.picks) == (b.status, b.picks)


def test_hint_is_tried_first() -> None:
    problem = small_problem(2, n_layers=4, squeeze=0.6)
    reference = brute_force(problem)
    assert reference is not None
    _, best = reference
    hint = {ly: problem.choices[ly][i].option for ly, i in best.items()}
    result = search(problem, trials=1, timeout_s=None, hint=hint)
    assert result.picks == hint
    assert result.totals["acc_loss"] == pytest.approx(reference[0])


def test_sqlite_study_resumes_and_can_be_inspected(tmp_path) -> None:
    problem = small_problem(1)
    url = f"sqlite:///{tmp_path / 'search.db'}"
    first = search(problem, trials=6, timeout_s=None, storage=url, study_name="s")
    second = search(problem, trials=4, timeout_s=None, storage=url, study_name="s")
    study = optuna.load_study(study_name="s", storage=url)
    done = study.get_trials()
    assert len(done) == 10
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    assert set(done[0].constraints) == set(problem.limits)
    assert done[0].user_attrs["totals"]["acc_loss"] == done[0].value
    # the answer covers the whole study, so more trials never make it worse
    if first.feasible:
        assert second.feasible
        assert second.totals["acc_loss"] <= first.totals["acc_loss"]
    # zero more trials: just read the best of what is stored
    again = search(problem, trials=0, timeout_s=None, storage=url, study_name="s")
    assert (again.status, again.picks) == (second.status, second.picks)
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 10


def test_stored_study_of_another_problem_is_refused(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'search.db'}"
    search(small_problem(1), trials=2, timeout_s=None, storage=url, study_name="s")
    with pytest.raises(PlanError, match="different problem"):
        search(small_problem(2), trials=2, timeout_s=None, storage=url, study_name="s")


def test_no_optuna_warnings_or_logs(caplog) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        search(small_problem(4), trials=12, timeout_s=None)
    assert not [r for r in caplog.records if r.name.startswith("optuna")]


def test_timeout_stops_the_search() -> None:
    problem = small_problem(6, n_layers=6)
    result = search(problem, trials=100_000, timeout_s=0.5)
    assert result.wall_time_s < 5.0


def coupled_problem() -> Problem:
    """Six layers in one channel group of four widths (two precisions each): a per-layer
    sample is coupling-consistent with probability (1/4)^5; the best plan keeps 16 channels."""
    widths = (8, 16, 24, 32)
    layers = tuple(f"l{i}" for i in range(6))
    choices = {ly: tuple(Choice(option=f"{p}+w{w}", latency_ms=w / 8, flash_bytes=w * 10.0,
                                energy_mj=0.1, act_bytes=1.0 if p == "int8" else 4.0,
                                acc_loss=(32 - w) / 32 + (0.05 if p == "int8" else 0.0),
                                widths=(("g", w),))
                         for p in ("fp32", "int8") for w in widths) for ly in layers}
    return Problem(layers, choices, {"latency_ms": 6 * 2.0 + 1e-6}, {},
                   tuple(((ly, 10),) for ly in layers))


def test_coupled_groups_are_sampled_as_one_width() -> None:
    """Every trial takes one width per group, so TPE searches plans that can be feasible: in
    40 trials it finds the optimum's width (16 kept channels; the optimum is all fp32 at 16,
    brute force), the precisions within the int8 penalty of it."""
    problem = coupled_problem()
    result = search(problem, trials=40, timeout_s=None, seed=0)
    assert result.status == "FEASIBLE"
    assert problem.totals(as_indices(problem, result.picks))["coupling_violations"] == 0
    assert all(o.endswith("+w16") for o in result.picks.values())
    reference = brute_force(problem)
    assert reference is not None
    assert reference[0] <= result.totals["acc_loss"] <= reference[0] + 6 * 0.05 + 1e-9
    hinted = search(problem, trials=1, timeout_s=None, seed=1,
                    hint=dict.fromkeys(problem.layers, "fp32+w16"))
    assert hinted.picks == dict.fromkeys(problem.layers, "fp32+w16")
