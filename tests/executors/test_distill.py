"""Distillation after pruning: the student gets closer to the teacher, zeros stay zero."""

from __future__ import annotations

import copy

import pytest
import torch

from executors.distill import distill
from techniques.distill import DistillConfig
from techniques.prune import UnstructuredPruneConfig, prune_unstructured
from workloads.data import load_dataset
from workloads.train import pretrained


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    return pretrained("lenet5-mnist").model


def test_distill_recovers_and_keeps_zeros(teacher: torch.nn.Module) -> None:
    train, _ = load_dataset("mnist")
    student = copy.deepcopy(teacher)
    for name in ("fc1", "fc2"):
        prune_unstructured(getattr(student, name), UnstructuredPruneConfig(sparsity=0.9))
    zeros = {n: (getattr(student, n).weight == 0).clone() for n in ("fc1", "fc2")}
    student, report = distill(student, teacher, train, DistillConfig(epochs=2, patience=2))
    assert report.zeros_kept
    for name, mask in zeros.items():
        assert bool((getattr(student, name).weight[mask] == 0).all()), name
    assert report.val_kl_after < report.val_kl_before, "the student moved towards the teacher"
    assert report.best_epoch >= 1 and report.epochs_run <= 2


def test_plan_with_finetune_is_applied_and_reported(lenet5_plan_factory, tmp_path) -> None:
    from device_specs.budget import Budget
    from edgefit.applying import apply_plan
    from edgefit.planning import make_plan

    budget = Budget(target="arduino-nano-33-ble", limits={"latency": "60ms", "flash": "125KB"},
                    model="lenet5-mnist")
    plan, _ = make_plan(budget, "test", finetune_epochs=2)
    assert plan.finetune is not None and plan.finetune.epochs == 2
    report = apply_plan(plan, tmp_path)
    assert all(c["ok"] for c in report["checks"]), report["checks"]
    ft = report["accuracy"]["finetune"]
    assert ft is not None and ft["zeros_kept"] and ft["val_kl_after"] <= ft["val_kl_before"]
    assert "distilled" in report["accuracy"]["how"]
