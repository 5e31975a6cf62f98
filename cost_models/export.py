"""The fp32 ONNX every measurement and every apply starts from: the dynamo exporter, each planned
node named after its torch module (:func:`techniques.onnx.names.name_nodes_by_module`)."""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from cost_models.capture import flat_modules
from edgefit_common.fsutil import atomic_path
from techniques.onnx.names import name_nodes_by_module

if TYPE_CHECKING:
    from torch import nn


def export_fp32(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    """Export with the dynamo exporter and name each planned node after its torch module."""
    import onnx
    import torch

    example = torch.zeros((1, *input_shape))
    model = flat_modules(model)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        raw = Path(tmp) / "raw.onnx"
        torch.onnx.export(model.eval(), (example,), str(raw), dynamo=True, external_data=False,
                          input_names=["input"], output_names=["logits"], verbose=False)
        proto = onnx.load(str(raw))
    name_nodes_by_module(proto)
    with atomic_path(path) as tmp_path:
        onnx.save(proto, str(tmp_path))
