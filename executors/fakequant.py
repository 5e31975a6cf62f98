"""Apply a plan's quantisation to a torch model as fake quantisation (for accuracy evaluation)."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from executors.quantize import ActivationFakeQuant, QuantizeConfig, fake_quantize_weights


def quantized_copy(model: nn.Module, configs: Mapping[str, QuantizeConfig],
                   calibration: np.ndarray) -> nn.Module:
    """A deep copy of `model` with each named layer fake-quantised; activation scales calibrated
    on `calibration` (N, C, H, W) with every weight already quantised, as a deployed model sees."""
    q = copy.deepcopy(model).eval()
    modules = dict(q.named_modules())
    hooks = []
    for name, cfg in configs.items():
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
