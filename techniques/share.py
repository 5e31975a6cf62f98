"""Technique: weight sharing -- per-layer k-means codebooks (Deep Compression's second stage).

One technique = one file: the frozen config (what plan.json stores), its offers, its cost
delta, its torch executor, its check, and its registry entry (:mod:`techniques.registry`).
Importing this module does not import torch; the k-means, the stored
format, the checks and the cost delta are numpy.

* :func:`share_module` (:class:`WeightSharingConfig`) -- cluster one layer's *nonzero* weights
  into at most ``2**bits`` centroids with 1-D k-means (Lloyd), linearly initialised over
  ``[min, max]`` (Han et al. found linear initialisation best: it keeps the rare large weights),
  and replace every weight by its centroid. Zeros (pruned weights) are not cluster members and
  stay exactly zero. With ``codebook_dtype="float16"`` the centroids are rounded to float16.
* Fine-tuning after sharing must keep weights on the codebook: :func:`keep_shared` records each
  weight's cluster; call ``.reapply()`` after every ``optimizer.step()`` (or ``.attach(opt)``).
  It updates every centroid by ``-lr * sum of its members' gradients`` (the paper's rule;
  ``reduce="mean"`` divides by the cluster size) and writes the centroids back into the weight,
  overwriting whatever the optimizer did to it, so the weights are on the codebook and the
  zeros zero after every step.

Stored form (:func:`encode_shared`, the ``weight`` blob of a shared layer in the flash image)::

    codebook   k centroids, ascending, float32 or float16 (k <= 2**bits: the used ones)
    positions  only if the layer has zeros: where the nonzeros are, as
               bitmask  -- one bit per weight, LSB first, C order (as formats.sparse_format), or
               relative -- Deep Compression's relative indices: per nonzero the number of zeros
                           since the previous one, ``index_bits`` bits each; the largest value
                           ``M = 2**index_bits - 1`` is a filler that skips M positions and
                           stores no weight (so any gap is representable)
    indices    per stored weight its codebook index, ``bits`` bits each

Integers are packed LSB first into bytes (the ``sparse_format`` convention). With ``entropy``
set, the positions and the indices are each stored Huffman coded (:mod:`formats.entropy`:
over the gap symbols, the bitmask's bytes, the indices) or zstd compressed, *or* raw when that is
smaller -- which one is recorded in the header. ``positions="auto"`` takes the smaller of
bitmask and relative (ties: bitmask) and, with ``index_bits=None``, the best ``index_bits`` in
2..8. The JSON meta (:func:`encode_shared`'s first result) records ``bits``, ``k``, ``nnz``, the
formats and each part's size. :func:`shared_weight_bytes` is exactly ``len`` of the blob.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from device_specs.schema import Kernel
from edgefit_common.errors import PlanError
from formats import entropy as ec
from formats.entropy import EntropyCoding
from techniques.option import LayerShape, Offer, OfferContext, Technique

if TYPE_CHECKING:
    import torch
    from torch import nn

_CODEBOOK_NP = {"float32": "<f4", "float16": "<f2"}


# ---------------------------------------------------------------------------------------------
# the config (what plan.json stores)


PositionFormat = Literal["auto", "bitmask", "relative"]


class WeightSharingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    technique: Literal["share"] = "share"
    bits: int = Field(ge=2, le=8, description="index bits: at most 2**bits shared values")
    entropy: EntropyCoding = Field(
        default="none", description="entropy coding of the stored indices and positions")
    codebook_dtype: Literal["float32", "float16"] = "float32"
    positions: PositionFormat = Field(
        default="auto", description="how a pruned layer stores where its nonzeros are")
    index_bits: int | None = Field(
        default=None, ge=2, le=16, description="relative-index bits (None: best of 2..8)")
    iterations: int = Field(default=100, ge=1, le=10_000, description="k-means iterations")


# ---------------------------------------------------------------------------------------------
# k-means and the executor (numpy)


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """``(centroids, labels)``: Lloyd's k-means of 1-D ``values``, linear initialisation.

    Centroids (float64) start evenly spaced over ``[min, max]``; an empty cluster keeps its
    centroid; stops when no label changes. In 1-D, the nearest centroid is found by the
    midpoints of the sorted centroids (ties go to the lower centroid). Deterministic.
    The values are sorted once: a cluster is then a run of the sorted values, found by binary
    search, and its sum a difference of prefix sums, so an iteration costs O(k log n), not
    O(n) (the planner shares multi-million-weight layers once per option).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if k < 1:
        raise PlanError(f"k-means needs k >= 1, got {k}")
    if v.size == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    srt = np.sort(v)
    prefix = np.concatenate([[0.0], np.cumsum(srt)])
    centroids = np.linspace(srt[0], srt[-1], k)
    bounds = np.zeros(0, dtype=np.int64)
    for _ in range(iterations):
        # cluster j holds the sorted values in (mid[j-1], mid[j]]: the lower centroid wins ties
        mids = (centroids[1:] + centroids[:-1]) / 2
        new = np.concatenate([[0], np.searchsorted(srt, mids, side="right"), [v.size]])
        if np.array_equal(new, bounds):
            break
        bounds = new
        counts = np.diff(bounds)
        sums = prefix[bounds[1:]] - prefix[bounds[:-1]]
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled]
        centroids = np.sort(centroids)  # an empty cluster's old centroid may fall out of order
    # the labels of the final centroids (the loop may stop on its iteration limit)
    return centroids, np.searchsorted((centroids[1:] + centroids[:-1]) / 2, v, side="left")


