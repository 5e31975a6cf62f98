"""The one definition of edgefit's stored number formats (numpy only, no torch).

Everything that quantises a weight -- the torch fake-quant, the ONNX writer
(:mod:`executors.onnx_quant`) and the flash image (:mod:`executors.flash_image`) -- calls these
functions, so the three agree bit for bit.

Formats (symmetric everywhere, no zero points):

* ``fp32`` -- float32 weights and bias.
* ``fp16`` -- IEEE float16 weights and bias (round to nearest even, as ``numpy.astype``).
* ``int8`` -- int8 weights, one float32 scale per output channel, values in [-127, 127]
  (-128 is never used: the range is symmetric). The bias stays float32.
* ``int4`` -- int4 weights, one float32 scale per output channel, values in [-7, 7], packed two
  per byte, low nibble first (the ONNX INT4 convention). The bias stays float32.

Per-channel quantisation for ``bits`` b, with ``qmax = 2**(b-1) - 1``::

    scale[c] = float32(max|w[c]| / qmax)         (division done in float64, rounded once)
    q        = clip(round_half_to_even(w / scale[c]), -qmax, qmax)   (w / scale in float32)
    w_hat    = float32(q) * scale[c]

This is exactly what ``onnxruntime.quantization`` computes for symmetric per-channel QInt8
weights, so ORT's int8 weights equal these. Zero channels (max|w| == 0, or a scale that would be
below the smallest normal float32) get ``scale = 1.0`` and ``q = 0``: they dequantise to exact
zeros and never divide by zero (ORT uses the same guard). Non-finite weights raise ``PlanError``.
"""

from __future__ import annotations

import numpy as np

from edgefit.errors import PlanError

OPTIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "int4")
"""Per-layer compression options, as they appear in a plan."""

BITS: dict[str, int] = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}
"""Stored bits per weight value (scales not included)."""

BYTES_PER_WEIGHT: dict[str, float] = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5}
"""Bytes per weight value, scales not included; use :func:`stored_weight_bytes` for exact sizes."""

SCALE_BYTES = 4
"""Each per-channel scale is one float32."""

_MIN_SCALE = float(np.finfo(np.float32).tiny)


def _check_option(option: str) -> None:
    if option not in BITS:
        raise PlanError(f"unknown option {option!r}; allowed: {', '.join(OPTIONS)}")


def _check_bits(bits: int) -> int:
    if not isinstance(bits, (int, np.integer)) or not 2 <= int(bits) <= 8:
        raise PlanError(f"quantisation bits must be an integer in 2..8, got {bits!r}")
    return int(bits)


def qmax_for_bits(bits: int) -> int:
    """Largest stored magnitude for symmetric ``bits``-bit values: 127 for 8, 7 for 4."""
    return 2 ** (_check_bits(bits) - 1) - 1


def as_float32(w: np.ndarray, what: str = "weights") -> np.ndarray:
    """``w`` as a float32 array; ``PlanError`` if it holds NaN or inf."""
    a = np.asarray(w, dtype=np.float32)
    if a.size and not np.isfinite(a).all():
        raise PlanError(f"{what} contain NaN or infinite values; cannot quantise")
    return a


def _channel_shape(ndim: int, axis: int, channels: int) -> tuple[int, ...]:
    shape = [1] * ndim
    shape[axis] = channels
    return tuple(shape)


def _norm_axis(w: np.ndarray, axis: int) -> int:
    if w.ndim == 0:
        raise PlanError("cannot quantise a scalar per channel")
    if not -w.ndim <= axis < w.ndim:
        raise PlanError(f"channel axis {axis} out of range for a weight of shape {tuple(w.shape)}")
    return axis % w.ndim


