"""Every registry entry against its contract: its name is its config's `technique`, plan.json's
union reads every config, its offers are valid configs, and where it applies itself in torch
the flash image read back passes its own check (which fails on the untouched layer)."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter

from device_specs.schema import Kernel, NMSparsity
from techniques.flash_image import FlashLayer, read_flash_image, write_flash_image
from techniques.lowrank import LowRankConfig
from techniques.option import OfferContext, Option
from techniques.prune import NMPruneConfig, UnstructuredPruneConfig
from techniques.registry import REGISTRY, TechniqueConfig, technique
from techniques.share import WeightSharingConfig

RATE = {"value": "1GMAC/s", "unverified": "test"}
FP32 = Kernel.model_validate({"weights": "fp32", "activations": "fp32", "macs_per_s": RATE})
INT8 = Kernel.model_validate({"weights": "int8", "activations": "int8", "macs_per_s": RATE})


@dataclass(frozen=True)
class _Linear:
    op_type: str = "Linear"
    op_class: str = "linear"
    weight_numel: int = 64 * 32
    weight_shape: tuple[int, ...] = (32, 64)


def _union_members() -> set[type]:
    union = typing.get_args(TechniqueConfig)[0]
    return set(typing.get_args(union))


def test_names_match_configs_and_the_plan_union() -> None:
    for name, entry in REGISTRY.items():
        assert entry.config.model_fields["technique"].default == name  # type: ignore[attr-defined]
    assert _union_members() == {entry.config for entry in REGISTRY.values()}


def test_unknown_technique_is_a_plan_error() -> None:
    from edgefit_common.errors import PlanError

    with pytest.raises(PlanError, match="unknown technique"):
        technique(object())


@pytest.mark.parametrize("name", [n for n, e in REGISTRY.items() if e.offer is not None])
def test_offers_are_valid_configs_with_distinct_tags(name: str) -> None:
    entry = REGISTRY[name]
    ctx = OfferContext(nm=NMSparsity.model_validate(
        {"n": 2, "m": 4, "kernels": ["fp32", "int8"], "mac_speedup": {"value": 2.0,
                                                                   "unverified": "test"}}))
    offers = [o for key, k in (("fp32", FP32), ("int8", INT8))
              for o in entry.offer(_Linear(), key, k, ctx)]  # type: ignore[misc]
    assert offers, f"{name} offers nothing on a 64x32 Linear"
    adapter = TypeAdapter(TechniqueConfig)
    for offer in offers:
        assert offer.tag[:1].isalpha(), offer.tag  # a name part: "s50", "k4+s75", "nm24"
        for cfg in offer.configs:
            assert adapter.validate_python(cfg.model_dump()) == cfg
    per_kernel = entry.offer(_Linear(), "fp32", FP32, ctx)  # type: ignore[misc]
    assert len({o.tag for o in per_kernel}) == len(per_kernel)


def test_option_name_is_derived_from_its_parts() -> None:
    opt = Option(kernel="int8", techniques=(UnstructuredPruneConfig(sparsity=0.5),),
                 tags=("s50",), widths=(("conv1", 12),), width_tag="+w12", weight_fraction=0.5)
    assert (opt.name, opt.base, opt.sparsity, opt.narrowed) == ("int8+s50+w12", "int8+s50",
                                                                0.5, True)
    renamed = Option(kernel="i8", techniques=opt.techniques, tags=opt.tags)
    assert renamed.name == "i8+s50" and renamed.sparsity == 0.5


CASES = {
    "prune_unstructured": UnstructuredPruneConfig(sparsity=0.5),
    "prune_nm": NMPruneConfig(n=2, m=4),
    "share": WeightSharingConfig(bits=3, entropy="huffman"),
    "lowrank": LowRankConfig(rank=4),
}


@pytest.mark.parametrize("name", [n for n, e in REGISTRY.items() if e.apply_layer is not None])
def test_applied_layer_passes_its_own_check_from_the_image(name: str, tmp_path: Path) -> None:
    entry = REGISTRY[name]
    assert name in CASES, f"add a contract case for {name}"
    cfg = CASES[name]
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 32)
    before = _stored(tmp_path / "before.bin", layer, cfg)
    applied = entry.apply_layer(layer, cfg, "fc")  # type: ignore[misc]
    if name == "lowrank":  # a new module: its factors multiply back to a rank-4 weight
        w = applied[1].weight.detach() @ applied[0].weight.detach()
        assert int(torch.linalg.matrix_rank(w)) == 4
        return
    assert applied is layer
    after = _stored(tmp_path / "after.bin", applied, cfg)
    if entry.verify_image is not None:
        assert entry.verify_image("fc", cfg, after, {}) == []
        assert entry.verify_image("fc", cfg, before, {}) != [], "the check can fail"


def _stored(path: Path, layer: torch.nn.Linear, cfg: object):
    w = layer.weight.detach().numpy().astype(np.float32)
    share = cfg if isinstance(cfg, WeightSharingConfig) else None
    sparse = isinstance(cfg, UnstructuredPruneConfig | NMPruneConfig)
    if share is not None and len(np.unique(w)) > 2 ** share.bits:
        share = None  # an unshared layer has no codebook: stored dense
    write_flash_image(path, [FlashLayer("fc", "fp32", w, layer.bias.detach().numpy(),
                                        sparse=sparse, share=share)])
    (stored,) = read_flash_image(path)
    return stored
