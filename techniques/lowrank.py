"""Technique: low-rank factorisation -- truncated SVD for Linear, Tucker-2 for Conv2d.

One technique = one file: the frozen config (what plan.json stores), its offers, its cost
delta, its torch executor, its check, and its registry entry (:mod:`techniques.registry`).
Importing this module imports neither torch nor tensorly (the executors
import them lazily); ranks, checks and cost deltas are numpy.

* ``nn.Linear(in, out)`` with rank ``r`` becomes ``nn.Sequential(Linear(in, r, bias=False),
  Linear(r, out))``: ``W = U S V^T`` truncated to ``r``, split evenly as ``sqrt(S) V^T`` and
  ``U sqrt(S)`` (equal factor ranges quantise better than putting ``S`` on one side). The bias
  stays on the second factor. ``r = min(in, out)`` reproduces the layer exactly.
* ``nn.Conv2d(cin, cout, k)`` (groups 1) with ranks ``(rank, rank_in)`` becomes Tucker-2
  (``tensorly.decomposition.partial_tucker`` on the output/input-channel modes, HOOI from an SVD
  start, deterministic): ``Sequential(Conv 1x1 cin->rank_in, Conv kxk rank_in->rank (the core,
  with the layer's stride/padding/dilation), Conv 1x1 rank->cout (+ bias))``. Depthwise and
  grouped convolutions have no Tucker-2 form here (``PlanError``).

The factors are the children ``0``, ``1`` (``2``) of the Sequential, so the ONNX export names
their nodes ``<layer>.0``, ``<layer>.1`` ... (:func:`factor_names`); the flash image stores them
under the same names. The rank a plan asked for is read back from the artifacts by
:func:`check_lowrank` (a torch module), :func:`onnx_ranks` (the ONNX file) and
:func:`image_ranks` (the flash image): the inner dimension of the factors.

``energy`` instead of ``rank``: the smallest rank whose leading singular values keep that
fraction of ``sum(s^2)`` (per unfolding for a conv: output channels, input channels).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from device_specs.schema import Kernel
from edgefit_common.errors import PlanError
from techniques.option import LayerShape, Offer, OfferContext, Technique

if TYPE_CHECKING:
    from torch import nn

FACTORISABLE = ("Linear", "Conv2d")
TUCKER_ITERATIONS = 100  # HOOI sweeps (it stops earlier once the fit no longer improves)


# ---------------------------------------------------------------------------------------------
# the config (what plan.json stores)


class LowRankConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    technique: Literal["lowrank"] = "lowrank"
    rank: int | None = Field(default=None, ge=1, description=(
        "Linear: the inner dimension of the two factors; Conv2d: the output-channel rank of "
        "the Tucker-2 core"))
    rank_in: int | None = Field(default=None, ge=1, description=(
        "Conv2d only: the input-channel rank of the core (default: rank, capped at the "
        "layer's input channels)"))
    energy: float | None = Field(default=None, gt=0.0, le=1.0, description=(
        "instead of rank: the fraction of the squared singular values the factors retain"))
    fraction: float | None = Field(default=None, gt=0.0, lt=1.0, description=(
        "instead of rank: the factors hold at most this fraction of the layer's weights "
        "(the largest such ranks; the planner resolves it to rank with the MACs in view)"))

    @model_validator(mode="after")
    def _one_way(self) -> LowRankConfig:
        ways = [self.rank, self.energy, self.fraction]
        if sum(w is not None for w in ways) != 1:
            raise ValueError("lowrank needs exactly one of rank (an integer >= 1), energy "
                             "(a fraction in (0, 1]) or fraction (in (0, 1))")
        if self.rank_in is not None and self.rank is None:
            raise ValueError("lowrank rank_in goes with rank, not with energy or fraction")
        return self


# ---------------------------------------------------------------------------------------------
# ranks (numpy)


def energy_rank(singular_values: np.ndarray, energy: float) -> int:
    """Smallest r whose leading singular values keep ``energy`` of ``sum(s^2)`` (at least 1)."""
    s2 = np.sort(np.asarray(singular_values, dtype=np.float64))[::-1] ** 2
    total = float(s2.sum())
    if total <= 0:
        return 1
    kept = np.cumsum(s2) / total
    return min(len(s2), 1 + int(np.searchsorted(kept, energy - 1e-12)))


def _unfold_sv(w: np.ndarray, mode: int) -> np.ndarray:
    return np.linalg.svd(np.moveaxis(w, mode, 0).reshape(w.shape[mode], -1), compute_uv=False)


def _bounded(shape: tuple[int, ...], rank: int, rank_in: int | None, where: str
             ) -> tuple[int, int | None]:
    """Check (rank, rank_in) against the layer's sizes; rank_in defaults to min(rank, cin)."""
    if len(shape) == 2:
        if rank_in is not None:
            raise PlanError(f"{where}: lowrank.rank_in applies to Conv2d only, this is a Linear")
        if rank > min(shape):
            raise PlanError(f"{where}: lowrank.rank {rank} is out of range; allowed "
                            f"1..{min(shape)} (min of in and out features)")
        return rank, None
    if len(shape) != 4:
        raise PlanError(f"{where}: lowrank needs a Linear or Conv2d weight, got shape {shape}")
    cout, cin = shape[:2]
    rank_in = rank_in or min(rank, cin)
    if rank > cout:
        raise PlanError(f"{where}: lowrank.rank {rank} is out of range; allowed 1..{cout} "
                        "(output channels)")
    if rank_in > cin:
        raise PlanError(f"{where}: lowrank.rank_in {rank_in} is out of range; allowed 1..{cin} "
                        "(input channels)")
    return rank, rank_in


