"""A small MobileNetV2-style residual CNN for 1x28x28 inputs, and BatchNorm folding.

:class:`MobileNetV2Small` follows Sandler et al. 2018 at MNIST scale: a 3x3 stem, seven inverted
residual blocks (1x1 expansion -> 3x3 depthwise -> 1x1 linear projection, each conv followed by
BatchNorm, ReLU6 after the first two) with a residual add wherever the block keeps the stride at 1
and the channel count, a 1x1 head, global average pooling and a Linear classifier. About 93 k
parameters, 10 classes.

Module names (the plan's layer keys) are stable and readable::

    stem.conv                  3x3 conv 1 -> 16
    blocks.<i>.expand.conv     1x1 expansion (absent when the expansion factor is 1)
    blocks.<i>.depthwise.conv  3x3 depthwise conv
    blocks.<i>.project.conv    1x1 projection (no activation)
    head.conv                  1x1 conv 64 -> 128
    classifier                 Linear 128 -> 10

:func:`fuse_bn` folds every BatchNorm into the conv before it and replaces the BatchNorm by
``nn.Identity``, so the names above stay the names of the (now biased) convs. That matters for
export: the dynamo ONNX exporter folds BN into Conv itself and names the fused node after the
BatchNorm module (``stem.bn``), which breaks ``executors.onnx_quant.name_nodes_by_module``; after
``fuse_bn`` there is no BatchNorm left to fold and each Conv node keeps its conv's name.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

# (expansion t, output channels c, repeats n, first stride s), as in MobileNetV2's Table 2
BLOCKS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (4, 24, 2, 2),
    (4, 32, 2, 2),
    (4, 64, 2, 1),
)


class ConvBNAct(nn.Sequential):
    """conv -> BatchNorm (-> ReLU6): children ``conv``, ``bn`` and, with ``act``, ``act``."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        if act:
            self.act = nn.ReLU6()


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 project, plus the input when the shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.use_residual = stride == 1 and cin == cout
        self.expand = ConvBNAct(cin, hidden, 1) if expansion != 1 else nn.Identity()
        self.depthwise = ConvBNAct(hidden, hidden, 3, stride=stride, groups=hidden)
        self.project = ConvBNAct(hidden, cout, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.use_residual else y


class MobileNetV2Small(nn.Module):
    """MobileNetV2-style residual CNN with depthwise-separable inverted residual blocks."""

    def __init__(self, classes: int = 10, in_channels: int = 1, stem: int = 16,
                 head: int = 128) -> None:
        super().__init__()
        self.stem = ConvBNAct(in_channels, stem, 3)
        blocks: list[nn.Module] = []
        cin = stem
        for t, c, n, s in BLOCKS:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBNAct(cin, head, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(head, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(x)


def residual_blocks(model: nn.Module) -> list[str]:
    """Names of the blocks that end in a residual add."""
    return [name for name, m in model.named_modules()
            if isinstance(m, InvertedResidual) and m.use_residual]


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


__all__ = ["BLOCKS", "ConvBNAct", "InvertedResidual", "MobileNetV2Small", "fold_bn_into_conv",
           "fuse_bn", "residual_blocks"]
