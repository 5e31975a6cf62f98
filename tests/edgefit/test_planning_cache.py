"""The per-layer KL estimate is cached: the same model, images and options are not measured
twice, and any change to them is a miss (one row per (layer, configs): cost_models.cached_rows;
tests/edgefit/test_cache_reuse.py plans with cold, warm and merged caches)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgefit import planning
from techniques.quantize import QuantizeConfig


@pytest.fixture
def tiny(tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EDGEFIT_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    x = np.random.default_rng(0).normal(size=(32, 1, 4, 4)).astype(np.float32)
    options = {"1": {"fp32": [], "int8": [QuantizeConfig(weights="int8", activations="int8")]},
               "3": {"fp32": [], "int8": [QuantizeConfig(weights="int8", activations="int8")]}}
    return model, x, options


def test_second_estimate_comes_from_the_cache(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, options = tiny
    first = planning._cached_output_kl(model, options, x)
    from cost_models import accuracy

    def fail(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(accuracy, "measured_output_kl", fail)
    second = planning._cached_output_kl(model, options, x)
    assert second == first  # numbers, unit and provenance: a plan cannot tell the difference


def test_changed_weights_are_a_miss(tiny) -> None:
    model, x, options = tiny
    first = planning._cached_output_kl(model, options, x)
    with torch.no_grad():
        model[1].weight.mul_(3.0)
    second = planning._cached_output_kl(model, options, x)
    assert second.loss != first.loss
