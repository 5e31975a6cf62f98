"""Fold BatchNorm into the conv before it (eval mode, exact): the form edgefit plans and
exports, since the ONNX exporter folds BN anyway and would name the fused node after the BN."""

from __future__ import annotations

import copy

import torch
from torch import fx, nn


@torch.no_grad()
def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold an eval-mode BatchNorm into the conv before it (in place; the conv gains a bias).

    ``bn(conv(x)) == conv'(x)`` with ``w' = w * g / sqrt(var + eps)`` per output channel and
    ``b' = (b - mean) * g / sqrt(var + eps) + beta`` (computed in float64, stored float32).
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    if bn.num_features != conv.out_channels:
        raise ValueError(f"BatchNorm has {bn.num_features} features, the conv "
                         f"{conv.out_channels} output channels")
    dtype = conv.weight.dtype
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    factor = gamma / torch.sqrt(var + bn.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    shape = (-1,) + (1,) * (conv.weight.dim() - 1)
    conv.weight.copy_((conv.weight.double() * factor.reshape(shape)).to(dtype))
    new_bias = ((bias - mean) * factor + beta).to(dtype)
    if conv.bias is None:
        conv.bias = nn.Parameter(new_bias)
    else:
        conv.bias.copy_(new_bias)


def fuse_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every BatchNorm folded into the conv before it.

    Works on any torch.fx-traceable model: a BatchNorm2d module whose input is a Conv2d module
    used nowhere else is folded into that conv and replaced by ``nn.Identity`` at the same path,
    so the model keeps its class, its forward and its module names. BatchNorms that follow
    something else are left in place. The original model is not modified. In eval mode the
    copy's outputs equal the original's (float32 rounding: well within 1e-5 here).
    """
    fused = copy.deepcopy(model).eval()
    traced = fx.symbolic_trace(fused)
    modules = dict(fused.named_modules())
    pairs: list[tuple[str, str]] = []
    for node in traced.graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(str(node.target)),
                                                      nn.BatchNorm2d):
            continue
        src = node.args[0]
        if not isinstance(src, fx.Node) or src.op != "call_module":
            continue
        if not isinstance(modules.get(str(src.target)), nn.Conv2d) or len(src.users) != 1:
            continue
        pairs.append((str(src.target), str(node.target)))
    for conv_name, bn_name in pairs:
        conv, bn = modules[conv_name], modules[bn_name]
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        fold_bn_into_conv(conv, bn)
        parent_name, _, attr = bn_name.rpartition(".")
        parent = fused.get_submodule(parent_name) if parent_name else fused
        setattr(parent, attr, nn.Identity())
    return fused


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
