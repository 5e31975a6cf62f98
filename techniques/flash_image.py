"""The packed flash image: exactly the bytes a device would store for a compressed model's weights.

File layout (all integers and floats little-endian)::

    b"EDGEFIT1"                 8 bytes, magic
    header_len                  uint32, length of the JSON header in bytes
    header                      header_len bytes of UTF-8 JSON (see below)
    payload                     the raw blobs, back to back, no padding

The header is compact JSON ``{"format": "edgefit-flash", "version": 2, "layers": [...]}``; each
layer entry is ``{"name", "option", "dtype", "shape", "weight", "scales", "bias"}`` (plus
``"zero_points"`` for an asymmetric layer, ``"storage"`` for a sparse one) where ``dtype`` is the
stored weight type (int8 ... int2, uint8 ... uint2, float16, float32), ``shape`` is the
torch-layout weight shape (output channels on axis 0) and ``weight`` / ``scales`` /
``zero_points`` / ``bias`` are blob lengths in bytes (``null`` when absent). Blobs are stored in
entry order, each layer's in the order weight, scales, zero points, bias, so offsets follow from
the lengths and no number in the header depends on where a layer sits: each entry's size is a
function of the layer alone (:func:`entry_bytes`), which is how the planner predicts the whole
file to the byte. Everything else follows from the option: the weight values (integer codes
bit-packed LSB first, C order -- int4 two per byte, low nibble first; float16; float32), the
per-channel float32 scales (integer forms), the per-channel zero points (asymmetric forms, packed
at the code width) and the bias (float16 for ``fp16``, float32 otherwise; one per output channel).

So ``file size == image_overhead_bytes(n_layers) + sum(entry_bytes + blob bytes)``.

A weight-shared layer (``FlashLayer.share``, a ``share.WeightSharingConfig``; option fp32 or
fp16, which sets the bias dtype) stores its codebook, positions and indices in the ``weight``
blob (:func:`techniques.share.encode_shared`), has no scales, ``dtype`` ``uint<bits>`` and a
``"share"`` header record (bits, codebook size and dtype, formats, part sizes).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefit_common.errors import PlanError
from edgefit_common.fsutil import atomic_write_bytes
from formats import quant_math as qm
from formats import sparse_format

SPARSE_FORMATS = ("bitmask", "csr", "dense")  # a sparse layer is stored in the smallest

MAGIC = b"EDGEFIT1"
PREAMBLE_BYTES = len(MAGIC) + 4
FORMAT_NAME = "edgefit-flash"
FORMAT_VERSION = 2
_BLOB_KEYS = ("weight", "scales", "zero_points", "bias")
_HEAD = f'{{"format":"{FORMAT_NAME}","version":{FORMAT_VERSION},"layers":['
_TAIL = "]}"

_NP_DTYPE = {"float32": "<f4", "float16": "<f2", "int8": "i1"}


@dataclass(frozen=True)
class FlashLayer:
    """One layer to store. ``weight`` is float32 in torch layout (output channels on axis 0)."""

    name: str
    option: str
    weight: np.ndarray
    bias: np.ndarray | None = None
    sparse: bool = False  # store the weight values sparsely (bitmask / CSR / dense, smallest)
    share: Any = None  # a share.WeightSharingConfig: store codebook indices (techniques.share)
    # the positions a sparse layer stores: the pruning mask (nonzero fp32 weights), so the
    # size does not depend on which kept values happen to quantise to 0


@dataclass(frozen=True)
class StoredLayer:
    """One layer as read back from a flash image (from the file alone).

    ``weight`` / ``bias`` are the dequantised float32 values the device computes with.
    ``q`` holds the stored integer codes (int8 for symmetric forms, uint8 for asymmetric,
    unpacked) for integer forms, else ``None``. ``distinct_values`` counts distinct *stored*
    values (codes for integer forms, floats otherwise). ``weight_bytes`` includes the scales
    and zero points.
    """

    name: str
    option: str
    dtype: str
    bits: int
    shape: tuple[int, ...]
    weight_bytes: int
    bias_bytes: int
    weight: np.ndarray
    bias: np.ndarray | None
    scales: np.ndarray | None
    q: np.ndarray | None
    distinct_values: int
    storage: str = "dense"  # dense, or the sparse format the values are stored in
    zero_fraction: float = 0.0  # of the stored values (read back from the file)
    codebook: np.ndarray | None = None  # a shared layer's stored centroids (float32)
    header_bytes: int = 0  # its header entry and separator (what entry_bytes predicts)


def _layer_blobs(layer: FlashLayer) -> tuple[dict, list[tuple[str, bytes]]]:
    if not isinstance(layer.name, str) or not layer.name:
        raise PlanError(f"flash layer name must be a non-empty string, got {layer.name!r}")
    if layer.option not in qm.OPTIONS:
        raise PlanError(
            f"layer {layer.name!r}: unknown option {layer.option!r}; "
            f"allowed: {', '.join(qm.OPTIONS)}"
        )
    w = np.asarray(layer.weight)
    if w.ndim < 1 or w.shape[0] == 0:
        raise PlanError(f"layer {layer.name!r}: weight must have at least one output channel")
    w = qm.as_float32(w, f"layer {layer.name!r} weights")
    out_ch = int(w.shape[0])
    option = layer.option
    blobs: list[tuple[str, bytes]] = []
    storage = None
    share_meta = None
    fmt = qm.int_format(option)
    values, scales, zps = (_stored_values(w, option, layer.name) if layer.share is None
                           else (w, None, None))
    if layer.share is not None:
        share_meta, data = _shared_weight(layer, w)
    elif layer.sparse:
        if zps is not None:
            raise PlanError(f"layer {layer.name!r}: sparse storage takes symmetric codes (a "
                            f"pruned zero is code 0), not {option}")
        storage, data = sparse_format.encode(values, qm.BITS[option], formats=SPARSE_FORMATS,
                                             mask=w != 0)
    elif fmt is not None:
        data = qm.pack_bits(values, fmt[0], signed=fmt[1])
    else:
        data = values.tobytes()
    blobs.append(("weight", data))
    if scales is not None:
        blobs.append(("scales", scales.astype("<f4").tobytes()))
    if zps is not None:
        blobs.append(("zero_points", qm.pack_bits(zps, qm.BITS[option], signed=False)))
    if layer.bias is not None:
        b = qm.as_float32(layer.bias, f"layer {layer.name!r} bias")
        if b.ndim != 1 or b.shape[0] != out_ch:
            raise PlanError(
                f"layer {layer.name!r}: bias shape {tuple(b.shape)} does not match "
                f"{out_ch} output channels"
            )
        bdt = qm.bias_dtype(option)
        if bdt == "float16":
            qm.check_fp16_range(b, f"layer {layer.name!r} bias")
        blobs.append(("bias", b.astype(_NP_DTYPE[bdt]).tobytes()))
    entry: dict[str, Any] = {
        "name": layer.name,
        "option": option,
        "dtype": qm.weight_dtype(option),
        "shape": [int(d) for d in w.shape],
    }
    if storage is not None:
        entry["storage"] = storage
    if share_meta is not None:
        entry["dtype"] = f"uint{share_meta['bits']}"
        entry["share"] = share_meta
    return entry, blobs


def _shared_weight(layer: FlashLayer, w: np.ndarray) -> tuple[dict, bytes]:
    from techniques.share import encode_shared

    if layer.option not in ("fp32", "fp16"):
        raise PlanError(f"layer {layer.name!r}: a shared layer takes option fp32 or fp16 (its "
                        f"bias dtype), got {layer.option!r}")
    return encode_shared(w, layer.share, layer.name)


def _stored_values(w: np.ndarray, option: str, name: str
                   ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The weight as stored: integer codes + per-channel scales (+ zero points), or floats."""
    if qm.int_format(option) is not None:
        codes = qm.quantize_option(w, option, axis=0)
        return codes.q, codes.scales, codes.zero_points
    if option == "fp16":
        qm.check_fp16_range(w, f"layer {name!r} weights")
        return w.astype("<f2"), None, None
    return w.astype("<f4"), None, None


