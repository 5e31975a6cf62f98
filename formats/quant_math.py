"""The one definition of edgefit's stored number formats (numpy only, no torch).

Everything that quantises a weight -- the torch fake-quant, the ONNX writer
(:mod:`techniques.onnx`) and the flash image (:mod:`techniques.flash_image`) -- calls these
functions, so the three agree bit for bit.

Formats:

* ``fp32`` -- float32 weights and bias.
* ``fp16`` -- IEEE float16 weights and bias (round to nearest even, as ``numpy.astype``).
* ``int8``, ``int6``, ``int4``, ``int3``, ``int2`` -- symmetric ``b``-bit integer codes, one
  float32 scale per output channel, values in [-qmax, qmax] (``-2**(b-1)`` is never used), no
  zero point. The bias stays float32.
* ``uint8`` ... ``uint2`` -- asymmetric: unsigned codes in [0, 2**b - 1], one float32 scale and
  one ``b``-bit zero point per output channel (see :func:`quantize_asymmetric`).

Integer codes are stored bit-packed, LSB first, C order: ``ceil(n * b / 8)`` bytes (for int4
that is two per byte, low nibble first -- the ONNX INT4 layout; for 2 bits the ONNX INT2 layout).

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

from dataclasses import dataclass

import numpy as np

from edgefit_common.errors import PlanError

INT_BITS: tuple[int, ...] = (8, 6, 4, 3, 2)
"""Integer code widths a weight can be stored at."""

INT_FORMATS: dict[str, tuple[int, bool]] = {
    **{f"int{b}": (b, True) for b in INT_BITS},
    **{f"uint{b}": (b, False) for b in INT_BITS},
}
"""Integer storage forms: option -> (bits, symmetric)."""

OPTIONS: tuple[str, ...] = ("fp32", "fp16", *INT_FORMATS)
"""Per-layer weight storage forms (what the flash image and the ONNX writer take)."""

BITS: dict[str, int] = {"fp32": 32, "fp16": 16, **{k: b for k, (b, _) in INT_FORMATS.items()}}
"""Stored bits per weight value (scales and zero points not included)."""

BYTES_PER_WEIGHT: dict[str, float] = {k: b / 8 for k, b in BITS.items()}
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


def int_format(option: str) -> tuple[int, bool] | None:
    """(bits, symmetric) of an integer storage form; None for fp32 / fp16."""
    _check_option(option)
    return INT_FORMATS.get(option)


def storage_option(precision: str, symmetric: bool = True) -> str:
    """The storage form of a weight precision: ``int4`` -> ``int4`` (symmetric) or ``uint4``."""
    if precision in ("fp32", "fp16"):
        return precision
    option = precision if symmetric else "u" + precision
    _check_option(option)
    return option


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


def asymmetric_params(w: np.ndarray, bits: int, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(scales float32 (C,), zero_points uint8 (C,)) for asymmetric ``bits``-bit codes.

    Per channel, over a range that always holds 0 (so a zero weight stays exactly zero, as in
    onnxruntime's ``compute_scale_zp``)::

        lo, hi = min(min w[c], 0), max(max w[c], 0)
        scale  = float32((hi - lo) / (2**b - 1))          (float64, rounded once)
        zp     = clip(round_half_to_even(-lo / scale), 0, 2**b - 1)

    A channel with ``hi == lo`` (all zero) gets scale 1.0 and zero point 0.
    """
    a = as_float32(w)
    ax = _norm_axis(a, axis)
    levels = 2 ** _check_bits(bits) - 1
    moved = np.moveaxis(a, ax, 0).reshape(a.shape[ax], -1).astype(np.float64)
    lo = np.minimum(moved.min(axis=1, initial=0.0), 0.0)
    hi = np.maximum(moved.max(axis=1, initial=0.0), 0.0)
    scales = ((hi - lo) / levels).astype(np.float32)
    dead = (hi - lo) / levels < _MIN_SCALE
    scales[dead] = np.float32(1.0)
    zps = np.clip(np.round(-lo / scales.astype(np.float64)), 0, levels)
    zps[dead] = 0
    return scales, zps.astype(np.uint8)