def resolve_ranks(weight: np.ndarray, config: LowRankConfig, where: str = "layer"
                  ) -> tuple[int, int | None]:
    """(rank, rank_in) for this weight: energy resolved on its singular values, bounds checked.

    ``rank_in`` is None for a Linear weight (2-D). Ranks above the layer's sizes are a
    ``PlanError`` naming the field and the allowed range."""
    w = np.asarray(weight, dtype=np.float64)
    if config.rank is not None:
        return _bounded(w.shape, config.rank, config.rank_in, where)
    if config.fraction is not None:
        found = rank_for_fraction(w.shape, config.fraction)
        if found is None or found.rank is None:
            raise PlanError(f"{where}: lowrank.fraction {config.fraction:g} saves nothing on a "
                            f"weight of shape {tuple(w.shape)}; use a larger layer or an "
                            "explicit rank")
        return _bounded(w.shape, found.rank, found.rank_in, where)
    e = float(config.energy or 1.0)
    if w.ndim == 2:
        return _bounded(w.shape, energy_rank(_svd(w)[1], e), None, where)
    if w.ndim != 4:
        raise PlanError(f"{where}: lowrank needs a Linear or Conv2d weight, got shape {w.shape}")
    return _bounded(w.shape, energy_rank(_unfold_sv(w, 0), e), energy_rank(_unfold_sv(w, 1), e),
                    where)


# ---------------------------------------------------------------------------------------------
# cost delta (numpy): the factors' shapes, params and MACs


def _factor(suffix: str, op_type: str, op_class: str, shape: tuple[int, ...], bias: bool,
            macs: int, input_numel: int, output_numel: int) -> dict[str, Any]:
    numel = int(np.prod(shape))
    return {"suffix": suffix, "op_type": op_type, "op_class": op_class,
            "weight_shape": shape, "weight_numel": numel, "bias_numel": shape[0] if bias else 0,
            "out_channels": shape[0], "macs": int(macs), "input_numel": int(input_numel),
            "output_numel": int(output_numel)}


def _linear_factors(out_f: int, in_f: int, rank: int, bias: bool, tokens: int
                    ) -> list[dict[str, Any]]:
    return [
        _factor("0", "Linear", "linear", (rank, in_f), False, tokens * rank * in_f,
                tokens * in_f, tokens * rank),
        _factor("1", "Linear", "linear", (out_f, rank), bias, tokens * out_f * rank,
                tokens * rank, tokens * out_f),
    ]


def _conv_factors(shape: tuple[int, ...], rank: int, rank_in: int, bias: bool, in_hw: int,
                  out_hw: int) -> list[dict[str, Any]]:
    cout, cin, kh, kw = shape
    return [
        _factor("0", "Conv2d", "pointwise", (rank_in, cin, 1, 1), False, in_hw * rank_in * cin,
                in_hw * cin, in_hw * rank_in),
        _factor("1", "Conv2d", "pointwise" if kh == kw == 1 else "conv",
                (rank, rank_in, kh, kw), False, out_hw * rank * rank_in * kh * kw,
                in_hw * rank_in, out_hw * rank),
        _factor("2", "Conv2d", "pointwise", (cout, rank, 1, 1), bias, out_hw * cout * rank,
                out_hw * rank, out_hw * cout),
    ]


