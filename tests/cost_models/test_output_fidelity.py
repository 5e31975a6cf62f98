"""Every output counts (issue #21 item 0): the accuracy cost of a multi-output model compares
each output with the fp32 model's (class outputs by KL, others by relative squared error), so a
layer that feeds only the second head is no longer free."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cost_models.accuracy_onnx import onnx_output_kl, onnx_predict_all, output_names
from cost_models.capture_onnx import prepare_onnx
from cost_models.output_fidelity import (
    class_kl,
    divergences,
    fidelity,
    output_kinds,
    rel_sq_error,
    unit,
)


def test_kinds_follow_the_stated_rule() -> None:
    rng = np.random.default_rng(0)
    logits, boxes = rng.standard_normal((8, 10)), rng.standard_normal((8, 4))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert output_kinds([logits]) == ["class"]  # a model's only output: logits, as before
    assert output_kinds([boxes, probs]) == ["values", "class"]  # several: softmax heads only
    assert output_kinds([rng.standard_normal(8)]) == ["values"]
    assert unit([logits]) == "KL to fp32 outputs (nats)"
    assert "relative squared error" in unit([boxes, probs])


def test_the_metrics_against_hand_computations() -> None:
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    q = np.array([[0.25, 0.75], [0.9, 0.1]])
    want = (0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)) / 2
    assert class_kl(p, q) == pytest.approx(want)  # probabilities are used as they are
    assert class_kl(np.log(p), np.log(q)) == pytest.approx(want)  # logits through softmax
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    assert rel_sq_error(ref, ref + 0.5) == pytest.approx(0.25 / 1.25)
    assert rel_sq_error(ref, ref) == 0.0


def test_a_wrong_second_head_shows_in_the_divergence_and_the_fidelity() -> None:
    rng = np.random.default_rng(1)
    logits, boxes = rng.standard_normal((32, 10)), rng.standard_normal((32, 4))
    ref = [boxes, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)]
    flipped = [boxes, ref[1][:, ::-1].copy()]
    assert divergences(ref, ref) == [0.0, 0.0]
    assert divergences(ref, flipped)[1] > 0.1
    rows = fidelity(ref, flipped, ["box", "face"])
    assert rows[0]["ok"] and not rows[1]["ok"] and rows[1]["top1_agreement"] < 0.95


class TwoHeads(nn.Module):
    """A trunk, a box head (output 0) and a face-probability head (output 1), as MTCNN's O-Net."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(16, 32)
        self.box = nn.Linear(32, 4)
        self.face = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.trunk(x))
        return self.box(h), torch.softmax(self.face(h), dim=1)


def _export(model: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        torch.onnx.export(model, (torch.zeros(1, 16),), str(path), dynamo=False,
                          input_names=["input"], output_names=["box", "face"])


def test_a_layer_feeding_only_the_second_head_is_not_free(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TwoHeads().eval()
    with torch.no_grad():
        model.face.weight.mul_(8.0)  # confident faces: int2 weights change decisions
    _export(model, tmp_path / "raw.onnx")
    layers = prepare_onnx(tmp_path / "raw.onnx", tmp_path / "prepared.onnx")
    face = next(ly for ly in layers if "face" in ly)
    x = np.random.default_rng(0).standard_normal((128, 16)).astype(np.float32)
    assert output_names(tmp_path / "prepared.onnx") == ["box", "face"]
    outs = onnx_predict_all(tmp_path / "prepared.onnx", x)
    assert [o.shape for o in outs] == [(128, 4), (128, 2)]
    est = onnx_output_kl(tmp_path / "prepared.onnx", [face], ["fp32", "int8", "int2"], x,
                         tmp_path / "work")
    assert est.loss[face, "fp32"] == 0.0
    # the face head's only layer costs something, more at fewer bits (output 0 alone: zero)
    assert 0.0 < est.loss[face, "int8"] < est.loss[face, "int2"]
    assert "every output counts" in est.provenance and "face (class KL, nats)" in est.provenance
    assert "summed over 2 outputs" in est.unit