def per_channel_scales(w: np.ndarray, bits: int, axis: int = 0) -> np.ndarray:
    """float32 scales of shape (C,): ``max|w|`` over each channel / qmax (zero channel -> 1.0)."""
    a = as_float32(w)
    ax = _norm_axis(a, axis)
    qmax = qmax_for_bits(bits)
    if a.shape[ax] == 0:
        return np.zeros((0,), dtype=np.float32)
    moved = np.moveaxis(a, ax, 0).reshape(a.shape[ax], -1)
    if moved.shape[1] == 0:
        absmax = np.zeros((a.shape[ax],), dtype=np.float32)
    else:
        absmax = np.abs(moved).max(axis=1)
    scale64 = absmax.astype(np.float64) / float(qmax)
    scales = scale64.astype(np.float32)
    scales[scale64 < _MIN_SCALE] = np.float32(1.0)
    return scales.reshape(-1)


def quantize_per_channel(w: np.ndarray, bits: int, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel quantisation: ``(q, scales)``, q int8 shaped like w, scales (C,) f32.

    ``q`` is held in int8 for every ``bits`` <= 8 (int4 values are in [-7, 7]).
    """
    a = as_float32(w)
    ax = _norm_axis(a, axis)
    qmax = qmax_for_bits(bits)
    scales = per_channel_scales(a, bits, ax)
    s = scales.reshape(_channel_shape(a.ndim, ax, a.shape[ax]))
    q = np.clip(np.round(a / s), -qmax, qmax).astype(np.int8)
    return q, scales


def dequantize_per_channel(q: np.ndarray, scales: np.ndarray, axis: int = 0) -> np.ndarray:
    """``float32(q) * scale[c]`` broadcast along ``axis``; returns float32."""
    qa = np.asarray(q)
    ax = _norm_axis(qa, axis)
    sc = np.asarray(scales, dtype=np.float32).reshape(-1)
    if sc.shape[0] != qa.shape[ax]:
        raise PlanError(
            f"{sc.shape[0]} scales for {qa.shape[ax]} channels (axis {ax} of {tuple(qa.shape)})"
        )
    return qa.astype(np.float32) * sc.reshape(_channel_shape(qa.ndim, ax, qa.shape[ax]))


def fake_quantize(w: np.ndarray, bits: int, axis: int = 0) -> np.ndarray:
    """``dequantize_per_channel(*quantize_per_channel(w, bits, axis), axis)`` (float32)."""
    q, scales = quantize_per_channel(w, bits, axis)
    return dequantize_per_channel(q, scales, axis)


def to_fp16_and_back(w: np.ndarray) -> np.ndarray:
    """Round to float16 (nearest even; overflow -> inf) and back to float32."""
    return np.asarray(w, dtype=np.float32).astype(np.float16).astype(np.float32)


def check_fp16_range(w: np.ndarray, what: str = "weights") -> None:
    """Raise ``PlanError`` if ``w`` has values beyond float16's range (they would become inf)."""
    a = np.asarray(w, dtype=np.float32)
    if a.size and float(np.abs(a).max()) > float(np.finfo(np.float16).max):
        raise PlanError(f"{what} exceed the float16 range (max |x| = {float(np.abs(a).max()):g})")


def apply_option(w: np.ndarray, option: str, axis: int = 0) -> np.ndarray:
    """The float32 weights a layer computes with under ``option`` (what the device sees)."""
    _check_option(option)
    if option == "fp32":
        return np.asarray(w, dtype=np.float32).copy()
    if option == "fp16":
        return to_fp16_and_back(w)
    return fake_quantize(w, BITS[option], axis)


def apply_bias_option(b: np.ndarray, option: str) -> np.ndarray:
    """The float32 bias a layer computes with: fp16-rounded for ``fp16``, unchanged otherwise."""
    _check_option(option)
    if option == "fp16":
        return to_fp16_and_back(b)
    return np.asarray(b, dtype=np.float32).copy()


def pack_int4(q: np.ndarray) -> bytes:
    """Pack int4 values (in [-8, 7]) two per byte, low nibble first; an odd count is padded with 0.

    Element ``2k`` goes into the low nibble of byte ``k``, element ``2k+1`` into the high
    nibble (two's complement nibbles), the ONNX INT4 ``raw_data`` layout. Flattening is C order.
    """
    a = np.asarray(q).reshape(-1)
    if a.size and (a.min() < -8 or a.max() > 7):
        raise PlanError(f"int4 values must lie in [-8, 7], got [{int(a.min())}, {int(a.max())}]")
    nib = (a.astype(np.int16) & 0x0F).astype(np.uint8)
    if nib.size % 2:
        nib = np.concatenate([nib, np.zeros(1, dtype=np.uint8)])
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8).tobytes()


