"""Measured sensitivity (delta loss / delta accuracy) and the cache of both estimators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cost_models import sensitivity as sens_mod
from cost_models.sensitivity import (
    SensitivityCache,
    cache_key,
    hessian_sensitivity_cached,
    measure_sensitivity,
    measured_sensitivity,
)
from techniques.fakequant import quantized_copy
from techniques.prune import UnstructuredPruneConfig
from techniques.quantize import QuantizeConfig

INT8 = QuantizeConfig(weights="int8", activations="int8")
INT4 = QuantizeConfig(weights="int4", activations="fp32")


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


OPTIONS = {
    "fc1": {"fp32": [], "int8": [INT8], "int4": [INT4],
            "fp32+s75": [UnstructuredPruneConfig(sparsity=0.75)]},
    "fc2": {"fp32": [], "int4": [INT4]},
}


@pytest.fixture()
def tiny() -> tuple[nn.Module, np.ndarray, np.ndarray]:
    """A briefly trained tiny MLP on a separable synthetic task (so compression can hurt)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((96, 1, 3, 4), dtype=np.float32)
    y = (x.reshape(96, -1)[:, :3].argmax(1)).astype(np.int64)
    model = TinyMLP()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        opt.step()
    return model.eval(), x, y


def test_measured_matches_a_direct_evaluation(tiny) -> None:
    model, x, y = tiny
    sens = measure_sensitivity(model, OPTIONS, x, y)
    with torch.no_grad():
        base = model(torch.from_numpy(x))
        q = quantized_copy(model, {"fc1": [INT4]}, x)(torch.from_numpy(x))
    target = torch.from_numpy(y)
    d_loss = float(nn.functional.cross_entropy(q, target) - nn.functional.cross_entropy(base,
                                                                                         target))
    d_acc = 100 * float((base.argmax(1) == target).double().mean()
                        - (q.argmax(1) == target).double().mean())
    assert sens.delta_loss["fc1", "int4"] == pytest.approx(d_loss, abs=1e-6)
    assert sens.delta_accuracy_pp["fc1", "int4"] == pytest.approx(d_acc, abs=1e-9)
    assert sens.delta_loss["fc1", "fp32"] == sens.delta_accuracy_pp["fc2", "fp32"] == 0.0
    assert sens.samples == len(y)
    # pruning 75 % of a 12->16 layer must cost more loss than int8 of it
    assert sens.delta_loss["fc1", "fp32+s75"] > sens.delta_loss["fc1", "int8"]
    est = sens.as_estimate("accuracy")
    assert all(v >= 0 for v in est.loss.values()) and est.unit == "accuracy drop (pp)"


def test_cache_hit_returns_the_same_numbers_without_recomputing(tiny, tmp_path: Path,
                                                                monkeypatch) -> None:
    model, x, y = tiny
    cache = SensitivityCache(tmp_path)
    first = measured_sensitivity(model, OPTIONS, x, y, cache)
    assert len(list(tmp_path.glob("*.json"))) == 1

    def fail(*_: object) -> None:
        raise AssertionError("recomputed despite a cache hit")

    monkeypatch.setattr(sens_mod, "measure_sensitivity", fail)
    again = measured_sensitivity(model, OPTIONS, x, y, SensitivityCache(tmp_path))
    assert again == first


def test_key_changes_with_weights_data_options_and_params(tiny) -> None:
    model, x, y = tiny
    key = cache_key("measured", model, x, y, OPTIONS)
    assert cache_key("measured", model, x.copy(), y.copy(), dict(OPTIONS)) == key
    changed = TinyMLP()
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.fc2.bias[0] += 1e-6
    assert cache_key("measured", changed, x, y, OPTIONS) != key
    assert cache_key("measured", model, x[:-1], y[:-1], OPTIONS) != key
    y2 = y.copy()
    y2[0] = (y2[0] + 1) % 3
    assert cache_key("measured", model, x, y2, OPTIONS) != key
    assert cache_key("measured", model, x, y, {"fc2": OPTIONS["fc2"]}) != key
    other_cfg = {**OPTIONS, "fc2": {"fp32": [], "int4": [UnstructuredPruneConfig(sparsity=0.5)]}}
    assert cache_key("measured", model, x, y, other_cfg) != key
    assert cache_key("hessian", model, x, y, OPTIONS) != key
    assert cache_key("measured", model, x, y, OPTIONS, {"seed": 1}) != key


def test_broken_cache_file_is_a_miss(tiny, tmp_path: Path) -> None:
    model, x, y = tiny
    cache = SensitivityCache(tmp_path)
    first = measured_sensitivity(model, OPTIONS, x, y, cache)
    (path,) = tmp_path.glob("*.json")
    path.write_text("{not json")
    assert measured_sensitivity(model, OPTIONS, x, y, cache) == first
    assert path.read_text().startswith("{")


def test_hessian_estimate_is_cached_by_its_parameters(tiny, tmp_path: Path,
                                                      monkeypatch) -> None:
    model, x, y = tiny
    cache = SensitivityCache(tmp_path)
    first = hessian_sensitivity_cached(model, OPTIONS, x, y, cache, max_samples=20)
    assert first.omega.loss["fc1", "fp32"] == 0.0 and first.omega.loss["fc1", "int4"] > 0
    assert set(first.mean_trace) == {"fc1", "fc2"}
    from cost_models import hessian

    def fail(*_: object, **__: object) -> None:
        raise AssertionError("recomputed despite a cache hit")

    monkeypatch.setattr(hessian, "hutchinson_traces", fail)
    assert hessian_sensitivity_cached(model, OPTIONS, x, y, cache, max_samples=20) == first
    with pytest.raises(AssertionError, match="recomputed"):
        hessian_sensitivity_cached(model, OPTIONS, x, y, cache, max_samples=20, seed=1)
