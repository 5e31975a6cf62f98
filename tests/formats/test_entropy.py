"""formats.entropy: canonical Huffman (exact sizes, real decoder) and zstd."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from edgefit_common.errors import PlanError
from formats import entropy as E


def _geometric(n: int, alphabet: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.minimum(rng.geometric(0.25, size=n) - 1, alphabet - 1)


@pytest.mark.parametrize("alphabet", [2, 5, 32, 256])
def test_huffman_round_trip_and_exact_size(alphabet):
    s = _geometric(5000, alphabet, seed=alphabet)
    data = E.huffman_encode(s, alphabet)
    assert len(data) == E.huffman_bytes(np.bincount(s, minlength=alphabet))
    back = E.huffman_decode(data)
    assert back.dtype == np.int64 and np.array_equal(back, s)


def test_huffman_matches_the_textbook_optimum():
    # CLRS's example: frequencies 45,13,12,16,9,5 have an optimal prefix code of 224 bits
    counts = np.array([45, 13, 12, 16, 9, 5])
    lengths = E.code_lengths(counts).astype(int)
    assert int((counts * lengths).sum()) == 224
    s = np.repeat(np.arange(6), counts)
    assert len(E.huffman_encode(s, 6)) == 6 + 3 + 224 // 8


def test_huffman_is_within_one_bit_of_the_entropy():
    s = _geometric(20000, 32, seed=3)
    counts = np.bincount(s, minlength=32)
    p = counts[counts > 0] / s.size
    h_bits = float(-(p * np.log2(p)).sum()) * s.size
    coded_bits = int((counts * E.code_lengths(counts).astype(int)).sum())
    assert h_bits <= coded_bits < h_bits + s.size


def test_canonical_codes_are_prefix_free_and_ordered():
    counts = np.array([0, 7, 1, 1, 30, 2, 0, 9, 4])
    lengths = E.code_lengths(counts)
    codes = E.canonical_codes(lengths)
    words = [format(int(c), f"0{int(n)}b") for c, n in zip(codes, lengths, strict=True) if n]
    assert len(words) == 7
    for a in words:
        assert not any(b != a and b.startswith(a) for b in words)
    assert lengths[0] == lengths[6] == 0
    assert sum(2.0 ** -int(n) for n in lengths if n) == 1.0  # a complete code


def test_code_lengths_are_limited_to_15_bits_and_still_decode():
    counts = np.array([2**i for i in range(24)])  # optimal tree is 23 deep
    lengths = E.code_lengths(counts)
    assert int(lengths.max()) == E.MAX_CODE_BITS
    s = np.concatenate([np.arange(24), np.repeat(23, 500), np.repeat(0, 3)])
    assert np.array_equal(E.huffman_decode(E.huffman_encode(s, 24)), s)


def test_degenerate_streams():
    one = np.full(17, 3)
    data = E.huffman_encode(one, 4)
    assert len(data) == 6 + 2 + 3  # one symbol: 1 bit each, 17 bits -> 3 bytes
    assert np.array_equal(E.huffman_decode(data), one)
    empty = E.huffman_encode(np.zeros(0, dtype=np.int64), 4)
    assert len(empty) == 8 and E.huffman_decode(empty).size == 0
    assert struct.unpack_from("<IH", data) == (17, 4)


def test_huffman_rejects_bad_input():
    with pytest.raises(PlanError, match=r"\[0, 3\]"):
        E.huffman_encode(np.array([0, 4]), 4)
    with pytest.raises(PlanError, match="integers"):
        E.huffman_encode(np.array([0.5]), 4)
    with pytest.raises(PlanError, match="alphabet size"):
        E.huffman_encode(np.array([0]), 0)


def test_huffman_decode_rejects_corrupt_streams():
    s = _geometric(2000, 16, seed=5)
    data = E.huffman_encode(s, 16)
    with pytest.raises(PlanError, match="truncated"):
        E.huffman_decode(data[:-20])
    with pytest.raises(PlanError, match="beyond"):
        E.huffman_decode(data + b"\x00")
    with pytest.raises(PlanError, match="no header"):
        E.huffman_decode(b"\x01")
    bad_table = bytearray(data)
    bad_table[6:14] = b"\x11" * 8  # every symbol 1 bit long: not a prefix code
    with pytest.raises(PlanError, match="prefix code"):
        E.huffman_decode(bytes(bad_table))


def test_zstd_round_trip_is_deterministic():
    raw = np.packbits(_geometric(4000, 2, seed=1).astype(np.uint8)).tobytes() * 3
    a, b = E.zstd_encode(raw), E.zstd_encode(raw)
    assert a == b and len(a) < len(raw)
    assert E.zstd_decode(a) == raw
    with pytest.raises(PlanError, match="zstd"):
        E.zstd_decode(b"not a frame")