def share_weights(w: np.ndarray, config: WeightSharingConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(shared, codebook)``: ``w`` with every nonzero replaced by its k-means centroid
    (float32, same shape; zeros stay zero) and the sorted codebook of used centroids."""
    from formats.quant_math import as_float32

    a = as_float32(w, "weights to share")
    nz = a != 0
    vals = a[nz]
    k = 2 ** config.bits
    if np.unique(vals).size <= k:  # already on a small enough codebook: keep it exactly
        centroids = np.unique(vals).astype(np.float64)
        labels = np.searchsorted(centroids, vals)
    else:
        centroids, labels = kmeans_1d(vals, k, config.iterations)
    cb = centroids.astype(_CODEBOOK_NP[config.codebook_dtype]).astype(np.float32)
    out = np.zeros_like(a)
    out[nz] = cb[labels]
    return out, _codebook(out)


def _codebook(w: np.ndarray) -> np.ndarray:
    """The sorted distinct nonzero values of ``w`` (float32)."""
    a = np.asarray(w, dtype=np.float32)
    return np.unique(a[a != 0])


def share_config(techniques: Iterable[Any]) -> WeightSharingConfig | None:
    """The weight-sharing config among a layer's techniques (None: not shared)."""
    return next((t for t in techniques if isinstance(t, WeightSharingConfig)), None)


def share_module(module: nn.Module, config: WeightSharingConfig) -> nn.Module:
    """Share ``module.weight`` in place (see the module docstring); returns ``module``."""
    import torch

    w = _weight_param(module)
    shared, _ = share_weights(w.detach().cpu().numpy(), config)
    with torch.no_grad():
        w.copy_(torch.from_numpy(shared).to(device=w.device, dtype=w.dtype))
    return module


def _weight_param(module: nn.Module) -> torch.Tensor:
    w = getattr(module, "weight", None)
    if w is None or not hasattr(w, "detach"):
        raise PlanError(f"{type(module).__name__} has no weight to share")
    return w


def _weight_array(obj: Any) -> np.ndarray:
    """The weight of a module, a ``flash_image.StoredLayer``, a tensor or an array, as numpy."""
    w = getattr(obj, "weight", obj)
    if hasattr(w, "detach"):
        w = w.detach().cpu().numpy()
    return np.asarray(w)


def check_shared(obj: Any, config: WeightSharingConfig | None = None) -> dict[str, Any]:
    """Read a weight back (module, stored layer, tensor or array): its distinct values.

    With ``config``, also ``max_shared`` (``2**bits``) and ``ok``: at most that many distinct
    nonzero values, and (float16 codebook) every value exactly representable in float16.
    """
    w = _weight_array(obj).astype(np.float32)
    cb = _codebook(w)
    found: dict[str, Any] = {
        "numel": int(w.size),
        "zeros": int((w == 0).sum()),
        "distinct_nonzero": int(cb.size),
        "distinct_values": int(np.unique(w).size),
    }
    if config is not None:
        found["max_shared"] = 2 ** config.bits
        ok = cb.size <= found["max_shared"]
        if config.codebook_dtype == "float16":
            ok = ok and bool(np.array_equal(cb.astype("<f2").astype(np.float32), cb))
        found["ok"] = bool(ok)
    return found


def check_onnx_shared(path: Any, configs: Mapping[str, WeightSharingConfig]
                      ) -> dict[str, dict[str, Any]]:
    """Read each shared layer's weight back from an ONNX file (the initializer its node reads,
    through any Cast / DequantizeLinear): :func:`check_shared` of the stored values, so
    ``ok`` says the runnable model really holds at most ``2**bits`` distinct nonzero values."""
    from techniques.onnx.weights import stored_weights

    values = stored_weights(path, list(configs))
    return {layer: check_shared(values[layer], cfg) for layer, cfg in configs.items()}


# ---------------------------------------------------------------------------------------------
# the stored form (numpy): encode / decode / exact size


def _pack_uint(v: np.ndarray, bits: int) -> bytes:
    """Unsigned integers, ``bits`` each, LSB first (the sparse_format bit order)."""
    u = np.asarray(v, dtype=np.int64).reshape(-1)
    stream = ((u[:, None] >> np.arange(bits, dtype=np.int64)) & 1).astype(np.uint8)
    return np.packbits(stream.reshape(-1), bitorder="little").tobytes()


def _unpack_uint(data: bytes, count: int, bits: int) -> np.ndarray:
    need = (count * bits + 7) // 8
    if len(data) != need:
        raise PlanError(f"{count} {bits}-bit values take {need} bytes, got {len(data)}")
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    groups = stream[: count * bits].reshape(count, bits).astype(np.int64)
    return (groups << np.arange(bits, dtype=np.int64)).sum(axis=1)


def relative_indices(mask: np.ndarray, index_bits: int) -> np.ndarray:
    """Deep Compression's relative indices of the True positions of ``mask`` (C order): per
    nonzero the zeros since the previous one, with filler entries ``2**index_bits - 1`` that
    each skip that many positions and carry no weight."""
    filler = 2 ** index_bits - 1
    pos = np.flatnonzero(np.asarray(mask).reshape(-1))
    gaps = np.diff(pos, prepend=-1) - 1
    fills = gaps // filler
    out = np.full(int(fills.sum()) + pos.size, filler, dtype=np.int64)
    out[np.cumsum(fills + 1) - 1] = gaps % filler
    return out


def positions_from_relative(entries: np.ndarray, index_bits: int, numel: int) -> np.ndarray:
    """Inverse of :func:`relative_indices`: the flat positions of the nonzeros."""
    filler = 2 ** index_bits - 1
    e = np.asarray(entries, dtype=np.int64)
    is_value = e != filler
    pos = (np.cumsum(np.where(is_value, e + 1, e)) - 1)[is_value]
    if pos.size and pos[-1] >= numel:
        raise PlanError(f"relative indices reach position {int(pos[-1])} of {numel} weights")
    return pos


def _coded(raw: bytes, symbols: np.ndarray, alphabet: int, coding: str) -> tuple[str, bytes]:
    """The smaller of the raw bytes and their entropy-coded form (ties: raw)."""
    if coding == "none":
        return "none", raw
    data = ec.huffman_encode(symbols, alphabet) if coding == "huffman" else \
        ec.zstd_encode(raw)
    return (coding, data) if len(data) < len(raw) else ("none", raw)


def _decoded(coding: str, data: bytes, count: int, bits: int, raw_bytes: bool) -> np.ndarray:
    """Symbols back from one part; ``raw_bytes``: the Huffman symbols are the raw bytes."""
    if coding == "huffman":
        sym = ec.huffman_decode(data)
        if raw_bytes:
            if sym.size and int(sym.max()) > 255:
                raise PlanError("huffman-coded bytes hold a symbol above 255")
            return _unpack_uint(sym.astype(np.uint8).tobytes(), count, bits)
        if sym.size != count:
            raise PlanError(f"huffman part holds {sym.size} symbols, {count} expected")
        return sym
    if coding == "zstd":
        data = ec.zstd_decode(data)
    elif coding != "none":
        raise PlanError(f"unknown entropy coding {coding!r}; allowed: {', '.join(ec.CODINGS)}")
    return _unpack_uint(data, count, bits)


def _position_part(mask: np.ndarray, fmt: str, index_bits: int, coding: str
                   ) -> tuple[dict[str, Any], bytes]:
    if fmt == "bitmask":
        raw = np.packbits(mask.reshape(-1).astype(np.uint8), bitorder="little").tobytes()
        used, data = _coded(raw, np.frombuffer(raw, dtype=np.uint8), 256, coding)
        return {"format": "bitmask", "coding": used}, data
    entries = relative_indices(mask, index_bits)
    raw = _pack_uint(entries, index_bits)
    used, data = _coded(raw, entries, 2 ** index_bits, coding)
    return {"format": "relative", "index_bits": index_bits, "entries": int(entries.size),
            "coding": used}, data


def _best_positions(mask: np.ndarray, config: WeightSharingConfig) -> tuple[dict[str, Any], bytes]:
    """The position part in the configured format, or the smallest (ties: first tried)."""
    fmts = ["bitmask", "relative"] if config.positions == "auto" else [config.positions]
    ibits = [config.index_bits] if config.index_bits is not None else list(range(2, 9))
    cands = [_position_part(mask, f, ib, config.entropy)
             for f in fmts for ib in (ibits if f == "relative" else [0])]
    return min(cands, key=lambda c: len(c[1]))  # min keeps the first of equal sizes


def encode_shared(weight: np.ndarray, config: WeightSharingConfig,
                  name: str = "layer") -> tuple[dict[str, Any], bytes]:
    """``(meta, blob)``: a shared weight's stored form (module docstring). ``PlanError`` if the
    weight has more distinct nonzero values than ``2**bits`` or, for a float16 codebook, values
    float16 cannot hold exactly (share it first: :func:`share_module`)."""
    from formats.quant_math import as_float32

    w = as_float32(weight, f"layer {name!r} weights")
    cb = _codebook(w)
    if cb.size > 2 ** config.bits:
        raise PlanError(f"layer {name!r}: {cb.size} distinct nonzero weights, more than "
                        f"2**bits = {2 ** config.bits}; share it first (share_module)")
    cb_stored = cb.astype(_CODEBOOK_NP[config.codebook_dtype])
    if not np.array_equal(cb_stored.astype(np.float32), cb):
        raise PlanError(f"layer {name!r}: its shared values are not exactly float16; share "
                        "with codebook_dtype='float16'")
    flat = w.reshape(-1)
    mask = flat != 0
    idx = np.searchsorted(cb, flat[mask])
    meta: dict[str, Any] = {"bits": config.bits, "codebook": config.codebook_dtype,
                            "k": int(cb.size), "nnz": int(mask.sum())}
    parts = [cb_stored.tobytes()]
    if not mask.all():
        pmeta, pdata = _best_positions(mask, config)
        meta["positions"] = {**pmeta, "bytes": len(pdata)}
        parts.append(pdata)
    coding, idata = _coded(_pack_uint(idx, config.bits), idx, 2 ** config.bits, config.entropy)
    meta["indices"] = {"coding": coding, "bytes": len(idata)}
    parts.append(idata)
    meta["codebook_bytes"] = len(parts[0])
    return meta, b"".join(parts)


def _meta_int(meta: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = meta.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise PlanError(f"shared layer meta: {key} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def decode_shared(meta: dict[str, Any], blob: bytes, shape: tuple[int, ...]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`encode_shared`: ``(weight float32, indices, codebook float32)``.

    ``indices`` is int16 shaped like the weight, ``-1`` where no weight is stored (a zero).
    Validates every length it reads; ``PlanError`` on a malformed blob.
    """
    if not isinstance(meta, dict):
        raise PlanError("shared layer meta must be a JSON object")
    numel = int(np.prod(shape))
    bits = _meta_int(meta, "bits", 2, 8)
    k = _meta_int(meta, "k", 0, 2 ** bits)
    nnz = _meta_int(meta, "nnz", 0, numel)
    dt = meta.get("codebook")
    if dt not in _CODEBOOK_NP:
        raise PlanError(f"shared layer meta: codebook must be float32 or float16, got {dt!r}")
    blob = bytes(blob)
    cb_bytes = k * np.dtype(_CODEBOOK_NP[dt]).itemsize
    pos_meta = meta.get("positions")
    idx_meta = meta.get("indices")
    if not isinstance(idx_meta, dict) or (pos_meta is not None and not isinstance(pos_meta, dict)):
        raise PlanError("shared layer meta: malformed positions/indices records")
    pos_bytes = _meta_int(pos_meta, "bytes", 0, len(blob)) if pos_meta else 0
    idx_bytes = _meta_int(idx_meta, "bytes", 0, len(blob))
    if cb_bytes + pos_bytes + idx_bytes != len(blob):
        raise PlanError(f"shared layer blob is {len(blob)} bytes, its parts say "
                        f"{cb_bytes} + {pos_bytes} + {idx_bytes}")
    codebook = np.frombuffer(blob[:cb_bytes], dtype=_CODEBOOK_NP[dt]).astype(np.float32)
    if pos_meta is None:
        if nnz != numel:
            raise PlanError(f"shared layer stores {nnz} of {numel} weights but no positions")
        where = np.arange(numel)
    else:
        where = _decode_positions(pos_meta, blob[cb_bytes:cb_bytes + pos_bytes], numel)
        if where.size != nnz:
            raise PlanError(f"shared layer positions give {where.size} weights, meta says {nnz}")
    idx = _decoded(str(idx_meta.get("coding")), blob[cb_bytes + pos_bytes:], nnz, bits, False)
    if idx.size and int(idx.max()) >= k:
        raise PlanError(f"shared layer index {int(idx.max())} beyond its {k}-entry codebook")
    flat_idx = np.full(numel, -1, dtype=np.int16)
    flat_idx[where] = idx
    weight = np.zeros(numel, dtype=np.float32)
    weight[where] = codebook[idx]
    return weight.reshape(shape), flat_idx.reshape(shape), codebook


def _decode_positions(pmeta: dict[str, Any], data: bytes, numel: int) -> np.ndarray:
    coding = str(pmeta.get("coding"))
    if pmeta.get("format") == "bitmask":
        nbytes = (numel + 7) // 8
        raw = _decoded(coding, data, nbytes, 8, True).astype(np.uint8).tobytes()
        mask = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")[:numel]
        return np.flatnonzero(mask)
    if pmeta.get("format") == "relative":
        ib = _meta_int(pmeta, "index_bits", 2, 16)
        count = _meta_int(pmeta, "entries", 0, 2**32)
        entries = _decoded(coding, data, count, ib, False)
        return positions_from_relative(entries, ib, numel)
    raise PlanError(f"shared layer positions format {pmeta.get('format')!r}; allowed: bitmask, "
                    "relative")


def shared_weight_bytes(weight: np.ndarray, config: WeightSharingConfig) -> int:
    """Exactly the bytes :func:`encode_shared` stores for this (already shared) weight."""
    return len(encode_shared(weight, config)[1])


# ---------------------------------------------------------------------------------------------
# cost delta: what sharing changes, for cost_models and the planner


def share_cost_delta(weight_numel: int, out_channels: int, config: WeightSharingConfig,
                     nonzeros: int | None = None) -> dict[str, Any]:
    """Sharing keeps every weight, MAC and output (a kernel looks the values up: no speed-up);
    it changes the storage. ``flash_bytes_bound``: an upper bound of the weight blob before
    the weights are known (all ``2**bits`` centroids used, positions as a bitmask -- or the
    worst case of relative indices when ``positions="relative"`` --, entropy coding never makes
    a part bigger). After sharing, :func:`shared_weight_bytes` gives the exact size.
    ``nonzeros``: the weights left by pruning (default: all).
    """
    n, c = int(weight_numel), int(out_channels)
    if n < 0 or c < 1 or n % c:
        raise PlanError(f"bad layer sizes: {n} weights, {c} output channels")
    nnz = n if nonzeros is None else int(nonzeros)
    if not 0 <= nnz <= n:
        raise PlanError(f"nonzeros must lie in 0..{n}, got {nonzeros!r}")
    cb = 2 ** config.bits * np.dtype(_CODEBOOK_NP[config.codebook_dtype]).itemsize
    pos = 0
    if nnz < n:
        pos = (n + 7) // 8
        if config.positions == "relative":
            ib = config.index_bits or 2
            pos = ((nnz + (n - nnz) // (2 ** ib - 1)) * ib + 7) // 8
    return {
        "technique": config.technique,
        "weights": 1.0,
        "macs": 1.0,
        "macs_dense": 1.0,
        "outputs": 1.0,
        "kept_weights": nnz,
        "out_channels": c,
        "storage": "shared",
        "stored_bits_per_weight": config.bits,
        "flash_bytes_bound": cb + pos + (nnz * config.bits + 7) // 8,
    }


# ---------------------------------------------------------------------------------------------
# centroid fine-tuning (torch)


class KeepShared:
    """Keeps shared weights on their codebook while fine-tuning: ``reapply()`` after every
    optimizer step. Built by :func:`keep_shared`. Holds per layer the cluster of every weight
    (-1: a zero) and the centroids, outside the model (no buffers or hooks on the modules)."""

    def __init__(self, layers: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                 lr: float, reduce: Literal["sum", "mean"]) -> None:
        self._layers = layers
        self.lr = lr
        self.reduce = reduce

    @property
    def layers(self) -> list[str]:
        return list(self._layers)

    def codebook(self, layer: str) -> np.ndarray:
        """The current centroids of ``layer`` (float32, the order of the recorded clusters)."""
        return self._layers[layer][2].detach().cpu().numpy().copy()

    def reapply(self) -> None:
        """Move every centroid by its members' summed (or mean) gradient, then write the
        centroids back into the weights (zeros stay zero)."""
        import torch

        with torch.no_grad():
            for weight, labels, centroids in self._layers.values():
                member = labels >= 0
                lab = labels[member]
                if weight.grad is not None and self.lr:
                    g = torch.zeros_like(centroids).index_add_(0, lab, weight.grad[member])
                    if self.reduce == "mean":
                        g /= torch.bincount(lab, minlength=centroids.numel()).clamp(min=1)
                    centroids.sub_(self.lr * g)
                new = torch.zeros_like(weight)
                new[member] = centroids[lab]
                weight.copy_(new)

    def holds(self) -> bool:
        """True when every weight equals its centroid and every zero is zero (read from the
        weights)."""
        import torch

        for weight, labels, centroids in self._layers.values():
            w = weight.detach()
            member = labels >= 0
            want = torch.zeros_like(w)
            want[member] = centroids[labels[member]]
            if not bool((w == want).all()):
                return False
        return True

    def attach(self, optimizer: torch.optim.Optimizer) -> Any:
        """Call :meth:`reapply` after each ``optimizer.step()``; returns the removable handle."""
        return optimizer.register_step_post_hook(lambda *_args: self.reapply())


def keep_shared(model: nn.Module, layers: Iterable[str], lr: float,
                reduce: Literal["sum", "mean"] = "sum") -> KeepShared:
    """Record the clusters of ``model``'s shared layers (call after :func:`share_module`).

    ``layers``: module names (``[""]`` for a single module). ``lr``: the centroid step size
    (the paper's rule uses the *summed* member gradient, so a large cluster moves faster;
    ``reduce="mean"`` makes the step independent of the cluster size). Raises ``PlanError`` for
    a layer with more than 256 distinct nonzero weights (not shared).
    """
    import torch

    if reduce not in ("sum", "mean"):
        raise PlanError(f"keep_shared: reduce must be 'sum' or 'mean', got {reduce!r}")
    modules = dict(model.named_modules())
    recorded = {}
    for name in layers:
        if name not in modules:
            raise PlanError(f"keep_shared: no module {name!r} in the model")
        w = _weight_param(modules[name])
        flat = w.detach().cpu().numpy()
        cb = _codebook(flat)
        if cb.size > 2 ** 8:
            raise PlanError(f"keep_shared: layer {name!r} has {cb.size} distinct nonzero "
                            "weights (more than 2**8): share it first")
        labels = np.where(flat != 0, np.searchsorted(cb, flat), -1)
        recorded[name] = (w, torch.from_numpy(labels).to(w.device),
                          torch.from_numpy(cb.copy()).to(device=w.device, dtype=w.dtype))
    return KeepShared(recorded, float(lr), reduce)


# ---------------------------------------------------------------------------------------------
# offers and the registry entry

SHARE_BITS = 4  # index bits of the offered codebooks (16 centroids)
SHARE_LEVELS: tuple[tuple[int, float], ...] = ((SHARE_BITS, 0.0), (SHARE_BITS, 0.75))
"""(index bits, sparsity pruned first) per option, named "k4" / "k4+s75" (a k-means codebook
of 2**4 values, Huffman-coded indices). The weights are decoded to the kernel's float precision
at load time, so only kernels with fp32 / fp16 weights take them: flash shrinks, latency is
that kernel's. Two levels keep the option count (and the KL measured per option) bounded."""
MIN_WEIGHTS_FOR_SHARING = 1024  # below this the codebook and code tables eat the saving
SHARE_KERNEL_WEIGHTS = ("fp32", "fp16")


def kernel_share_config(kernel: Kernel, bits: int) -> WeightSharingConfig:
    """The sharing a float kernel decodes at load time: an fp16 kernel's codebook is float16
    (the ONNX then holds exactly the stored values), an fp32 kernel's float32."""
    if kernel.weights == "fp16":
        return WeightSharingConfig(bits=bits, entropy="huffman", codebook_dtype="float16")
    return WeightSharingConfig(bits=bits, entropy="huffman")


def share_tag(bits: int, sparsity: float) -> str:
    """"k4", or "k4+s75" when 75 % of the weights are pruned before sharing."""
    return f"k{bits}" + (f"+s{round(100 * sparsity)}" if sparsity else "")


def offer(layer: LayerShape, name: str, kernel: Kernel, ctx: OfferContext) -> list[Offer]:
    """Sharing on float-weight kernels, optionally after unstructured pruning; the stored size
    needs the weights."""
    from techniques.prune import UnstructuredPruneConfig

    if not (ctx.weights and kernel.weights in SHARE_KERNEL_WEIGHTS
            and layer.weight_numel >= MIN_WEIGHTS_FOR_SHARING):
        return []
    return [Offer(share_tag(bits, s),
                  ((UnstructuredPruneConfig(sparsity=s),) if s else ())
                  + (kernel_share_config(kernel, bits),))
            for bits, s in ctx.levels_of("share", SHARE_LEVELS)]


def _apply_layer(module: nn.Module, config: WeightSharingConfig, name: str) -> nn.Module:
    from techniques.lowrank import factor_modules

    for part in factor_modules(module):  # a factorised layer: every factor shared on its own
        share_module(part, config)
    return module


def _verify_image(name: str, config: WeightSharingConfig, stored: Any, row: dict[str, Any]
                  ) -> list[str]:
    """The image's codebook: its bits, at most 2**bits distinct nonzero values."""
    image = check_shared(stored, config)
    row.update({"share_bits": config.bits, "image_codebook": None if stored.codebook is None
                else int(stored.codebook.size), "image_distinct_nonzero":
                image["distinct_nonzero"]})
    if stored.codebook is None or stored.bits != config.bits:
        return [f"{name}: flash image stores no {config.bits}-bit codebook "
                f"({stored.storage}, {stored.bits} bits)"]
    if not image["ok"]:
        return [f"{name}: flash image holds {image['distinct_nonzero']} distinct nonzero "
                f"weights, more than 2**{config.bits} = {2 ** config.bits}"]
    return []


def shared_weights(w: np.ndarray, config: WeightSharingConfig) -> np.ndarray:
    """``w`` on its codebook (:func:`share_weights`' first part): an ONNX initializer's form."""
    return share_weights(w, config)[0]


SHARE = Technique("share", WeightSharingConfig, offer, _apply_layer, _verify_image,
                  sized_by_weights=True, apply_weights=shared_weights)

__all__ = [
    "KeepShared",
    "WeightSharingConfig",
    "check_onnx_shared",
    "check_shared",
    "decode_shared",
    "encode_shared",
    "keep_shared",
    "kmeans_1d",
    "positions_from_relative",
    "relative_indices",
    "share_config",
    "share_cost_delta",
    "share_module",
    "share_weights",
    "shared_weight_bytes",
    "shared_weights",
]
