"""plan.json: JSON round trip, schema files in docs/ up to date, planning answers on LeNet-5."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgefit.schemas import SCHEMAS, schema_text
from planner.plan import Plan

DOCS = Path(__file__).parents[2] / "docs" / "schemas"


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_schema_files_are_current(name: str) -> None:
    assert (DOCS / name).read_text() == schema_text(SCHEMAS[name]), (
        "regenerate with `make schemas`")


def test_plan_round_trips_through_json(lenet5_plan_factory, tmp_path: Path) -> None:
    plan, _ = lenet5_plan_factory(latency="60ms")
    path = tmp_path / "plan.json"
    plan.save(path)
    again = Plan.load(path)
    assert again == plan
    assert list(again.layers) == ["conv1", "conv2", "fc1", "fc2", "fc3"], "ordered as executed"
    doc = json.loads(path.read_text())
    assert doc["schema_version"] == 3
    assert all(alt["kernel"] in {"fp32", "int8", "int4", "int2", "int3", "int6", "fp16", "int8a16"}
               for lp in doc["layers"].values() for alt in lp["alternatives"])
    assert len(doc["model"]["weights_sha256"]) == 64 and len(doc["calibration_sha256"]) == 64


def test_an_older_plan_is_refused_with_how_to_replan(tmp_path: Path) -> None:
    from edgefit_common.errors import SpecError

    old = tmp_path / "plan.json"
    old.write_text(json.dumps({"schema_version": 1, "model": {"name": "lenet5-mnist"}}))
    with pytest.raises(SpecError, match="older plan format") as exc:
        Plan.load(old)
    assert "re-plan" in str(exc.value) and "\n" not in str(exc.value)


def test_binding_budget_compresses_and_meets_limits(lenet5_plan_factory) -> None:
    plan, ctx = lenet5_plan_factory(latency="60ms", ram="64KB")
    assert plan.feasible
    assert set(plan.options().values()) != {"fp32"}, "the latency limit binds"
    assert plan.totals is not None and plan.totals.latency_ms <= 60.0
    assert plan.totals.ram_bytes is not None and plan.totals.ram_bytes <= 64_000
    # totals are the sum of the layers plus the runtime's own footprint
    assert plan.totals.flash_bytes == pytest.approx(
        sum(lp.cost.flash_bytes for lp in plan.layers.values()) + plan.fixed["flash_bytes"])


def test_loose_budget_keeps_accuracy(lenet5_plan_factory) -> None:
    plan, _ = lenet5_plan_factory(latency="10s")
    assert set(plan.options().values()) == {"fp32"}
    assert plan.totals is not None and plan.totals.acc_loss == 0.0


def test_tiny_flash_is_explained(lenet5_plan_factory) -> None:
    plan, _ = lenet5_plan_factory(flash="4KB")
    assert plan.status == "INFEASIBLE" and not plan.options()
    assert all(lp.alternatives for lp in plan.layers.values()), "kept for re-solving"
    assert plan.explanation is not None
    (flash,) = [r for r in plan.explanation.relaxations if r.limit == "flash_bytes"]
    # all-int4 + the runtime is the smallest this model gets on the board
    assert flash.best_reachable is not None and flash.best_reachable > 4000
    assert plan.explanation.minimum["flash_bytes"] == flash.best_reachable


def test_plan_load_rejects_garbage(tmp_path: Path) -> None:
    from edgefit_common.errors import SpecError

    bad = tmp_path / "plan.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match="plan.json:1: not valid JSON"):
        Plan.load(bad)
    bad.write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(SpecError, match="schema_version 99"):
        Plan.load(bad)


def test_margin_tightens_every_limit(lenet5_plan_factory) -> None:
    from device_specs.budget import Budget
    from edgefit.planning import make_plan
    from planner.resolve import solver_limits

    budget = Budget(target="arduino-nano-33-ble", limits={"latency": "60ms", "ram": "64KB"},
                    model="lenet5-mnist", margin=0.1)
    assert solver_limits(budget.limits, budget.margin) == {"latency_ms": pytest.approx(54.0),
                                     "ram_bytes": pytest.approx(57_600)}
    plan, _ = make_plan(budget, "test")
    assert plan.totals is not None and plan.totals.latency_ms <= 54.0


def test_host_target_uses_measured_latency(lenet5_plan_factory) -> None:
    plan, ctx = lenet5_plan_factory(target="host", latency="1s")
    assert plan.provenance["latency"].startswith("measured on this host")
    # every option of every layer carries a measured (positive) latency
    assert all(c.latency_ms > 0 for row in ctx.table.options.values() for c in row)


def test_plan_states_how_far_latency_is_trusted(lenet5_plan_factory) -> None:
    from cost_models.published_fit import published_fit
    from device_specs.catalog import load_spec

    nano, _ = lenet5_plan_factory(target="jetson-nano", latency="30ms")
    assert nano.latency_band is not None and 0 < nano.latency_band < 5
    assert "published whole-network measurements" in nano.uncertainty["latency"]
    # the Nano's GPU profile runs the parameters fitted to its published points: the band is
    # that fit's leave-one-out error, and the provenance says which points
    fit = published_fit(load_spec("jetson-nano"), "tensorrt-gpu")
    assert fit is not None and nano.latency_band == pytest.approx(fit.loo_mape)
    assert "leave-one-out" in nano.uncertainty["latency"]
    assert f"calibrated: fitted on {fit.n_points} published points" in nano.provenance["latency"]
    assert nano.latency_backed is True
    # no published point for TFLM + CMSIS-NN anywhere: the band is that of the runtime family
    # whose parameters stand in (microTVM + CMSIS-NN on the MLPerf Tiny rows), said to be assumed
    mcu, _ = lenet5_plan_factory(latency="60ms")
    assert mcu.latency_backed is False
    assert mcu.uncertainty["latency"].startswith("not backed by a published measurement")
    assert mcu.latency_band is not None and "microtvm-cmsis-nn" in mcu.uncertainty["latency"]


def test_bayes_search_is_a_baseline_not_a_proof(tmp_path: Path) -> None:
    from device_specs.budget import Budget
    from edgefit.planning import SearchSettings, make_plan

    budget = Budget(target="arduino-nano-33-ble", limits={"latency": "60ms"},
                    model="lenet5-mnist")
    exact, _ = make_plan(budget, "test")
    tpe, _ = make_plan(budget, "test", search=SearchSettings(trials=40, study=tmp_path / "s.db"))
    assert tpe.solver.backend == "optuna-tpe" and tpe.status == "FEASIBLE"
    assert tpe.totals is not None and exact.totals is not None
    assert tpe.totals.latency_ms <= 60.0
    assert tpe.totals.acc_loss >= exact.totals.acc_loss - 1e-12  # the solver is the optimum
    assert (tmp_path / "s.db").is_file()