def lowrank_cost_delta(weight_shape: Sequence[int], config: LowRankConfig, bias: bool = True,
                       in_positions: int = 1, out_positions: int = 1) -> dict[str, Any]:
    """Params and MACs after factorising a layer of this weight shape, factor by factor.

    ``in_positions`` / ``out_positions``: spatial positions of the input / output (H x W for a
    conv; tokens for a Linear, both equal). ``config`` must carry a rank (``energy`` depends on
    the weights: resolve it with :func:`resolve_ranks` first). ``weights`` / ``macs``: the
    factorised fractions of the dense layer's weights / MACs; ``factors``: per factor its
    ``suffix`` (child name), op type and class, weight shape, bias, MACs and activation sizes.
    """
    shape = tuple(int(s) for s in weight_shape)
    if config.rank is None:
        raise PlanError("lowrank_cost_delta needs a rank; resolve energy on the weights first")
    rank, rank_in = _bounded(shape, config.rank, config.rank_in, "layer")
    if len(shape) == 2:
        factors = _linear_factors(shape[0], shape[1], rank, bias, in_positions)
        dense_macs = in_positions * shape[0] * shape[1]
    elif len(shape) == 4:
        assert rank_in is not None
        factors = _conv_factors(shape, rank, rank_in, bias, in_positions, out_positions)
        dense_macs = out_positions * int(np.prod(shape))
    else:
        raise PlanError(f"lowrank needs a Linear or Conv2d weight, got shape {shape}")
    dense = int(np.prod(shape))
    kept = sum(f["weight_numel"] for f in factors)
    macs = sum(f["macs"] for f in factors)
    return {"technique": "lowrank", "rank": rank, "rank_in": rank_in,
            "weights": kept / dense, "kept_weights": kept, "macs": macs / dense_macs,
            "factored_macs": macs, "dense_macs": dense_macs, "factors": factors}


