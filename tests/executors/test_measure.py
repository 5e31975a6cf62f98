"""executors.measure.layer_latency_ms: every planned layer of a file timed (the loop's
per-layer evidence on the host), and apply's per-layer rows pair them with the plan's."""

from __future__ import annotations

from pathlib import Path

import onnx
from torch import nn

from cost_models.micro_latency import micro_model
from edgefit.applying import _layer_rows
from executors.measure import layer_latency_ms
from planner.plan import Plan

DATA = Path(__file__).parents[1] / "review" / "data" / "plan.json"


def test_every_planned_layer_is_timed(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(micro_model((nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1)), (1, 3, 12, 12)), str(path))
    got = layer_latency_ms(path, runs=20, profile_runs=10)
    assert set(got) == {"m0", "m1"} and all(v > 0 for v in got.values())


def test_layer_rows_pair_the_plan_s_prediction_with_the_measurement() -> None:
    plan = Plan.load(DATA)
    name = next(iter(plan.layers))
    rows = _layer_rows(plan, {name: 0.5})
    assert rows == [{"layer": name, "option": plan.layers[name].option,
                     "predicted_ms": plan.layers[name].cost.latency_ms, "measured_ms": 0.5}]
