"""Technique: pruning -- unstructured magnitude, N:M, and structured output-channel pruning.

One technique = one file: the frozen config (what plan.json stores), its offers, its cost
delta, its torch executor, its check, and its registry entry (:mod:`techniques.registry`).
Importing this module does not import torch: the torch executors
import it (and Torch-Pruning) lazily; the mask arithmetic, checks and cost deltas are numpy.

* ``prune_unstructured`` (:class:`UnstructuredPruneConfig`) -- zero the ``round(sparsity * n)``
  smallest ``|w|`` of one layer's weight (``round`` is Python's, half to even). Ties are broken by
  position: among equal magnitudes the lower flat (C-order) index is pruned first. The zeros are
  physically in ``weight``; no mask, buffer or hook is left on the module. A weight that already
  held more zeros keeps them (then there are more than ``round(sparsity * n)`` zeros). The stored
  size of such a layer is :func:`formats.sparse_format.sparse_bytes` of the nonzeros.
  Global magnitude pruning (:func:`global_sparsities`) ranks the weights of several layers
  together against one threshold; it is recorded per layer as the sparsity that threshold gave
  that layer (``scope="global"``), so each layer's zeros and stored size stay a function of the
  layer alone and the plan can price them.
* ``prune_nm`` (:class:`NMPruneConfig`, 2:4 by default) -- in every group of ``m`` consecutive
  weights along the *input* dimension (axis 1: Linear ``(out, in)``, Conv ``(out, in, kh, kw)``
  grouped over input channels at each ``(out, kh, kw)``, as NVIDIA's 2:4 sparsity does) keep the
  ``n`` largest ``|w|`` (ties: the lower index is kept). Needs ``in % m == 0`` (a depthwise conv
  or a 1-channel input conv has no N:M form: ``PlanError``).
* ``prune_channels`` (:class:`ChannelPruneConfig`) -- structured: removes whole output channels
  and, with Torch-Pruning's ``DependencyGraph``, everything coupled to them (BatchNorm, the
  consumers' input channels, depthwise convs, residual adds, a Linear after flatten), so the
  result is a smaller dense model. Channels are ranked by the group L1 norm (Torch-Pruning's
  ``GroupMagnitudeImportance(p=1)``, mean over the coupled layers); ties go to the lower index.
  It is model-level: :func:`prune_channels` takes ``{layer: config}`` and an example input.
  Layers that share channels form a :class:`CoupledGroup` (:func:`coupling`,
  :func:`coupled_groups`) and must all carry the same config.

Fine-tuning after pruning must keep zeros zero: :func:`keep_zeros` records where the zeros are;
call ``.reapply()`` after every ``optimizer.step()`` (or ``.attach(optimizer)`` once, which does
that from the optimizer's step post-hook). That, rather than a gradient hook, is the mechanism
because it holds for every optimizer: momentum or Adam state left from before pruning, and
weight decay, would move a zero whose gradient is masked. Set ``torch.set_flush_denormal(True)``
while fine-tuning pruned models (denormals made a masked fine-tune 3.5x slower here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from device_specs.schema import Kernel, NMSparsity
from edgefit_common.errors import PlanError
from techniques.option import LayerShape, Offer, OfferContext, Technique

if TYPE_CHECKING:
    import torch
    from torch import nn


# ---------------------------------------------------------------------------------------------
# the config (what plan.json stores)


class UnstructuredPruneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    technique: Literal["prune_unstructured"] = "prune_unstructured"
    sparsity: float = Field(ge=0.0, le=0.99, description="fraction of the layer's weights zeroed")
    scope: Literal["layer", "global"] = Field(
        default="layer", description="layer: this layer's own smallest weights; global: the "
        "sparsity one magnitude threshold over several layers gave this layer "
        "(global_sparsities)")


class NMPruneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    technique: Literal["prune_nm"] = "prune_nm"
    n: int = Field(default=2, ge=1, description="weights kept in each group")
    m: int = Field(default=4, ge=2, le=32, description="group size along the input dimension")

    @model_validator(mode="after")
    def _n_below_m(self) -> NMPruneConfig:
        if self.n >= self.m:
            raise ValueError(f"N:M pruning needs n < m, got {self.n}:{self.m}")
        return self


class ChannelPruneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    technique: Literal["prune_channels"] = "prune_channels"
    ratio: float = Field(ge=0.0, le=0.9, description="fraction of output channels removed")
    round_to: int = Field(default=1, ge=1, description="kept channels: a multiple of this")


PruneConfig = Annotated[UnstructuredPruneConfig | NMPruneConfig | ChannelPruneConfig,
                        Field(discriminator="technique")]
"""Any pruning config (a discriminated union on ``technique``)."""


# ---------------------------------------------------------------------------------------------
# numpy: masks, counts, checks


def _weight_array(obj: Any) -> np.ndarray:
    """The weight of a module, a ``flash_image.StoredLayer``, a tensor or an array, as numpy."""
    w = getattr(obj, "weight", obj)
    if hasattr(w, "detach"):
        w = w.detach().cpu().numpy()
    return np.asarray(w)


def pruned_count(numel: int, sparsity: float) -> int:
    """Weights zeroed by unstructured pruning: ``round(sparsity * numel)`` (half to even)."""
    n = int(numel)
    if n < 0:
        raise PlanError(f"negative weight count {n}")
    return min(n, round(float(sparsity) * n))


def global_sparsities(weights: dict[str, np.ndarray], sparsity: float
                      ) -> dict[str, UnstructuredPruneConfig]:
    """Global magnitude pruning: the ``round(sparsity * total)`` smallest ``|w|`` over all
    ``weights`` (ties: stable sort, layers in the given order), as each layer's config.

    Layer i loses ``k_i`` of its ``n_i`` weights; its config says ``sparsity = k_i / n_i``, and
    :func:`magnitude_keep_mask` at that sparsity removes exactly the weights the global
    threshold removes (up to ties at the threshold; a layer the threshold would empty beyond
    99 % keeps 1 %, the config's limit)."""
    from formats.quant_math import as_float32

    if not weights:
        raise PlanError("global pruning needs at least one layer")
    if not 0.0 <= sparsity <= 0.99:
        raise PlanError(f"global sparsity must be in [0, 0.99], got {sparsity}")
    mags = [np.abs(as_float32(w, f"layer {n!r} weights")).reshape(-1) for n, w in weights.items()]
    sizes = np.array([m.size for m in mags])
    owner = np.repeat(np.arange(len(mags)), sizes)
    k = pruned_count(int(sizes.sum()), sparsity)
    pruned = np.bincount(owner[np.argsort(np.concatenate(mags), kind="stable")[:k]],
                         minlength=len(mags))
    return {name: UnstructuredPruneConfig(sparsity=min(0.99, int(c) / int(n)), scope="global")
            for name, c, n in zip(weights, pruned, sizes, strict=True)}


def magnitude_keep_mask(w: np.ndarray, sparsity: float) -> np.ndarray:
    """Boolean mask (shape of ``w``), False at the ``pruned_count`` smallest ``|w|``.

    Sorted by magnitude with a stable sort, so equal magnitudes are pruned in C order.
    """
    from formats.quant_math import as_float32

    a = as_float32(w)
    k = pruned_count(a.size, sparsity)
    keep = np.ones(a.size, dtype=bool)
    if k:
        order = np.argsort(np.abs(a).reshape(-1), kind="stable")
        keep[order[:k]] = False
    return keep.reshape(a.shape)


def _nm_groups(a: np.ndarray, m: int) -> np.ndarray:
    """View ``a`` as ``(groups, m)``: consecutive input-dimension (axis 1) runs of length m."""
    if a.ndim < 2:
        raise PlanError(f"N:M pruning needs a weight with an input dimension, got shape "
                        f"{tuple(a.shape)}")
    cin = a.shape[1]
    if cin % m:
        raise PlanError(f"N:M pruning groups the input dimension in runs of {m}, but the weight "
                        f"of shape {tuple(a.shape)} has {cin} input channels")
    return np.moveaxis(a, 1, -1).reshape(-1, m)


def nm_applicable(weight_shape: Iterable[int], config: NMPruneConfig) -> bool:
    """Whether a weight of this shape has an N:M form (input dimension a multiple of m)."""
    shape = tuple(int(s) for s in weight_shape)
    return len(shape) >= 2 and shape[1] % config.m == 0


def nm_keep_mask(w: np.ndarray, n: int, m: int) -> np.ndarray:
    """Boolean mask keeping the ``n`` largest ``|w|`` of every group (ties: lower index kept)."""
    from formats.quant_math import as_float32

    a = as_float32(w)
    groups = _nm_groups(a, m)
    order = np.argsort(-np.abs(groups), axis=1, kind="stable")
    keep_g = np.zeros_like(groups, dtype=bool)
    np.put_along_axis(keep_g, order[:, :n], True, axis=1)
    moved_shape = np.moveaxis(a, 1, -1).shape
    return np.moveaxis(keep_g.reshape(moved_shape), -1, 1)


def check_unstructured(obj: Any, config: UnstructuredPruneConfig | None = None) -> dict[str, Any]:
    """Read a weight back (module, stored layer, tensor or array): its zeros and sparsity.

    With ``config``, also ``expected_zeros`` and ``ok`` (at least that many zeros).
    """
    w = _weight_array(obj)
    numel = int(w.size)
    zeros = int((w == 0).sum())
    found: dict[str, Any] = {
        "numel": numel,
        "zeros": zeros,
        "nonzeros": numel - zeros,
        "sparsity": zeros / numel if numel else 0.0,
    }
    if config is not None:
        found["expected_zeros"] = pruned_count(numel, config.sparsity)
        found["ok"] = zeros >= found["expected_zeros"]
    return found


def check_onnx_zeros(path: Any, configs: Mapping[str, UnstructuredPruneConfig]
                     ) -> dict[str, dict[str, Any]]:
    """Read each pruned layer's weight back from an ONNX file (the initializer its node reads,
    through any Cast / DequantizeLinear; integer codes at their zero point count as zeros):
    :func:`check_unstructured`, so ``ok`` says the runnable model really holds the zeros."""
    from techniques.onnx.weights import stored_weights

    values = stored_weights(path, list(configs))
    return {layer: check_unstructured(values[layer], cfg) for layer, cfg in configs.items()}


def check_nm(obj: Any, config: NMPruneConfig) -> dict[str, Any]:
    """Read a weight back and verify the N:M pattern group by group."""
    w = _weight_array(obj)
    groups = _nm_groups(w, config.m)
    nonzeros = (groups != 0).sum(axis=1)
    compliant = int((nonzeros <= config.n).sum())
    return {
        "pattern": f"{config.n}:{config.m}",
        "groups": int(groups.shape[0]),
        "compliant_groups": compliant,
        "compliant": compliant == groups.shape[0],
        "max_nonzeros_per_group": int(nonzeros.max()) if nonzeros.size else 0,
        "sparsity": float((w == 0).sum() / w.size) if w.size else 0.0,
    }


def kept_channels(channels: int, ratio: float, round_to: int = 1) -> int:
    """Output channels that channel pruning keeps.

    ``kept = channels - round(ratio * channels)`` (at least 1), then rounded to the *nearest*
    multiple of ``round_to`` (ties down), never below ``round_to`` and never above
    ``channels``. ``ratio == 0`` keeps every channel; so does a layer with fewer channels than
    ``round_to`` (no pruning can give it a multiple).
    """
    c, r = int(channels), int(round_to)
    if c < 1 or r < 1:
        raise PlanError(f"bad channel count {c} or round_to {r}")
    if ratio <= 0 or c < r:
        return c
    kept = max(1, c - round(float(ratio) * c))
    if r == 1:
        return kept
    lower = max(r, (kept // r) * r)
    upper = lower + r
    best = upper if kept - lower > upper - kept else lower
    if best > c:
        best = (c // r) * r
    return best


# ---------------------------------------------------------------------------------------------
# cost deltas: what each option changes, for cost_models and the planner


def _delta(technique: str, weight_numel: int, out_channels: int, kept_weights: int,
           macs: float, macs_dense: float, outputs: float, kept_out: int,
           storage: str) -> dict[str, Any]:
    n = int(weight_numel)
    return {
        "technique": technique,
        "weights": kept_weights / n if n else 1.0,
        "macs": macs,
        "macs_dense": macs_dense,
        "outputs": outputs,
        "kept_weights": kept_weights,
        "out_channels": kept_out,
        "storage": storage,
    }


def _check_sizes(weight_numel: int, out_channels: int) -> tuple[int, int]:
    n, c = int(weight_numel), int(out_channels)
    if n < 0 or c < 1 or n % c:
        raise PlanError(f"bad layer sizes: {n} weights, {c} output channels")
    return n, c


def unstructured_cost_delta(weight_numel: int, out_channels: int,
                            config: UnstructuredPruneConfig) -> dict[str, Any]:
    """Kept fractions under unstructured pruning.

    ``weights``/``kept_weights``: nonzeros left (store them with ``sparse_format.sparse_bytes``,
    ``storage == "sparse"``). ``macs``: what a kernel that skips zeros executes; ``macs_dense``:
    what a dense kernel executes (1.0: no speed-up without sparse kernels). Outputs unchanged.
    """
    n, c = _check_sizes(weight_numel, out_channels)
    kept = n - pruned_count(n, config.sparsity)
    frac = kept / n if n else 1.0
    return _delta(config.technique, n, c, kept, frac, 1.0, 1.0, c, "sparse")


def nm_cost_delta(weight_numel: int, out_channels: int, config: NMPruneConfig) -> dict[str, Any]:
    """Kept fractions under N:M: ``n/m`` of weights and of MACs on N:M-capable hardware
    (``macs``); a dense kernel still executes all (``macs_dense = 1``). Outputs unchanged.
    Assumes the layer is :func:`nm_applicable` (then ``weight_numel`` is a multiple of m)."""
    n, c = _check_sizes(weight_numel, out_channels)
    kept = (n // config.m) * config.n
    frac = kept / n if n else 1.0
    return _delta(config.technique, n, c, kept, frac, 1.0, 1.0, c, "sparse")


def channel_cost_delta(weight_numel: int, out_channels: int,
                       config: ChannelPruneConfig) -> dict[str, Any]:
    """Kept fractions of the layer's *own* output-channel pruning: ``kept / C`` of weights,
    MACs (dense kernels too: the model really is smaller) and output activations.

    The layer's consumers lose the same fraction of their input channels, which scales *their*
    weights and MACs (``consumer_inputs``); use :func:`channel_fractions` to compose both sides
    over a model's coupled groups.
    """
    n, c = _check_sizes(weight_numel, out_channels)
    k = kept_channels(c, config.ratio, config.round_to)
    f = k / c
    out = _delta(config.technique, n, c, (n // c) * k, f, f, f, k, "dense")
    out["consumer_inputs"] = f
    return out


def cost_delta(weight_numel: int, out_channels: int, config: Any) -> dict[str, Any]:
    """Dispatch on ``config.technique`` to the cost delta of that pruning technique."""
    fns: dict[str, Callable[..., dict[str, Any]]] = {
        "prune_unstructured": unstructured_cost_delta,
        "prune_nm": nm_cost_delta,
        "prune_channels": channel_cost_delta,
    }
    technique = getattr(config, "technique", None)
    if technique not in fns:
        raise PlanError(f"not a pruning config: {config!r}")
    return fns[technique](weight_numel, out_channels, config)


# ---------------------------------------------------------------------------------------------
# torch executors: unstructured and N:M (module-level)


def _strip_torch_prune(module: nn.Module) -> None:
    """Make any ``torch.nn.utils.prune`` reparametrisation permanent (weight = orig * mask)."""
    from torch.nn.utils import prune as torch_prune

    if torch_prune.is_pruned(module) and hasattr(module, "weight_orig"):
        torch_prune.remove(module, "weight")


def _weight_param(module: nn.Module) -> torch.Tensor:
    w = getattr(module, "weight", None)
    if w is None or not hasattr(w, "detach"):
        raise PlanError(f"{type(module).__name__} has no weight to prune")
    return w


def _write_mask(module: nn.Module, keep: np.ndarray) -> nn.Module:
    import torch

    w = _weight_param(module)
    with torch.no_grad():
        w.mul_(torch.from_numpy(keep).to(device=w.device, dtype=w.dtype))
    return module


def keep_mask(w: np.ndarray, config: UnstructuredPruneConfig | NMPruneConfig) -> np.ndarray:
    """The weights a pruning config keeps (unstructured: by magnitude; N:M: per group)."""
    if isinstance(config, NMPruneConfig):
        return nm_keep_mask(w, config.n, config.m)
    return magnitude_keep_mask(w, config.sparsity)


def pruned_weights(w: np.ndarray, config: UnstructuredPruneConfig | NMPruneConfig
                   ) -> np.ndarray:
    """``w`` (output channels first) with the pruned weights zeroed: the values the torch
    executors below write (the same mask, multiplied in), for an ONNX initializer."""
    a = np.asarray(w)
    return a * keep_mask(a, config).astype(a.dtype)


def prune_unstructured(module: nn.Module, config: UnstructuredPruneConfig) -> nn.Module:
    """Zero the smallest weights of ``module`` in place (see the module docstring); returns it."""
    _strip_torch_prune(module)
    w = _weight_param(module)
    return _write_mask(module, keep_mask(w.detach().cpu().numpy(), config))


def prune_nm(module: nn.Module, config: NMPruneConfig) -> nn.Module:
    """Keep the n largest of every m input-dimension weights of ``module`` (in place)."""
    _strip_torch_prune(module)
    w = _weight_param(module)
    return _write_mask(module, keep_mask(w.detach().cpu().numpy(), config))


class KeepZeros:
    """Keeps pruned weights at zero while fine-tuning: ``reapply()`` after every optimizer step.

    Built by :func:`keep_zeros`. Holds one boolean mask per layer, outside the model (the
    modules get no buffers or hooks, so ``state_dict`` and export are unchanged).
    """

    def __init__(self, masks: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        self._masks = masks

    @property
    def layers(self) -> list[str]:
        return list(self._masks)

    def reapply(self) -> None:
        """Set every recorded zero back to zero (cheap: one multiply per layer)."""
        import torch

        with torch.no_grad():
            for weight, keep in self._masks.values():
                weight.mul_(keep)

    def holds(self) -> bool:
        """True when every recorded zero is still exactly zero (read from the weights)."""
        return all(bool((weight.detach()[keep == 0] == 0).all())
                   for weight, keep in self._masks.values())

    def attach(self, optimizer: torch.optim.Optimizer) -> Any:
        """Call :meth:`reapply` after each ``optimizer.step()``; returns the removable handle."""
        return optimizer.register_step_post_hook(lambda *_args: self.reapply())


def keep_zeros(model: nn.Module, layers: Iterable[str] | None = None) -> KeepZeros:
    """Record the zeros of ``model``'s pruned weights (call after pruning, before fine-tuning).

    ``layers``: module names to protect; default every module whose ``weight`` holds a zero.
    Works on a single module too (``layers`` then defaults to ``[""]`` if it has zeros). Call it
    after any channel pruning: :func:`prune_channels` replaces the weight tensors it shrinks.
    """
    modules = dict(model.named_modules())
    names = list(layers) if layers is not None else [
        name for name, m in modules.items()
        if getattr(m, "weight", None) is not None and hasattr(m.weight, "detach")
        and bool((m.weight.detach() == 0).any())
    ]
    masks = {}
    for name in names:
        if name not in modules:
            raise PlanError(f"keep_zeros: no module {name!r} in the model")
        w = _weight_param(modules[name])
        masks[name] = (w, (w.detach() != 0).to(w.dtype))
    return KeepZeros(masks)


# ---------------------------------------------------------------------------------------------
# structured channel pruning (model-level, Torch-Pruning)


@dataclass(frozen=True)
class CoupledGroup:
    """Layers that share one set of channels, so they must share one channel-pruning choice.

    ``layers``: Conv/Linear layers whose *output* channels are these channels (a depthwise conv's
    output channels are its input channels, so it belongs to its producer's group). ``consumers``:
    layers whose *input* channels are these channels (weights and MACs scale by the kept
    fraction); a layer can be in both lists (a residual block's projection that reads a
    depthwise output of the same group), and depthwise convs always are. ``depthwise``: the
    members that are depthwise convs (their weights scale once, not twice). ``norms``: the
    BatchNorm/LayerNorm modules pruned with the group. ``channels``: the group's channel count.
    Names are in the model's module order.
    """

    layers: tuple[str, ...]
    consumers: tuple[str, ...]
    depthwise: tuple[str, ...]
    norms: tuple[str, ...]
    channels: int


def kept_slice(module: nn.Module, shape: Iterable[int]) -> nn.Module:
    """A copy of a Conv2d / Linear cut to ``shape`` (kept outputs, kept inputs, kernel): the
    output channels with the largest L1 norm, then the input slices with the largest L1 norm,
    in their original order. A stand-in for the layer after channel pruning, to size what the
    per-layer techniques store on it (Torch-Pruning ranks channels over the whole coupled
    group: the kept shape is the same, the kept channels may differ). Not for inference."""
    import copy

    import torch
    from torch import nn

    target = tuple(int(d) for d in shape)
    w = _weight_param(module).detach()
    groups = int(getattr(module, "groups", 1))
    if w.dim() != len(target) or w.shape[2:] != target[2:] or any(
            t > d for t, d in zip(target[:2], w.shape[:2], strict=True)):
        raise PlanError(f"cannot cut a {tuple(w.shape)} weight to {target}")
    rows = torch.sort(torch.topk(w.abs().flatten(1).sum(1), target[0]).indices).values
    w = w[rows]
    cols = torch.sort(torch.topk(w.abs().transpose(0, 1).flatten(1).sum(1),
                                 target[1]).indices).values
    out = copy.deepcopy(module)
    out.weight = nn.Parameter(w[:, cols].clone())
    bias = getattr(module, "bias", None)
    if isinstance(bias, torch.Tensor):
        out.bias = nn.Parameter(bias.detach()[rows].clone())
    for attr, value in (("out_channels", target[0]), ("out_features", target[0]),
                        ("in_features", target[1])):
        if hasattr(out, attr):
            setattr(out, attr, value)
    if isinstance(out, nn.Conv2d) and groups > 1:  # depthwise: one input per output
        out.in_channels = out.groups = target[0]
    elif isinstance(out, nn.Conv2d):
        out.in_channels = target[1]
    return out


def _example(example_input: Any) -> Any:
    import torch

    if isinstance(example_input, torch.Tensor):
        return example_input
    if isinstance(example_input, tuple | list) and all(isinstance(s, int) for s in example_input):
        return torch.zeros((1, *example_input))  # a sample shape such as (1, 28, 28)
    return example_input


def _build_graph(model: nn.Module, example_input: Any) -> Any:
    import torch
    import torch_pruning as tp

    with torch.enable_grad():
        return tp.DependencyGraph().build_dependency(model, example_inputs=_example(example_input),
                                                     verbose=False)


def _is_depthwise(module: nn.Module) -> bool:
    from torch import nn

    return isinstance(module, nn.Conv2d) and module.groups > 1 and \
        module.groups == module.in_channels == module.out_channels


def _analyse(model: nn.Module, example_input: Any) -> tuple[Any, list[tuple[CoupledGroup, Any]]]:
    """The dependency graph and every prunable group with its root module."""
    from torch import nn

    dg = _build_graph(model, example_input)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    names = {m: n for n, m in model.named_modules()}
    sinks = {node.module for node in dg.module2node.values() if not node.outputs}
    planned = (nn.Conv2d, nn.Linear)
    groups: list[tuple[CoupledGroup, Any]] = []
    for group in dg.get_all_groups(root_module_types=[nn.Conv2d, nn.Linear]):
        outs: set[str] = set()
        ins: set[str] = set()
        norms: set[str] = set()
        prunable = True
        for dep, _idxs in group:
            mod = dep.target.module
            is_out = dg.is_out_channel_pruning_fn(dep.handler)
            if mod in sinks and (is_out or not isinstance(mod, planned)):
                prunable = False  # these channels are the model's output
            if mod not in names:
                continue
            name = names[mod]
            if isinstance(mod, planned):
                (outs if is_out or _is_depthwise(mod) else ins).add(name)
            elif isinstance(mod, nn.modules.batchnorm._BatchNorm | nn.LayerNorm | nn.GroupNorm):
                norms.add(name)
        if not prunable or not outs:
            continue
        dw = {n for n in outs if _is_depthwise(model.get_submodule(n))}
        root = group[0].dep.target.module
        cg = CoupledGroup(
            layers=tuple(sorted(outs, key=order.__getitem__)),
            consumers=tuple(sorted(ins | dw, key=order.__getitem__)),
            depthwise=tuple(sorted(dw, key=order.__getitem__)),
            norms=tuple(sorted(norms, key=order.__getitem__)),
            channels=int(dg.get_out_channels(root)),
        )
        groups.append((cg, group))
    groups.sort(key=lambda g: order[g[0].layers[0]])
    return dg, groups


def _eval_mode(model: nn.Module) -> Callable[[], None]:
    """Put ``model`` in eval mode (tracing must not update BatchNorm statistics); returns undo."""
    modes = {m: m.training for m in model.modules()}
    model.eval()

    def restore() -> None:
        for m, training in modes.items():
            m.training = training

    return restore


def coupling(model: nn.Module, example_input: Any) -> list[CoupledGroup]:
    """Every group of layers that must share a channel-pruning choice, in model order.

    Each Conv/Linear whose output channels can be pruned is in exactly one group's ``layers``; a
    layer in none (the classifier: its outputs are the model's) cannot take ``prune_channels``.
    ``example_input``: a batch tensor, or one sample's shape such as ``(1, 28, 28)``.
    """
    restore = _eval_mode(model)
    try:
        return [cg for cg, _ in _analyse(model, example_input)[1]]
    finally:
        restore()


def coupled_groups(model: nn.Module, example_input: Any) -> list[list[str]]:
    """Layer names that must share a pruning choice (the planner's coupling constraints)."""
    return [list(cg.layers) for cg in coupling(model, example_input)]


def channel_fractions(groups: Iterable[CoupledGroup],
                      configs: Mapping[str, ChannelPruneConfig]) -> dict[str, dict[str, float]]:
    """Compose a channel-pruning plan over coupled groups: per affected layer, the kept fraction
    of its ``weights``, ``macs``, ``outputs`` and ``inputs`` (own output channels times the
    producer group's input fraction; a depthwise conv counts once). ``configs`` is keyed by
    layer; a group's config is that of its first layer present in ``configs``."""
    out_f: dict[str, float] = {}
    in_f: dict[str, float] = {}
    dw: set[str] = set()
    for g in groups:
        cfg = next((configs[n] for n in g.layers if n in configs), None)
        if cfg is None:
            continue
        f = kept_channels(g.channels, cfg.ratio, cfg.round_to) / g.channels
        dw.update(g.depthwise)
        for n in g.layers:
            out_f[n] = out_f.get(n, 1.0) * f
        for n in g.consumers:
            in_f[n] = in_f.get(n, 1.0) * f
    result: dict[str, dict[str, float]] = {}
    for n in sorted(set(out_f) | set(in_f)):
        o, i = out_f.get(n, 1.0), in_f.get(n, 1.0)
        w = o if n in dw else o * i
        result[n] = {"weights": w, "macs": w, "outputs": o, "inputs": i}
    return result


def _validate(groups: list[CoupledGroup], configs: Mapping[str, Any],
              model: nn.Module) -> dict[int, ChannelPruneConfig]:
    by_layer = {n: i for i, g in enumerate(groups) for n in g.layers}
    modules = dict(model.named_modules())
    chosen: dict[int, ChannelPruneConfig] = {}
    for name, cfg in configs.items():
        if not isinstance(cfg, ChannelPruneConfig):
            raise PlanError(f"{name}: prune_channels needs a ChannelPruneConfig, got {cfg!r}")
        if name not in modules:
            raise PlanError(f"{name}: no such layer in the model")
        if name not in by_layer:
            raise PlanError(f"{name}: its output channels cannot be pruned (they are the "
                            "model's output, or it is not a Conv2d/Linear)")
        chosen.setdefault(by_layer[name], cfg)
    for gi, cfg in chosen.items():
        g = groups[gi]
        missing = [n for n in g.layers if n not in configs]
        differ = [n for n in g.layers if n in configs and configs[n] != cfg]
        if missing or differ:
            raise PlanError(
                f"layers {', '.join(g.layers)} share their channels and must all carry the same "
                f"prune_channels config ({'missing: ' + ', '.join(missing) if missing else ''}"
                f"{'; ' if missing and differ else ''}"
                f"{'different: ' + ', '.join(differ) if differ else ''})")
    return chosen


def prune_channels(model: nn.Module, configs: Mapping[str, ChannelPruneConfig],
                   example_input: Any) -> nn.Module:
    """Remove output channels as ``configs`` ({layer: config}) says, in place; returns ``model``.

    Every layer of a coupled group must carry the same config (``PlanError`` otherwise, naming
    the group). Per group, the ``C - kept_channels(C, ratio, round_to)`` channels of lowest group
    L1 norm go, in every coupled module at once, so residual adds, BatchNorm, depthwise convs and
    a Linear after flatten stay consistent. ``example_input``: a batch tensor or a sample shape.
    """
    import torch
    import torch_pruning as tp

    restore = _eval_mode(model)
    try:
        dg, analysed = _analyse(model, example_input)
        groups = [cg for cg, _ in analysed]
        chosen = _validate(groups, configs, model)
        importance = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean",
                                                            normalizer=None)
        todo: list[tuple[Any, Any, list[int]]] = []
        for gi, cfg in sorted(chosen.items()):
            cg, group = analysed[gi]
            keep = kept_channels(cg.channels, cfg.ratio, cfg.round_to)
            if keep >= cg.channels:
                continue
            with torch.no_grad():
                imp = importance(group)
            if imp is None or len(imp) != cg.channels:
                raise PlanError(f"cannot rank the channels of {', '.join(cg.layers)}")
            scores = imp.detach().cpu().double().numpy()
            order = np.lexsort((np.arange(cg.channels), scores))  # by score, then by index
            idxs = sorted(int(i) for i in order[: cg.channels - keep])
            root = group[0].dep.target.module
            todo.append((root, group[0].dep.handler, idxs))
        for root, handler, idxs in todo:  # re-derive each group so index mappings are current
            dg.get_pruning_group(root, handler, idxs).prune()
    finally:
        restore()
    return model


def check_channels(model: nn.Module) -> dict[str, Any]:
    """Read a (pruned) model back: per Conv/Linear its channel counts and weights, and totals."""
    from torch import nn

    layers: dict[str, dict[str, int]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            layers[name] = {"out_channels": m.out_channels, "in_channels": m.in_channels,
                            "groups": m.groups, "weight_numel": m.weight.numel()}
        elif isinstance(m, nn.Linear):
            layers[name] = {"out_channels": m.out_features, "in_channels": m.in_features,
                            "groups": 1, "weight_numel": m.weight.numel()}
    return {"layers": layers, "params": sum(p.numel() for p in model.parameters())}


# ---------------------------------------------------------------------------------------------
# offers and the registry entries

SPARSITY_LEVELS: tuple[float, ...] = (0.5, 0.75)
"""Unstructured sparsity levels offered per layer. Dense kernels gain no speed from zeros, so
these relieve flash only (stored as bitmask/CSR, whichever is smaller)."""
MIN_WEIGHTS_FOR_SPARSITY = 1024  # below this the index overhead eats the saving


def offer_unstructured(layer: LayerShape, name: str, kernel: Kernel, ctx: OfferContext
                       ) -> list[Offer]:
    """"s50", "s75" on kernels with symmetric codes (0 is a code); sizes need the weights."""
    if not (ctx.weights and kernel.symmetric and layer.weight_numel >= MIN_WEIGHTS_FOR_SPARSITY):
        return []
    return [Offer(f"s{round(100 * s)}", (UnstructuredPruneConfig(sparsity=s),))
            for s in ctx.levels_of("prune_unstructured", SPARSITY_LEVELS)]


def nm_candidate(layer: LayerShape, nm: NMSparsity) -> bool:
    return (layer.op_type in ("Linear", "Conv2d") and layer.op_class != "depthwise"
            and bool(layer.weight_shape) and layer.weight_numel >= MIN_WEIGHTS_FOR_SPARSITY
            and nm_applicable(layer.weight_shape, NMPruneConfig(n=nm.n, m=nm.m)))


def offer_nm(layer: LayerShape, name: str, kernel: Kernel, ctx: OfferContext) -> list[Offer]:
    """"nm24" on the profile's N:M sparse kernels, where the input dimension is a multiple of
    m (only there do zeros buy speed as well as flash)."""
    nm = ctx.nm
    if not ctx.weights or nm is None or name not in nm.kernels or not nm_candidate(layer, nm):
        return []
    return [Offer(f"nm{nm.n}{nm.m}", (NMPruneConfig(n=nm.n, m=nm.m),))]


def _apply_layer(executor: Callable[[Any, Any], Any]) -> Callable[[Any, Any, str], Any]:
    def apply(module: Any, config: Any, name: str) -> Any:
        from techniques.lowrank import factor_modules

        for part in factor_modules(module):  # a factorised layer: every factor is pruned
            executor(part, config)
        return module
    return apply


def _verify_zeros(name: str, config: UnstructuredPruneConfig, stored: Any,
                  row: dict[str, Any]) -> list[str]:
    if stored.zero_fraction + 1e-9 < config.sparsity:
        return [f"{name}: image holds {100 * stored.zero_fraction:.1f} % zeros, plan prunes "
                f"{100 * config.sparsity:.0f} %"]
    return []


def _verify_pattern(name: str, config: NMPruneConfig, stored: Any, row: dict[str, Any]
                    ) -> list[str]:
    """The N:M pattern, group by group, from the stored weights."""
    pattern = check_nm(stored.weight, config)
    row["nm_compliant_groups"] = f"{pattern['compliant_groups']}/{pattern['groups']}"
    if not pattern["compliant"]:
        return [f"{name}: {pattern['groups'] - pattern['compliant_groups']} groups of the image "
                f"break the {pattern['pattern']} pattern"]
    return []


UNSTRUCTURED = Technique("prune_unstructured", UnstructuredPruneConfig, offer_unstructured,
                         _apply_layer(prune_unstructured), _verify_zeros, sized_by_weights=True,
                         apply_weights=pruned_weights)
NM = Technique("prune_nm", NMPruneConfig, offer_nm, _apply_layer(prune_nm), _verify_pattern,
               sized_by_weights=True, apply_weights=pruned_weights)
CHANNELS = Technique("prune_channels", ChannelPruneConfig)  # model-level: prune_channels

__all__ = [
    "ChannelPruneConfig",
    "CoupledGroup",
    "KeepZeros",
    "NMPruneConfig",
    "PruneConfig",
    "UnstructuredPruneConfig",
    "channel_cost_delta",
    "channel_fractions",
    "check_channels",
    "check_nm",
    "check_onnx_zeros",
    "check_unstructured",
    "cost_delta",
    "coupled_groups",
    "coupling",
    "keep_mask",
    "keep_zeros",
    "kept_channels",
    "global_sparsities",
    "magnitude_keep_mask",
    "nm_applicable",
    "nm_cost_delta",
    "nm_keep_mask",
    "prune_channels",
    "prune_nm",
    "prune_unstructured",
    "pruned_count",
    "pruned_weights",
    "unstructured_cost_delta",
]
