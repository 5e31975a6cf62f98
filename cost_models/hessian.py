"""Fast accuracy-sensitivity estimator: Hessian trace (Hutchinson, as in HAWQ) x the option's
weight perturbation.

Per layer l, Tr(H_l) of the cross-entropy loss's Hessian with respect to that layer's weight is
estimated with Hutchinson's method: E[v^T H v] = Tr(H) for Rademacher v, the Hessian-vector
product H_l v from double backward of the layer's own gradient. Each layer gets its own probe
vector: one joint v over all layers is also unbiased, but its cross-layer terms made the
standard error of a small conv layer's trace 20x larger at equal samples (measured on the test
model). A layer stops sampling after `max_samples`, or once its standard error is below `tol`
of its mean (after `min_samples`).

The per-(layer, option) cost is

    Omega = Tr(H_l) / n_l * ||W_option - W||^2 / 2

HAWQ-V2's Omega (mean Hessian trace x squared weight perturbation) times 1/2, so that it reads as
the second-order Taylor prediction of the loss change in nats (the gradient term taken as zero
at a trained minimum, the Hessian taken as isotropic within the layer). Only the weight is
perturbed: activation quantisation (int8 activations) and the fp16 bias are not seen by it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cost_models.estimate import AccuracyEstimate
from edgefit_common.errors import PlanError
from techniques.fakequant import pruned_copy
from techniques.quantize import QuantizeConfig, fake_quantize_weights

DEFAULT_MAX_SAMPLES = 64
DEFAULT_MIN_SAMPLES = 8
DEFAULT_TOL = 0.05  # relative standard error of every layer's trace


@dataclass(frozen=True)
class TraceEstimate:
    trace: float  # Tr(H_l), nats per weight^2 summed over the layer's weights
    n_params: int
    samples: int
    rel_std_err: float  # standard error of the mean / |mean| when sampling stopped

    @property
    def mean_trace(self) -> float:
        return self.trace / self.n_params


def _weights(model: nn.Module, layers: Sequence[str]) -> list[nn.Parameter]:
    modules = dict(model.named_modules())
    out = []
    for name in layers:
        weight = getattr(modules.get(name), "weight", None)
        if not isinstance(weight, nn.Parameter):
            raise PlanError(f"layer {name!r}: no weight parameter to take a Hessian of; "
                            f"layers with weights: {', '.join(_weighted(model))}")
        out.append(weight)
    return out


def _weighted(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules()
            if isinstance(getattr(m, "weight", None), nn.Parameter)]


def _rademacher(like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, like.shape, generator=gen).to(like.dtype) * 2 - 1


def _rel_std_err(values: list[float]) -> float:
    if len(values) < 2:
        return math.inf
    arr = np.asarray(values)
    stderr = float(arr.std(ddof=1)) / math.sqrt(len(arr))
    return stderr / max(abs(float(arr.mean())), 1e-30)


def hutchinson_traces(model: nn.Module, x: np.ndarray, y: np.ndarray,
                      layers: Sequence[str] | None = None, *,
                      max_samples: int = DEFAULT_MAX_SAMPLES,
                      min_samples: int = DEFAULT_MIN_SAMPLES, tol: float = DEFAULT_TOL,
                      seed: int = 0) -> dict[str, TraceEstimate]:
    """Tr of each layer's weight Hessian of the mean cross-entropy on (x, y), by Hutchinson."""
    if not 2 <= min_samples <= max_samples:
        raise PlanError(f"hessian samples: need 2 <= min_samples <= max_samples, got "
                        f"{min_samples} and {max_samples}")
    if tol < 0:
        raise PlanError(f"hessian tol must be >= 0 (relative standard error), got {tol}")
    names = list(layers) if layers is not None else _weighted(model)
    model = model.eval()
    weights = _weights(model, names)
    with torch.enable_grad():
        loss = nn.functional.cross_entropy(model(torch.as_tensor(x)), torch.as_tensor(y))
        grads = torch.autograd.grad(loss, weights, create_graph=True)
        gen = torch.Generator().manual_seed(seed)
        out = {}
        for name, weight, grad in zip(names, weights, grads, strict=True):
            s = _layer_samples(weight, grad, gen, max_samples, min_samples, tol)
            out[name] = TraceEstimate(float(np.mean(s)), weight.numel(), len(s),
                                      _rel_std_err(s))
    return out


def _layer_samples(weight: torch.Tensor, grad: torch.Tensor, gen: torch.Generator,
                   max_samples: int, min_samples: int, tol: float) -> list[float]:
    """v^T H v samples of one layer until its relative standard error is below tol."""
    samples: list[float] = []
    while len(samples) < max_samples:
        v = _rademacher(weight, gen)
        (hv,) = torch.autograd.grad(grad, weight, grad_outputs=v, retain_graph=True)
        samples.append(float((v * hv).sum()))
        if len(samples) >= min_samples and _rel_std_err(samples) < tol:
            break
    return samples


def option_weight(module: nn.Module, configs: Sequence[Any]) -> torch.Tensor:
    """The layer's weight as the option leaves it: pruned for real, then fake-quantised."""
    layer = dict(pruned_copy(module, {"": configs}).named_modules())[""]
    weight = getattr(layer, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.shape != module.weight.shape:
        names = ", ".join(getattr(c, "technique", type(c).__name__) for c in configs)
        raise PlanError(f"hessian estimate: techniques {names} change the layer's structure; "
                        "it covers same-shape weight perturbations (pruning, quantisation)")
    for cfg in configs:
        if isinstance(cfg, QuantizeConfig):
            fake_quantize_weights(layer, cfg)
    return layer.weight.detach()


def weight_perturbation_sq(module: nn.Module, configs: Sequence[Any]) -> float:
    """||W_option - W||^2 of one layer."""
    if not configs:
        return 0.0
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    delta = option_weight(copy.deepcopy(module), configs) - weight.detach()
    return float((delta.double() ** 2).sum())


def hessian_sensitivity(model: nn.Module, options: Mapping[str, Mapping[str, Sequence[Any]]],
                        traces: Mapping[str, TraceEstimate]) -> AccuracyEstimate:
    """Omega = Tr(H)/n * ||W_option - W||^2 / 2 per (layer, option), clamped at 0 (a negative
    trace estimate means the curvature is lost in the noise, not that compression helps)."""
    modules = dict(model.named_modules())
    out: dict[tuple[str, str], float] = {}
    for layer, layer_options in options.items():
        mean_trace = traces[layer].mean_trace
        for option, configs in layer_options.items():
            sq = weight_perturbation_sq(modules[layer], configs)
            out[layer, option] = max(0.0, mean_trace * sq / 2)
    samples = max((t.samples for t in traces.values()), default=0)
    return AccuracyEstimate(
        out,
        unit="predicted loss change (nats)",
        provenance=f"Hessian: Hutchinson trace of each layer's weight Hessian of the "
                   f"cross-entropy ({samples} Rademacher samples at most per layer) x the "
                   "option's squared weight perturbation / 2 (HAWQ-V2 form; activation "
                   "quantisation not modelled); plan totals add them",
    )
