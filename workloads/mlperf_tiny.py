"""The MLPerf Tiny reference models as torch modules, built from their public descriptions.

They exist for MAC counts and latency (the MCU latency fit, cost_models.mcu_fit): weights are
random. Batch norm is left out: the int8 .tflite files MLPerf Tiny runs fold it into the
conv's bias, so each conv here carries a bias and is followed by its fused ReLU, which is the
graph an MCU runtime executes.

* ``kws``: DS-CNN (Zhang et al. 2017, "Hello Edge", the MLPerf Tiny keyword-spotting model):
  49x10x1 MFCC input, conv 64 (10x4, stride 2), four depthwise-separable blocks of 64,
  average pool, 12 classes. The reference uses "same" padding, asymmetric in height; the
  symmetric padding (5, 1) here gives the same 25x5 output, hence the same MACs.
* ``ic``: ResNet-8 (MLPerf Tiny "ResNetv1-10" for CIFAR-10): 32x32x3, conv 16, three residual
  stacks of 16 / 32 / 64 filters (the last two with a stride 2 and a 1x1 projection
  shortcut), average pool, 10 classes.
* ``vww``: MobileNetV1 width 0.25 at 96x96x3 (visual wake words), 2 classes.
* ``ad``: the anomaly-detection FC autoencoder 640-128-128-128-128-8-128-128-128-128-640.
  Its topology is UNVERIFIED (shared/reference/mcu-published.md gives no MAC count for it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class DSCNN(nn.Module):
    """DS-CNN (kws): MLPerf Tiny's keyword-spotting reference."""

    def __init__(self, classes: int = 12, filters: int = 64, blocks: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, filters, (10, 4), stride=2, padding=(5, 1))
        self.depthwise = nn.ModuleList(
            nn.Conv2d(filters, filters, 3, padding=1, groups=filters) for _ in range(blocks))
        self.pointwise = nn.ModuleList(nn.Conv2d(filters, filters, 1) for _ in range(blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(filters, classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        for dw, pw in zip(self.depthwise, self.pointwise, strict=True):
            x = self.relu(pw(self.relu(dw(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class ResidualStack(nn.Module):
    """Two 3x3 convs and the shortcut (a strided 1x1 projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride=stride)
                         if stride != 1 or c_in != c_out else None)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.relu(self.conv1(x)))
        skip = self.shortcut(x) if self.shortcut is not None else x
        return self.relu(y + skip)


class ResNet8(nn.Module):
    """ResNet-8 (ic): MLPerf Tiny's image-classification reference."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.stack1 = ResidualStack(16, 16, 1)
        self.stack2 = ResidualStack(16, 32, 2)
        self.stack3 = ResidualStack(32, 64, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.stem(x))
        x = self.stack3(self.stack2(self.stack1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


# MobileNetV1 (Howard et al. 2017): (output channels at width 1.0, stride) of the 13 blocks
_MNV1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
                (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


class MobileNetV1(nn.Module):
    """MobileNetV1 at a width multiplier (vww: 0.25 at 96x96x3, 2 classes)."""

    def __init__(self, alpha: float = 0.25, classes: int = 2, channels: int = 3) -> None:
        super().__init__()

        def width(c: int) -> int:
            return max(int(c * alpha), 8)

        c = width(32)
        self.stem = nn.Conv2d(channels, c, 3, stride=2, padding=1)
        dws, pws = [], []
        for out, stride in _MNV1_BLOCKS:
            dws.append(nn.Conv2d(c, c, 3, stride=stride, padding=1, groups=c))
            pws.append(nn.Conv2d(c, width(out), 1))
            c = width(out)
        self.depthwise = nn.ModuleList(dws)
        self.pointwise = nn.ModuleList(pws)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.stem(x))
        for dw, pw in zip(self.depthwise, self.pointwise, strict=True):
            x = self.relu(pw(self.relu(dw(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


# the anomaly-detection autoencoder's layer widths (UNVERIFIED topology)
AD_WIDTHS = (640, 128, 128, 128, 128, 8, 128, 128, 128, 128, 640)


class FCAutoencoder(nn.Module):
    """The ad autoencoder: Linear + ReLU between the widths, the last Linear without ReLU."""

    def __init__(self, widths: tuple[int, ...] = AD_WIDTHS) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths, widths[1:],
                                                                      strict=False))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = self.relu(x)
        return x


@dataclass(frozen=True)
class TinyModel:
    key: str  # the MLPerf Tiny benchmark key of mcu-published.md
    description: str
    factory: Callable[[], nn.Module]
    input_shape: tuple[int, ...]  # one sample, channels first
    published_macs: int | None  # mcu-published.md (S-MLTK); None: not published
    verified_topology: bool


TINY_MODELS: dict[str, TinyModel] = {m.key: m for m in (
    TinyModel("kws", "DS-CNN, 49x10x1, 12 classes", DSCNN, (1, 49, 10), 2_657_000, True),
    TinyModel("ic", "ResNet-8, 32x32x3, 10 classes", ResNet8, (3, 32, 32), 12_502_000, True),
    TinyModel("vww", "MobileNetV1-0.25, 96x96x3, 2 classes", MobileNetV1, (3, 96, 96),
              7_490_000, True),
    TinyModel("ad", "FC autoencoder 640-128x4-8-128x4-640 (topology UNVERIFIED)",
              FCAutoencoder, (640,), None, False),
)}


def tiny_model(key: str) -> nn.Module:
    """A fresh MLPerf Tiny reference model (random weights, seeded: the same every call)."""
    torch.manual_seed(0)
    return TINY_MODELS[key].factory().eval()
