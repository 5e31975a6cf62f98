"""edgefit's ONNX file contract, shared by everything that writes or reads its models: the
metadata keys (``edgefit.layers``: the planned layers' node names; ``edgefit.options``: each
layer's form), the layer ops, metadata access and atomic saving. Needs only onnx."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from edgefit_common.errors import EdgefitError, PlanError
from edgefit_common.fsutil import atomic_path

LAYERS_KEY = "edgefit.layers"
OPTIONS_KEY = "edgefit.options"
WEIGHTED_OPS: tuple[str, ...] = ("Conv", "Gemm", "MatMul")


def get_meta(model: onnx.ModelProto, key: str) -> str | None:
    for prop in model.metadata_props:
        if prop.key == key:
            return prop.value
    return None


def set_meta(model: onnx.ModelProto, key: str, value: str) -> None:
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = value
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = key, value


def planned_layers(model: onnx.ModelProto, where: str,
                   error: type[EdgefitError] = PlanError,
                   hint: str = "name the layer nodes with name_nodes_by_module first"
                   ) -> list[str]:
    """The layer names in the model's `edgefit.layers` metadata (`error` when absent/bad)."""
    raw = get_meta(model, LAYERS_KEY)
    if raw is None:
        raise error(f"{where} has no '{LAYERS_KEY}' metadata; {hint}")
    try:
        layers = json.loads(raw)
    except json.JSONDecodeError:
        layers = None
    if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
        raise error(f"{where}: '{LAYERS_KEY}' metadata is not a JSON list of layer names")
    return layers


def save_atomic(model: onnx.ModelProto, out_path: Path) -> None:
    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))


__all__ = ["LAYERS_KEY", "OPTIONS_KEY", "WEIGHTED_OPS", "get_meta", "planned_layers",
           "save_atomic", "set_meta"]
