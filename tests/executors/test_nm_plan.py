"""N:M pruning as a plan option: planned on a profile with N:M kernels, applied, verified."""

from __future__ import annotations

from pathlib import Path

import pytest

from device_specs.budget import Budget
from edgefit.applying import apply_plan
from edgefit.planning import make_plan
from techniques.flash_image import read_flash_image
from techniques.prune import NMPruneConfig, check_nm


@pytest.fixture(scope="module")
def planned():
    budget = Budget(target="jetson-orin-nano", profile="tensorrt-gpu",
                    limits={"latency": "10s"}, model="lenet5-mnist")
    probe, _ = make_plan(budget, "test")
    plan, _ = make_plan(budget, "test", pins={"fc1": "int8+nm24", "fc2": "fp16+nm24"})
    return probe, plan


def test_nm_option_costs_fewer_macs_and_exact_sparse_flash(planned) -> None:
    probe, plan = planned
    alts = {a.option: a for a in probe.layers["fc1"].alternatives}
    dense, nm, s50 = alts["int8"], alts["int8+nm24"], alts["int8+s50"]
    # the sparse kernel skips half the MACs: faster than dense; unstructured 50 % is not
    assert nm.latency_ms < dense.latency_ms == s50.latency_ms
    assert nm.flash_bytes < dense.flash_bytes
    lp = plan.layers["fc1"]
    assert lp.option == "int8+nm24"
    assert NMPruneConfig(n=2, m=4) in lp.techniques


def test_apply_stores_and_verifies_the_pattern(planned, tmp_path: Path) -> None:
    _, plan = planned
    report = apply_plan(plan, tmp_path)
    ver = report["verification"]
    assert ver["ok"], ver["summary"]
    rows = {r["layer"]: r for r in ver["layers"]}
    stored = {s.name: s for s in read_flash_image(tmp_path / "model.flash.bin")}
    for name in ("fc1", "fc2"):
        assert rows[name]["nm_compliant_groups"].split("/")[0] == \
            rows[name]["nm_compliant_groups"].split("/")[1]
        assert check_nm(stored[name].weight, NMPruneConfig())["compliant"]
        assert stored[name].zero_fraction >= 0.5 and stored[name].storage != "dense"
        assert (stored[name].weight_bytes + stored[name].bias_bytes + stored[name].header_bytes
                == plan.layers[name].cost.flash_bytes)
    assert report["artifacts"]["flash_match"]