def unpack_int4(data: bytes, count: int) -> np.ndarray:
    """Inverse of :func:`pack_int4`: the first ``count`` signed nibbles as an int8 array."""
    need = int4_packed_bytes(count)
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    if buf.size < need:
        raise PlanError(f"int4 data holds {buf.size} bytes, {need} needed for {count} values")
    buf = buf[:need]
    out = np.empty(need * 2, dtype=np.int8)
    lo = (buf & 0x0F).astype(np.int8)
    hi = (buf >> 4).astype(np.int8)
    out[0::2] = np.where(lo > 7, lo - 16, lo)
    out[1::2] = np.where(hi > 7, hi - 16, hi)
    return out[:count]


def int4_packed_bytes(count: int) -> int:
    """Bytes taken by ``count`` packed int4 values: ``ceil(count / 2)``."""
    if count < 0:
        raise PlanError(f"negative value count {count}")
    return (int(count) + 1) // 2


def stored_weight_bytes(option: str, weight_numel: int, out_channels: int) -> int:
    """Exact bytes the flash image stores for one layer's weights, scales included.

    int4: ceil(n/2) + 4*C; int8: n + 4*C; fp16: 2n; fp32: 4n.
    """
    _check_option(option)
    n, c = int(weight_numel), int(out_channels)
    if n < 0 or c < 0:
        raise PlanError(f"negative size (numel {n}, channels {c})")
    if option == "int4":
        return int4_packed_bytes(n) + SCALE_BYTES * c
    if option == "int8":
        return n + SCALE_BYTES * c
    if option == "fp16":
        return 2 * n
    return 4 * n


def stored_bias_bytes(option: str, bias_numel: int) -> int:
    """Exact bytes the flash image stores for one layer's bias: fp16 for ``fp16``, else fp32."""
    _check_option(option)
    n = int(bias_numel)
    if n < 0:
        raise PlanError(f"negative bias size {n}")
    return 2 * n if option == "fp16" else 4 * n


def bias_dtype(option: str) -> str:
    """numpy dtype name the bias is stored in under ``option``."""
    _check_option(option)
    return "float16" if option == "fp16" else "float32"


def weight_dtype(option: str) -> str:
    """Name of the stored weight element type: float32, float16, int8 or int4."""
    _check_option(option)
    return {"fp32": "float32", "fp16": "float16", "int8": "int8", "int4": "int4"}[option]


def distinct_values(a: np.ndarray) -> int:
    """Number of distinct values in ``a`` (``-0.0`` and ``0.0`` count as one)."""
    arr = np.asarray(a)
    if arr.size == 0:
        return 0
    return int(np.unique(arr.reshape(-1)).size)


__all__ = [
    "BITS",
    "BYTES_PER_WEIGHT",
    "OPTIONS",
    "SCALE_BYTES",
    "apply_bias_option",
    "as_float32",
    "apply_option",
    "bias_dtype",
    "check_fp16_range",
    "dequantize_per_channel",
    "distinct_values",
    "fake_quantize",
    "int4_packed_bytes",
    "pack_int4",
    "per_channel_scales",
    "qmax_for_bits",
    "quantize_per_channel",
    "stored_bias_bytes",
    "stored_weight_bytes",
    "to_fp16_and_back",
    "unpack_int4",
    "weight_dtype",
]
