"""Costs of the sparse and weight-shared options of a model given only as ONNX, one cached row
each (cost_models.cached_rows), as for a torch model:

- stored bytes: the layer's initializer pruned / shared as the option says
  (techniques.onnx.weights, each technique's array form), counted by the flash image's writer
  (techniques.flash_image.layer_file_bytes: exact, header entry included); keyed by the layer's
  own weight and bias, the configs and the code that packs them;
- accuracy: the divergence of the outputs with that one layer pruned / shared and then
  quantised to its kernel's form, every other layer fp32, run by onnxruntime
  (cost_models.accuracy_onnx.onnx_technique_kl); keyed by the prepared file, the calibration
  images, the layer, the configs and the code that writes and runs them.

Latency is its kernel's (dense kernels compute the zeros; shared weights are decoded at load
time): planning.scaled_pruned_latency says so.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cost_models.cached_rows import (
    ROWS_VERSION,
    Emit,
    cached,
    code_version,
    config_docs,
    stored_bytes_key,
)
from cost_models.row_cache import row_key
from edgefit_common.progress import track

ONNX_KL_CODE = ("cost_models.accuracy_onnx", "cost_models.output_fidelity",
                "techniques.onnx.weights", "techniques.onnx.writer", "techniques.onnx.int8",
                "techniques.onnx.rewrite", "techniques.onnx.matmulnbits", "techniques.quantize",
                "techniques.prune", "techniques.share", "formats.quant_math")
"""The code an ONNX option's accuracy row runs: an edit to any of it is a miss."""

Options = Mapping[str, Mapping[str, Sequence[Any]]]  # layer -> option name -> its configs


def _array_options(options: Options) -> dict[tuple[str, str], Sequence[Any]]:
    from techniques.onnx.weights import array_techniques

    return {(layer, name): configs for layer, row in options.items()
            for name, configs in row.items() if array_techniques(configs)}


def _array_hash(weight: np.ndarray, bias: np.ndarray | None) -> str:
    h = hashlib.sha256()
    for a in (weight, bias):
        if a is not None:
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
    return "onnx:" + h.hexdigest()


def onnx_stored_bytes(prepared: Path, options: Options) -> dict[tuple[str, str], int]:
    """Stored bytes of every (layer, option) with a technique sized by the weights."""
    from techniques.onnx.weights import layer_arrays, stored_layer_bytes

    todo = _array_options(options)
    if not todo:
        return {}
    arrays = layer_arrays(prepared, sorted({layer for layer, _ in todo}))
    weights = {layer: _array_hash(*arrays[layer]) for layer in arrays}
    keys = {(layer, name): stored_bytes_key(weights[layer], layer, [], configs,
                                            (onnx_stored_bytes, stored_layer_bytes))
            for (layer, name), configs in todo.items()}

    def count(missing: list[tuple[str, str]], emit: Emit) -> dict[tuple[str, str], int]:
        out = {}
        for layer, name in track(missing, "flash bytes of sparse and shared options"):
            out[layer, name] = stored_layer_bytes(layer, todo[layer, name], *arrays[layer])
            emit((layer, name), out[layer, name])
        return out
    return {k: int(v) for k, v in cached("stored-bytes", keys, count).items()}


def onnx_technique_accuracy(prepared: Path, options: Options, x: np.ndarray
                            ) -> dict[tuple[str, str], float]:
    """Accuracy cost (the ONNX estimator's divergence) of every (layer, option) with array
    techniques; only the rows no earlier plan measured are measured."""
    from cost_models.accuracy_onnx import onnx_technique_kl
    from workloads.data import data_hash

    todo = _array_options(options)
    if not todo:
        return {}
    base = (ROWS_VERSION, "onnx", hashlib.sha256(Path(prepared).read_bytes()).hexdigest(),
            data_hash(x), code_version(ONNX_KL_CODE))
    keys = {(layer, name): row_key(*base, layer, config_docs(configs))
            for (layer, name), configs in todo.items()}

    def measure(missing: list[tuple[str, str]], emit: Emit) -> dict[tuple[str, str], float]:
        with tempfile.TemporaryDirectory(prefix="edgefit-kl-") as tmp:
            return onnx_technique_kl(prepared, {k: todo[k] for k in missing}, x, Path(tmp),
                                     on_value=emit)
    return {k: float(v) for k, v in cached("output-kl", keys, measure).items()}


PROVENANCE = ("; sparse and weight-shared options: the layer's initializer pruned (magnitude) "
              "/ shared (k-means codebook) at the ONNX level, then quantised to its kernel's "
              "form, measured the same way")


TORCH_ONLY = "low rank, channel pruning and N:M pruning need the torch model"
_SHOWN = {"quantize": "quantisation (each kernel's form)",
          "prune_unstructured": "unstructured magnitude sparsity",
          "share": "weight sharing (k-means codebook)"}


def route_note(options: Mapping[str, Mapping[str, Any]]) -> str:
    """What `plan` says about an ONNX-only model's options: the techniques the ONNX level
    expresses (offered here: those its options really hold), and which need the torch model."""
    used = {"quantize"} | {t.technique for row in options.values() for o in row.values()
                           for t in getattr(o, "techniques", o)}
    from techniques.prune import MIN_WEIGHTS_FOR_SPARSITY
    from techniques.share import MIN_WEIGHTS_FOR_SHARING

    offered = ", ".join(text for name, text in _SHOWN.items() if name in used)
    least = min(MIN_WEIGHTS_FOR_SPARSITY, MIN_WEIGHTS_FOR_SHARING)
    return (f"ONNX-only model: the ONNX level offers {offered} on the initializers "
            f"(sparsity and sharing on layers of >= {least} weights); {TORCH_ONLY}")


__all__ = ["ONNX_KL_CODE", "PROVENANCE", "TORCH_ONLY", "onnx_stored_bytes",
           "onnx_technique_accuracy", "route_note"]