def layer_weight_bytes(weight: np.ndarray, option: str, sparse: bool, share: Any = None) -> int:
    """Exactly the weight + scale bytes the image stores for this layer (what the planner
    predicts for sparse layers, whose size depends on how many stored values are zero)."""
    w = qm.as_float32(np.asarray(weight), "weights")
    out_ch = int(w.shape[0])
    if share is not None:  # a WeightSharingConfig: the blob's exact length
        from techniques.share import shared_weight_bytes

        return shared_weight_bytes(w, share)
    if not sparse:
        return qm.stored_weight_bytes(option, w.size, out_ch)
    scales = qm.int_format(option)
    nnz = int(np.count_nonzero(w))  # the pruning mask: what the image stores
    rows = out_ch
    _, size = sparse_format.sparse_bytes(w.size, nnz, rows, qm.BITS[option], SPARSE_FORMATS)
    return size + (qm.SCALE_BYTES * out_ch if scales is not None else 0)


def write_flash_image(path: str | os.PathLike, layers: list[FlashLayer]) -> None:
    """Quantise ``layers`` with :mod:`quant_math`; write atomically (temp file + ``os.replace``)."""
    path = Path(path)
    names = [getattr(layer, "name", None) for layer in layers]
    dupes = sorted({n for n in names if names.count(n) > 1 and isinstance(n, str)})
    if dupes:
        raise PlanError(f"duplicate layer names in flash image: {', '.join(dupes)}")
    entries = []
    payload: list[bytes] = []
    for layer in layers:
        entry, blobs = _layer_blobs(layer)
        entry.update(_lengths(blobs))
        entries.append(_dump(entry))
        payload += [data for _, data in blobs]
    hbytes = (_HEAD + ",".join(entries) + _TAIL).encode("utf-8")
    if len(hbytes) >= 2**32:
        raise PlanError(f"flash image header too large ({len(hbytes)} bytes)")
    atomic_write_bytes(path, b"".join([MAGIC, struct.pack("<I", len(hbytes)), hbytes, *payload]),
                       fsync=True)


