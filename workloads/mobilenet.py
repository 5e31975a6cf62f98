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
BatchNorm module (``stem.bn``), which breaks ``techniques.onnx.names.name_nodes_by_module``; after
``fuse_bn`` there is no BatchNorm left to fold and each Conv node keeps its conv's name.
"""

from __future__ import annotations

import torch
from torch import nn

from workloads.fuse import fold_bn_into_conv, fuse_bn  # noqa: F401  (re-exported)

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


__all__ = ["BLOCKS", "ConvBNAct", "InvertedResidual", "MobileNetV2Small", "fold_bn_into_conv",
           "fuse_bn", "residual_blocks"]
