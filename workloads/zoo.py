"""Built-in models: each entry names its architecture, data set and its accuracy floor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class LeNet5(nn.Module):
    """LeCun et al. 1998; padding 2 on the first conv gives 28x28 MNIST the 32x32 geometry."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class LeNet300100(nn.Module):
    """The fully connected LeNet-300-100 of Deep Compression (Han et al. 2016)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, classes)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class FashionCNN(nn.Module):
    """A small two-conv CNN, the usual Fashion-MNIST baseline (about 91 % after a few epochs)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, classes)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = self.relu(self.fc1(x))
        return self.fc2(x)


@dataclass(frozen=True)
class ZooEntry:
    name: str
    factory: Callable[[], nn.Module]
    dataset: str
    input_shape: tuple[int, int, int]
    accuracy_floor: float  # fraction; demo and bench check the trained model against it
    epochs: int
    lr: float  # peak of a one-cycle schedule (AdamW)
    shift_px: int = 0  # random-translation augmentation, pixels
    batch_size: int = 128


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        # 8 000 training digits only: augmentation keeps the floors with a margin
        ZooEntry("lenet5-mnist", LeNet5, "mnist", (1, 28, 28), 0.97, epochs=20, lr=3e-3,
                 shift_px=2),
        ZooEntry("lenet300-mnist", LeNet300100, "mnist", (1, 28, 28), 0.95, epochs=30, lr=2e-3,
                 shift_px=2),
        ZooEntry("fashion-cnn", FashionCNN, "fashion-mnist", (1, 28, 28), 0.90, epochs=5,
                 lr=3e-3),
    )
}
DEFAULT_MODEL = "lenet5-mnist"


@dataclass(frozen=True)
class PretrainedEntry:
    """A built-in model shipped with real pretrained weights (never trained by edgefit); kept
    apart from ZOO, whose entries `make bench` trains."""

    name: str
    loader: Callable[[], nn.Module]
    dataset: str
    input_shape: tuple[int, ...]
    metric: str  # what apply reports in place of top-1 accuracy
    source: str  # where the weights come from


def _minilm() -> nn.Module:
    from workloads.minilm import load_minilm

    return load_minilm()


def _pretrained_entries() -> dict[str, PretrainedEntry]:
    from workloads.minilm import PACKAGE, PACKAGE_VERSION, SEQ_LEN

    return {e.name: e for e in (
        PretrainedEntry("minilm-l6", _minilm, "sentences", (SEQ_LEN,),
                        "mean cosine similarity to the fp32 model's sentence embeddings",
                        f"PyPI {PACKAGE}=={PACKAGE_VERSION} (all-MiniLM-L6-v2)"),
    )}


PRETRAINED: dict[str, PretrainedEntry] = _pretrained_entries()
