"""apply's task metric for a sentence encoder (edgefit.applying.encoder_task): the linear probe
fitted on the fp32 encoder's embeddings, scored with the compressed model's, beside the
cosine; and the line apply prints for it (edgefit.report.task_line)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
import torch
from torch import nn

from edgefit.applying import encoder_task
from edgefit.report import task_line
from workloads.data import SentenceDataset

N, L, D = 80, 6, 12


class TinyEncoder(nn.Module):
    """Float ids (B, L) -> L2-normalised (B, D): an encoder as apply sees one."""

    output_kind = "embedding"

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.proj = nn.Linear(L, D)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.proj(ids / 100.0), dim=1)


def _held_out() -> SentenceDataset:
    """Sentences whose first token id says their class (a task the fp32 encoder carries)."""
    rng = np.random.default_rng(0)
    labels = np.arange(N) % 2
    ids = rng.integers(1, 60, (N, L)).astype(np.float32)
    ids[:, 0] = np.where(labels == 1, 200, 10)
    return SentenceDataset("s", ids, np.zeros(N, np.int64), 1, "test",
                           task_labels=tuple(int(v) for v in labels),
                           task_classes=("neg", "pos"), lines=tuple(range(N)))


def _task(monkeypatch: pytest.MonkeyPatch, fp32: nn.Module, compressed: nn.Module,
          test: SentenceDataset) -> dict | None:
    from workloads.minilm import embed

    # the shipped ONNX stands in as the compressed torch model (no export in a unit test)
    monkeypatch.setattr("executors.apply.onnx_outputs", lambda path, x: embed(compressed, x))
    built = SimpleNamespace(compressed=compressed, runnable="model.onnx")
    return encoder_task(cast(Any, SimpleNamespace(module=fp32)), built, test)


def test_an_unchanged_encoder_keeps_its_task_accuracy(monkeypatch):
    fp32 = TinyEncoder(0).eval()
    got = _task(monkeypatch, fp32, fp32, _held_out())
    assert got is not None and got["fp32"] > 0.9  # the probe learns the task from fp32
    assert got["compressed"] == got["simulated"] == got["fp32"]
    assert got["agreement"] == 1.0 and got["drop_pp"] == 0.0 and got["sentences"] == N
    line = task_line(got)
    assert "linear-probe accuracy" in line and "drop 0.00 pp" in line
    assert "fitted on the fp32 encoder's embeddings" in line


def test_a_corrupted_encoder_loses_task_accuracy(monkeypatch):
    fp32, other = TinyEncoder(0).eval(), TinyEncoder(7).eval()  # other weights: no longer fp32
    with torch.no_grad():
        other.proj.weight[:, 0] = 0.0  # and blind to the token that carries the class
    got = _task(monkeypatch, fp32, other, _held_out())
    assert got is not None
    assert got["compressed"] < got["fp32"] - 0.2 and got["agreement"] < 0.8
    assert got["drop_pp"] == pytest.approx(100 * (got["fp32"] - got["compressed"]))


def test_no_task_for_a_classifier_or_unlabelled_sentences(monkeypatch):
    fp32 = TinyEncoder(0).eval()
    held = _held_out()
    unlabelled = SentenceDataset("s", held.x, held.y, 1, "test")
    assert _task(monkeypatch, fp32, fp32, unlabelled) is None
    classifier = nn.Sequential(nn.Linear(L, 2))  # output_kind: logits
    assert _task(monkeypatch, classifier, classifier, held) is None
