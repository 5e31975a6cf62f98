"""One cached row per (layer, configs) and per (channel group, width): a pair's number is the
same in a small option set and a big one, only the pairs never measured are measured, and
any change to the weights or the data is a miss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from cost_models import accuracy
from cost_models.cached_rows import cached_channel_pruning_kl, cached_output_kl
from cost_models.channels import ChannelGroupSpec
from cost_models.row_cache import RowCache
from techniques.prune import UnstructuredPruneConfig
from techniques.quantize import QuantizeConfig

INT8 = [QuantizeConfig(weights="int8", activations="int8")]
INT4 = [QuantizeConfig(weights="int4", activations="fp32")]
S50 = [UnstructuredPruneConfig(sparsity=0.5)]


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = np.random.default_rng(0).normal(size=(32, 1, 4, 4)).astype(np.float32)
    return model, x


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every (layer, option) measured_output_kl is asked to measure."""
    asked: list[tuple[str, str]] = []
    measure = accuracy.measured_output_kl

    def spy(model: Any, options: Any, x: Any, **kwargs: Any) -> Any:
        asked.extend((ly, o) for ly, row in options.items() for o in row)
        return measure(model, options, x, **kwargs)

    monkeypatch.setattr(accuracy, "measured_output_kl", spy)
    return asked


def test_a_pair_is_the_same_in_a_small_and_a_big_option_set(tiny, tmp_path: Path) -> None:
    model, x = tiny
    small = {"1": {"int8": INT8}}
    big = {"1": {"fp32": [], "int8": INT8, "int4": INT4, "s50": S50},
           "3": {"fp32": [], "int8": INT8, "int4": INT4}}
    with RowCache(tmp_path / "a.sqlite") as a, RowCache(tmp_path / "b.sqlite") as b:
        alone = cached_output_kl(model, small, x, a)
        among = cached_output_kl(model, big, x, b)
    assert alone.loss["1", "int8"] == among.loss["1", "int8"]
    assert alone.loss["1", "int8"] > 0.0
    # and both equal the uncached measurement of the whole set
    assert among.loss == accuracy.measured_output_kl(model, big, x).loss


def test_only_unseen_pairs_are_measured(tiny, counted, tmp_path: Path) -> None:
    model, x = tiny
    with RowCache(tmp_path / "rows.sqlite") as cache:
        first = cached_output_kl(model, {"1": {"fp32": [], "int8": INT8}}, x, cache)
        assert counted == [("1", "int8")]  # fp32 costs nothing and is not measured
        # another profile names the same configs differently and offers one more pair
        second = cached_output_kl(model, {"1": {"i8": INT8, "int4": INT4}}, x, cache)
        assert counted == [("1", "int8"), ("1", "int4")]
        assert second.loss["1", "i8"] == first.loss["1", "int8"]
        again = cached_output_kl(model, {"1": {"i8": INT8, "int4": INT4}}, x, cache)
    assert counted == [("1", "int8"), ("1", "int4")]
    assert again == second  # numbers, unit and provenance


def test_other_weights_or_data_are_a_miss(tiny, counted, tmp_path: Path) -> None:
    model, x = tiny
    options = {"1": {"int8": INT8}}
    with RowCache(tmp_path / "rows.sqlite") as cache:
        cached_output_kl(model, options, x, cache)
        cached_output_kl(model, options, x + 0.5, cache)
        with torch.no_grad():
            model[1].weight.mul_(2.0)
        cached_output_kl(model, options, x, cache)
    assert counted == [("1", "int8")] * 3


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.fc = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_pruning_kl_is_one_row_per_width(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    torch.manual_seed(0)
    model = Net().eval()
    x = np.random.default_rng(1).normal(size=(32, 1, 6, 6)).astype(np.float32)
    group = ChannelGroupSpec("conv", 8, 2, (4, 6, 8), ("conv",), ("fc",), ())
    asked: list[tuple[str, int]] = []
    measure = accuracy.channel_pruning_kl

    def spy(module: Any, groups: Any, example: Any, images: Any, **kwargs: Any) -> Any:
        asked.extend((g.name, w) for g in groups for w in g.widths[:-1])
        return measure(module, groups, example, images, **kwargs)

    monkeypatch.setattr(accuracy, "channel_pruning_kl", spy)
    narrow = ChannelGroupSpec("conv", 8, 2, (6, 8), ("conv",), ("fc",), ())
    with RowCache(tmp_path / "rows.sqlite") as cache:
        one = cached_channel_pruning_kl(model, [narrow], (1, 6, 6), x, cache)
        both = cached_channel_pruning_kl(model, [group], (1, 6, 6), x, cache)
    assert asked == [("conv", 6), ("conv", 4)]  # width 6 came from the cache the second time
    assert both["conv", 6] == one["conv", 6]
    assert both == measure(model, [group], (1, 6, 6), x)


def test_two_names_for_one_config_are_measured_once(tiny, counted, tmp_path: Path) -> None:
    model, x = tiny
    with RowCache(tmp_path / "rows.sqlite") as cache:
        est = cached_output_kl(model, {"1": {"int8": INT8, "i8": INT8}}, x, cache)
    assert counted == [("1", "int8")]
    assert est.loss["1", "int8"] == est.loss["1", "i8"]


def test_an_interrupted_pass_keeps_what_it_measured(tiny, counted, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = tiny
    options = {"1": {"int8": INT8, "int4": INT4}, "3": {"int8": INT8}}
    real = accuracy.quantized_copy
    calls = []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:  # Ctrl-C while the third pair is measured
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(accuracy, "quantized_copy", interrupted)
    with RowCache(tmp_path / "rows.sqlite") as cache:
        with pytest.raises(KeyboardInterrupt):
            cached_output_kl(model, options, x, cache)
        assert len(cache) == 2
        monkeypatch.setattr(accuracy, "quantized_copy", real)
        counted.clear()
        resumed = cached_output_kl(model, options, x, cache)
    assert counted == [("3", "int8")]  # only what the interrupted pass had not finished
    assert resumed.loss == accuracy.measured_output_kl(model, options, x).loss


class Tanh(nn.Module):
    """Net's weights with another forward(): the same state_dict, other outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.fc = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


def test_same_weights_other_forward_is_a_miss(counted, tmp_path: Path) -> None:
    torch.manual_seed(0)
    relu = Net().eval()
    tanh = Tanh().eval()
    tanh.load_state_dict(relu.state_dict())
    x = np.random.default_rng(1).normal(size=(32, 1, 6, 6)).astype(np.float32)
    options = {"fc": {"int4": INT4}}
    with RowCache(tmp_path / "rows.sqlite") as cache:
        a = cached_output_kl(relu, options, x, cache)
        b = cached_output_kl(tanh, options, x, cache)
    assert counted == [("fc", "int4")] * 2
    assert a.loss != b.loss
