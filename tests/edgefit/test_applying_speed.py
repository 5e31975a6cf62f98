"""apply's speed lines (issue #22 item 2): a compressed model measured slower than fp32 on this
machine is flagged even without a limit; on the host target a measured latency above the
latency limit fails the check (the CLI's exit 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgefit.applying import _checks, speed_warnings
from planner.plan import Plan

REVIEW_PLAN = Path(__file__).parents[1] / "review" / "data" / "plan.json"


def _report(compressed_ms: float, fp32_ms: float) -> dict[str, Any]:
    return {
        "verification": {"ok": True, "summary": "ok"},
        "accuracy": {"fp32": 0.99, "limit_pp": None, "limit_met": None, "drop_pp": 0.1},
        "host_check": {"rows": [
            {"quantity": "latency (compressed)", "measured": compressed_ms},
            {"quantity": "latency (fp32 baseline)", "measured": fp32_ms}]},
    }


def test_slower_than_fp32_is_flagged_without_a_limit() -> None:
    (line,) = speed_warnings(_report(0.179, 0.070))
    assert "2.56x SLOWER than the fp32 model" in line and "0.179 ms vs 0.07 ms" in line


def test_faster_than_fp32_is_not_flagged() -> None:
    assert speed_warnings(_report(0.05, 0.07)) == []
    assert speed_warnings(_report(0.0702, 0.07)) == []  # 1.003x: noise, not slower


def _host_plan(latency_ms: float | None) -> Plan:
    plan = Plan.load(REVIEW_PLAN)
    target = plan.target.model_copy(update={"device": "host"})
    limits = plan.limits.model_copy(update={"latency": latency_ms})
    return plan.model_copy(update={"target": target, "limits": limits})


@pytest.mark.parametrize("measured_ms, ok", [(0.9, True), (1.1, False)])
def test_host_target_latency_limit_is_checked_on_the_measurement(measured_ms: float,
                                                                 ok: bool) -> None:
    checks = _checks(_report(measured_ms, 2.0), _host_plan(1.0))
    (row,) = [c for c in checks if c["check"].startswith("host latency")]
    assert row["ok"] is ok and f"{measured_ms:.4g} ms measured" == row["detail"]


def test_a_device_target_is_not_failed_on_the_host_measurement() -> None:
    plan = Plan.load(REVIEW_PLAN)
    limits = plan.limits.model_copy(update={"latency": 1.0})
    checks = _checks(_report(5.0, 2.0), plan.model_copy(update={"limits": limits}))
    assert plan.target.device != "host"
    assert not any(c["check"].startswith("host latency") for c in checks)


def test_on_the_host_target_the_plan_s_own_latencies_are_judged() -> None:
    """Issue #22: the host check compared measurements with the analytical host model even
    when the plan's latencies were this host's measured profiles (fp32 off by ~2x)."""
    from edgefit.applying import host_predictions
    from planner.resolve import fp32_latency_ms

    analytical = {"latency_ms": 9.0, "flash_bytes": 1.0}
    device = _host_plan(None).model_copy(update={"target": Plan.load(REVIEW_PLAN).target})
    assert host_predictions(device, analytical, analytical)[0] == analytical
    host = _host_plan(None)
    assert host.totals is not None
    got, got_fp32, source = host_predictions(host, analytical, analytical)
    assert got == {"latency_ms": host.totals.latency_ms, "flash_bytes": 1.0}
    assert got_fp32["latency_ms"] == fp32_latency_ms(host) and "measured" in source
