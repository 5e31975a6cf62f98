"""Distillation also trains a smaller student architecture against the teacher."""

from __future__ import annotations

import dataclasses

import torch

from executors.distill import distill
from techniques.distill import DistillConfig
from workloads.data import load_dataset
from workloads.train import evaluate, pretrained


def test_a_small_mlp_student_learns_from_lenet5() -> None:
    teacher = pretrained("lenet5-mnist").model
    train, test = load_dataset("mnist")
    sub = dataclasses.replace(train, x=train.x[:5000], y=train.y[:5000])  # small: a fast test
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(),
                                  torch.nn.Linear(32, 10))
    params = sum(p.numel() for p in student.parameters())
    assert params < sum(p.numel() for p in teacher.parameters()) / 2
    before = evaluate(student, test)
    student, report = distill(student, teacher, sub, DistillConfig(epochs=3, lr=3e-3))
    after = evaluate(student, test)
    assert before < 0.3 < 0.8 < after, (before, after)  # from chance to a working classifier
    assert report.val_kl_after < report.val_kl_before
