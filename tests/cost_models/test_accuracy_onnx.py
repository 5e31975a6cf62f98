"""cost_models.accuracy_onnx: per-(layer, option) output KL measured with onnxruntime."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cost_models import accuracy_onnx
from cost_models.accuracy_onnx import (
    UNIT,
    mean_kl,
    onnx_accuracy,
    onnx_output_kl,
    onnx_predict,
)
from cost_models.capture_onnx import prepare_onnx
from edgefit_common.errors import DataError, PlanError
from workloads.zoo import LeNet5

OPTIONS = ["fp32", "fp16", "int8", "int4"]


@pytest.fixture(scope="module")
def lenet() -> torch.nn.Module:
    torch.manual_seed(0)  # random (untrained) weights: only invariants are checked
    return LeNet5().eval()


def _export(model: torch.nn.Module, path: Path, batch: int = 1, dynamic: bool = False) -> None:
    """Legacy exporter (fast); ``dynamic`` makes the batch axis symbolic."""
    axes = {"input": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        torch.onnx.export(model, (torch.zeros(batch, 1, 28, 28),), str(path), dynamo=False,
                          input_names=["input"], dynamic_axes=axes)  # fmt: skip


@pytest.fixture(scope="module")
def prepared(lenet, tmp_path_factory) -> tuple[Path, list[str]]:
    d = tmp_path_factory.mktemp("acc")
    _export(lenet, d / "raw.onnx")  # batch fixed at 1, as exporters write it
    return d / "prepared.onnx", prepare_onnx(d / "raw.onnx", d / "prepared.onnx")


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((64, 1, 28, 28)).astype(np.float32)


def _torch_logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_output_kl_invariants(prepared, x: np.ndarray, tmp_path: Path) -> None:
    path, layers = prepared
    work = tmp_path / "work"
    est = onnx_output_kl(path, layers, OPTIONS, x, work)
    assert set(est.loss) == {(layer, o) for layer in layers for o in OPTIONS}
    assert est.unit == UNIT == "KL to fp32 outputs (nats)"
    assert "onnxruntime" in est.provenance and "64 calibration images" in est.provenance
    for layer in layers:
        assert est.loss[layer, "fp32"] == 0.0
        assert all(np.isfinite(v) and v >= 0.0 for v in est.loss.values())
        # fixed seed (weights: torch seed 0, inputs: numpy seed 0); margin is ~10x here
        assert est.loss[layer, "int4"] >= est.loss[layer, "int8"] > 0.0, layer
        assert est.loss[layer, "int8"] >= est.loss[layer, "fp16"], layer
    assert list(work.iterdir()) == []  # the per-option models are cleaned up


def test_predict_and_accuracy_match_torch(lenet, prepared, x: np.ndarray) -> None:
    path, _ = prepared
    ref = _torch_logits(lenet, x)
    np.testing.assert_allclose(onnx_predict(path, x), ref, rtol=1e-4, atol=1e-5)
    y = np.random.default_rng(1).integers(0, 10, len(x))
    y[::2] = ref.argmax(1)[::2]  # half right by construction, so the check is not trivial
    expected = float(np.mean(ref.argmax(1) == y))
    assert 0.4 < expected < 1.0
    assert onnx_accuracy(path, x, y) == expected


@pytest.mark.parametrize("batch,dynamic", [(3, False), (1, True)], ids=["fixed3", "dynamic"])
def test_predict_batching(lenet, batch: int, dynamic: bool, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(accuracy_onnx, "PREDICT_BATCH", 4)
    _export(lenet, tmp_path / "m.onnx", batch=batch, dynamic=dynamic)
    x10 = np.random.default_rng(2).standard_normal((10, 1, 28, 28)).astype(np.float32)
    out = onnx_predict(tmp_path / "m.onnx", x10)  # 10 = 3+3+3+1(padded) / 4+4+2
    np.testing.assert_allclose(out, _torch_logits(lenet, x10), rtol=1e-4, atol=1e-5)


def test_mean_kl_matches_torch_batchmean() -> None:
    rng = np.random.default_rng(3)
    p, q = rng.standard_normal((2, 32, 10)) * 5
    ref = torch.nn.functional.kl_div(
        torch.log_softmax(torch.from_numpy(q), 1), torch.log_softmax(torch.from_numpy(p), 1),
        log_target=True, reduction="batchmean",
    )  # fmt: skip
    assert mean_kl(p, q) == pytest.approx(float(ref), rel=1e-9)
    assert mean_kl(p, p) == 0.0
    with pytest.raises(PlanError):
        mean_kl(p, np.full_like(q, np.nan))


def test_bad_inputs(prepared, x: np.ndarray, tmp_path: Path) -> None:
    path, layers = prepared
    with pytest.raises(DataError, match="axis 2"):
        onnx_predict(path, np.zeros((2, 1, 27, 28), np.float32))
    with pytest.raises(DataError, match="labels"):
        onnx_accuracy(path, x[:4], np.zeros(3, np.int64))
    with pytest.raises(PlanError, match="unknown option"):
        onnx_output_kl(path, layers, ["int5"], x[:4], tmp_path)