def _lengths(blobs: list[tuple[str, bytes]]) -> dict[str, int | None]:
    have = dict(blobs)
    out: dict[str, int | None] = {k: len(have[k]) if k in have else None
                                  for k in ("weight", "scales", "bias")}
    if "zero_points" in have:
        out["zero_points"] = len(have["zero_points"])
    return out


def _dump(entry: dict[str, Any]) -> str:
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=True)


def entry_bytes(name: str, option: str, shape: tuple[int, ...] | list[int],
                blob_bytes: dict[str, int], storage: str | None = None,
                share_meta: dict[str, Any] | None = None) -> int:
    """Header bytes one layer's entry takes, its separating comma included.

    ``blob_bytes``: the layer's blob lengths (``weight``, and ``scales`` / ``zero_points`` /
    ``bias`` when present). The writer builds the same entry, so this is exact.
    """
    entry: dict[str, Any] = {"name": name, "option": option,
                             "dtype": qm.weight_dtype(option), "shape": [int(d) for d in shape]}
    if storage is not None:
        entry["storage"] = storage
    if share_meta is not None:
        entry["dtype"] = f"uint{share_meta['bits']}"
        entry["share"] = share_meta
    entry.update({k: blob_bytes.get(k) for k in ("weight", "scales", "bias")})
    if "zero_points" in blob_bytes:
        entry["zero_points"] = blob_bytes["zero_points"]
    return len(_dump(entry).encode("utf-8")) + 1


def image_overhead_bytes() -> int:
    """Bytes of an image beyond its layers' entries and blobs: magic, header length, the
    header's fixed framing, less the one comma the last entry does not have."""
    return PREAMBLE_BYTES + len(_HEAD) + len(_TAIL) - 1


