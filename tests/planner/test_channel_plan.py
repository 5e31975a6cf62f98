"""A LeNet-5 plan whose budget forces channel pruning: widths on the plan, plan.json alone
re-solves it, and `apply` removes the channels the plan says (read back from the files)."""

from __future__ import annotations

import pytest

from device_specs.budget import Budget
from planner.plan import Plan
from planner.resolve import problem_from_plan, resolve
from techniques.prune import ChannelPruneConfig, kept_channels


@pytest.fixture(scope="module")
def planned():
    from edgefit.planning import make_plan

    # 22 ms on the Nano 33 BLE is below the fastest full-width plan (checked below); low rank
    # is excluded, so channel pruning is the only way to get there
    budget = Budget(target="arduino-nano-33-ble", limits={"latency": "22ms"},
                    model="lenet5-mnist")
    return make_plan(budget, "test", exclude=("lowrank",))


def _prune_configs(plan: Plan) -> dict[str, ChannelPruneConfig]:
    return {n: t for n, lp in plan.layers.items() for t in lp.techniques
            if isinstance(t, ChannelPruneConfig)}


def test_budget_forces_channel_pruning_with_hardware_widths(planned) -> None:
    plan, _ = planned
    assert plan.feasible and plan.totals is not None and plan.totals.latency_ms <= 22.0
    problem = planned[1].problem
    full = {g.name: g.channels for g in plan.channel_groups}
    fastest_full_width = problem.fixed["latency_ms"] + sum(
        min(c.latency_ms for c in problem.choices[ly] if all(full[g] == w for g, w in c.widths))
        for ly in problem.layers)
    assert fastest_full_width > 22.0
    configs = _prune_configs(plan)
    assert configs, "22 ms needs narrower layers"
    groups = {g.name: g for g in plan.channel_groups}
    assert {g.multiple for g in groups.values()} == {4}  # the tflm-cmsis-nn profile's multiple
    for name, cfg in configs.items():
        g = next(g for g in groups.values() if name in g.layers)
        kept = kept_channels(g.channels, cfg.ratio, cfg.round_to)
        assert 0 < kept < g.channels and kept % g.multiple == 0
        assert plan.layers[name].alternative(plan.layers[name].option or "").widths[g.name] == kept


def test_consumers_follow_their_producers(planned) -> None:
    plan, _ = planned
    for g in plan.channel_groups:
        used = {plan.layers[n].alternative(plan.layers[n].option or "").widths[g.name]
                for n in (*g.layers, *g.consumers)}
        assert len(used) == 1, (g.name, used)


def test_plan_json_alone_rebuilds_and_resolves_it(planned) -> None:
    plan, ctx = planned
    again = Plan.model_validate_json(plan.to_json())
    assert problem_from_plan(again, exclude=("lowrank",)) == ctx.problem
    assert resolve(again, exclude=("lowrank",)).options() == plan.options()


def test_model_input_is_charged_at_full_size(planned) -> None:
    plan, ctx = planned
    first = next(iter(plan.layers))
    assert any(owner == f"{first}:input" for step in plan.ram_steps for owner, _ in step.live)
    pruned_first = [c for c in ctx.problem.choices[first] if c.act_bytes < 1.0]
    assert pruned_first and all(c.in_act_bytes == 1.0 for c in pruned_first)


@pytest.fixture(scope="module")
def applied(planned, tmp_path_factory: pytest.TempPathFactory):
    from edgefit.applying import apply_plan

    plan, _ = planned
    return plan, apply_plan(plan, tmp_path_factory.mktemp("apply-channels"))


def test_apply_removes_the_planned_channels(applied) -> None:
    plan, report = applied
    verification = report["verification"]
    assert verification["ok"], verification["summary"]
    assert verification["flash_match"]
    channels = verification["channels"]
    assert set(channels) == set(_prune_configs(plan))
    for row in channels.values():
        assert row["onnx"] == row["planned"]
    # the flash image holds exactly the planned bytes of every (narrower) layer
    for row in verification["layers"]:
        assert row["image_bytes"] == row["planned_bytes"], row["layer"]


def test_review_flags_a_hand_edit_that_breaks_a_channel_group(planned) -> None:
    """The TUI's re-evaluation uses the plan's own problem: giving one member of a coupled
    group another width than its partners is OVER_BUDGET, never a valid plan."""
    from edgefit.review.model import OVER_BUDGET, evaluate

    plan = planned[0] if isinstance(planned, tuple) else planned
    assert evaluate(plan).status == "FEASIBLE"
    for name, lp in plan.layers.items():
        chosen = lp.alternative(lp.option or "")
        # narrower in every group: cheaper, so only the broken coupling can make it invalid
        other = next((a for a in lp.alternatives if a.widths and chosen.widths
                      and a.widths.keys() == chosen.widths.keys()
                      and all(a.widths[g] <= chosen.widths[g] for g in a.widths)
                      and a.widths != chosen.widths
                      and a.latency_ms <= chosen.latency_ms), None)
        if other is None:
            continue
        edited = plan.model_copy(update={"layers": {
            **plan.layers, name: lp.model_copy(update={"option": other.option})}})
        assert evaluate(edited).status == OVER_BUDGET, name
        return
    pytest.fail("no layer with another width to edit")
