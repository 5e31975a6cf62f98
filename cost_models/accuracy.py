"""Accuracy-cost estimators: what each (layer, option) costs in accuracy, behind one interface.

The solver only sees numbers in one stated unit. This estimator measures, for each layer and
option alone, how far the model's output distribution moves from the fp32 model's on a
calibration split (mean KL divergence). Unlike a loss or accuracy delta it is never negative and
not drowned by sampling noise, so int4 > int8 > fp16 holds where it should. A later estimator
(Hessian-based, or measured accuracy) plugs in without touching the solver.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cost_models.estimate import AccuracyEstimate
from executors.fakequant import quantized_copy


def _log_probs(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return nn.functional.log_softmax(model(torch.from_numpy(x)), dim=1)


def measured_output_kl(model: nn.Module, options: Mapping[str, Mapping[str, Sequence[Any]]],
                       x: np.ndarray) -> AccuracyEstimate:
    """KL(fp32 || compressed) with only that layer at that option (fp32 elsewhere).

    options: layer -> option name -> the option's technique configs (empty: fp32)."""
    reference = _log_probs(model, x)
    out: dict[tuple[str, str], float] = {}
    for layer, layer_options in options.items():
        for option, configs in layer_options.items():
            if not configs:
                out[layer, option] = 0.0
                continue
            q = quantized_copy(model, {layer: configs}, x)
            kl = nn.functional.kl_div(_log_probs(q, x), reference, log_target=True,
                                      reduction="batchmean")
            out[layer, option] = max(0.0, float(kl))
    return AccuracyEstimate(
        out,
        unit="KL to fp32 outputs (nats)",
        provenance=f"measured: mean KL divergence of the outputs from the fp32 model's on "
                   f"{len(x)} calibration images, one layer compressed at a time; plan totals add "
                   "them (interactions not modelled)",
    )