def layer_file_bytes(layer: FlashLayer) -> int:
    """Exactly what ``layer`` adds to an image: its header entry and its blobs."""
    entry, blobs = _layer_blobs(layer)
    entry.update(_lengths(blobs))
    return len(_dump(entry).encode("utf-8")) + 1 + sum(len(d) for _, d in blobs)


def _read_raw(path: Path) -> tuple[dict, memoryview, int]:
    """(header, payload, header_region_bytes) after validating magic and lengths."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PlanError(f"cannot read flash image {path}: {e.strerror or e}") from None
    if len(data) < PREAMBLE_BYTES:
        raise PlanError(f"flash image {path} is truncated ({len(data)} bytes, no header)")
    if data[: len(MAGIC)] != MAGIC:
        raise PlanError(f"{path} is not an edgefit flash image (bad magic)")
    (hlen,) = struct.unpack_from("<I", data, len(MAGIC))
    if PREAMBLE_BYTES + hlen > len(data):
        raise PlanError(
            f"flash image {path} is truncated (header needs {hlen} bytes, "
            f"{len(data) - PREAMBLE_BYTES} present)"
        )
    try:
        header = json.loads(data[PREAMBLE_BYTES : PREAMBLE_BYTES + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PlanError(f"flash image {path} has a corrupt header: {e}") from None
    if (
        not isinstance(header, dict)
        or header.get("format") != FORMAT_NAME
        or not isinstance(header.get("layers"), list)
    ):
        raise PlanError(f"flash image {path} has a malformed header")
    if header.get("version") != FORMAT_VERSION:
        raise PlanError(
            f"flash image {path} has format version {header.get('version')!r}; "
            f"this edgefit reads version {FORMAT_VERSION}"
        )
    payload = memoryview(data)[PREAMBLE_BYTES + hlen :]
    want = 0
    for entry in header["layers"]:
        if not isinstance(entry, dict):
            raise PlanError(f"flash image {path} has a malformed layer entry")
        for key in _BLOB_KEYS:
            n = entry.get(key)
            if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
                raise PlanError(f"flash image {path}: layer {entry.get('name')!r} has a "
                                f"malformed {key} length {n!r}")
            entry[f"_{key}_at"] = want
            want += n or 0
    if len(payload) < want:
        raise PlanError(f"flash image {path} is truncated (payload {len(payload)} of {want} bytes)")
    if len(payload) > want:
        raise PlanError(f"flash image {path} has {len(payload) - want} unexpected trailing bytes")
    return header, payload, PREAMBLE_BYTES + hlen


def _blob(path: Path, payload: memoryview, entry: dict, key: str, name: str) -> bytes | None:
    nbytes = entry.get(key)
    if nbytes is None:
        return None
    off = int(entry[f"_{key}_at"])
    if off < 0 or nbytes < 0 or off + nbytes > len(payload):
        raise PlanError(
            f"flash image {path} is truncated or corrupt: layer {name!r} {key} "
            f"[{off}, {off + nbytes}) lies outside the {len(payload)}-byte payload"
        )
    return bytes(payload[off : off + nbytes])


def _decode_sparse(path: Path, name: str, storage: str, data: bytes, shape: tuple[int, ...],
                   bits: int) -> np.ndarray:
    try:
        return sparse_format.decode(storage, data, shape, bits)
    except PlanError as exc:
        raise PlanError(f"flash image {path}: layer {name!r}: {exc}") from None


@dataclass(frozen=True)
class _Entry:
    """One layer entry's checked header fields and its blobs (None where absent)."""

    path: Path
    name: str
    option: str
    shape: tuple[int, ...]
    storage: str | None
    weight: bytes
    scales: bytes | None
    zero_points: bytes | None
    bias: bytes | None

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))

    def expect(self, what: str, got: int, want: int) -> None:
        if got != want:
            raise PlanError(f"flash image {self.path}: layer {self.name!r} {what} is {got} "
                            f"bytes, expected {want}")

    def fail(self, what: str) -> PlanError:
        return PlanError(f"flash image {self.path}: layer {self.name!r} {what}")


