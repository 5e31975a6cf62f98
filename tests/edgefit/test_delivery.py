"""Delivery on a real plan (trained LeNet-5 on the Nano 33 BLE over BLE 1M): every alternative's
transfer bytes, the update limit changing the plan, A/B slots halving the model's flash, the
infeasible explanation naming the link, and apply's measured check of the file it wrote."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from device_specs.budget import Budget, Limits
from edgefit.delivery import delivery_check, measured_delivery
from edgefit.report import print_plan
from planner.plan import Plan
from planner.resolve import resolve


@pytest.fixture(scope="module")
def ble_plan() -> Plan:
    from edgefit.planning import make_plan

    budget = Budget(target="arduino-nano-33-ble", limits={"flash": "1MB"}, link="ble-1m",
                    model="lenet5-mnist")
    plan, _ = make_plan(budget, "test")
    assert plan.feasible
    return plan


def _text(plan: Plan) -> str:
    buf = io.StringIO()
    print_plan(plan, Path("plan.json"), Console(file=buf, width=200, markup=False),
               header=False)
    return buf.getvalue()


def test_every_alternative_has_transfer_bytes_below_its_flash(ble_plan: Plan) -> None:
    d = ble_plan.delivery
    assert d is not None and d.link == "ble-1m" and d.ab_slots == 1
    assert d.transfer.startswith("estimated:")
    for lp in ble_plan.layers.values():
        for alt in lp.alternatives:
            assert alt.transfer_bytes is not None
            shared = any(t.technique == "share" for t in alt.techniques)
            if shared:
                assert alt.transfer_bytes == alt.flash_bytes
            else:  # zstd finds something in real weights in every storage form
                assert 0 < alt.transfer_bytes < alt.flash_bytes
    assert ble_plan.totals is not None and ble_plan.totals.transfer_bytes is not None
    text = _text(ble_plan)
    assert "update over ble-1m" in text and "S-BTCORE" in text and "no limit" in text


def test_the_update_limit_binds_and_changes_the_plan(ble_plan: Plan) -> None:
    d, totals = ble_plan.delivery, ble_plan.totals
    assert d is not None and totals is not None and totals.transfer_bytes is not None
    free_ms = d.update_time_ms(totals.transfer_bytes)
    assert free_ms is not None
    limit_ms = 0.6 * free_ms
    limited = resolve(ble_plan, limits=Limits(flash="1MB", update_time=f"{limit_ms}ms"))
    assert limited.feasible and limited.totals is not None
    assert limited.options() != ble_plan.options()
    assert limited.totals.transfer_bytes is not None
    assert d.update_time_ms(limited.totals.transfer_bytes) <= limit_ms * (1 + 1e-9)
    assert limited.totals.acc_loss > totals.acc_loss  # the limit cost accuracy


def test_an_unreachable_update_is_explained_over_the_link(ble_plan: Plan) -> None:
    plan = resolve(ble_plan, limits=Limits(flash="1MB", update_time="10ms"))
    assert not plan.feasible
    text = _text(plan)
    line = next(ln for ln in text.splitlines() if "update over ble-1m" in ln)
    assert "the smallest model needs" in line and "at 87.14KB/s" in line
    assert "limit 10ms" in line


def test_two_slots_halve_the_flash_left_for_the_model(ble_plan: Plan) -> None:
    assert ble_plan.totals is not None and ble_plan.delivery is not None
    runtime = ble_plan.delivery.runtime_flash_bytes
    one_image = ble_plan.totals.flash_bytes  # the unconstrained choice
    # a flash limit this plan fits with one slot, but not with two copies of its image
    limit = runtime + 1.5 * (one_image - runtime)
    flash = Limits(flash=f"{limit}B")
    single = resolve(ble_plan, limits=flash)
    assert single.feasible and single.options() == ble_plan.options()
    two = ble_plan.model_copy(update={"delivery": ble_plan.delivery.model_copy(
        update={"ab_slots": 2})})
    ab = resolve(two, limits=flash)
    assert ab.feasible and ab.totals is not None
    assert ab.options() != single.options()
    assert runtime + 2 * (ab.totals.flash_bytes - runtime) <= limit + 1e-6
    assert "flash (2 model slots)" in _text(ab)
    # below one runtime + two of the smallest images: infeasible, explained in slot terms
    tight = resolve(two, limits=Limits(flash=f"{runtime + 1000}B"))
    assert not tight.feasible
    assert "flash (2 model slots): " in _text(tight)


def test_apply_measures_the_file_it_wrote(ble_plan: Plan, tmp_path: Path) -> None:
    image = tmp_path / "model.flash.bin"
    image.write_bytes(bytes(range(256)) * 400)  # 102,400 B that zstd shrinks a lot
    plan = ble_plan.model_copy(update={"limits": Limits(flash="1MB", update_time="1s")})
    record = measured_delivery(plan, image, None)
    assert record is not None and record["file_bytes"] == 102_400
    assert 0 < record["zstd_bytes"] < 2_000
    assert record["limit_met"] is True
    assert record["update_time_ms"] == pytest.approx(
        record["zstd_bytes"] / 87_142.857 * 1e3, rel=1e-4)
    (check,) = delivery_check(record)
    assert check["ok"] and "ble-1m" in check["check"]
    slow = plan.model_copy(update={"limits": Limits(flash="1MB", update_time="1us")})
    (failed,) = delivery_check(measured_delivery(slow, image, None))
    assert not failed["ok"]


def test_the_python_api_and_an_example_budget_plan_the_delivery() -> None:
    import edgefit
    from device_specs.budget import load_budget
    from edgefit_common.errors import SpecError

    examples = Path(__file__).parents[2] / "examples" / "budgets"
    budget = load_budget(examples / "nano33-ble-ota.yaml")
    assert budget.link == "ble-1m" and budget.ab_slots == 2
    assert budget.limits.update_time == 500.0
    with pytest.raises(SpecError, match="needs link"):
        edgefit.plan("lenet5-mnist", "arduino-nano-33-ble", limits={"update_time": "1s"})
    with pytest.raises(SpecError, match="ab_slots=0"):
        edgefit.plan("lenet5-mnist", "arduino-nano-33-ble", limits={"flash": "1MB"},
                     ab_slots=0)
    plan = edgefit.plan("lenet5-mnist", "arduino-nano-33-ble",
                        limits={"flash": "1MB", "update_time": "2s"}, link="ble-2m",
                        ab_slots=2)
    assert plan.feasible and plan.delivery is not None
    assert plan.delivery.link == "ble-2m" and plan.delivery.ab_slots == 2
    assert plan.totals is not None and plan.totals.transfer_bytes is not None


def test_a_hand_edit_in_review_keeps_the_update_and_its_limit(ble_plan: Plan) -> None:
    from edgefit.review.model import choose

    assert ble_plan.totals is not None and ble_plan.totals.transfer_bytes is not None
    limit_ms = ble_plan.delivery.update_time_ms(ble_plan.totals.transfer_bytes)  # type: ignore[union-attr]
    plan = ble_plan.model_copy(update={"limits": Limits(flash="1MB",
                                                        update_time=f"{limit_ms}ms")})
    fc1 = plan.layers["fc1"]
    biggest = max(fc1.alternatives, key=lambda a: a.transfer_bytes or 0.0)
    edited = choose(plan, "fc1", biggest.option)
    assert edited.totals is not None and edited.totals.transfer_bytes is not None
    assert edited.totals.transfer_bytes > ble_plan.totals.transfer_bytes
    assert edited.status == "OVER_BUDGET"  # the update no longer arrives in time
