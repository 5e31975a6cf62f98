"""Entropy coding of stored streams: canonical Huffman (exact byte count, real decoder) and zstd.

The third stage of Deep Compression: after pruning and weight sharing, the codebook indices
and the sparse positions are far from uniform, so a variable-length code stores them in fewer
bits. numpy only (``zstandard`` is imported lazily, only for ``zstd``).

Huffman stream layout (little-endian)::

    count        uint32   number of symbols
    alphabet     uint16   A, symbols are 0..A-1 (1 <= A <= 65535)
    lengths      ceil(A / 2) bytes: the code length of each symbol (0 = unused, 1..15),
                          4 bits each, low nibble first
    bits         the codes of the symbols in order, most significant bit first,
                 packed MSB-first into bytes, the last byte zero-padded

The codes are *canonical* (assigned from the lengths alone: sorted by (length, symbol)), so the
length table is all a decoder needs. Lengths are limited to 15 bits: when the optimal tree is
deeper, the counts are halved (never below 1) and the tree rebuilt, a deterministic heuristic
that costs a little optimality only on extremely skewed inputs. A single used symbol gets a
1-bit code. So ``size = 6 + ceil(A/2) + ceil(sum(count[s] * length[s]) / 8)``, exactly what
:func:`huffman_bytes` returns and :func:`huffman_encode` writes.

zstd (``zstandard`` bindings, level 19 by default, no dictionary, content size in the frame
header) has no size formula: its size is the length of its output, which is deterministic for a
given level and library version.
"""

from __future__ import annotations

import heapq
import struct
from typing import Literal

import numpy as np

from edgefit_common.errors import PlanError

EntropyCoding = Literal["none", "huffman", "zstd"]
CODINGS: tuple[str, ...] = ("none", "huffman", "zstd")

MAX_CODE_BITS = 15  # lengths fit a nibble; the decoder's lookup table has 2**15 entries
_HEADER_BYTES = 6  # uint32 count + uint16 alphabet
ZSTD_LEVEL = 19


def _check_alphabet(alphabet_size: int) -> int:
    a = int(alphabet_size)
    if not 1 <= a <= 0xFFFF:
        raise PlanError(f"huffman alphabet size must be in 1..65535, got {alphabet_size!r}")
    return a


def _symbols(symbols: np.ndarray, alphabet_size: int) -> np.ndarray:
    s = np.asarray(symbols).reshape(-1)
    if s.size and not np.issubdtype(s.dtype, np.integer):
        raise PlanError(f"huffman symbols must be integers, got {s.dtype}")
    s = s.astype(np.int64)
    if s.size and (int(s.min()) < 0 or int(s.max()) >= alphabet_size):
        raise PlanError(f"huffman symbols must lie in [0, {alphabet_size - 1}], "
                        f"got [{int(s.min())}, {int(s.max())}]")
    if s.size >= 2**32:
        raise PlanError(f"too many symbols for one huffman stream ({s.size})")
    return s


def _tree_lengths(counts: list[int]) -> list[int]:
    """Optimal (unlimited) Huffman code lengths; ties broken by node creation order."""
    lengths = [0] * len(counts)
    heap = [(c, i, [i]) for i, c in enumerate(counts) if c > 0]
    if len(heap) == 1:
        lengths[heap[0][1]] = 1  # one symbol still needs one bit per occurrence
        return lengths
    heapq.heapify(heap)
    order = len(counts)
    while len(heap) > 1:
        c1, _, m1 = heapq.heappop(heap)
        c2, _, m2 = heapq.heappop(heap)
        for s in m1 + m2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, order, m1 + m2))
        order += 1
    return lengths


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code length per symbol (uint8, 0 for a count of 0), at most 15 bits."""
    c = [int(x) for x in np.asarray(counts).reshape(-1)]
    if any(x < 0 for x in c):
        raise PlanError("huffman symbol counts must be non-negative")
    while True:
        lengths = _tree_lengths(c)
        if max(lengths, default=0) <= MAX_CODE_BITS:
            return np.asarray(lengths, dtype=np.uint8)
        c = [max(1, x >> 1) if x > 0 else 0 for x in c]  # flatten the distribution, retry


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of every symbol (int64; 0 where the length is 0)."""
    ln = np.asarray(lengths, dtype=np.int64).reshape(-1)
    codes = np.zeros(ln.size, dtype=np.int64)
    code, prev = 0, 0
    for s in np.lexsort((np.arange(ln.size), ln)):  # by length, then symbol
        if ln[s] == 0:
            continue
        code <<= int(ln[s]) - prev
        codes[s] = code
        code += 1
        prev = int(ln[s])
    return codes


def _pack_lengths(lengths: np.ndarray) -> bytes:
    nib = np.asarray(lengths, dtype=np.uint8)
    if nib.size % 2:
        nib = np.concatenate([nib, np.zeros(1, dtype=np.uint8)])
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8).tobytes()


def _unpack_lengths(data: bytes, alphabet: int) -> np.ndarray:
    buf = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(buf.size * 2, dtype=np.uint8)
    out[0::2], out[1::2] = buf & 0x0F, buf >> 4
    return out[:alphabet]