def rank_for_fraction(weight_shape: Sequence[int], fraction: float, in_positions: int = 1,
                      out_positions: int = 1) -> LowRankConfig | None:
    """The largest ranks whose factors hold at most ``fraction`` of the layer's weights, or
    None when no such factorisation also lowers the MACs (tiny or 1-channel layers).

    A conv keeps the core's aspect: ``rank_in ~ rank * cin / cout``."""
    shape = tuple(int(s) for s in weight_shape)
    budget = fraction * int(np.prod(shape))
    best: LowRankConfig | None = None
    if len(shape) == 2:  # r (in + out) weights; below full rank min(in, out)
        r = min(min(shape) - 1, int(budget // sum(shape)))
        best = LowRankConfig(rank=r) if r >= 1 else None
    elif len(shape) == 4:
        cout, cin = shape[:2]
        for r in range(1, cout + 1):
            cfg = LowRankConfig(rank=r, rank_in=max(1, min(cin, round(r * cin / cout))))
            if lowrank_cost_delta(shape, cfg, True, in_positions, out_positions)[
                    "kept_weights"] <= budget:
                best = cfg
    if best is None:
        return None
    delta = lowrank_cost_delta(shape, best, True, in_positions, out_positions)
    return best if delta["macs"] < 1.0 and delta["weights"] < 1.0 else None


def _positions(module: Any, input_numel: int, output_numel: int) -> tuple[int, int] | None:
    """(input, output) positions of a factorisable module (None: not factorisable)."""
    from torch import nn

    if isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros":
        cin, cout = module.in_channels, module.out_channels
    elif isinstance(module, nn.Linear):
        cin, cout = module.in_features, module.out_features
    else:
        return None
    return max(1, input_numel // cin), max(1, output_numel // cout)


def module_rank_for_fraction(module: Any, fraction: float, input_numel: int,
                             output_numel: int, shape: Sequence[int] | None = None
                             ) -> LowRankConfig | None:
    """:func:`rank_for_fraction` for a module (per-sample activation sizes from the layer
    graph); None when the module cannot be factorised or the fraction saves nothing.
    ``shape``: the weight's shape once channel pruning has run (default: the module's)."""
    pos = _positions(module, input_numel, output_numel)
    if pos is None:
        return None
    return rank_for_fraction(tuple(shape or module.weight.shape), fraction, *pos)


def module_cost_delta(module: Any, config: LowRankConfig, input_numel: int,
                      output_numel: int, shape: Sequence[int] | None = None) -> dict[str, Any]:
    """:func:`lowrank_cost_delta` for a module (energy resolved on its weights). ``shape``:
    the weight's shape once channel pruning has run (then the config must carry its rank)."""
    pos = _positions(module, input_numel, output_numel)
    if pos is None:
        raise PlanError(f"lowrank cannot factorise a {type(module).__name__} "
                        f"(groups={getattr(module, 'groups', 1)}); allowed: Linear, Conv2d "
                        "with groups=1")
    if shape is not None:
        return lowrank_cost_delta(shape, config, module.bias is not None, *pos)
    w = module.weight.detach().cpu().numpy()
    rank, rank_in = resolve_ranks(w, config)
    return lowrank_cost_delta(w.shape, LowRankConfig(rank=rank, rank_in=rank_in),
                              module.bias is not None, *pos)


# ---------------------------------------------------------------------------------------------
# torch executors


@functools.lru_cache(maxsize=4)
def _cached_svd(data: bytes, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    w = np.frombuffer(data, dtype=np.float64).reshape(shape)
    return tuple(np.linalg.svd(w, full_matrices=False))


def _svd(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SVD of a float64 matrix, cached by value: the planner factorises the same weight once
    per precision and rank level, and the SVD is the expensive part."""
    u, s, vh = _cached_svd(np.ascontiguousarray(w, dtype=np.float64).tobytes(),
                           (int(w.shape[0]), int(w.shape[1])))
    return u, s, vh


def _factor_linear(module: nn.Module, config: LowRankConfig, where: str) -> nn.Module:
    import torch
    from torch import nn

    assert isinstance(module, nn.Linear)
    w = module.weight.detach().double().cpu().numpy()
    rank, _ = resolve_ranks(w, config, where)
    u_np, s_np, vh_np = _svd(w)
    u, s, vh = (torch.from_numpy(a.copy()) for a in (u_np, s_np, vh_np))
    root = s[:rank].sqrt()
    first = nn.Linear(module.in_features, rank, bias=False)
    second = nn.Linear(rank, module.out_features, bias=module.bias is not None)
    with torch.no_grad():
        first.weight.copy_((root[:, None] * vh[:rank]).to(module.weight.dtype))
        second.weight.copy_((u[:, :rank] * root[None, :]).to(module.weight.dtype))
        if module.bias is not None:
            second.bias.copy_(module.bias.detach())
    return nn.Sequential(first, second).to(module.weight.device)


def _tucker2(w: np.ndarray, rank: int, rank_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(core (rank, rank_in, kh, kw), U_out (cout, rank), U_in (cin, rank_in)), cached by
    value like :func:`_svd`."""
    w = np.ascontiguousarray(w, dtype=np.float64)
    core, u_out, u_in = _cached_tucker2(w.tobytes(), tuple(int(d) for d in w.shape), rank,
                                        rank_in)
    return core, u_out, u_in


@functools.lru_cache(maxsize=8)
def _cached_tucker2(data: bytes, shape: tuple[int, ...], rank: int, rank_in: int
                    ) -> tuple[np.ndarray, ...]:
    import tensorly as tl
    from tensorly.decomposition import partial_tucker

    w = np.frombuffer(data, dtype=np.float64).reshape(shape)
    tl.set_backend("numpy")
    (core, (u_out, u_in)), _ = partial_tucker(w, rank=[rank, rank_in], modes=[0, 1],
                                              n_iter_max=TUCKER_ITERATIONS, init="svd",
                                              random_state=0)
    return np.asarray(core), np.asarray(u_out), np.asarray(u_in)


def _factor_conv(module: nn.Module, config: LowRankConfig, where: str) -> nn.Module:
    import torch
    from torch import nn

    assert isinstance(module, nn.Conv2d)
    if module.groups != 1:
        raise PlanError(f"{where}: lowrank cannot factorise a grouped or depthwise Conv2d "
                        f"(groups={module.groups}); allowed: groups=1")
    if module.padding_mode != "zeros":
        raise PlanError(f"{where}: lowrank needs padding_mode 'zeros', got "
                        f"{module.padding_mode!r}")
    w = module.weight.detach().double().cpu().numpy()
    rank, rank_in = resolve_ranks(w, config, where)
    assert rank_in is not None
    core, u_out, u_in = _tucker2(w, rank, rank_in)
    cin, cout = module.in_channels, module.out_channels
    first = nn.Conv2d(cin, rank_in, 1, bias=False)
    mid = nn.Conv2d(rank_in, rank, module.kernel_size,  # type: ignore[arg-type]
                    stride=module.stride, padding=module.padding,  # type: ignore[arg-type]
                    dilation=module.dilation, bias=False)  # type: ignore[arg-type]
    last = nn.Conv2d(rank, cout, 1, bias=module.bias is not None)
    dtype = module.weight.dtype
    with torch.no_grad():
        first.weight.copy_(torch.from_numpy(u_in.T.copy()).reshape(rank_in, cin, 1, 1).to(dtype))
        mid.weight.copy_(torch.from_numpy(core.copy()).to(dtype))
        last.weight.copy_(torch.from_numpy(u_out.copy()).reshape(cout, rank, 1, 1).to(dtype))
        if module.bias is not None and last.bias is not None:
            last.bias.copy_(module.bias.detach())
    return nn.Sequential(first, mid, last).to(module.weight.device)


def factorize(module: nn.Module, config: LowRankConfig, where: str = "layer") -> nn.Module:
    """The factorised replacement of ``module`` (a new ``nn.Sequential``; ``module`` is left
    as it was). The caller puts it in the parent in place of the layer."""
    from torch import nn

    if not isinstance(config, LowRankConfig):
        raise PlanError(f"{where}: lowrank needs a LowRankConfig, got {config!r}")
    if isinstance(module, nn.Linear):
        return _factor_linear(module, config, where)
    if isinstance(module, nn.Conv2d):
        return _factor_conv(module, config, where)
    raise PlanError(f"{where}: lowrank factorises {' and '.join(FACTORISABLE)} layers, not "
                    f"{type(module).__name__}")


def factor_names(layer: str, op_type: str) -> list[str]:
    """Names of a factorised layer's factors (its Sequential children, the ONNX node names)."""
    if op_type not in FACTORISABLE:
        raise PlanError(f"{layer}: lowrank factorises {' and '.join(FACTORISABLE)} layers, not "
                        f"{op_type}")
    return [f"{layer}.{i}" for i in range(2 if op_type == "Linear" else 3)]


def factor_modules(module: nn.Module) -> list[nn.Module]:
    """The weighted modules a (possibly factorised) layer computes with: the factors of a
    factorised layer, else the layer itself."""
    from torch import nn

    if isinstance(module, nn.Sequential) and all(
            isinstance(m, nn.Linear | nn.Conv2d) for m in module) and len(module) in (2, 3):
        return list(module)
    return [module]


# ---------------------------------------------------------------------------------------------
# checks: the rank actually present, read from a module, the ONNX file or the flash image


def ranks_from_out_channels(op_type: str, out_channels: Sequence[int], in_channels: int
                            ) -> dict[str, Any]:
    """The ranks implied by the factors' output-channel counts (in factor order) and the first
    factor's input channels (the layer's)."""
    outs = [int(c) for c in out_channels]
    base = {"in_channels": int(in_channels), "out_channels": outs[-1] if outs else 0}
    if op_type == "Linear" and len(outs) == 2:
        return {"rank": outs[0], "rank_in": None, **base}
    if op_type == "Conv2d" and len(outs) == 3:
        return {"rank": outs[1], "rank_in": outs[0], **base}
    raise PlanError(f"a factorised {op_type} has {2 if op_type == 'Linear' else 3} factors, "
                    f"found {len(outs)}")


def confirm_ranks(found: dict[str, Any], config: LowRankConfig | None) -> dict[str, Any]:
    """Add ``expected`` and ``ok`` when ``config`` names the ranks (energy: nothing to compare)."""
    if config is not None and config.rank is not None:
        want_in = None if found["rank_in"] is None else (
            config.rank_in or min(config.rank, found["in_channels"]))
        found["expected"] = {"rank": config.rank, "rank_in": want_in}
        found["ok"] = (found["rank"], found["rank_in"]) == (config.rank, want_in)
    return found


def check_lowrank(module: nn.Module, config: LowRankConfig | None = None) -> dict[str, Any]:
    """Read a factorised layer (its Sequential) back: ranks, factor shapes, params; with a
    rank ``config`` also ``ok`` (the ranks asked for are the ranks present)."""
    from torch import nn

    factors = factor_modules(module)
    if len(factors) == 1:
        raise PlanError(f"{type(module).__name__} is not a factorised layer")
    op_type = "Linear" if isinstance(factors[0], nn.Linear) else "Conv2d"
    shapes = [tuple(int(d) for d in m.weight.shape) for m in factors]  # type: ignore[union-attr]
    found = ranks_from_out_channels(op_type, [s[0] for s in shapes], shapes[0][1])
    found["factor_shapes"] = shapes
    found["params"] = sum(p.numel() for p in module.parameters())
    return confirm_ranks(found, config)


def onnx_ranks(path: Path, layers: dict[str, str]) -> dict[str, dict[str, Any]]:
    """For each factorised layer ({layer: op_type}), the ranks stored in the ONNX file: the
    output channels of its factor nodes' weights (traced through Cast/DequantizeLinear)."""
    import onnx

    from techniques.onnx.graph import Graph, trace, weight_axis, weight_input

    g = Graph(onnx.load(str(path)).graph)
    out: dict[str, dict[str, Any]] = {}
    for layer, op_type in layers.items():
        outs, ins = [], []
        for name in factor_names(layer, op_type):
            node = g.by_name.get(name)
            init = trace(g, weight_input(node))[0] if node is not None else None
            if node is None or init is None:
                raise PlanError(f"{path}: no weighted node {name!r} for factorised layer "
                                f"{layer!r}")
            dims = tuple(int(d) for d in init.dims)
            axis = weight_axis(node, np.zeros(dims, dtype=np.int8))
            outs.append(dims[axis])
            ins.append(dims[1 - axis] if len(dims) == 2 else dims[1])
        out[layer] = ranks_from_out_channels(op_type, outs, ins[0])
    return out


def image_ranks(stored: dict[str, Any], layers: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The same from a flash image's layers ({name: StoredLayer}; shape axis 0 = outputs)."""
    out: dict[str, dict[str, Any]] = {}
    for layer, op_type in layers.items():
        names = factor_names(layer, op_type)
        missing = [n for n in names if n not in stored]
        if missing:
            raise PlanError(f"flash image holds no factor {', '.join(missing)} of {layer!r}")
        out[layer] = ranks_from_out_channels(op_type, [stored[n].shape[0] for n in names],
                                             stored[names[0]].shape[1])
    return out


def lowrank_config(techniques: Sequence[Any]) -> LowRankConfig | None:
    """The layer's factorisation among its techniques (None: not factorised)."""
    return next((t for t in techniques if isinstance(t, LowRankConfig)), None)


# ---------------------------------------------------------------------------------------------
# offers and the registry entry

RANK_LEVELS: tuple[float, ...] = (0.5, 0.25)
"""The factors keep about this fraction of the layer's weights. Unlike zeros, fewer MACs are
fewer MACs: these relieve flash and latency."""
MIN_WEIGHTS_FOR_LOWRANK = 1024  # smaller layers: the extra op costs more than the MACs saved


def lowrank_candidate(layer: LayerShape) -> bool:
    return (layer.op_type in FACTORISABLE and layer.op_class != "depthwise"
            and layer.weight_numel >= MIN_WEIGHTS_FOR_LOWRANK)


def offer(layer: LayerShape, name: str, kernel: Kernel, ctx: OfferContext) -> list[Offer]:
    """"r50", "r25" on every kernel, as fractions; the enumeration resolves each to ranks on
    the layer's (channel-pruned) shape and drops those that lower neither weights nor MACs."""
    if not (ctx.ranks and lowrank_candidate(layer)):
        return []
    return [Offer(f"r{round(100 * f)}", (LowRankConfig(fraction=f),))
            for f in ctx.levels_of("lowrank", RANK_LEVELS)]


def _apply_layer(module: nn.Module, config: LowRankConfig, name: str) -> nn.Module:
    """The layer's factors (a new module its parent takes); a layer already factorised (a copy
    of a copy) is factorised once."""
    if len(factor_modules(module)) > 1:
        return module
    return factorize(module, config, name)


LOWRANK = Technique("lowrank", LowRankConfig, offer, _apply_layer)

__all__ = [
    "LowRankConfig",
    "check_lowrank",
    "confirm_ranks",
    "energy_rank",
    "factor_modules",
    "factor_names",
    "factorize",
    "image_ranks",
    "lowrank_config",
    "lowrank_cost_delta",
    "module_cost_delta",
    "module_rank_for_fraction",
    "onnx_ranks",
    "rank_for_fraction",
    "ranks_from_out_channels",
    "resolve_ranks",
]
