"""Re-solving from plan.json alone: same answer, pins, exclusions, new limits; no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from device_specs.budget import Limits
from edgefit_common.errors import PlanError
from planner.plan import Plan
from planner.resolve import parse_pins, problem_from_plan, resolve


@pytest.fixture(scope="module")
def plan(lenet5_plan_factory) -> Plan:
    p, _ = lenet5_plan_factory(latency="60ms", ram="64KB")
    return p


def test_plan_json_alone_rebuilds_the_same_problem(plan: Plan, lenet5_plan_factory) -> None:
    _, ctx = lenet5_plan_factory(latency="60ms", ram="64KB")
    again = Plan.model_validate_json(plan.to_json())
    assert problem_from_plan(again) == ctx.problem
    assert resolve(again).options() == plan.options()


def test_pin_is_respected_and_totals_follow(plan: Plan) -> None:
    layer = "fc1"
    other = next(a.option for a in plan.layers[layer].alternatives
                 if a.option != plan.layers[layer].option)
    new = resolve(plan, pins={layer: other}, limits=Limits(latency="1s"))
    assert new.layers[layer].option == other and new.layers[layer].pinned
    assert new.totals is not None
    assert new.totals.flash_bytes == pytest.approx(
        sum(lp.cost.flash_bytes for lp in new.layers.values()) + new.fixed["flash_bytes"])
    # a pin survives the next re-solve (it is stored in the plan)
    assert resolve(new).layers[layer].option == other


def test_exclude_by_option_and_by_technique(plan: Plan) -> None:
    no_int8 = resolve(plan, exclude=["int8"], limits=Limits(latency="10s"))
    # a precision rules out every option at it, sparse, factorised or narrower too
    assert not any(o.split("+")[0] == "int8" for o in no_int8.options().values())
    only_fp32 = resolve(plan, exclude=["quantize"], limits=Limits(latency="10s"))
    assert set(only_fp32.options().values()) == {"fp32"}
    # 60 ms needs quantised, factorised or narrower layers
    infeasible = resolve(plan, exclude=["quantize", "lowrank", "prune_channels"])
    assert infeasible.status == "INFEASIBLE" and infeasible.explanation is not None
    # excluding a producer's channel pruning also rules out its consumers' narrow inputs
    narrow = resolve(plan, exclude=["quantize", "lowrank"])
    assert narrow.feasible
    assert any("+w" in o for o in narrow.options().values())


def test_an_unknown_exclusion_is_an_error_not_ignored(plan: Plan) -> None:
    """`--exclude telepathy` used to exclude nothing, silently (issue #16)."""
    with pytest.raises(PlanError, match=r"--exclude 'telepathy': not an option, precision or "
                                        r"technique of this plan; known: ") as info:
        problem_from_plan(plan, exclude=["int8", "telepathy"])
    assert {"fp32", "int8", "quantize"} <= set(str(info.value).split("known: ")[1].split(", "))
    # every technique edgefit knows is a name, offered in this plan or not
    problem_from_plan(plan, exclude=["share", "prune_nm"])


def test_bad_pins() -> None:
    with pytest.raises(PlanError, match="LAYER=OPTION"):
        parse_pins(["fc1"])


def test_unknown_pin_names_the_choices(plan: Plan) -> None:
    with pytest.raises(PlanError, match="fc1 has options"):
        resolve(plan, pins={"fc1": "int3"})
    with pytest.raises(PlanError, match="no layer 'fc9'"):
        resolve(plan, pins={"fc9": "int8"})


def test_resolve_cli_does_not_import_torch(plan: Plan, tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    plan.save(path)
    code = (
        "import sys\n"
        "from edgefit.cli import main\n"
        "try:\n"
        f"    main(['resolve', {str(path)!r}, '--pin', 'conv1=fp32', '--max-latency', '2s',"
        f" '--out', {str(tmp_path / 'new.json')!r}])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr + out.stdout
    new = json.loads((tmp_path / "new.json").read_text())
    assert new["layers"]["conv1"]["option"] == "fp32" and new["layers"]["conv1"]["pinned"]
    assert new["limits"]["latency"] == "2000ms"


# --------------------------------------------------------------------------------------------
# with a latency limit, a compressed plan is never slower than fp32 (issue #22)


def _slow_compression(plan: Plan) -> Plan:
    """The plan with every compressed alternative made 3x slower than the layer's fp32, so
    only fp32 layers can meet the fp32 plan's latency."""
    from planner.resolve import fp32_latency_ms

    assert fp32_latency_ms(plan) is not None
    layers = {}
    for name, lp in plan.layers.items():
        fp32 = min(a.latency_ms for a in lp.alternatives if not a.techniques)
        alts = [a if not a.techniques else a.model_copy(update={"latency_ms": 3 * fp32})
                for a in lp.alternatives]
        layers[name] = lp.model_copy(update={"alternatives": alts})
    return plan.model_copy(update={"layers": layers})


def test_the_fp32_plan_s_latency_caps_a_looser_limit(plan: Plan) -> None:
    from planner.resolve import fp32_latency_ms, latency_cap

    fp32_ms = fp32_latency_ms(plan)
    assert fp32_ms is not None and fp32_ms > plan.fixed["latency_ms"]
    assert latency_cap(plan, {"latency_ms": 2 * fp32_ms}) == fp32_ms
    assert latency_cap(plan, {"latency_ms": fp32_ms / 2}) is None  # the asked is tighter
    assert latency_cap(plan, {"flash_bytes": 1e9}) is None  # no latency limit: no cap
    loose = Limits(latency=f"{2 * fp32_ms}ms", flash="1GB")
    assert problem_from_plan(plan.model_copy(update={"limits": loose})).limits[
        "latency_ms"] == pytest.approx(fp32_ms)
    slow = _slow_compression(plan)
    free = resolve(slow, limits=Limits(flash="1GB"))  # no latency limit: slower is allowed
    capped = resolve(slow, limits=loose)
    assert capped.feasible and capped.totals is not None
    assert capped.totals.latency_ms <= fp32_ms * (1 + 1e-9)
    assert set(capped.options().values()) == {"fp32"}
    assert free.totals is not None and free.totals.acc_loss <= capped.totals.acc_loss
    # a user's pin is the user's choice: its extra latency is allowed, the free layers stay fp32
    layer = next(iter(slow.layers))
    slow_option = next(a.option for a in slow.layers[layer].alternatives if a.techniques)
    pinned = resolve(slow, pins={layer: slow_option}, limits=loose)
    assert pinned.feasible and pinned.options()[layer] == slow_option
    assert {o for n, o in pinned.options().items() if n != layer} == {"fp32"}
    # a flash limit that needs compression is then infeasible, explained on the cap
    fp32_flash = capped.totals.flash_bytes
    tight = resolve(slow, limits=Limits(latency=f"{2 * fp32_ms}ms", flash=f"{fp32_flash / 2}B"))
    assert tight.status == "INFEASIBLE" and tight.explanation is not None
    latency = next(r for r in tight.explanation.relaxations if r.limit == "latency_ms")
    assert latency.asked == pytest.approx(fp32_ms)


def test_no_cap_without_a_plain_fp32_alternative(plan: Plan) -> None:
    from planner.resolve import fp32_latency_ms

    name = next(iter(plan.layers))
    lp = plan.layers[name]
    int8_only = lp.model_copy(update={"alternatives": [a for a in lp.alternatives
                                                       if a.techniques]})
    assert fp32_latency_ms(plan.model_copy(update={
        "layers": {**plan.layers, name: int8_only}})) is None
