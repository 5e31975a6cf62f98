"""Fleet cost on a real plan (trained LeNet-5 on the Nano 33 BLE over LTE-M): the cost limit
becomes the solver's transfer-byte limit, changing only the price flips feasibility, CP-SAT
and CBC agree on it, the infeasible explanation names the link and the price, and `--json`
carries every figure with its provenance."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from device_specs.budget import Budget
from device_specs.fleet import Fleet
from edgefit.report import plan_summary, print_plan
from planner.plan import Plan
from planner.resolve import problem_from_plan, resolve

OVERHEAD = 0.10  # lte-m's overhead in device_specs/links.yaml


@pytest.fixture(scope="module")
def lte_plan() -> Plan:
    from edgefit.planning import make_plan

    budget = Budget(target="arduino-nano-33-ble", limits={"flash": "1MB"}, link="lte-m",
                    model="lenet5-mnist",
                    fleet={"size": 10_000, "updates_per_month": 4, "data_price": "0.05USD/MB"})
    plan, _ = make_plan(budget, "test")
    assert plan.feasible
    return plan


def _with_fleet(plan: Plan, **fleet: object) -> Plan:
    d = plan.delivery
    assert d is not None
    return plan.model_copy(update={"delivery": d.model_copy(
        update={"fleet": Fleet.model_validate(fleet)})})


def _text(plan: Plan) -> str:
    buf = io.StringIO()
    print_plan(plan, Path("plan.json"), Console(file=buf, width=250, markup=False),
               header=False)
    return buf.getvalue()


def _free_bytes(plan: Plan) -> float:
    assert plan.totals is not None and plan.totals.transfer_bytes is not None
    return plan.totals.transfer_bytes


def test_the_plan_reports_bytes_time_and_cost_with_their_provenance(lte_plan: Plan) -> None:
    d = lte_plan.delivery
    assert d is not None and d.link_overhead == OVERHEAD and d.fleet is not None
    sent = _free_bytes(lte_plan)
    cost = sent * (1 + OVERHEAD) * 4 * 0.05 / 1e6
    summary = plan_summary(lte_plan, [], None)
    record = summary["delivery"]["fleet_cost"]
    assert record["billed_bytes_per_update"] == pytest.approx(sent * 1.1)
    assert record["cost_per_device_month"] == pytest.approx(cost)
    assert record["cost_fleet_month"] == pytest.approx(cost * 10_000)
    assert record["fleet_bytes_month"] == pytest.approx(sent * 1.1 * 4 * 10_000)
    assert record["update_time_ms"] == pytest.approx(sent / d.link_bytes_per_s * 1e3)
    assert record["currency"] == "USD" and record["data_price_per_mb"] == 0.05
    assert record["provenance"]["data_price"].startswith("given by you")
    assert record["provenance"]["transfer_bytes"].startswith("estimated: ")
    assert "S-CATM" in record["provenance"]["update_time"]
    text = _text(lte_plan)
    assert "update cost / device / month" in text and "given by you" in text
    assert f"{cost * 10_000:,.2f} USD a month for the fleet of 10,000" in text


def test_the_cost_limit_is_the_solvers_byte_limit(lte_plan: Plan) -> None:
    plan = _with_fleet(lte_plan, updates_per_month=4, data_price="0.05USD/MB", max_cost=0.02)
    limits = problem_from_plan(plan).limits
    assert limits["transfer_bytes"] == pytest.approx(0.02 / (1.1 * 4 * 0.05e-6))
    solved = resolve(plan)
    assert solved.feasible and solved.totals is not None
    d = solved.delivery
    assert d is not None
    cost = d.cost_per_device_month(_free_bytes(solved))
    assert cost is not None and cost <= 0.02 * (1 + 1e-9)
    assert solved.options() != lte_plan.options()  # the free plan costs more than 0.02


def test_changing_only_the_price_flips_feasibility(lte_plan: Plan) -> None:
    cheap = resolve(_with_fleet(lte_plan, data_price="0.05USD/MB", max_cost=0.01))
    assert cheap.feasible
    dear = resolve(_with_fleet(lte_plan, data_price="5USD/MB", max_cost=0.01))
    assert not dear.feasible and dear.explanation is not None
    assert [r.limit for r in dear.explanation.relaxations if r.limit == "transfer_bytes"]
    line = next(ln for ln in _text(dear).splitlines() if "update over lte-m" in ln)
    assert "5.00 USD/MB (given by you)" in line and "cost limit 0.01 USD" in line
    assert "the smallest model costs" in line


def test_cpsat_and_cbc_agree_under_a_cost_limit(lte_plan: Plan) -> None:
    free = _free_bytes(lte_plan) * 1.1 * 0.05e-6  # one update a month at 0.05/MB
    for share in (0.3, 0.6):
        plan = _with_fleet(lte_plan, data_price="0.05USD/MB", max_cost=share * free)
        a, b = resolve(plan, backend="cpsat"), resolve(plan, backend="cbc")
        assert a.feasible and b.feasible and a.totals is not None and b.totals is not None
        assert a.totals.acc_loss == pytest.approx(b.totals.acc_loss, rel=1e-6, abs=1e-9)
        for p in (a, b):
            assert p.delivery is not None
            assert p.delivery.cost_per_device_month(_free_bytes(p)) <= share * free * 1.000001


def test_resolve_takes_a_new_price_and_cost_limit_from_the_plan_file(
        lte_plan: Plan, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from edgefit.cli import _run, app

    path = tmp_path / "plan.json"
    lte_plan.save(path)
    code = _run(app, ["resolve", str(path), "--max-update-cost", "0.01", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["feasible"]
    assert out["delivery"]["fleet_cost"]["cost_per_device_month"] <= 0.01 * (1 + 1e-9)
    assert out["delivery"]["fleet_cost"]["currency"] == "USD"  # kept from the plan
    code = _run(app, ["resolve", str(path), "--data-price", "5EUR/MB", "--max-update-cost",
                      "0.01", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and not out["feasible"]
    assert out["delivery"]["fleet_cost"]["currency"] == "EUR"
    code = _run(app, ["resolve", str(path), "--max-update-cost", "0.01EUR"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "one currency" in err[0]


def test_a_binding_cost_limit_is_said_to_bind_and_an_update_time_one_is_not(
        lte_plan: Plan) -> None:
    from device_specs.budget import Limits

    free = _free_bytes(lte_plan) * 1.1 * 0.05e-6  # one update a month at 0.05/MB
    plan = resolve(_with_fleet(lte_plan, data_price="0.05USD/MB", max_cost=0.3 * free))
    assert "transfer_bytes" in plan.binding  # at 30 % of the free plan's cost (LeNet-5)
    rows = [ln for ln in _text(plan).splitlines() if "update" in ln]
    cost_row = next(ln for ln in rows if "update cost / device / month" in ln)
    assert "binds" in cost_row
    assert "binds" not in next(ln for ln in rows if "update over lte-m" in ln)
    assert any("update cost +10 %" in ln for ln in rows)
    # a far looser cost limit beside a binding update-time limit: the time binds
    d = plan.delivery
    assert d is not None and d.link_bytes_per_s is not None
    limit_ms = 0.3 * _free_bytes(lte_plan) / d.link_bytes_per_s * 1e3
    timed = resolve(_with_fleet(lte_plan, data_price="0.05USD/MB", max_cost=10 * free),
                    limits=Limits(flash="1MB", update_time=f"{limit_ms}ms"))
    rows = [ln for ln in _text(timed).splitlines() if "update" in ln]
    assert "transfer_bytes" in timed.binding
    assert "binds" in next(ln for ln in rows if "update over lte-m" in ln)
    assert "binds" not in next(ln for ln in rows if "update cost / device / month" in ln)


def test_apply_restates_the_cost_from_the_measured_file(lte_plan: Plan, tmp_path: Path) -> None:
    from edgefit.delivery import delivery_check, measured_delivery

    image = tmp_path / "model.flash.bin"
    image.write_bytes(bytes(range(256)) * 400)  # 102,400 B that zstd shrinks a lot
    plan = _with_fleet(lte_plan, updates_per_month=4, data_price="0.05USD/MB", max_cost=0.02)
    record = measured_delivery(plan, image, None)
    assert record is not None and 0 < record["zstd_bytes"] < 2_000
    assert record["cost_per_device_month"] == pytest.approx(
        record["zstd_bytes"] * 1.1 * 4 * 0.05e-6)
    assert record["cost_limit_met"] is True and record["currency"] == "USD"
    (check,) = delivery_check(record)  # no update-time limit: only the cost line
    assert check["ok"] and "0.02 USD per device per month" in check["check"]
    tight = _with_fleet(lte_plan, data_price="0.05USD/MB", max_cost=1e-9)
    (failed,) = delivery_check(measured_delivery(tight, image, None))
    assert not failed["ok"]
