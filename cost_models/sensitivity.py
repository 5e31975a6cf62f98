"""Accuracy sensitivity per (layer, option), measured, and a cache for both estimators.

Measured (estimator a): compress one layer with one option (the rest fp32), then the change in
cross-entropy and in top-1 accuracy on the calibration split against the fp32 model. Both are
signed: on a few hundred images a harmless option can come out slightly negative, which is
kept for analysis and clamped to 0 only when handed to the solver (`as_estimate`).

Fast (estimator b) is cost_models.hessian. Both results are cached in one JSON file per key
under `edgefit_common.paths.cache_dir()/sensitivity/`; the key hashes the model's weights, the
calibration data, the option set (every technique config) and the estimator's parameters, so
any change to one of them misses the cache instead of returning stale numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from cost_models.estimate import AccuracyEstimate
from edgefit_common.fsutil import atomic_write_text
from techniques.fakequant import quantized_copy
from workloads.data import data_hash
from workloads.models import weights_hash

CACHE_VERSION = 1  # bump when a stored number would change for the same key
Options = Mapping[str, Mapping[str, Sequence[Any]]]
Key = tuple[str, str]


@dataclass(frozen=True)
class Sensitivity:
    """Measured per-(layer, option) change against the fp32 model on the calibration split."""

    delta_loss: dict[Key, float]  # CE(compressed) - CE(fp32), nats, signed
    delta_accuracy_pp: dict[Key, float]  # accuracy(fp32) - accuracy(compressed), pp, signed
    samples: int

    def as_estimate(self, kind: Literal["loss", "accuracy"]) -> AccuracyEstimate:
        """The solver's form: clamped at 0 (a negative delta is noise, not a gain)."""
        if kind == "loss":
            values, unit = self.delta_loss, "loss increase (nats)"
        else:
            values, unit = self.delta_accuracy_pp, "accuracy drop (pp)"
        return AccuracyEstimate(
            {k: max(0.0, v) for k, v in values.items()}, unit=unit,
            provenance=f"measured: {unit} on {self.samples} calibration images, one layer "
                       "compressed at a time (negative values clamped to 0); plan totals add "
                       "them (interactions not modelled)")


# --------------------------------------------------------------------------- keys