def quantize_asymmetric(w: np.ndarray, bits: int, axis: int = 0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric per-channel codes: ``(q uint8, scales f32 (C,), zero_points uint8 (C,))`` with
    ``q = clip(round_half_to_even(w / scale) + zp, 0, 2**b - 1)`` (``w / scale`` in float32)."""
    a = as_float32(w)
    ax = _norm_axis(a, axis)
    scales, zps = asymmetric_params(a, bits, ax)
    shape = _channel_shape(a.ndim, ax, a.shape[ax])
    q = np.round(a / scales.reshape(shape)) + zps.reshape(shape).astype(np.float32)
    return np.clip(q, 0, 2**bits - 1).astype(np.uint8), scales, zps


def dequantize_asymmetric(q: np.ndarray, scales: np.ndarray, zero_points: np.ndarray,
                          axis: int = 0) -> np.ndarray:
    """``float32(q - zp[c]) * scale[c]`` (what ONNX DequantizeLinear computes)."""
    qa = np.asarray(q)
    ax = _norm_axis(qa, axis)
    zp = np.asarray(zero_points).reshape(-1)
    if zp.shape[0] != qa.shape[ax]:
        raise PlanError(f"{zp.shape[0]} zero points for {qa.shape[ax]} channels")
    shifted = qa.astype(np.int16) - zp.astype(np.int16).reshape(
        _channel_shape(qa.ndim, ax, qa.shape[ax]))
    return dequantize_per_channel(shifted, scales, ax)


def fake_quantize(w: np.ndarray, bits: int, axis: int = 0, symmetric: bool = True) -> np.ndarray:
    """The float32 weights ``bits``-bit per-channel codes decode to (symmetric or not)."""
    if not symmetric:
        return dequantize_asymmetric(*quantize_asymmetric(w, bits, axis), axis=axis)
    q, scales = quantize_per_channel(w, bits, axis)
    return dequantize_per_channel(q, scales, axis)


@dataclass(frozen=True)
class Codes:
    """A weight as an integer storage form holds it: codes, per-channel scales, zero points."""

    option: str
    q: np.ndarray  # int8 (symmetric) or uint8 (asymmetric) codes, shaped like the weight
    scales: np.ndarray  # float32 (C,)
    zero_points: np.ndarray | None  # uint8 (C,) for asymmetric forms

    @property
    def bits(self) -> int:
        return BITS[self.option]

    def dequantize(self, axis: int = 0) -> np.ndarray:
        if self.zero_points is None:
            return dequantize_per_channel(self.q, self.scales, axis)
        return dequantize_asymmetric(self.q, self.scales, self.zero_points, axis)


def quantize_option(w: np.ndarray, option: str, axis: int = 0) -> Codes:
    """``w`` in the integer storage form ``option`` (int8 ... uint2)."""
    fmt = int_format(option)
    if fmt is None:
        raise PlanError(f"{option} is not an integer storage form")
    bits, symmetric = fmt
    if symmetric:
        q, scales = quantize_per_channel(w, bits, axis)
        return Codes(option, q, scales, None)
    q, scales, zps = quantize_asymmetric(w, bits, axis)
    return Codes(option, q, scales, zps)


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
    return quantize_option(w, option, axis).dequantize(axis)


def apply_bias_option(b: np.ndarray, option: str) -> np.ndarray:
    """The float32 bias a layer computes with: fp16-rounded for ``fp16``, unchanged otherwise."""
    _check_option(option)
    if option == "fp16":
        return to_fp16_and_back(b)
    return np.asarray(b, dtype=np.float32).copy()


def packed_bytes(count: int, bits: int) -> int:
    """Bytes taken by ``count`` ``bits``-bit values packed LSB first: ``ceil(count * bits / 8)``."""
    if count < 0:
        raise PlanError(f"negative value count {count}")
    return (int(count) * _check_bits(bits) + 7) // 8


def pack_bits(q: np.ndarray, bits: int, signed: bool = True) -> bytes:
    """Pack integer codes into a little-endian bit stream, ``bits`` per value, C order.

    Signed codes must lie in [-2**(b-1), 2**(b-1) - 1] (two's complement), unsigned ones in
    [0, 2**b - 1]; the last byte is padded with zero bits.
    """
    b = _check_bits(bits)
    a = np.asarray(q).reshape(-1).astype(np.int16)
    lo, hi = (-(2 ** (b - 1)), 2 ** (b - 1) - 1) if signed else (0, 2**b - 1)
    if a.size and (a.min() < lo or a.max() > hi):
        kind = "int" if signed else "uint"
        raise PlanError(f"{kind}{b} values must lie in [{lo}, {hi}], "
                        f"got [{int(a.min())}, {int(a.max())}]")
    u = (a & (2**b - 1)).astype(np.uint8)
    if b == 8:
        return u.tobytes()
    stream = (u[:, None] >> np.arange(b, dtype=np.uint8)) & 1
    return np.packbits(stream.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, count: int, bits: int, signed: bool = True) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``count`` codes (int8 if signed, else uint8)."""
    b = _check_bits(bits)
    need = packed_bytes(count, b)
    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    if buf.size < need:
        raise PlanError(f"{b}-bit data holds {buf.size} bytes, {need} needed for {count} values")
    stream = np.unpackbits(buf[:need], bitorder="little")[: count * b]
    u = (stream.reshape(count, b).astype(np.int16) << np.arange(b, dtype=np.int16)).sum(axis=1)
    if not signed:
        return u.astype(np.uint8)
    return np.where(u >= 2 ** (b - 1), u - 2**b, u).astype(np.int8)


def pack_int4(q: np.ndarray) -> bytes:
    """Pack int4 values (in [-8, 7]) two per byte, low nibble first (ONNX INT4 ``raw_data``)."""
    return pack_bits(q, 4)


def unpack_int4(data: bytes, count: int) -> np.ndarray:
    """Inverse of :func:`pack_int4`: the first ``count`` signed nibbles as an int8 array."""
    return unpack_bits(data, count, 4)


def int4_packed_bytes(count: int) -> int:
    """Bytes taken by ``count`` packed int4 values: ``ceil(count / 2)``."""
    return packed_bytes(count, 4)


def stored_weight_bytes(option: str, weight_numel: int, out_channels: int) -> int:
    """Exact bytes the flash image stores for one layer's weights, scales included.

    int<b>: ceil(n*b/8) + 4*C; uint<b>: the same + ceil(C*b/8) zero points; fp16: 2n; fp32: 4n.
    """
    _check_option(option)
    n, c = int(weight_numel), int(out_channels)
    if n < 0 or c < 0:
        raise PlanError(f"negative size (numel {n}, channels {c})")
    fmt = INT_FORMATS.get(option)
    if fmt is not None:
        bits, symmetric = fmt
        return (packed_bytes(n, bits) + SCALE_BYTES * c
                + (0 if symmetric else packed_bytes(c, bits)))
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
    """Name of the stored weight element type: float32, float16, or the integer form (int4...)."""
    _check_option(option)
    return {"fp32": "float32", "fp16": "float16"}.get(option, option)


def distinct_values(a: np.ndarray) -> int:
    """Number of distinct values in ``a`` (``-0.0`` and ``0.0`` count as one)."""
    arr = np.asarray(a)
    if arr.size == 0:
        return 0
    return int(np.unique(arr.reshape(-1)).size)


__all__ = [
    "BITS",
    "INT_BITS",
    "INT_FORMATS",
    "Codes",
    "asymmetric_params",
    "dequantize_asymmetric",
    "int_format",
    "pack_bits",
    "packed_bytes",
    "quantize_asymmetric",
    "quantize_option",
    "storage_option",
    "unpack_bits",
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
