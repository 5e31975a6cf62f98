"""How far a compressed model's outputs are from the fp32 model's, on every output.

A model may have several outputs (MTCNN: box regression, face score, landmarks); judging it on
its first output alone let the other heads go to int2 at no cost (issue #21 item 0). Each output
is compared by its kind:

- a class output by the KL divergence of the class distributions (nats, batch mean), and in
  apply by top-1 agreement. A model's only output is a class output when it is 2-D with at least
  two columns (logits, as before); among several outputs only probabilities are (every row
  non-negative, summing to 1: a softmax head), since logits cannot be told from box or landmark
  coordinates by their shape;
- any other output (boxes, landmarks, a score, an embedding) by its relative squared error,
  mean((compressed - fp32)^2) / mean((fp32 - mean(fp32))^2), unitless (0: identical, 1: no better
  than predicting the mean).

A plan's accuracy cost is the sum over outputs; with one class output it is the plain KL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from edgefit_common.errors import PlanError

OutputKind = Literal["class", "values"]
# relative squared error of a constant output (no spread): compared against its magnitude instead
_EPS = 1e-12
# apply flags an output whose top-1 agreement with the fp32 model falls below this, or whose
# relative squared error exceeds REL_SQ_ERROR_WARN (stated in the report next to the figures)
AGREEMENT_WARN = 0.95
REL_SQ_ERROR_WARN = 0.05


def _is_probabilities(z: np.ndarray) -> bool:
    return bool((z >= 0).all() and (z <= 1 + 1e-6).all()
                and np.allclose(z.sum(axis=1), 1.0, atol=1e-3))


def output_kinds(reference: Sequence[np.ndarray]) -> list[OutputKind]:
    """Each output's kind (see the module docstring for the rule)."""
    def kind(r: np.ndarray) -> OutputKind:
        table = r.ndim == 2 and r.shape[1] >= 2
        return "class" if table and (len(reference) == 1 or _is_probabilities(r)) else "values"
    return [kind(r) for r in reference]


def log_probs(z: np.ndarray) -> np.ndarray:
    """Class log-probabilities of a class output: log of probabilities, log-softmax of logits."""
    z = z.astype(np.float64)
    if _is_probabilities(z):
        return np.log(np.clip(z, 1e-12, 1.0))
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def class_kl(reference: np.ndarray, got: np.ndarray) -> float:
    """KL(reference || got) of the class distributions, summed over classes, batch mean; >= 0."""
    p_log, q_log = log_probs(reference), log_probs(got)
    return max(0.0, float(np.sum(np.exp(p_log) * (p_log - q_log)) / len(reference)))


def rel_sq_error(reference: np.ndarray, got: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    err = float(np.mean((got.astype(np.float64) - ref) ** 2))
    spread = float(np.mean((ref - ref.mean()) ** 2))
    scale = spread if spread > _EPS else max(float(np.mean(ref ** 2)), _EPS)
    return err / scale


def _finite(outputs: Sequence[np.ndarray]) -> None:
    if not all(np.isfinite(o).all() for o in outputs):
        raise PlanError("model outputs contain NaN or infinite values; the divergence is "
                        "undefined")


def divergences(reference: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> list[float]:
    """Each output's divergence from the fp32 model's (its kind's metric)."""
    if len(reference) != len(got):
        raise PlanError(f"the compressed model has {len(got)} outputs, the fp32 model "
                        f"{len(reference)}")
    _finite(reference)
    _finite(got)
    return [class_kl(r, g) if k == "class" else rel_sq_error(r, g)
            for k, r, g in zip(output_kinds(reference), reference, got, strict=True)]


def total_divergence(reference: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> float:
    return float(sum(divergences(reference, got)))


def describe(reference: Sequence[np.ndarray], names: Sequence[str]) -> str:
    """What the cost compares, output by output (for the unit and the provenance)."""
    parts = [f"{name} ({'class KL, nats' if k == 'class' else 'relative squared error'})"
             for name, k in zip(names, output_kinds(reference), strict=True)]
    return "sum over the outputs " + ", ".join(parts)


def unit(reference: Sequence[np.ndarray]) -> str:
    kinds = output_kinds(reference)
    if kinds == ["class"]:
        return "KL to fp32 outputs (nats)"
    if set(kinds) == {"class"}:
        return f"KL to fp32 outputs (nats), summed over {len(reference)} outputs"
    return (f"divergence from fp32 summed over {len(reference)} outputs (class outputs: KL, "
            "nats; others: relative squared error)")


def fidelity(reference: Sequence[np.ndarray], got: Sequence[np.ndarray],
             names: Sequence[str]) -> list[dict[str, Any]]:
    """apply's per-output comparison of the runnable model with the fp32 model, each with
    `ok` against the stated thresholds."""
    rows = []
    for name, kind, r, g in zip(names, output_kinds(reference), reference, got, strict=True):
        row: dict[str, Any] = {"output": name, "kind": kind,
                               "max_abs_error": float(np.abs(g.astype(np.float64) - r).max())}
        if row["kind"] == "class":
            row["top1_agreement"] = float((r.argmax(1) == g.argmax(1)).mean())
            row["ok"] = row["top1_agreement"] >= AGREEMENT_WARN
        else:
            row["rel_sq_error"] = rel_sq_error(r, g)
            row["ok"] = row["rel_sq_error"] <= REL_SQ_ERROR_WARN
        rows.append(row)
    return rows
