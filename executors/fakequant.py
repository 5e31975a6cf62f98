"""Apply a plan's per-layer techniques to a torch model: pruning for real (zeros in the
weights), quantisation as fake quantisation (for accuracy evaluation)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from edgefit.errors import PlanError
from executors.quantize import ActivationFakeQuant, QuantizeConfig, fake_quantize_weights


def pruned_copy(model: nn.Module, techniques: Mapping[str, Sequence[Any]]) -> nn.Module:
    """A deep copy with each layer's per-layer pruning applied (zeros really in the weights)."""
    from executors.prune import MODULE_EXECUTORS

    p = copy.deepcopy(model).eval()
    modules = dict(p.named_modules())
    for name, configs in techniques.items():
        for cfg in configs:
            if isinstance(cfg, QuantizeConfig):
                continue
            executor = MODULE_EXECUTORS.get(cfg.technique)
            if executor is None:
                raise PlanError(f"{name}: technique {cfg.technique} is not applied per layer "
                                "here yet")
            executor(modules[name], cfg)
    return p


def quantized_copy(model: nn.Module, techniques: Mapping[str, Sequence[Any]],
                   calibration: np.ndarray) -> nn.Module:
    """A deep copy of `model` with each named layer's techniques applied in order (prune, then
    fake-quantise); activation scales calibrated on `calibration` (N, C, H, W) with every
    weight already in its final form, as a deployed model sees."""
    q = pruned_copy(model, techniques)
    modules = dict(q.named_modules())
    hooks = []
    for name, configs in techniques.items():
        for cfg in configs:
            if not isinstance(cfg, QuantizeConfig):
                continue
            fake_quantize_weights(modules[name], cfg)
            if cfg.activations in ("int8", "fp16"):
                hook = ActivationFakeQuant(cfg.activations)
                modules[name].register_forward_hook(hook)
                hooks.append(hook)
    with torch.no_grad():
        for i in range(0, len(calibration), 256):
            q(torch.from_numpy(calibration[i : i + 256]))
    for hook in hooks:
        hook.calibrating = False
    return q