def options_hash(options: Options) -> str:
    """Every layer, option name and technique config, order-independent."""
    doc = {layer: {name: [_config_doc(c) for c in configs] for name, configs in opts.items()}
           for layer, opts in options.items()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _config_doc(cfg: Any) -> Any:
    dump = getattr(cfg, "model_dump", None)
    return dump(mode="json") if callable(dump) else repr(cfg)


def cache_key(estimator: str, model: nn.Module, x: np.ndarray, y: np.ndarray | None,
              options: Options, params: Mapping[str, Any] | None = None) -> str:
    parts = [str(CACHE_VERSION), estimator, weights_hash(model), data_hash(x, y),
             options_hash(options), json.dumps(dict(params or {}), sort_keys=True)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


# --------------------------------------------------------------------------- cache


class SensitivityCache:
    """One JSON file per key, written atomically: concurrent runs never see half a file, and a
    broken file is a miss (recomputed), never an error."""

    def __init__(self, root: Path | None = None) -> None:
        if root is None:
            from edgefit_common.paths import cache_dir

            root = cache_dir() / "sensitivity"
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.path(key).read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) and doc.get("version") == CACHE_VERSION else None

    def put(self, key: str, doc: dict[str, Any]) -> None:
        atomic_write_text(self.path(key), json.dumps({"version": CACHE_VERSION, **doc}))


def _rows(values: Mapping[str, Mapping[Key, float]]) -> list[dict[str, Any]]:
    first = next(iter(values.values()))
    return [{"layer": layer, "option": option,
             **{name: float(v[layer, option]) for name, v in values.items()}}
            for layer, option in first]


def _columns(rows: list[dict[str, Any]], names: Sequence[str]) -> dict[str, dict[Key, float]]:
    return {n: {(r["layer"], r["option"]): float(r[n]) for r in rows} for n in names}


# --------------------------------------------------------------------------- measured


def _loss_and_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    with torch.no_grad():
        logits = model(torch.from_numpy(x))
    target = torch.from_numpy(y)
    loss = float(nn.functional.cross_entropy(logits, target))
    return loss, float((logits.argmax(1) == target).double().mean())


def measure_sensitivity(model: nn.Module, options: Options, x: np.ndarray,
                        y: np.ndarray) -> Sensitivity:
    """Delta loss and delta accuracy with only that layer at that option (uncached)."""
    model = model.eval()
    base_loss, base_acc = _loss_and_accuracy(model, x, y)
    d_loss: dict[Key, float] = {}
    d_acc: dict[Key, float] = {}
    for layer, layer_options in options.items():
        for option, configs in layer_options.items():
            if not configs:
                d_loss[layer, option] = d_acc[layer, option] = 0.0
                continue
            loss, acc = _loss_and_accuracy(quantized_copy(model, {layer: configs}, x), x, y)
            d_loss[layer, option] = loss - base_loss
            d_acc[layer, option] = 100 * (base_acc - acc)
    return Sensitivity(d_loss, d_acc, len(y))


def measured_sensitivity(model: nn.Module, options: Options, x: np.ndarray, y: np.ndarray,
                         cache: SensitivityCache | None = None) -> Sensitivity:
    """measure_sensitivity, reused from the cache when model, data and options are the same."""
    cache = cache or SensitivityCache()
    key = cache_key("measured", model, x, y, options)
    doc = cache.get(key)
    if doc is not None:
        cols = _columns(doc["rows"], ("delta_loss", "delta_accuracy_pp"))
        return Sensitivity(cols["delta_loss"], cols["delta_accuracy_pp"], int(doc["samples"]))
    sens = measure_sensitivity(model, options, x, y)
    cache.put(key, {"estimator": "measured", "samples": sens.samples,
                    "rows": _rows({"delta_loss": sens.delta_loss,
                                   "delta_accuracy_pp": sens.delta_accuracy_pp})})
    return sens


# --------------------------------------------------------------------------- Hessian


@dataclass(frozen=True)
class HessianSensitivity:
    omega: AccuracyEstimate  # per (layer, option), predicted loss change (nats)
    mean_trace: dict[str, float]  # layer -> Tr(H)/n
    samples: dict[str, int]  # layer -> Hutchinson samples used


def hessian_sensitivity_cached(model: nn.Module, options: Options, x: np.ndarray,
                               y: np.ndarray, cache: SensitivityCache | None = None, *,
                               max_samples: int | None = None, tol: float | None = None,
                               seed: int = 0) -> HessianSensitivity:
    """cost_models.hessian's estimate, cached like the measured one (its parameters in the
    key: a different sample budget or seed is a different number)."""
    from cost_models import hessian

    samples = max_samples or hessian.DEFAULT_MAX_SAMPLES
    tolerance = hessian.DEFAULT_TOL if tol is None else tol
    params = {"max_samples": samples, "tol": tolerance, "seed": seed}
    cache = cache or SensitivityCache()
    key = cache_key("hessian", model, x, y, options, params)
    doc = cache.get(key)
    if doc is None:
        traces = hessian.hutchinson_traces(model, x, y, list(options), max_samples=samples,
                                           tol=tolerance, seed=seed)
        est = hessian.hessian_sensitivity(model, options, traces)
        doc = {"estimator": "hessian", "params": params, "provenance": est.provenance,
               "unit": est.unit, "rows": _rows({"omega": est.loss}),
               "mean_trace": {k: t.mean_trace for k, t in traces.items()},
               "samples": {k: t.samples for k, t in traces.items()}}
        cache.put(key, doc)
    omega = AccuracyEstimate(_columns(doc["rows"], ("omega",))["omega"], doc["unit"],
                             doc["provenance"])
    return HessianSensitivity(omega, dict(doc["mean_trace"]), dict(doc["samples"]))