def _read_entry(path: Path, payload: memoryview, entry: dict) -> _Entry:
    if not isinstance(entry, dict):
        raise PlanError(f"flash image {path} has a malformed layer entry")
    name = entry.get("name")
    option = entry.get("option")
    if not isinstance(name, str) or option not in qm.OPTIONS:
        raise PlanError(f"flash image {path}: layer {name!r} has unknown option {option!r}")
    if "share" not in entry and entry.get("dtype") != qm.weight_dtype(option):
        raise PlanError(
            f"flash image {path}: layer {name!r} stores {entry.get('dtype')!r} for {option}"
        )
    try:
        shape = tuple(int(d) for d in entry["shape"])
    except (KeyError, TypeError, ValueError):
        raise PlanError(f"flash image {path}: layer {name!r} has a malformed shape") from None
    if not shape or shape[0] <= 0 or any(d < 0 for d in shape):
        raise PlanError(f"flash image {path}: layer {name!r} has an invalid shape {shape}")
    wdata = _blob(path, payload, entry, "weight", name)
    if wdata is None:
        raise PlanError(f"flash image {path}: layer {name!r} has no weight blob")
    storage = entry.get("storage")
    if storage is not None and storage not in SPARSE_FORMATS:
        raise PlanError(f"flash image {path}: layer {name!r} has unknown storage {storage!r}")
    return _Entry(path, name, option, shape, storage, wdata,
                  _blob(path, payload, entry, "scales", name),
                  _blob(path, payload, entry, "zero_points", name),
                  _blob(path, payload, entry, "bias", name))


