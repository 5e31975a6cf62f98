"""formats.sparse_format: honest sparse storage (bitmask vs CSR), exact size prediction."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgefit_common.errors import PlanError
from formats import quant_math as qm
from formats import sparse_format as sf


def _sparse_weight(shape: tuple[int, ...], density: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(shape) * 0.1).astype(np.float32)
    keep = rng.random(shape) < density
    if density >= 1.0:
        keep[...] = True
    w[~keep] = 0.0
    return w


def _values(w: np.ndarray, bits: int) -> np.ndarray:
    if bits == 32:
        return w
    if bits == 16:
        return w.astype(np.float16)
    return qm.quantize_per_channel(w, bits, axis=0)[0]


@pytest.mark.parametrize("bits", [4, 8, 16, 32])
@pytest.mark.parametrize("density", [0.0, 0.02, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("shape", [(16, 3, 3, 3), (24, 64), (10,), (300, 1)])
def test_encode_size_is_predicted_and_decode_is_exact(bits, density, shape):
    v = _values(_sparse_weight(shape, density, seed=bits), bits)
    nnz = int((v != 0).sum())
    rows = shape[0] if len(shape) > 1 else 1
    fmt, data = sf.encode(v, bits)
    assert (fmt, len(data)) == sf.sparse_bytes(v.size, nnz, rows, bits)
    sizes = {f: sf.format_bytes(f, v.size, nnz, rows, bits) for f in sf.FORMATS}
    assert len(data) == min(sizes.values())
    back = sf.decode(fmt, data, shape, bits)
    assert back.shape == v.shape
    assert back.dtype == (np.int8 if bits <= 8 else np.dtype(f"float{bits}"))
    np.testing.assert_array_equal(back, v)
    for forced in ("bitmask", "csr", "dense"):  # every format round-trips at its predicted size
        f2, d2 = sf.encode(v, bits, formats=(forced,))
        assert f2 == forced and len(d2) == sf.format_bytes(forced, v.size, nnz, rows, bits)
        np.testing.assert_array_equal(sf.decode(f2, d2, shape, bits), v)


@pytest.mark.parametrize("bits", [2, 3, 5, 6, 7])
def test_sub_byte_codes_round_trip(bits):
    w = _sparse_weight((12, 40), 0.25, seed=bits)
    q = qm.quantize_per_channel(w, bits, axis=0)[0]
    fmt, data = sf.encode(q, bits)
    np.testing.assert_array_equal(sf.decode(fmt, data, q.shape, bits), q)
    assert sf.value_bytes(int((q != 0).sum()), bits) == -(-int((q != 0).sum()) * bits // 8)


def test_int4_values_are_packed_like_quant_math():
    q = np.array([-7, 3, 0, 7, -1, 5, 2], dtype=np.int8)
    assert sf.pack_values(q, 4) == qm.pack_int4(q)
    assert sf.pack_values(q, 8) == q.tobytes()
    np.testing.assert_array_equal(sf.unpack_values(qm.pack_int4(q), q.size, 4), q)


def test_hand_computed_sizes():
    # 4 x 8 int8, 3 nonzeros: bitmask 4 + 3 = 7; csr 5 ptr (uint8) + 3 cols (uint8) + 3 = 11
    assert sf.sparse_bytes(32, 3, 4, 8) == ("bitmask", 7)
    assert sf.format_bytes("csr", 32, 3, 4, 8) == 11
    # 256 x 1000 int4, 10 nonzeros: ptr uint32 (n = 256000), cols uint16 (max index 999)
    assert sf.format_bytes("bitmask", 256_000, 10, 256, 4) == 32_000 + 5
    assert sf.sparse_bytes(256_000, 10, 256, 4) == ("csr", 257 * 4 + 10 * 2 + 5)
    # density 0: no values at all; density 1: both sparse formats cost more than dense
    assert sf.sparse_bytes(64, 0, 8, 8) == ("bitmask", 8)
    fmt, size = sf.sparse_bytes(64, 64, 8, 8)
    assert size > sf.dense_bytes(64, 8) == 64
    assert sf.sparse_bytes(64, 64, 8, 8, formats=("bitmask", "csr", "dense")) == ("dense", 64)
    # a tie (1 x 16, empty: mask 2 bytes, pointers 2 bytes) goes to the first format listed
    assert sf.sparse_bytes(16, 0, 1, 8) == ("bitmask", 2)
    assert sf.sparse_bytes(16, 0, 1, 8, formats=("csr", "bitmask")) == ("csr", 2)


def test_index_dtype_boundaries():
    assert sf.index_dtype(255).itemsize == 1
    assert sf.index_dtype(256).itemsize == 2
    assert sf.index_dtype(65_535).itemsize == 2
    assert sf.index_dtype(65_536).itemsize == 4
    with pytest.raises(PlanError):
        sf.index_dtype(2**32)


def test_bad_inputs_raise_plan_error():
    with pytest.raises(PlanError, match="integer codes"):
        sf.encode(np.ones((2, 2), dtype=np.float32), 8)
    with pytest.raises(PlanError, match="lie in"):
        sf.encode(np.array([[9, 0]], dtype=np.int8), 4)
    with pytest.raises(PlanError, match="float array"):
        sf.encode(np.array([[1, 0]], dtype=np.int8), 32)
    with pytest.raises(PlanError, match="value_bits"):
        sf.sparse_bytes(10, 1, 1, 12)
    with pytest.raises(PlanError):
        sf.sparse_bytes(10, 11, 1, 8)
    fmt, data = sf.encode(np.array([[1, 0, 0, 2]], dtype=np.int8), 8, formats=("csr",))
    with pytest.raises(PlanError):
        sf.decode(fmt, data[:-1], (1, 4), 8)
    with pytest.raises(PlanError):
        sf.decode("coo", data, (1, 4), 8)
    bad = bytearray(data)
    bad[3] = 0  # second column index equals the first: not increasing
    with pytest.raises(PlanError):
        sf.decode("csr", bytes(bad), (1, 4), 8)


def test_no_torch_import():
    code = "import sys, formats.sparse_format; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
