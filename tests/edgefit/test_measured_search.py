"""`plan --search bayes-measured` (edgefit.measured_search): each trial's plan applied and
judged on a validation split, with a cheap stand-in for apply; its flags' bad combinations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_specs.budget import Limits
from edgefit import measured_search as ms
from edgefit.cli import _plan_app, _run
from edgefit.planning import CALIBRATION_SIZE, calibration_sample
from planner.plan import Plan
from planner.resolve import resolve
from workloads.data import Dataset

PLAN = Path(__file__).parents[1] / "review" / "data" / "plan.json"
# predicted accuracy cost per option: int4 costs most on every layer
ACC = {"fp32": 0.0, "int8": 0.001, "int4": 0.01}


def _plan() -> Plan:
    plan = Plan.load(PLAN)
    layers = {name: lp.model_copy(update={"alternatives": [
        a.model_copy(update={"acc_loss": ACC[a.option]}) for a in lp.alternatives]})
        for name, lp in plan.layers.items()}
    return resolve(plan.model_copy(update={"layers": layers}), limits=Limits(latency="60ms"))


def _dataset(n: int, name: str = "toy") -> Dataset:
    rng = np.random.default_rng(5)
    return Dataset(name, rng.random((n, 1, 2, 2), dtype=np.float32),
                   np.arange(n, dtype=np.int64) % 4, 4, "toy data")


def test_validation_split_leaves_out_the_calibration_sample_and_is_stratified() -> None:
    train = _dataset(3000)
    val = ms.validation_split(train, size=1000)
    calib_x, _ = calibration_sample(train.x, train.y)
    assert len(val) == 1000 and len(calib_x) == CALIBRATION_SIZE
    rows = {r.tobytes() for r in val.x}
    assert not rows & {r.tobytes() for r in calib_x}  # disjoint from the calibration sample
    counts = np.bincount(val.y, minlength=4)  # each class its share of what is left
    assert counts.sum() == 1000 and counts.max() - counts.min() <= 4
    again = ms.validation_split(train, size=1000)
    assert np.array_equal(again.x, val.x)  # seeded
    small = ms.validation_split(_dataset(600), size=1000)  # all that is left
    assert len(small) == 600 - CALIBRATION_SIZE


def test_search_keeps_what_the_measurement_favours(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plan()
    assert plan.feasible and plan.options()["conv1"] != "int4"  # the prediction's choice
    val = _dataset(40, "toy-validation")
    calib = (val.x[:8], val.y[:8])
    monkeypatch.setattr(ms, "_data", lambda p, s: (calib, val))
    applied: list[dict[str, str]] = []

    def fake_apply(p: Plan, out: Path, source: Any = None, loaded: Any = None,
                   data: Any = None, metric: Any = None) -> dict[str, Any]:
        assert data is not None and data[1] is val  # judged on the validation split
        assert out == tmp_path / f"apply-{len(applied) + 1}"
        applied.append(p.options())
        # measured: conv1 at int4 helps (as if it regularised), against the prediction
        drop = 1.0 - 0.8 * (p.options()["conv1"] == "int4")
        drop += 0.1 * sum(o == "int4" for name, o in p.options().items() if name != "conv1")
        return {"accuracy": {"drop_pp": drop}}

    monkeypatch.setattr("edgefit.applying.apply_plan", fake_apply)
    outcome = ms.search_measured(plan, tmp_path, ms.MeasuredSettings(applies=12, seed=0))
    assert applied[0] == plan.options()  # the solver's plan is tried first
    assert len(applied) == outcome.search.applies == 12
    best = outcome.plan.options()
    assert best["conv1"] == "int4"  # the measured favourite, which the prediction ranks last
    assert outcome.search.best_value == min(
        1.0 - 0.8 * (o["conv1"] == "int4")
        + 0.1 * sum(v == "int4" for k, v in o.items() if k != "conv1") for o in applied)
    assert outcome.plan.totals is not None and outcome.plan.totals.latency_ms <= 60.0
    record = json.loads((tmp_path / "search.json").read_text())
    assert record["applies"] == 12 and record["best_apply"] == outcome.search.best_apply
    assert "held-out split is not used" in record["validation"]
    assert sum(t["outcome"] == "applied" for t in record["trials"]) == 12
    text = "\n".join(ms.outcome_lines(outcome, tmp_path / "search.json", tmp_path / "p.json"))
    assert f"best: apply {outcome.search.best_apply}" in text


BAD = {
    "with a study": (["--study", "s.db"], "--study"),
    "with the loop": (["--loop", "2", "--max-accuracy-drop", "1pp"], "--loop"),
    "with apply": (["--apply"], "--apply"),
    "no applies": (["--trials", "0"], "--trials 0"),
    "too many applies": (["--trials", "5000"], "--trials 5000"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_combinations_exit_2_with_one_line(case: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    extra, needle = BAD[case]
    code = _run(_plan_app, ["--target", "jetson-nano", "--max-latency", "30ms", "--search",
                            "bayes-measured", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert "Traceback" not in err[0]
    assert not (tmp_path / "plan.json").exists()


def test_unknown_search_names_the_measured_one(capsys: pytest.CaptureFixture[str]) -> None:
    code = _run(_plan_app, ["--target", "jetson-nano", "--max-latency", "30ms", "--search",
                            "bayes-measure"])
    err = capsys.readouterr().err
    assert code == 2 and "bayes-measured" in err


def test_cli_writes_the_best_plan_and_the_search_report(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    """The command's path with the plan and the applies stubbed: the measured best over
    --out, search.json in --report-dir, its lines printed, exit 0."""
    monkeypatch.chdir(tmp_path)
    plan = _plan()
    monkeypatch.setattr("edgefit.cli._make_plan", lambda *a, **k: (plan, None))
    val = _dataset(40, "toy-validation")
    monkeypatch.setattr(ms, "_data", lambda p, s: ((val.x[:8], val.y[:8]), val))

    def fake_apply(p: Plan, out: Path, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"accuracy": {"drop_pp": 0.5 if p.options()["fc1"] == "int4" else 2.0}}

    monkeypatch.setattr("edgefit.applying.apply_plan", fake_apply)
    code = _run(_plan_app, ["--target", "jetson-nano", "--max-latency", "60ms", "-q",
                            "--search", "bayes-measured", "--trials", "6",
                            "--report-dir", "runs", "--out", "best.json"])
    out = capsys.readouterr().out
    assert code == 0, out
    record = json.loads((tmp_path / "runs" / "search.json").read_text())
    assert record["applies"] == len([t for t in record["trials"] if t["outcome"] == "applied"])
    best = Plan.load(tmp_path / "best.json")
    tried = [t["picks"]["fc1"] for t in record["trials"] if t["outcome"] == "applied"]
    assert "int4" in tried and tried[0] != "int4"  # the solver's plan first, then TPE found it
    assert best.options()["fc1"] == "int4" and record["best_validation_drop_pp"] == 0.5
    assert "measured search:" in out and "search report:" in out
