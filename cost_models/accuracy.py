"""Accuracy-cost estimators: what each (layer, option) costs in accuracy, behind one interface.

The solver only sees numbers in one stated unit. This estimator measures, for each layer and
option alone, how far the model's output distribution moves from the fp32 model's on a
calibration split (mean KL divergence). Unlike a loss or accuracy delta it is never negative and
not drowned by sampling noise, so int4 > int8 > fp16 holds where it should. A later estimator
(Hessian-based, or measured accuracy) plugs in without touching the solver.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cost_models.channels import ChannelGroupSpec
from cost_models.estimate import AccuracyEstimate
from edgefit_common.progress import task, track
from techniques.fakequant import quantized_copy

SENSITIVITY = "sensitivity (layer x option)"
PRUNE_SENSITIVITY = "channel pruning sensitivity (group x width)"
OnValue = Callable[[Any, Any], None]  # (the pair measured, its value)


def _log_probs(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return nn.functional.log_softmax(model(torch.from_numpy(x)), dim=1)


def measured_output_kl(model: nn.Module, options: Mapping[str, Mapping[str, Sequence[Any]]],
                       x: np.ndarray, on_value: OnValue | None = None) -> AccuracyEstimate:
    """KL(fp32 || compressed) with only that layer at that option (fp32 elsewhere).

    options: layer -> option name -> the option's technique configs (empty: fp32). An encoder
    (``output_kind == "embedding"``) is judged by its embeddings instead (embedding_cosine_loss).
    on_value((layer, option), value) is called as each compressed pair is measured (the cache
    stores them as they come: an interrupted pass keeps what it measured)."""
    if getattr(model, "output_kind", "logits") == "embedding":
        return embedding_cosine_loss(model, options, x, on_value)
    reference = _log_probs(model, x)
    out: dict[tuple[str, str], float] = {}
    pairs = [(layer, option, configs) for layer, row in options.items()
             for option, configs in row.items()]
    for layer, option, configs in track(pairs, SENSITIVITY):
        if not configs:
            out[layer, option] = 0.0
            continue
        q = quantized_copy(model, {layer: configs}, x)
        kl = nn.functional.kl_div(_log_probs(q, x), reference, log_target=True,
                                  reduction="batchmean")
        out[layer, option] = max(0.0, float(kl))
        if on_value is not None:
            on_value((layer, option), out[layer, option])
    return AccuracyEstimate(out, *output_kl_description(model, len(x)))


def output_kl_description(model: nn.Module, samples: int) -> tuple[str, str]:
    """(unit, provenance) of measured_output_kl on `samples` inputs: a plan whose rows all came
    from the cache (cost_models.cached_rows) says exactly what one measured afresh says."""
    if getattr(model, "output_kind", "logits") == "embedding":
        n = min(samples, ENCODER_SAMPLES)
        return ("1 - cosine similarity to fp32 embeddings",
                f"measured: 1 - mean cosine similarity of the embeddings to the fp32 model's "
                f"on {n} calibration sentences (int8 activation ranges from "
                f"{min(n, ENCODER_CALIBRATION)} of them), one layer compressed at a time; "
                "plan totals add them (interactions not modelled)")
    return ("KL to fp32 outputs (nats)",
            f"measured: mean KL divergence of the outputs from the fp32 model's on "
            f"{samples} calibration images, one layer compressed at a time; plan totals add "
            "them (interactions not modelled)")


# sentences per (layer, option), and of those the ones that calibrate int8 activation ranges:
# a 22 M-parameter encoder with 36 layers x ~20 options is ~700 compressed copies to evaluate
ENCODER_SAMPLES = 16
ENCODER_CALIBRATION = 8


def _embeddings(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.from_numpy(x))


def embedding_cosine_loss(model: nn.Module, options: Mapping[str, Mapping[str, Sequence[Any]]],
                          x: np.ndarray, on_value: OnValue | None = None) -> AccuracyEstimate:
    """1 - mean cosine similarity of the embeddings to the fp32 model's, one layer compressed
    at a time. Classes do not exist for a sentence encoder; what a user of its embeddings
    loses is the direction of each embedding vector, which cosine measures directly."""
    x = x[:ENCODER_SAMPLES]
    reference = _embeddings(model, x)
    out: dict[tuple[str, str], float] = {}
    split = getattr(model, "split_at", None)  # run only what follows the layer, if it can
    with task(SENSITIVITY, sum(len(row) for row in options.values())) as bar:
        for layer, layer_options in options.items():
            part, inputs = split(layer, x) if split is not None else (model, x)
            for option, configs in layer_options.items():
                out[layer, option] = (_cosine_loss(part, layer, configs, inputs, reference)
                                      if configs else 0.0)
                if configs and on_value is not None:
                    on_value((layer, option), out[layer, option])
                bar.advance()
    return AccuracyEstimate(out, *output_kl_description(model, len(x)))


def _cosine_loss(part: nn.Module, layer: str, configs: Sequence[Any], inputs: Any,
                 reference: torch.Tensor) -> float:
    q = quantized_copy(part, {layer: configs}, inputs[:ENCODER_CALIBRATION])
    got = _embeddings(q, inputs)
    cos = nn.functional.cosine_similarity(got.double(), reference.double(), dim=1).mean()
    return max(0.0, 1.0 - float(cos))


def channel_pruning_kl(model: nn.Module, groups: Sequence[ChannelGroupSpec],
                       example_input: Any, x: np.ndarray, on_value: OnValue | None = None
                       ) -> dict[tuple[str, int], float | None]:
    """KL(fp32 || pruned) per (group, kept width), each group really pruned alone
    (techniques.prune.prune_channels on a copy; fp32 elsewhere). None: Torch-Pruning refused
    that group or width, so the planner must not offer it. on_value((group, width), value)
    is called as each is measured."""
    import copy

    from techniques.prune import prune_channels

    reference = _log_probs(model, x)
    out: dict[tuple[str, int], float | None] = {}
    cuts = [(g, width) for g in groups for width in g.widths[:-1]]
    for g, width in track(cuts, PRUNE_SENSITIVITY):
        pruned = copy.deepcopy(model)
        value: float | None
        try:
            prune_channels(pruned, dict.fromkeys(g.layers, g.prune_config(width)),
                           example_input)
            value = max(0.0, float(nn.functional.kl_div(
                _log_probs(pruned, x), reference, log_target=True, reduction="batchmean")))
        except Exception:  # Torch-Pruning raises many types; the width is just not offered
            value = None
        out[g.name, width] = value
        if on_value is not None:
            on_value((g.name, width), out[g.name, width])
    return out
