"""Train built-in models on first use and cache them (state_dict, loaded with weights_only=True)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgefit_common.fsutil import atomic_path, atomic_write_text
from edgefit_common.paths import cache_dir
from workloads.data import Dataset, load_dataset
from workloads.zoo import ZOO, ZooEntry

TRAIN_VERSION = 3  # bump when train() changes in a way that changes the weights
TRAIN_THREADS = 2
"""Intra-op threads while training: fixed, so the float reductions (and the weights) do not
depend on how many cores the machine has or on what set the thread count before."""


@dataclass(frozen=True)
class TrainedModel:
    entry: ZooEntry
    model: nn.Module
    accuracy: float  # on the held-out split
    checkpoint: Path
    trained_now: bool


def _recipe_hash(entry: ZooEntry) -> str:
    """Changes when the architecture or the training recipe changes, so stale caches are ignored
    (the module's repr lists its layers; a docstring edit does not retrain)."""
    text = repr(entry.factory()) + repr(
        (entry.dataset, entry.epochs, entry.lr, entry.batch_size, entry.shift_px, TRAIN_VERSION)
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def random_shift(x: np.ndarray, rng: np.random.Generator, max_px: int) -> np.ndarray:
    """Translate each image by up to max_px pixels in x and y, filling with zeros."""
    out = np.zeros_like(x)
    h, w = x.shape[2], x.shape[3]
    dys = rng.integers(-max_px, max_px + 1, len(x))
    dxs = rng.integers(-max_px, max_px + 1, len(x))
    for i, (dy, dx) in enumerate(zip(dys, dxs, strict=True)):
        out[i, :, max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] = \
            x[i, :, max(0, -dy):h + min(0, -dy), max(0, -dx):w + min(0, -dx)]
    return out


def evaluate(model: nn.Module, ds: Dataset, batch_size: int = 1000) -> float:
    """Top-1 accuracy as a fraction."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(ds.y), batch_size):
            logits = model(torch.from_numpy(ds.x[i : i + batch_size]))
            correct += int((logits.argmax(1).numpy() == ds.y[i : i + batch_size]).sum())
    return correct / len(ds.y)


@contextlib.contextmanager
def deterministic(seed: int, threads: int = TRAIN_THREADS) -> Iterator[None]:
    """Seeded torch RNG, deterministic kernels and fixed threads inside; the caller's RNG state,
    thread count and determinism setting are restored after (a test's order cannot change the
    weights of a model trained after it, nor the other way round)."""
    threads_before = torch.get_num_threads()
    det_before = torch.are_deterministic_algorithms_enabled()
    warn_before = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(det_before, warn_only=warn_before)
            torch.set_num_threads(threads_before)


def train(model: nn.Module, data: Dataset, *, epochs: int, lr: float, batch_size: int,
          shift_px: int = 0, seed: int = 0, label: str = "training") -> nn.Module:
    """Train in place: same model, data and seed give the same weights bit for bit on one
    machine (:func:`deterministic`; the data order comes from ``seed`` too)."""
    with deterministic(seed):
        return _train(model, data, epochs=epochs, lr=lr, batch_size=batch_size,
                      shift_px=shift_px, seed=seed, label=label)


def fresh_model(entry: ZooEntry, seed: int = 0) -> nn.Module:
    """``entry``'s untrained model, initialised from ``seed`` (not from the global RNG)."""
    with deterministic(seed):
        return entry.factory()


def _train(model: nn.Module, data: Dataset, *, epochs: int, lr: float, batch_size: int,
           shift_px: int, seed: int, label: str) -> nn.Module:
    from edgefit_common.progress import task

    rng = np.random.default_rng(seed)
    steps = (len(data.y) + batch_size - 1) // batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps)
    loss_fn = nn.CrossEntropyLoss()
    with task(label, epochs * steps) as bar:
        for _ in range(epochs):
            model.train()
            order = rng.permutation(len(data.y))
            for i in range(0, len(order), batch_size):
                idx = order[i : i + batch_size]
                batch = data.x[idx]
                x = torch.from_numpy(random_shift(batch, rng, shift_px) if shift_px else batch)
                y = torch.from_numpy(data.y[idx])
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step()
                sched.step()
                bar.advance()
    return model.eval()


def _atomic_save(obj: object, path: Path) -> None:
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    else:
        atomic_write_text(path, json.dumps(obj, indent=2))


def pretrained(name: str) -> TrainedModel:
    """The built-in model `name`, trained on first use (progress bar) and cached afterwards."""
    entry = ZOO[name]
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    train_ds, test_ds = load_dataset(entry.dataset)
    ckpt = cache_dir() / "models" / f"{name}-{_recipe_hash(entry)}.pt"
    meta = ckpt.with_suffix(".json")
    model = fresh_model(entry)
    if ckpt.exists() and meta.exists():
        model.load_state_dict(torch.load(ckpt, weights_only=True))
        model.eval()
        accuracy = json.loads(meta.read_text())["test_accuracy"]
        return TrainedModel(entry, model, accuracy, ckpt, trained_now=False)
    train(model, train_ds, epochs=entry.epochs, lr=entry.lr, batch_size=entry.batch_size,
          shift_px=entry.shift_px,
          label=f"training {name} on {entry.dataset} ({len(train_ds.y)} images)")
    accuracy = evaluate(model, test_ds)
    _atomic_save(model.state_dict(), ckpt)
    _atomic_save({"model": name, "dataset": entry.dataset, "test_accuracy": accuracy,
                  "train_size": len(train_ds.y), "test_size": len(test_ds.y),
                  "seed": 0, "threads": TRAIN_THREADS}, meta)
    return TrainedModel(entry, model, accuracy, ckpt, trained_now=True)
