"""Training is deterministic on one machine: the same seed gives the same weights twice in a
row, whatever ran before (global RNG state, thread count), and a different seed does not."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from workloads.data import Dataset, load_dataset
from workloads.train import TRAIN_THREADS, deterministic, fresh_model, train
from workloads.zoo import ZOO


@pytest.fixture(scope="module")
def small() -> Dataset:
    data, _ = load_dataset("mnist")
    return dataclasses.replace(data, x=data.x[:1024], y=data.y[:1024])


def _trained(data: Dataset, seed: int) -> dict[str, torch.Tensor]:
    model = fresh_model(ZOO["lenet5-mnist"], seed)
    train(model, data, epochs=1, lr=3e-3, batch_size=64, shift_px=2, seed=seed)
    return model.state_dict()


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_twice_in_a_row(small: Dataset) -> None:
    first = _trained(small, seed=0)
    torch.manual_seed(1234)  # what another test might leave behind
    torch.rand(17)
    torch.set_num_threads(1)
    try:
        second = _trained(small, seed=0)
    finally:
        torch.set_num_threads(TRAIN_THREADS)
    assert _equal(first, second)
    assert not _equal(first, _trained(small, seed=1))


def test_training_leaves_the_callers_state_alone(small: Dataset) -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    threads = torch.get_num_threads()
    with deterministic(seed=0, threads=1):
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.get_num_threads() == 1
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.rand(3), expected)