def huffman_bytes(counts: np.ndarray) -> int:
    """Exact size of :func:`huffman_encode`'s output for symbols with these counts (one per
    alphabet symbol; the alphabet size is ``len(counts)``)."""
    c = np.asarray(counts, dtype=np.int64).reshape(-1)
    a = _check_alphabet(c.size)
    bits = int((c * code_lengths(c).astype(np.int64)).sum())
    return _HEADER_BYTES + (a + 1) // 2 + (bits + 7) // 8


def huffman_encode(symbols: np.ndarray, alphabet_size: int) -> bytes:
    """Canonical Huffman stream of ``symbols`` (integers in ``[0, alphabet_size)``)."""
    a = _check_alphabet(alphabet_size)
    s = _symbols(symbols, a)
    counts = np.bincount(s, minlength=a)
    lengths = code_lengths(counts)
    codes = canonical_codes(lengths)
    ln = lengths.astype(np.int64)[s]
    total = int(ln.sum())
    starts = np.cumsum(ln) - ln
    owner = np.repeat(np.arange(s.size), ln)
    within = np.arange(total, dtype=np.int64) - starts[owner]
    bits = (codes[s][owner] >> (ln[owner] - 1 - within)) & 1
    out = (struct.pack("<IH", s.size, a) + _pack_lengths(lengths)
           + np.packbits(bits.astype(np.uint8), bitorder="big").tobytes())
    if len(out) != huffman_bytes(counts):  # the size formula is the contract
        raise AssertionError(f"huffman: wrote {len(out)} bytes, predicted {huffman_bytes(counts)}")
    return out


def _decode_table(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(symbol, length) for every ``max_len``-bit window; length 0 marks an invalid prefix."""
    ln = lengths.astype(np.int64)
    used = np.nonzero(ln)[0]
    if used.size == 0:
        raise PlanError("huffman stream has symbols but no code lengths")
    if float(np.sum(2.0 ** -ln[used])) > 1.0 + 1e-12:
        raise PlanError("huffman code lengths do not form a prefix code")
    top = int(ln.max())
    sym = np.zeros(1 << top, dtype=np.int64)
    tlen = np.zeros(1 << top, dtype=np.int64)
    codes = canonical_codes(lengths)
    for s in used:
        lo = int(codes[s]) << (top - int(ln[s]))
        hi = (int(codes[s]) + 1) << (top - int(ln[s]))
        sym[lo:hi], tlen[lo:hi] = s, ln[s]
    return sym, tlen, top


def huffman_decode(data: bytes) -> np.ndarray:
    """Inverse of :func:`huffman_encode`: the symbols (int64). ``PlanError`` if malformed."""
    data = bytes(data)
    if len(data) < _HEADER_BYTES:
        raise PlanError(f"huffman stream of {len(data)} bytes has no header")
    count, alphabet = struct.unpack_from("<IH", data, 0)
    a = _check_alphabet(alphabet)
    table_end = _HEADER_BYTES + (a + 1) // 2
    if len(data) < table_end:
        raise PlanError("huffman stream is truncated in its code-length table")
    lengths = _unpack_lengths(data[_HEADER_BYTES:table_end], a)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    sym, tlen, top = _decode_table(lengths)
    stream = np.unpackbits(np.frombuffer(data[table_end:], dtype=np.uint8), bitorder="big")
    nbits = stream.size
    padded = np.concatenate([stream, np.zeros(top, dtype=np.uint8)]).astype(np.int64)
    windows = np.zeros(nbits, dtype=np.int64)
    for j in range(top):  # the top-bit window starting at every bit position
        windows = (windows << 1) | padded[j : j + nbits]
    syms, lens = sym[windows].tolist(), tlen[windows].tolist()
    out = [0] * count
    pos = 0
    for i in range(count):  # sequential by nature: each code's length gives the next start
        if pos >= nbits or lens[pos] == 0:
            raise PlanError(f"huffman stream is truncated or corrupt at symbol {i} of {count}")
        out[i] = syms[pos]
        pos += lens[pos]
    if pos > nbits or (nbits - pos) >= 8:
        raise PlanError(f"huffman stream has {nbits - pos} bits beyond its {count} symbols")
    return np.asarray(out, dtype=np.int64)


def zstd_encode(data: bytes, level: int = ZSTD_LEVEL) -> bytes:
    """One zstd frame of ``data`` (content size recorded, no checksum, no dictionary)."""
    import zstandard

    cctx = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    return cctx.compress(bytes(data))


def zstd_decode(data: bytes, max_bytes: int = 1 << 30) -> bytes:
    """Inverse of :func:`zstd_encode`; ``PlanError`` on a corrupt frame."""
    import zstandard

    try:
        return zstandard.ZstdDecompressor().decompress(bytes(data), max_output_size=max_bytes)
    except zstandard.ZstdError as exc:
        raise PlanError(f"zstd stream is corrupt: {exc}") from None


__all__ = [
    "CODINGS",
    "MAX_CODE_BITS",
    "EntropyCoding",
    "canonical_codes",
    "code_lengths",
    "huffman_bytes",
    "huffman_decode",
    "huffman_encode",
    "zstd_decode",
    "zstd_encode",
]
