"""`plan --search bayes-measured`: TPE whose objective is the accuracy drop each trial's plan
*measures* when applied (issue #20, item 4), on a validation split, not the held-out one.

Each trial within the (predicted) cost limits is applied by `edgefit.applying.apply_plan`, the
same apply the closed loop runs (pruning, the plan's fine-tuning if it has one, export, the
checks), into ``out_dir/apply-N``; only the data it is judged on differs: a validation split
drawn from the training split, so the held-out split every report quotes stays unseen by the
search. The validation images leave out the calibration sample the accuracy estimates were
measured on. The built-in models were trained on the whole training split, so the validation
accuracy is the accuracy on images the model has seen: higher than on held-out data; the
search uses it only to rank plans by their drop against the fp32 model on the same images.

The search itself is `planner.bayes_measured` (torch-free); this module builds its
``measure`` callable and the record of every trial (search.json).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefit_common.errors import PlanError
from edgefit_common.fsutil import atomic_write_text
from planner.bayes_measured import MeasuredSearch, measured_search
from planner.plan import Plan
from planner.resolve import problem_from_plan, with_result
from workloads.data import Dataset
from workloads.refs import ModelSource

SEARCH_REPORT_VERSION = 1
VALIDATION_SIZE = 2000  # images; all the training split has left when it has fewer
VALIDATION_SEED = 1  # not the calibration sample's seed (0)


@dataclass(frozen=True)
class MeasuredSettings:
    applies: int = 8  # the budget: plans applied and measured
    seed: int = 0
    validation_size: int = VALIDATION_SIZE


@dataclass(frozen=True)
class MeasuredOutcome:
    plan: Plan  # the best measured plan (the input plan's status when nothing was applied)
    search: MeasuredSearch
    validation: str  # what the validation split is, for the report

    def to_json(self) -> dict[str, Any]:
        s = self.search
        return {
            "search_report_version": SEARCH_REPORT_VERSION,
            "status": s.result.status, "applies": s.applies, "best_apply": s.best_apply,
            "best_validation_drop_pp": s.best_value, "validation": self.validation,
            "trials": [asdict(t) for t in s.trials],
            "how": "Optuna TPE; each trial within the predicted cost limits applied by "
                   "`edgefit apply` and its accuracy drop measured on the validation split "
                   "(value, pp); costs are the planner's predictions",
        }

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")


def validation_split(train: Dataset, size: int = VALIDATION_SIZE, seed: int = VALIDATION_SEED,
                     calibration_seed: int = 0) -> Dataset:
    """``size`` images of the training split (stratified, seeded), none of them in the
    calibration sample (`edgefit.planning.calibration_sample` with ``calibration_seed``)."""
    from edgefit.planning import CALIBRATION_SIZE
    from workloads.data import split

    keep = np.ones(len(train.y), bool)
    keep[np.random.default_rng(calibration_seed).choice(
        len(train.y), min(CALIBRATION_SIZE, len(train.y)), replace=False)] = False
    rest = Dataset(f"{train.name}-rest", train.x[keep], train.y[keep], train.classes,
                   train.source, train.labelled)
    if size >= len(rest):
        return _named(rest, f"{train.name}-validation")
    _, picked = split(rest, size / len(rest), seed)
    return _named(picked, f"{train.name}-validation")


def _named(ds: Dataset, name: str) -> Dataset:
    return Dataset(name, ds.x, ds.y, ds.classes, ds.source, ds.labelled)


def search_measured(plan: Plan, out_dir: Path, settings: MeasuredSettings | None = None,
                    source: ModelSource | None = None) -> MeasuredOutcome:
    """From a solved plan (it carries every alternative and the limits; its own options are
    the first trial): the best plan by measured validation drop, every apply under
    ``out_dir/apply-N``, the trials in ``out_dir/search.json``."""
    settings = settings or MeasuredSettings()
    if not plan.feasible:
        raise PlanError(f"the plan's status is {plan.status}: no plan meets the cost limits, "
                        "so there is nothing to apply")
    calib, val = _data(plan, settings)
    problem = problem_from_plan(plan)

    def measure(number: int, picks: dict[str, str], totals: dict[str, float]) -> float:
        from edgefit.applying import apply_plan
        from planner.result import SolveResult

        trial = with_result(plan, problem, SolveResult(
            status="FEASIBLE", picks=picks, totals=totals, backend="optuna-tpe (measured)",
            resolution=dict(plan.solver.resolution),
            options_considered=plan.solver.options_considered))
        report = apply_plan(trial, out_dir / f"apply-{number}", source, data=(calib, val))
        return float(report["accuracy"]["drop_pp"])

    found = measured_search(problem, settings.applies, measure, seed=settings.seed,
                            hint=plan.options())
    best = with_result(plan, problem, found.result) if found.result.feasible else plan
    outcome = MeasuredOutcome(best, found, f"{len(val)} images of {plan.data}'s training "
                              f"split (stratified, seed {VALIDATION_SEED}, without the "
                              "calibration sample); the held-out split is not used")
    outcome.save(out_dir / "search.json")
    return outcome


def _data(plan: Plan, settings: MeasuredSettings) -> tuple[tuple[np.ndarray, np.ndarray],
                                                          Dataset]:
    """(the calibration sample the plan was costed on, the validation split)."""
    from edgefit.planning import calibration_sample
    from workloads.data import training_set

    if plan.data is None:
        raise PlanError("--search bayes-measured applies every trial and measures it: plan "
                        "with --data (or a built-in model, which names its data set)")
    train = training_set(plan.data)
    return (calibration_sample(train.x, train.y),
            validation_split(train, settings.validation_size))


def outcome_lines(outcome: MeasuredOutcome, path: Path, out: Path) -> list[str]:
    """What `plan --search bayes-measured` prints: every apply, predicted next to measured."""
    from edgefit_common.units import fmt_bytes

    s = outcome.search
    trials = len(s.trials)
    over = sum(t.outcome == "over the limits" for t in s.trials)
    lines = [f"measured search: {s.applies} plans applied in {trials} TPE trials ({over} over "
             f"the predicted limits, not applied; {trials - over - s.applies} repeats); "
             f"validation: {outcome.validation}"]
    for t in s.trials:
        if t.outcome == "applied":
            lines.append(f"  apply {t.apply}: drop {t.value:.2f} pp (validation, measured); "
                         f"flash {fmt_bytes(t.totals.get('flash_bytes', 0.0))}, accuracy cost "
                         f"{t.totals.get('acc_loss', 0.0):.3g} (predicted)")
    if s.best_apply is None:
        lines.append("no trial met the predicted limits: nothing was applied")
    else:
        folder = path.parent / f"apply-{s.best_apply}"
        lines.append(f"best: apply {s.best_apply}, validation drop {s.best_value:.2f} pp; its "
                     f"plan written to {out} (artifacts in {folder})")
    lines.append(f"search report: {path}")
    return lines


def print_outcome(outcome: MeasuredOutcome, path: Path, out: Path) -> None:
    import typer

    for line in outcome_lines(outcome, path, out):
        typer.echo(line)
