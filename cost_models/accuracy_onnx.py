"""Accuracy cost of each (layer, option) for a model given only as ONNX, measured with onnxruntime.

The same estimator as :func:`cost_models.accuracy.measured_output_kl` -- mean KL(fp32 ||
quantised) of the softmax outputs with one layer at one option and every other layer fp32 -- but
the quantised model is the real rewritten ONNX (:func:`techniques.onnx.writer.quantize_onnx`) run
by onnxruntime, not a torch fake-quant copy. Nothing here imports torch.

Batch: a model with a dynamic batch dimension runs in chunks of :data:`PREDICT_BATCH` samples;
a fixed batch N (usually 1, as exporters write it) runs N samples at a time, the last chunk
padded by repeating its last sample (the padded outputs are dropped).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cost_models.estimate import AccuracyEstimate
from cost_models.output_fidelity import describe, total_divergence, unit
from edgefit_common.errors import DataError, PlanError
from edgefit_common.progress import track
from techniques.onnx.writer import ONNX_OPTIONS as OPTIONS
from techniques.onnx.writer import ort_session_options, quantize_onnx

PREDICT_BATCH = 256
CALIBRATION_SAMPLES = 128
UNIT = "KL to fp32 outputs (nats)"


def _session(path: Path) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(
            str(path), sess_options=ort_session_options(threads=1),
            providers=["CPUExecutionProvider"],
        )  # fmt: skip
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PlanError(f"onnxruntime cannot load {path}: {first}") from None


def _run_all(sess: Any, x: np.ndarray, where: str) -> list[np.ndarray]:
    """Every output of the model for every sample of ``x`` (float32, each (N, ...))."""
    inp = sess.get_inputs()[0]
    shape = list(inp.shape)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != len(shape):
        raise DataError(
            f"inputs of shape {tuple(x.shape)} do not fit {where}: its input {inp.name!r} has "
            f"rank {len(shape)}"
        )
    for axis, (want, got) in enumerate(zip(shape[1:], x.shape[1:], strict=True), start=1):
        if isinstance(want, int) and want != got:
            raise DataError(
                f"inputs of shape {tuple(x.shape)} do not fit {where}: axis {axis} is {got}, "
                f"the model needs {want}"
            )
    if len(x) == 0:
        raise DataError(f"no samples to run {where} on")
    fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
    step = fixed or PREDICT_BATCH
    chunks: list[list[np.ndarray]] = []
    try:
        for start in range(0, len(x), step):
            chunk = x[start : start + step]
            n = len(chunk)
            if fixed is not None and n < fixed:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], fixed - n, axis=0)])
            outs = sess.run(None, {inp.name: chunk})
            chunks.append([np.asarray(o, dtype=np.float32)[:n] for o in outs])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PlanError(f"onnxruntime failed to run {where}: {first}") from None
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def _run(sess: Any, x: np.ndarray, where: str) -> np.ndarray:
    return _run_all(sess, x, where)[0]


def output_names(path: Path) -> list[str]:
    return [o.name for o in _session(Path(path)).get_outputs()]


def onnx_predict_all(path: Path, x: np.ndarray) -> list[np.ndarray]:
    """Every output of the model for every sample of ``x``, in the graph's output order."""
    path = Path(path)
    return _run_all(_session(path), x, str(path))


def onnx_predict(path: Path, x: np.ndarray) -> np.ndarray:
    """The model's first output (logits) for every sample of ``x``, float32, shape (N, ...)."""
    path = Path(path)
    return _run(_session(path), x, str(path))


def onnx_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of the model's argmax over axis 1 against ``y``."""
    y = np.asarray(y).reshape(-1)
    if len(y) != len(x):
        raise DataError(f"{len(x)} inputs but {len(y)} labels")
    logits = onnx_predict(path, x)
    return float(np.mean(np.argmax(logits, axis=1) == y))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def mean_kl(reference_logits: np.ndarray, logits: np.ndarray) -> float:
    """KL(softmax(reference) || softmax(logits)) over axis 1, summed, divided by N (batchmean,
    as ``torch.nn.functional.kl_div(..., reduction="batchmean")``); clipped at 0.

    ``PlanError`` if either set of logits is not finite (a number for it would be made up).
    """
    if not (np.isfinite(reference_logits).all() and np.isfinite(logits).all()):
        raise PlanError("model outputs contain NaN or infinite values; KL is undefined")
    p_log = _log_softmax(reference_logits)
    q_log = _log_softmax(logits)
    kl = float(np.sum(np.exp(p_log) * (p_log - q_log)) / len(reference_logits))
    return max(0.0, kl)


