"""Apply a plan's per-layer techniques to a torch model: pruning for real (zeros in the
weights), quantisation as fake quantisation (for accuracy evaluation)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from edgefit_common.errors import PlanError
from techniques.lowrank import factor_modules
from techniques.quantize import ActivationFakeQuant, QuantizeConfig, fake_quantize_weights


def pruned_copy(model: nn.Module, techniques: Mapping[str, Sequence[Any]]) -> nn.Module:
    """A deep copy with each layer's per-layer techniques applied in the configs' order, each
    through its registry entry's ``apply_layer`` (zeros really in the weights; a factorised
    layer replaced by its factors in its parent; shared weights replaced by their codebook
    values, every factor shared on its own). Quantisation is simulated by
    :func:`quantized_copy`; channel pruning is model-level (techniques.prune.prune_channels)."""
    from techniques.registry import technique

    p = copy.deepcopy(model).eval()
    modules = dict(p.named_modules())
    for name, configs in techniques.items():
        _check_order(name, configs)
        for cfg in configs:
            entry = technique(cfg)
            if entry.name == "quantize":
                continue
            if entry.apply_layer is None:
                raise PlanError(f"{name}: technique {entry.name} is not applied per layer "
                                "(it is a model-level step)")
            result = entry.apply_layer(modules[name], cfg, name)
            if result is not modules[name]:
                _replace(p, name, result)
                modules[name] = result
    return p


def _check_order(name: str, configs: Sequence[Any]) -> None:
    """Refuse an order in which a later technique would silently undo an earlier one: the
    factors of a factorisation are dense and hold new values, so pruning or sharing before
    it is lost (factorise first, then prune or share the factors)."""
    kinds = [getattr(c, "technique", "") for c in configs]
    if "lowrank" not in kinds:
        return
    undone = [k for k in kinds[: kinds.index("lowrank")]
              if k in ("prune_unstructured", "prune_nm", "share")]
    if undone:
        raise PlanError(f"layer {name!r}: {undone[0]} before lowrank would be undone (the "
                        f"factors are dense, new values); put lowrank first")


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    if not name:
        raise PlanError("the model itself is not a layer that can be replaced")
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


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
            # a factorised layer: every factor is quantised like a layer (as in the ONNX)
            for module in factor_modules(modules[name]):
                fake_quantize_weights(module, cfg)
                if cfg.activations in ("int8", "int16", "fp16"):
                    hook = ActivationFakeQuant(cfg.activations)
                    module.register_forward_hook(hook)
                    hooks.append(hook)
    with torch.no_grad():
        for i in range(0, len(calibration), 256):
            q(torch.from_numpy(calibration[i : i + 256]))
    for hook in hooks:
        hook.calibrating = False
    return q
