"""edgefit.apply fine-tunes on the caller's in-memory data when the plan asks for it (it used
to assert that the plan named a data set)."""

from __future__ import annotations

from pathlib import Path

import pytest

import edgefit
from edgefit_common.errors import DataError
from workloads.data import load_dataset, training_set
from workloads.train import pretrained


def test_in_memory_data_is_what_fine_tuning_trains_on(tmp_path: Path) -> None:
    train, test = load_dataset("mnist")
    net = pretrained("lenet5-mnist").model
    data, test_data = (train.x[:600], train.y[:600]), (test.x[:200], test.y[:200])
    plan = edgefit.plan(net, "jetson-nano", limits={"latency": "30ms"}, data=data,
                        pins={"fc1": "fp32+s75"}, finetune_epochs=1)
    assert plan.data is None and plan.finetune is not None
    result = edgefit.apply(plan, net, data=data, test_data=test_data, out=tmp_path / "out")
    finetune = result.report["accuracy"]["finetune"]
    assert finetune is not None and finetune["epochs_run"] == 1, finetune


def test_no_training_data_is_one_line() -> None:
    with pytest.raises(DataError, match="fine-tuning needs training data"):
        training_set(None)
