"""Shared fixtures: the built-in LeNet-5, trained once (cached under EDGEFIT_CACHE), and plans."""

from __future__ import annotations

import pytest

from device_specs.budget import Budget


@pytest.fixture(scope="session")
def lenet5_plan_factory():
    """Make a plan for the trained LeNet-5 under the given budget fields."""
    from edgefit.planning import make_plan

    def make(target: str = "arduino-nano-33-ble", **limits: str):
        budget = Budget(target=target, limits=limits, model="lenet5-mnist")
        return make_plan(budget, "test")

    return make
