"""Hutchinson trace against the exact Hessian trace, and the HAWQ-V2 per-option estimate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from cost_models.hessian import (
    hessian_sensitivity,
    hutchinson_traces,
    option_weight,
    weight_perturbation_sq,
)
from edgefit_common.errors import PlanError
from techniques.prune import UnstructuredPruneConfig
from techniques.quantize import QuantizeConfig

INT4 = QuantizeConfig(weights="int4", activations="fp32")


class Tiny(nn.Module):
    """conv -> tanh -> linear: tanh makes the conv block's Hessian non-trivial (indefinite)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.tanh(self.conv(x)), 1))


@pytest.fixture()
def tiny() -> tuple[nn.Module, np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((16, 1, 6, 6), dtype=np.float32)
    return Tiny().eval(), x, rng.integers(0, 3, 16)


def exact_trace(model: nn.Module, x: np.ndarray, y: np.ndarray, layer: str) -> float:
    name = f"{layer}.weight"
    weight = dict(model.named_parameters())[name].detach()

    def loss(w: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, {name: w}, (torch.from_numpy(x),))
        return nn.functional.cross_entropy(logits, torch.from_numpy(y))

    hess = torch.autograd.functional.hessian(loss, weight)
    return float(hess.reshape(weight.numel(), weight.numel()).trace())


def test_hutchinson_matches_exact_trace(tiny) -> None:
    model, x, y = tiny
    est = hutchinson_traces(model, x, y, max_samples=1000, min_samples=1000, tol=0.0)
    for layer in ("conv", "fc"):
        exact = exact_trace(model, x, y, layer)
        stderr = est[layer].rel_std_err * abs(est[layer].trace)
        # unbiased estimator: within 4 standard errors of the exact trace
        assert abs(est[layer].trace - exact) <= 4 * stderr, (layer, est[layer].trace, exact)
        assert est[layer].samples == 1000
        assert est[layer].n_params == dict(model.named_modules())[layer].weight.numel()
    fc_exact = exact_trace(model, x, y, "fc")
    # stated tolerance for the dominant (PSD) block: 5 % at 1000 samples
    assert abs(est["fc"].trace - fc_exact) / fc_exact < 0.05


def test_tolerance_stops_early_and_seed_repeats(tiny) -> None:
    model, x, y = tiny
    loose = hutchinson_traces(model, x, y, ["fc"], max_samples=500, min_samples=4, tol=0.2)
    assert 4 <= loose["fc"].samples < 500 and loose["fc"].rel_std_err < 0.2
    again = hutchinson_traces(model, x, y, ["fc"], max_samples=500, min_samples=4, tol=0.2)
    assert again == loose
    other = hutchinson_traces(model, x, y, ["fc"], max_samples=500, min_samples=4, tol=0.2,
                              seed=1)
    assert other["fc"].trace != loose["fc"].trace


def test_bad_arguments_are_clear_errors(tiny) -> None:
    model, x, y = tiny
    with pytest.raises(PlanError, match="no weight parameter.*conv, fc"):
        hutchinson_traces(model, x, y, ["tanh"])
    with pytest.raises(PlanError, match="min_samples"):
        hutchinson_traces(model, x, y, min_samples=10, max_samples=5)


def test_omega_is_mean_trace_times_half_squared_perturbation(tiny) -> None:
    model, x, y = tiny
    traces = hutchinson_traces(model, x, y, max_samples=50)
    options = {"fc": {"fp32": [], "int4": [INT4],
                      "int4+s50": [UnstructuredPruneConfig(sparsity=0.5), INT4]}}
    est = hessian_sensitivity(model, options, traces)
    w = model.fc.weight.detach()
    for option, configs in options["fc"].items():
        sq = float(((option_weight(model.fc, configs) - w) ** 2).sum())
        assert est.loss["fc", option] == pytest.approx(max(0.0, traces["fc"].mean_trace * sq / 2))
    assert est.loss["fc", "fp32"] == 0.0
    assert est.loss["fc", "int4+s50"] > est.loss["fc", "int4"] > 0
    # the model itself is untouched by computing the perturbations
    assert torch.equal(model.fc.weight.detach(), w)


def test_pruning_perturbation_is_the_pruned_weights_energy(tiny) -> None:
    model, _, _ = tiny
    w = model.fc.weight.detach().flatten()
    k = round(0.5 * w.numel())
    smallest = w.abs().sort().values[:k]
    expected = float((smallest.double() ** 2).sum())
    got = weight_perturbation_sq(model.fc, [UnstructuredPruneConfig(sparsity=0.5)])
    assert got == pytest.approx(expected, rel=1e-6)
