"""Fine-tuning on data without labels (issue #21 item 0): distillation from the fp32 model
alone, no label term, and the validation "accuracy" is top-1 agreement with the teacher."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from executors.distill import distill
from techniques.distill import DistillConfig
from workloads.data import Dataset


def test_label_free_data_distils_from_the_teacher_alone() -> None:
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    x = np.random.default_rng(0).random((200, 1, 4, 4), dtype=np.float32)
    data = Dataset("inputs", x, np.zeros(200, np.int64), 1, "test", labelled=False)
    config = DistillConfig(epochs=1, alpha=0.5, batch_size=50)
    student, report = distill(copy.deepcopy(teacher), teacher, data, config)
    # the student starts as the teacher: agreement 1, and a loss of (almost) 0 -- a label term
    # on the placeholder labels (all 0) would add half a cross-entropy of ~1.4 nats
    assert report.val_accuracy_before == 1.0 and report.val_accuracy_after == 1.0
    assert report.train_loss_first < 1e-3
    labelled = Dataset("inputs", x, np.zeros(200, np.int64), 4, "test")
    _, with_labels = distill(copy.deepcopy(teacher), teacher, labelled, config)
    assert with_labels.train_loss_first > 0.1  # the same data with labels: the label term counts