def onnx_output_kl(
    prepared: Path, layers: list[str], options: list[str], x: np.ndarray, workdir: Path
) -> AccuracyEstimate:
    """KL(fp32 || quantised) with only that layer at that option (fp32 elsewhere), via ORT.

    ``prepared`` is a model written by :func:`cost_models.capture_onnx.prepare_onnx`; ``x`` the
    calibration inputs (N, ...). Each quantised model is written to ``workdir`` (created if
    needed) and deleted after use; its int8 activation ranges come from ``x[:128]``.
    """
    prepared, workdir = Path(prepared), Path(workdir)
    unknown = [o for o in options if o not in OPTIONS]
    if unknown:
        raise PlanError(f"unknown option(s) {', '.join(unknown)}; allowed: {', '.join(OPTIONS)}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    sess = _session(prepared)
    reference = _run_all(sess, x, str(prepared))
    workdir.mkdir(parents=True, exist_ok=True)
    out: dict[tuple[str, str], float] = {}
    pairs = [(layer, option) for layer in layers for option in options]
    for layer, option in track(pairs, "sensitivity (layer x option)"):
        out[layer, option] = (0.0 if option == "fp32" else
                              _one_layer_kl(prepared, reference, layer, option, (), x, workdir))
    names = [o.name for o in sess.get_outputs()]
    compared = ("mean KL divergence of the outputs" if len(reference) == 1 else
                describe(reference, names) + " (every output counts)")
    return AccuracyEstimate(
        out,
        unit=unit(reference),
        provenance=f"measured at ONNX level (onnxruntime, CPU): {compared} from the fp32 "
        f"model's on {len(x)} calibration images, one layer "
        "quantised at a time (int8 ranges from the first "
        f"{min(len(x), CALIBRATION_SAMPLES)}); plan totals add them (interactions "
        "not modelled)",
    )


def _one_layer_kl(prepared: Path, reference: list[np.ndarray], layer: str, form: str,
                  techniques: Sequence[Any], x: np.ndarray, workdir: Path) -> float:
    """Divergence from ``reference`` with only ``layer`` changed: its weight initializer after
    its array ``techniques`` (zeros, a codebook; techniques.onnx.weights), then written in
    ``form`` by the quantiser; every other layer fp32. The files are deleted after use."""
    from techniques.onnx.weights import with_weight_techniques

    tag = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    start, tmp = prepared, workdir / f"kl_{tag}_{form}.onnx"
    float_copy = workdir / f"kl_{tag}_float.onnx"
    what = f"{layer} at {form}" + (f" after {', '.join(t.technique for t in techniques)}"
                                   if techniques else "")
    try:
        if techniques:
            with_weight_techniques(prepared, float_copy, {layer: techniques})
            start = float_copy
        quantize_onnx(start, tmp, {layer: form}, x[:CALIBRATION_SAMPLES])
        got = _run_all(_session(tmp), x, f"{prepared} with {what}")
    finally:
        for path in (tmp, float_copy):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    try:
        return total_divergence(reference, got)
    except PlanError as exc:
        raise PlanError(f"{prepared}: layer {what}: {exc}") from None


def onnx_technique_kl(prepared: Path, variants: Mapping[tuple[str, str], Sequence[Any]],
                      x: np.ndarray, workdir: Path,
                      on_value: Callable[[tuple[str, str], float], None] | None = None
                      ) -> dict[tuple[str, str], float]:
    """The same divergence as :func:`onnx_output_kl` for options whose configs hold array
    techniques (unstructured pruning, weight sharing): per (layer, option), the layer's
    initializer pruned / shared as the configs say, then quantised to its kernel's form
    (techniques.quantize.onnx_option), every other layer fp32. ``on_value`` gets each value as
    it is measured (the row cache)."""
    from techniques.onnx.weights import array_techniques
    from techniques.quantize import onnx_option

    prepared, workdir = Path(prepared), Path(workdir)
    x = np.ascontiguousarray(x, dtype=np.float32)
    reference = _run_all(_session(prepared), x, str(prepared))
    workdir.mkdir(parents=True, exist_ok=True)
    out = {}
    for (layer, option), configs in track(list(variants.items()),
                                          "sensitivity of sparse and shared options"):
        out[layer, option] = _one_layer_kl(prepared, reference, layer, onnx_option(configs),
                                           array_techniques(configs), x, workdir)
        if on_value is not None:
            on_value((layer, option), out[layer, option])
    return out


__all__ = ["UNIT", "mean_kl", "onnx_accuracy", "onnx_output_kl", "onnx_predict",
           "onnx_predict_all", "onnx_technique_kl", "output_names"]
