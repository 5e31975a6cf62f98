"""A layer's techniques run in the plan's order; an order that would undo one is refused."""

from __future__ import annotations

import pytest
import torch

from edgefit_common.errors import PlanError
from techniques.fakequant import pruned_copy
from techniques.lowrank import LowRankConfig, factor_modules
from techniques.prune import UnstructuredPruneConfig
from techniques.share import WeightSharingConfig

PRUNE = UnstructuredPruneConfig(sparsity=0.5)
RANK = LowRankConfig(rank=8)
SHARE = WeightSharingConfig(bits=3)


@pytest.fixture()
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 48))


def _parts(model: torch.nn.Module, configs: list) -> list[torch.Tensor]:
    q = pruned_copy(model, {"0": configs})
    return [m.weight.detach() for m in factor_modules(dict(q.named_modules())["0"])]


def test_factorise_then_prune_prunes_every_factor(model) -> None:
    parts = _parts(model, [RANK, PRUNE])
    assert [tuple(w.shape) for w in parts] == [(8, 64), (48, 8)]
    assert all(float((w == 0).float().mean()) == 0.5 for w in parts)


def test_prune_or_share_before_factorising_is_refused(model) -> None:
    for first in (PRUNE, SHARE):
        with pytest.raises(PlanError, match=f"{first.technique} before lowrank would be undone"):
            _parts(model, [first, RANK])


def test_share_then_prune_and_prune_then_share(model) -> None:
    (ps,) = _parts(model, [PRUNE, SHARE])
    (sp,) = _parts(model, [SHARE, PRUNE])
    for w in (ps, sp):
        assert float((w == 0).float().mean()) >= 0.5
        assert torch.unique(w[w != 0]).numel() <= 2**SHARE.bits  # still on a codebook
    assert not torch.equal(ps, sp)  # the order matters
