"""A plan with a student: the planner costs the student's layers, plan.json names the teacher
and records the student, and apply distils, compresses and verifies it (issue #20 item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest

import edgefit
from planner.plan import Plan
from workloads.data import load_dataset
from workloads.models import weights_hash
from workloads.train import pretrained


@pytest.fixture(scope="module")
def small_mnist():
    train, test = load_dataset("mnist")
    return (train.x[:600], train.y[:600]), (test.x[:200], test.y[:200])


def test_a_width_student_is_planned_applied_and_verified(small_mnist, tmp_path: Path) -> None:
    data, test_data = small_mnist
    teacher = pretrained("lenet5-mnist").model
    plan = edgefit.plan(teacher, "jetson-nano", limits={"latency": "30ms"}, data=data,
                        student="width=0.5", finetune_epochs=1, pins={"fc1": "fp16"})
    record = plan.student
    assert record is not None and record.spec.label == "width=0.5"
    assert record.distill.epochs == 1 and record.params < record.teacher_params / 2
    # the layers (and their costs) are the student's; the model apply loads is the teacher
    assert plan.layers["conv1"].params == 3 * 25 + 3 and plan.layers["fc1"].params == 200 * 60 + 60
    assert plan.model.weights_sha256 == weights_hash(teacher)
    assert "student" in plan.provenance
    back = Plan.model_validate_json(plan.to_json())
    assert back.student == record

    result = edgefit.apply(plan, teacher, data=data, test_data=test_data, out=tmp_path / "out")
    report = result.report
    assert all(check["ok"] for check in report["checks"]), report["checks"]
    student = report["accuracy"]["finetune"]["student"]
    assert student["epochs_run"] == 1 and student["as_planned"] and student["from_cache"]
    acc = report["accuracy"]
    assert acc["fp32"] == pytest.approx(_top1(teacher, test_data))  # the teacher's
    # 1 epoch on 600 images: far from the teacher, but well above chance (10 classes)
    assert 0.2 < acc["compressed"] < acc["fp32"]
    assert student["val_kl_after"] < student["val_kl_before"]  # the distillation moved it


def test_apply_refuses_a_student_built_differently(small_mnist, tmp_path: Path) -> None:
    from edgefit_common.errors import PlanError

    data, test_data = small_mnist
    teacher = pretrained("lenet5-mnist").model
    plan = edgefit.plan(teacher, "jetson-nano", limits={"latency": "30ms"}, data=data,
                        student="width=0.5", finetune_epochs=1)
    assert plan.student is not None
    edited = plan.model_copy(update={"student": plan.student.model_copy(
        update={"weights_sha256": "0" * 64})})
    with pytest.raises(PlanError, match="not the one the plan was costed on"):
        edgefit.apply(edited, teacher, data=data, test_data=test_data, out=tmp_path / "out")


def _top1(model, test_data) -> float:
    import torch

    x, y = test_data
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def test_a_shallower_student_of_a_residual_network(user_net, small_mnist, tmp_path: Path
                                                    ) -> None:
    """depth=1 on a network with one residual block (BatchNorm folded, PReLU): the block's
    branch is gone from the plan's layers, and apply distils, compresses and verifies it."""
    data, test_data = small_mnist
    plan = edgefit.plan(user_net, "jetson-nano", limits={"latency": "30ms"}, data=data,
                        input_shape=(1, 28, 28), student="depth=1", finetune_epochs=1)
    assert plan.student is not None and plan.student.spec.depth == 1
    assert "conv1" not in plan.layers and {"conv0", "fc"} <= set(plan.layers)
    result = edgefit.apply(plan, user_net, data=data, test_data=test_data,
                           out=tmp_path / "out")
    assert all(check["ok"] for check in result.report["checks"]), result.report["checks"]
    assert result.report["accuracy"]["finetune"]["student"]["as_planned"]
