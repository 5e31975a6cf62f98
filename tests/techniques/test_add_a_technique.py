"""docs/architecture.md's "add a technique", done: a toy technique (weights rounded to a grid)
defined in this file and registered with one line is offered, costed on the real weights,
simulated in torch and checked from the flash image, with no other file touched."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
from pydantic import BaseModel, ConfigDict

from techniques.option import Offer, OfferContext, Technique


class GridConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    technique: Literal["grid"] = "grid"
    step: float = 2.0**-10


def offer(layer: Any, name: str, kernel: Any, ctx: OfferContext) -> list[Offer]:
    if not (ctx.weights and kernel.weights == "fp32" and layer.op_type == "Linear"):
        return []
    return [Offer("g8", (GridConfig(),))]


def apply_layer(module: torch.nn.Module, config: GridConfig, name: str) -> torch.nn.Module:
    with torch.no_grad():
        module.weight.copy_(torch.round(module.weight / config.step) * config.step)
    return module


def verify_image(name: str, config: GridConfig, stored: Any, row: dict[str, Any]) -> list[str]:
    off = np.abs(stored.weight / config.step - np.round(stored.weight / config.step)).max()
    return [f"{name}: weights off the {config.step:g} grid"] if off > 1e-6 else []


GRID = Technique("grid", GridConfig, offer, apply_layer, verify_image, sized_by_weights=True)


def test_a_registered_technique_is_offered_costed_applied_and_verified(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cost_models.analytical import build_cost_table
    from cost_models.capture import capture
    from cost_models.options import graph_options
    from device_specs.catalog import load_spec
    from edgefit.planning import sparse_flash_bytes
    from techniques.fakequant import pruned_copy
    from techniques.flash_image import FlashLayer, read_flash_image, write_flash_image
    from techniques.registry import REGISTRY
    from workloads.zoo import LeNet5

    monkeypatch.setitem(REGISTRY, "grid", GRID)  # the one registry line

    torch.manual_seed(0)
    model = LeNet5().eval()
    graph = capture(model, (1, 28, 28))
    spec = load_spec("arduino-nano-33-ble")
    options = graph_options(graph, spec.profile().kernels)
    grid = {ly: {o.name: o.to_list() for o in row if o.has("grid")} for ly, row in options.items()}
    assert set(grid["fc1"]) == {"fp32+g8"} and grid["conv1"] == {}, "offered on Linear, fp32"

    sizes = sparse_flash_bytes(model, grid)
    table = build_cost_table(graph, spec, sparse_flash=sizes, layer_options=options)
    row = table.cost("fc1", "fp32+g8")
    assert row.flash_bytes == sizes["fc1", "fp32+g8"] and row.latency_ms > 0

    rounded = pruned_copy(model, {"fc1": grid["fc1"]["fp32+g8"]})
    w = rounded.fc1.weight.detach().numpy()
    assert not np.allclose(w, model.fc1.weight.detach().numpy())
    write_flash_image(tmp_path / "m.bin", [FlashLayer("fc1", "fp32", w,
                                                      rounded.fc1.bias.detach().numpy(),
                                                      sparse=True)])
    (stored,) = read_flash_image(tmp_path / "m.bin")
    assert GRID.verify_image is not None
    assert GRID.verify_image("fc1", GridConfig(), stored, {}) == []
    assert sizes["fc1", "fp32+g8"] == stored.weight_bytes + stored.bias_bytes + stored.header_bytes
