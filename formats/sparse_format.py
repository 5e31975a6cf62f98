"""The honest storage cost of an unstructured-sparse weight (numpy only, no torch).

A pruned weight is stored as its nonzero values plus where they are. Two formats, and a layer
takes whichever is smaller for its shape and nonzero count (ties go to ``bitmask``):

* ``bitmask`` -- one bit per weight (1 = nonzero), packed LSB first (``np.packbits`` with
  ``bitorder="little"``, C order), ``ceil(n / 8)`` bytes; then the nonzero values in C order.
* ``csr`` -- compressed sparse rows over the weight viewed as ``rows x cols`` (``rows`` =
  ``shape[0]``, the output channels; ``cols`` = the rest flattened in C order): ``rows + 1`` row
  pointers, then one column index per nonzero, then the nonzero values. Each index array uses the
  smallest unsigned little-endian dtype (uint8, uint16, uint32) that holds its largest possible
  value *given the shape*: row pointers go up to ``n = rows * cols`` (the pointer dtype must be
  known before the data is read), column indices up to ``cols - 1``.

The nonzero values are stored as ``value_bits`` says:

* 2..8 -- signed integer codes (``quant_math.quantize_per_channel``'s ``q``; zero weights have
  code 0), two's complement, bit-packed LSB first: ``ceil(nnz * bits / 8)`` bytes. For 4 bits
  that is exactly ``quant_math.pack_bits`` (for 4 bits: low nibble first; for 8: int8 bytes).
* 16 -- float16, 32 -- float32 (little-endian); ``-0.0`` counts as zero (decodes as ``0.0``).

Per-channel scales and the bias are not part of this payload: the flash image stores them as for
a dense layer. Neither is the shape or the format name: they go in the image's JSON header.

So for ``n`` weights, ``nnz`` nonzeros, ``rows`` rows and ``b`` value bits::

    values  = ceil(nnz * b / 8)
    bitmask = ceil(n / 8) + values
    csr     = (rows + 1) * size(n) + nnz * size(cols - 1) + values,   size(x) in {1, 2, 4}

:func:`sparse_bytes` predicts exactly the length of what :func:`encode` writes; :func:`decode`
restores the array exactly. :func:`dense_bytes` is the dense alternative (``ceil(n * b / 8)``)
a caller should compare against: at high density both sparse formats cost more than dense.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgefit_common.errors import PlanError
from formats import quant_math

FORMATS: tuple[str, ...] = ("bitmask", "csr")
"""The sparse formats, in tie-break order."""

VALUE_BITS: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 16, 32)

_FLOAT_DTYPE = {16: "<f2", 32: "<f4"}


def _check_value_bits(value_bits: int) -> int:
    if isinstance(value_bits, bool) or not isinstance(value_bits, (int, np.integer)) or \
            int(value_bits) not in VALUE_BITS:
        raise PlanError(f"value_bits must be one of {VALUE_BITS}, got {value_bits!r}")
    return int(value_bits)


def index_dtype(max_value: int) -> np.dtype:
    """The smallest little-endian unsigned dtype holding ``max_value``: uint8, uint16 or uint32."""
    v = int(max_value)
    if v < 0:
        raise PlanError(f"negative index bound {v}")
    for dt in ("u1", "<u2", "<u4"):
        if v <= np.iinfo(np.dtype(dt)).max:
            return np.dtype(dt)
    raise PlanError(f"index {v} does not fit 32 bits")


def value_bytes(nnz: int, value_bits: int) -> int:
    """Bytes of ``nnz`` stored values: ``ceil(nnz * bits / 8)``."""
    return (int(nnz) * _check_value_bits(value_bits) + 7) // 8


def dense_bytes(n: int, value_bits: int) -> int:
    """Bytes of all ``n`` values stored densely, packed the same way: ``ceil(n * bits / 8)``."""
    return value_bytes(n, value_bits)


def _check_sizes(n: int, nnz: int, rows: int) -> tuple[int, int, int, int]:
    n, nnz, rows = int(n), int(nnz), int(rows)
    if n < 0 or nnz < 0 or rows < 1:
        raise PlanError(f"bad sparse sizes: n={n}, nnz={nnz}, rows={rows}")
    if nnz > n:
        raise PlanError(f"{nnz} nonzeros in {n} weights")
    if n % rows:
        raise PlanError(f"{n} weights do not split into {rows} rows")
    return n, nnz, rows, n // rows


def format_bytes(fmt: str, n: int, nnz: int, rows: int, value_bits: int) -> int:
    """Exact encoded size of one format (``bitmask``, ``csr`` or ``dense``)."""
    n, nnz, rows, cols = _check_sizes(n, nnz, rows)
    vals = value_bytes(nnz, value_bits)
    if fmt == "bitmask":
        return (n + 7) // 8 + vals
    if fmt == "csr":
        return ((rows + 1) * index_dtype(n).itemsize
                + nnz * index_dtype(max(cols - 1, 0)).itemsize + vals)
    if fmt == "dense":
        return dense_bytes(n, value_bits)
    raise PlanError(f"unknown sparse format {fmt!r}; allowed: bitmask, csr, dense")


def sparse_bytes(n: int, nnz: int, rows: int, value_bits: int,
                 formats: Sequence[str] = FORMATS) -> tuple[str, int]:
    """``(format, bytes)``: the smallest of ``formats`` (default bitmask vs CSR; ties: first).

    Exactly ``len(encode(...)[1])`` for an array with these sizes. Pass
    ``formats=("bitmask", "csr", "dense")`` to let dense storage win where it is smaller.
    """
    if not formats:
        raise PlanError("no storage format to choose from")
    sizes = [(format_bytes(f, n, nnz, rows, value_bits), i, f) for i, f in enumerate(formats)]
    size, _, fmt = min(sizes)
    return fmt, size


def _rows_of(shape: tuple[int, ...]) -> int:
    if len(shape) == 0:
        raise PlanError("cannot store a scalar as a sparse weight")
    return max(int(shape[0]), 1) if len(shape) > 1 else 1


def _values_array(a: np.ndarray, value_bits: int) -> np.ndarray:
    bits = _check_value_bits(value_bits)
    if bits in _FLOAT_DTYPE:
        if not np.issubdtype(a.dtype, np.floating):
            raise PlanError(f"{bits}-bit values must be a float array, got {a.dtype}")
        out = a.astype(_FLOAT_DTYPE[bits])
        if out.size and not np.isfinite(out).all():
            raise PlanError(f"weights are not finite as float{bits}")
        return out
    if not np.issubdtype(a.dtype, np.integer):
        raise PlanError(f"{bits}-bit values must be integer codes, got {a.dtype} "
                        "(quantise first: quant_math.quantize_per_channel)")
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if a.size and (int(a.min()) < lo or int(a.max()) > hi):
        raise PlanError(f"{bits}-bit codes must lie in [{lo}, {hi}], "
                        f"got [{int(a.min())}, {int(a.max())}]")
    return a.astype(np.int64)


def pack_values(values: np.ndarray, value_bits: int) -> bytes:
    """The stored bytes of a 1-D array of values (see the module docstring)."""
    bits = _check_value_bits(value_bits)
    v = _values_array(np.asarray(values).reshape(-1), bits)
    if bits in _FLOAT_DTYPE:
        return v.tobytes()
    return quant_math.pack_bits(v, bits)  # the one bit-packing of integer codes


def unpack_values(data: bytes, count: int, value_bits: int) -> np.ndarray:
    """Inverse of :func:`pack_values`: int8 codes for <= 8 bits, float16/float32 otherwise."""
    bits = _check_value_bits(value_bits)
    need = value_bytes(count, bits)
    if len(data) != need:
        raise PlanError(f"{count} {bits}-bit values take {need} bytes, got {len(data)}")
    if bits in _FLOAT_DTYPE:
        return np.frombuffer(data, dtype=_FLOAT_DTYPE[bits]).copy()
    return quant_math.unpack_bits(data, count, bits)


def encode(q_or_w: np.ndarray, value_bits: int,
           formats: Sequence[str] = FORMATS, mask: np.ndarray | None = None) -> tuple[str, bytes]:
    """Store a weight sparsely: ``(format_name, payload)`` in the smallest of ``formats``.

    ``q_or_w`` is integer codes for ``value_bits`` <= 8, floats for 16/32. Its shape is not
    stored (the caller keeps it, e.g. in the flash header) and is needed by :func:`decode`.
    ``mask``: the positions to store (default: the nonzero values). Giving the pruning mask
    makes the size depend on the pruning alone, not on which kept values quantise to 0.
    """
    a = np.asarray(q_or_w)
    shape = tuple(int(s) for s in a.shape)
    rows = _rows_of(shape)
    vals = _values_array(a, value_bits)
    flat = vals.reshape(-1)
    nz = (np.asarray(mask).reshape(-1).astype(bool) | (flat != 0)) if mask is not None else (
        flat != 0)
    nnz = int(nz.sum())
    fmt, size = sparse_bytes(flat.size, nnz, rows, value_bits, formats)
    packed_vals = pack_values(flat[nz], value_bits)
    if fmt == "bitmask":
        data = np.packbits(nz.astype(np.uint8), bitorder="little").tobytes() + packed_vals
    elif fmt == "csr":
        cols = flat.size // rows
        grid = nz.reshape(rows, cols)
        ptr = np.concatenate([[0], np.cumsum(grid.sum(axis=1))]).astype(index_dtype(flat.size))
        col_idx = np.nonzero(grid)[1].astype(index_dtype(max(cols - 1, 0)))
        data = ptr.tobytes() + col_idx.tobytes() + packed_vals
    else:  # dense
        data = pack_values(flat, value_bits)
    if len(data) != size:  # the prediction is the contract; never let them drift apart
        raise AssertionError(f"{fmt}: encoded {len(data)} bytes, predicted {size}")
    return fmt, data


def decode(format_name: str, data: bytes, shape: Sequence[int], value_bits: int) -> np.ndarray:
    """Inverse of :func:`encode`: the array of ``shape`` (int8 codes, or float16/float32).

    Validates everything it reads (lengths, pointer monotonicity, index range) and raises
    ``PlanError`` on a malformed payload.
    """
    shp = tuple(int(s) for s in shape)
    rows = _rows_of(shp)
    n = int(np.prod(shp)) if shp else 0
    bits = _check_value_bits(value_bits)
    data = bytes(data)
    out_dtype = np.dtype(_FLOAT_DTYPE[bits]) if bits in _FLOAT_DTYPE else np.dtype(np.int8)
    flat = np.zeros(n, dtype=out_dtype)
    if format_name == "dense":
        return unpack_values(data, n, bits).reshape(shp)
    if format_name == "bitmask":
        mbytes = (n + 7) // 8
        if len(data) < mbytes:
            raise PlanError(f"bitmask payload holds {len(data)} bytes, mask needs {mbytes}")
        mask = np.unpackbits(np.frombuffer(data[:mbytes], dtype=np.uint8),
                             bitorder="little")[:n].astype(bool)
        vals = unpack_values(data[mbytes:], int(mask.sum()), bits)
        flat[mask] = vals
        return flat.reshape(shp)
    if format_name == "csr":
        cols = n // rows
        pdt, cdt = index_dtype(n), index_dtype(max(cols - 1, 0))
        pbytes = (rows + 1) * pdt.itemsize
        if len(data) < pbytes:
            raise PlanError(f"csr payload holds {len(data)} bytes, row pointers need {pbytes}")
        ptr = np.frombuffer(data[:pbytes], dtype=pdt).astype(np.int64)
        nnz = int(ptr[-1])
        if ptr[0] != 0 or (np.diff(ptr) < 0).any() or (np.diff(ptr) > cols).any() or nnz > n:
            raise PlanError("csr row pointers are not a valid sequence")
        cbytes = nnz * cdt.itemsize
        col = np.frombuffer(data[pbytes:pbytes + cbytes], dtype=cdt).astype(np.int64)
        if col.size != nnz or (nnz and col.max() >= max(cols, 1)):
            raise PlanError("csr column indices are truncated or out of range")
        row = np.repeat(np.arange(rows), np.diff(ptr))
        if nnz > 1 and ((np.diff(col) <= 0) & (np.diff(row) == 0)).any():
            raise PlanError("csr column indices are not increasing within a row")
        vals = unpack_values(data[pbytes + cbytes:], nnz, bits)
        grid = flat.reshape(rows, cols)
        grid[row, col] = vals
        return grid.reshape(shp)
    raise PlanError(f"unknown sparse format {format_name!r}; allowed: bitmask, csr, dense")


__all__ = [
    "FORMATS",
    "VALUE_BITS",
    "decode",
    "dense_bytes",
    "encode",
    "format_bytes",
    "index_dtype",
    "pack_values",
    "sparse_bytes",
    "unpack_values",
    "value_bytes",
]
