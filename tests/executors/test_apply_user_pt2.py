"""A user's own network exported to .pt2 (BatchNorm, PReLU, a residual add, a batch-specialised
reshape) is planned and applied: every check read back from the files passes (issue #21)."""

from __future__ import annotations

from pathlib import Path

from device_specs.budget import Budget
from edgefit.applying import apply_plan
from edgefit.planning import make_plan


def test_user_pt2_with_batchnorm_plans_and_applies(user_net_pt2, tmp_path: Path) -> None:
    _, path = user_net_pt2
    budget = Budget(target="arduino-nano-33-ble", limits={"latency": "400ms", "ram": "200KB"},
                    model=str(path), data="mnist")
    plan, _ = make_plan(budget, "test")
    assert plan.feasible and plan.model.kind == "pt2"
    assert list(plan.layers) == ["conv0", "conv1", "fc"]
    report = apply_plan(plan, tmp_path / "out")
    assert all(c["ok"] for c in report["checks"]), report["checks"]
    assert report["verification"]["ok"], report["verification"]["summary"]
