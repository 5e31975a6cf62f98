"""Kernel keys are names only: a device file whose int8 kernel is called ``i8`` (same fields)
gives the same option costs, the same precision-boundary RAM terms and the same plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cost_models.analytical import build_cost_table
from cost_models.capture import capture
from cost_models.host_probe import host_spec
from cost_models.ram_terms import boundary_terms
from device_specs.schema import DeviceSpec
from workloads.zoo import LeNet5


def _renamed(spec: DeviceSpec, old: str = "int8", new: str = "i8") -> DeviceSpec:
    profiles = {}
    for name, profile in spec.profiles.items():
        kernels = {(new if k == old else k): v for k, v in profile.kernels.items()}
        profiles[name] = profile.model_copy(update={"kernels": kernels})
    return spec.model_copy(update={"profiles": profiles})


def _canon(option: str) -> str:
    head, *rest = option.split("+")
    return "+".join(["int8" if head == "i8" else head, *rest])


def _canon_terms(terms: list[list[Any]]) -> list[list[Any]]:
    return [sorted((p, tuple(sorted(map(_canon, po))), c, tuple(sorted(map(_canon, co))), b)
                   for p, po, c, co, b in step) for step in terms]


@pytest.fixture(scope="module")
def graph():
    return capture(LeNet5(), (1, 28, 28), "lenet5")


def test_renamed_int8_kernel_same_costs_and_ram_terms(graph) -> None:
    spec = host_spec()
    assert "int8" in spec.profile(spec.default_profile).kernels
    a = build_cost_table(graph, spec)
    b = build_cost_table(graph, _renamed(spec))
    for layer in a.options:
        rows_a = {c.option: c for c in a.options[layer]}
        rows_b = {_canon(c.option): c for c in b.options[layer]}
        assert rows_a.keys() == rows_b.keys()
        for option, ca in rows_a.items():
            cb = rows_b[option]
            assert (ca.latency_ms, ca.flash_bytes, ca.act_bytes, ca.kernel_scratch_bytes,
                    ca.int8_activations) == (cb.latency_ms, cb.flash_bytes, cb.act_bytes,
                                             cb.kernel_scratch_bytes, cb.int8_activations)
    terms_a = _canon_terms(boundary_terms(graph, a))
    assert any(terms_a), "the host profile has precision-boundary copies to compare"
    assert terms_a == _canon_terms(boundary_terms(graph, b))


def test_renamed_int8_kernel_same_plan(tmp_path: Path) -> None:
    from device_specs.budget import Budget
    from device_specs.catalog import CATALOG_DIR
    from edgefit.planning import make_plan

    doc = yaml.safe_load((CATALOG_DIR / "arduino-nano-33-ble.yaml").read_text())
    for profile in doc["profiles"].values():
        profile["kernels"] = {("i8" if k == "int8" else k): v
                              for k, v in profile["kernels"].items()}
    doc["name"] = "renamed-board"
    renamed = tmp_path / "renamed-board.yaml"
    renamed.write_text(yaml.safe_dump(doc, sort_keys=False))
    limits = {"latency": "60ms", "ram": "64KB"}
    plan_a, _ = make_plan(Budget(target="arduino-nano-33-ble", limits=limits,
                                 model="lenet5-mnist"), "test")
    plan_b, _ = make_plan(Budget(target=str(renamed), limits=limits, model="lenet5-mnist"),
                          "test")
    assert plan_a.feasible and plan_b.feasible
    assert {k: v for k, v in plan_a.options().items()} == {
        k: _canon(v) for k, v in plan_b.options().items()}
    assert plan_a.totals == plan_b.totals
    for name, lp in plan_a.layers.items():
        assert lp.cost == plan_b.layers[name].cost, name
