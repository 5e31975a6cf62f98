"""MobileNetV2Small trained on Fashion-MNIST for the techniques benchmark, as a `.pt2` model.

Not a zoo entry on purpose: tests iterate over the zoo and CI would train it. Trained once
(seeded) on a fixed subset of the training split, BatchNorm folded (exact), exported with
torch.export and cached under the edgefit cache dir; later calls reuse the file. A `.pt2` because
apply_plan reloads the model from the plan's path alone (a factory reference would need its
weights file and input shape again); the loader gives it back its nn.Conv2d / nn.Linear modules,
so every technique, low rank included, applies to it.

    .venv/bin/python benchmarks/mobilenet_fashion.py   # trains (minutes) or prints the cached one
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from edgefit_common.fsutil import atomic_path, atomic_write_text
from edgefit_common.paths import cache_dir

if TYPE_CHECKING:
    from workloads.data import Dataset

NAME = "mobilenetv2-fashion"
DATA = "fashion-mnist"
INPUT_SHAPE = (1, 28, 28)
# A subset and few epochs: one training step of this net takes ~0.8 s per 128 images on one
# contended core here, so the full 60 000 images would take ~6 min per epoch.
TRAIN_IMAGES = 15_000
EPOCHS = 4
LR = 3e-3
BATCH_SIZE = 128
SEED = 0
# The data set the benchmark plans it with: the official 10 000 test images for accuracy, and
# the first FINETUNE_IMAGES of its training subset for calibration and distillation (2 epochs
# on all 60 000 images would take ~15 min per fine-tuned row here).
BENCH_DATA = "fashion-mnist-bench"
FINETUNE_IMAGES = 6_000


def _recipe_hash() -> str:
    """Changes with the architecture or the recipe, so a stale cached file is not reused."""
    from workloads.mobilenet import MobileNetV2Small
    from workloads.train import TRAIN_VERSION

    text = repr(MobileNetV2Small()) + repr((DATA, TRAIN_IMAGES, EPOCHS, LR, BATCH_SIZE, SEED,
                                            TRAIN_VERSION))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _train_indices(n_train: int) -> np.ndarray:
    return np.random.default_rng(SEED).choice(n_train, TRAIN_IMAGES, replace=False)


def _subset(ds: Dataset, idx: np.ndarray, tag: str) -> Dataset:
    from workloads.data import Dataset

    return Dataset(f"{ds.name}-{tag}", ds.x[idx], ds.y[idx], ds.classes, ds.source)


@functools.cache
def _bench_split() -> tuple[Dataset, Dataset]:
    from workloads.data import load_dataset

    train_ds, test_ds = load_dataset(DATA)
    idx = _train_indices(len(train_ds.y))[:FINETUNE_IMAGES]
    return _subset(train_ds, idx, f"{FINETUNE_IMAGES}"), test_ds


def register_bench_data() -> str:
    """Register BENCH_DATA with workloads.data for this process (planning and apply_plan look
    data sets up by name) and return the name."""
    from workloads import data

    data.DATASETS.setdefault(BENCH_DATA, _bench_split)
    return BENCH_DATA


def model_path() -> Path:
    return cache_dir() / "models" / f"{NAME}-{_recipe_hash()}.pt2"


def trained_pt2() -> Path:
    """The cached `.pt2` (trained and exported on first use); its test accuracy sits beside it."""
    path = model_path()
    if path.exists() and path.with_suffix(".json").exists():
        return path
    from workloads.data import load_dataset
    from workloads.mobilenet import MobileNetV2Small, fuse_bn
    from workloads.train import deterministic, evaluate, train

    train_ds, test_ds = load_dataset(DATA)
    subset = _subset(train_ds, _train_indices(len(train_ds.y)), f"{TRAIN_IMAGES}")
    with deterministic(SEED):  # initial weights from the seed, not the caller's RNG state
        model: torch.nn.Module = MobileNetV2Small()
    train(model, subset, epochs=EPOCHS, lr=LR, batch_size=BATCH_SIZE, seed=SEED,
          label=f"training {NAME} on {TRAIN_IMAGES} {DATA} images")
    model = fuse_bn(model.eval())
    accuracy = evaluate(model, test_ds)
    program = torch.export.export(model, (torch.zeros((1, *INPUT_SHAPE)),))
    buffer = io.BytesIO()  # torch.export.save warns on a file not named *.pt2 (the temp file)
    torch.export.save(program, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    atomic_write_text(path.with_suffix(".json"), json.dumps(
        {"model": NAME, "dataset": DATA, "test_accuracy": accuracy, "train_size": TRAIN_IMAGES,
         "test_size": int(len(test_ds.y)), "epochs": EPOCHS}, indent=2))
    return path


def test_accuracy() -> float:
    return float(json.loads(trained_pt2().with_suffix(".json").read_text())["test_accuracy"])


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(trained_pt2(), f"test accuracy {100 * test_accuracy():.2f} %")
    sys.exit(0)
