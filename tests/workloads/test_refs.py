"""workloads.refs.source_for_apply: what apply runs, decided before anything is imported; a
factory plan's recorded weights file is used only for that factory, named on the command line."""

from __future__ import annotations

import pytest

from edgefit_common.errors import PlanError
from workloads.refs import source_for_apply

SHAPE = [1, 28, 28]


def test_the_recorded_weights_go_with_the_plan_s_own_factory_only() -> None:
    got = source_for_apply("factory", "make_net", "mynets:make_net", SHAPE, "mynets:make_net",
                           None, "/abs/w.pt")
    assert got.weights == "/abs/w.pt" and got.trusted_factory
    explicit = source_for_apply("factory", "make_net", "mynets:make_net", SHAPE,
                                "mynets:make_net", "mine.pt", "/abs/w.pt")
    assert explicit.weights == "mine.pt"  # the command line wins
    other = source_for_apply("factory", "make_net", "mynets:make_net", SHAPE, "other:net",
                             None, "/abs/w.pt")
    assert other.weights is None  # another factory: the plan's file is not its weights


def test_a_factory_plan_is_never_run_from_the_file() -> None:
    with pytest.raises(PlanError, match="never run from a plan file"):
        source_for_apply("factory", "make_net", "mynets:make_net", SHAPE, None, None,
                         "/abs/w.pt")