def _decode_int(e: _Entry, bits: int, symmetric: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(weight, codes, scales, distinct codes) of an integer layer."""
    out_ch = e.shape[0]
    if e.scales is None:
        raise e.fail(f"({e.option}) has no scales")
    e.expect("scales", len(e.scales), qm.SCALE_BYTES * out_ch)
    scales = np.frombuffer(e.scales, dtype="<f4").astype(np.float32)
    if symmetric != (e.zero_points is None):
        raise e.fail(f"({e.option}) " + ("has no zero points" if e.zero_points is None
                                         else "must not have zero points"))
    if e.storage is not None:
        q = _decode_sparse(e.path, e.name, e.storage, e.weight, e.shape, bits).astype(np.int8)
    else:
        e.expect("weight", len(e.weight), qm.packed_bytes(e.numel, bits))
        q = qm.unpack_bits(e.weight, e.numel, bits, signed=symmetric).reshape(e.shape)
    if e.zero_points is None:
        weight = qm.dequantize_per_channel(q, scales, axis=0)
    else:
        e.expect("zero points", len(e.zero_points), qm.packed_bytes(out_ch, bits))
        zps = qm.unpack_bits(e.zero_points, out_ch, bits, signed=False)
        weight = qm.dequantize_asymmetric(q, scales, zps, axis=0)
    return weight, q, scales, qm.distinct_values(q)


def _decode_float(e: _Entry) -> tuple[np.ndarray, int]:
    """(weight, distinct values) of an fp32 / fp16 layer."""
    if e.scales is not None or e.zero_points is not None:
        raise e.fail(f"({e.option}) must not have scales")
    dt = "float16" if e.option == "fp16" else "float32"
    if e.storage is not None:
        stored = _decode_sparse(e.path, e.name, e.storage, e.weight, e.shape, qm.BITS[e.option])
    else:
        e.expect("weight", len(e.weight), np.dtype(_NP_DTYPE[dt]).itemsize * e.numel)
        stored = np.frombuffer(e.weight, dtype=_NP_DTYPE[dt]).reshape(e.shape)
    return stored.astype(np.float32), qm.distinct_values(stored)


def _decode_layer(path: Path, payload: memoryview, entry: dict) -> StoredLayer:
    e = _read_entry(path, payload, entry)
    storage, scales, q, codebook = e.storage, None, None, None
    if "share" in entry:
        weight, codebook, storage = _decode_shared(path, e.name, entry, e.weight, e.scales,
                                                   e.shape)
        distinct = qm.distinct_values(weight)
    elif (fmt := qm.int_format(e.option)) is not None:
        weight, q, scales, distinct = _decode_int(e, *fmt)
    else:
        weight, distinct = _decode_float(e)
    bias = None
    if e.bias is not None:
        bdt = qm.bias_dtype(e.option)
        e.expect("bias", len(e.bias), np.dtype(_NP_DTYPE[bdt]).itemsize * e.shape[0])
        bias = np.frombuffer(e.bias, dtype=_NP_DTYPE[bdt]).astype(np.float32)
    weight_bytes = len(e.weight) + sum(len(d) for d in (e.scales, e.zero_points) if d is not None)
    if storage is None:
        e.expect("weight+scales", weight_bytes,
                 qm.stored_weight_bytes(e.option, e.numel, e.shape[0]))
    return StoredLayer(
        name=e.name,
        option=e.option,
        dtype=qm.weight_dtype(e.option) if codebook is None else str(entry["dtype"]),
        bits=qm.BITS[e.option] if codebook is None else int(entry["share"]["bits"]),
        shape=e.shape,
        weight_bytes=weight_bytes,
        bias_bytes=len(e.bias) if e.bias is not None else 0,
        weight=weight,
        bias=bias,
        scales=scales,
        q=q,
        distinct_values=distinct,
        storage=storage or "dense",
        zero_fraction=float(np.mean((q if q is not None and e.zero_points is None
                                     else weight) == 0)),
        header_bytes=len(_dump({k: v for k, v in entry.items() if not k.startswith("_")}
                               ).encode("utf-8")) + 1,
        codebook=codebook,
    )


def _decode_shared(path: Path, name: str, entry: dict, wdata: bytes, sdata: bytes | None,
                   shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, str]:
    """A shared layer's (weight, codebook, storage label) from its blob and header record."""
    from techniques.share import decode_shared

    meta = entry["share"]
    if sdata is not None:
        raise PlanError(f"flash image {path}: shared layer {name!r} must not have scales")
    try:
        weight, _, codebook = decode_shared(meta, wdata, shape)
        if entry.get("dtype") != f"uint{meta['bits']}":
            raise PlanError(f"stores {entry.get('dtype')!r} for {meta['bits']}-bit indices")
    except (PlanError, KeyError, TypeError) as exc:
        raise PlanError(f"flash image {path}: layer {name!r}: {exc}") from None
    pos = meta.get("positions")
    coded = sorted({p.get("coding") for p in (pos, meta["indices"]) if p} - {"none"})
    storage = "shared" + (f"-{pos['format']}" if pos else "") + "".join(f"+{c}" for c in coded)
    return weight, codebook, storage


def read_flash_image(path: str | os.PathLike) -> list[StoredLayer]:
    """Read and validate an image; every value comes from the file (magic, lengths, blob sizes)."""
    path = Path(path)
    header, payload, _ = _read_raw(path)
    layers = [_decode_layer(path, payload, e) for e in header["layers"]]
    total = sum(layer.weight_bytes + layer.bias_bytes for layer in layers)
    if total != len(payload):
        raise PlanError(
            f"flash image {path}: blobs cover {total} bytes but the payload holds {len(payload)}"
        )
    return layers


def payload_bytes(path: str | os.PathLike) -> int:
    """Sum of all blob sizes (weights, scales, biases): the bytes the device stores for weights."""
    _, payload, _ = _read_raw(Path(path))
    return len(payload)


def header_bytes(path: str | os.PathLike) -> int:
    """Overhead before the payload: 8 (magic) + 4 (length) + the JSON header."""
    _, _, n = _read_raw(Path(path))
    return n


__all__ = [
    "MAGIC",
    "FlashLayer",
    "StoredLayer",
    "entry_bytes",
    "header_bytes",
    "image_overhead_bytes",
    "layer_file_bytes",
    "payload_bytes",
    "read_flash_image",
    "write_flash_image",
]
