"""Planning's measurements, one cached row each (cost_models.row_cache), so none runs twice.

Each row's key hashes what its number depends on and nothing else:

- ``output-kl``: the accuracy cost of one (layer, technique configs): the model's weights (the
  output of the whole model moves, so all of them) and its code (:func:`model_code`), the
  calibration images, the output kind, the layer, the configs, the code that simulates the
  techniques;
- ``prune-kl``: the KL of one coupled channel group pruned to one width: weights, model code,
  images, the example input's shape, the group, the width, the pruning code;
- ``stored-bytes``: the flash image's bytes of one (layer, configs): the weights the bytes are
  counted on (the layer's own, or the whole model's where Torch-Pruning ranks channels over a
  group), the layer, its kept shape or widths, the configs, the code that packs them.

The option set a row was asked for with is in no key: a (layer, config) measured while
planning one profile is a hit for every other profile, budget and option set. Rows are read
before the work and written after it, one short transaction each (the cache's one writer).
"""

from __future__ import annotations

import hashlib
import inspect
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from functools import cache
from typing import Any, TypeVar

import numpy as np

from cost_models.row_cache import RowCache, row_key

ROWS_VERSION = 1  # bump when a stored number would change for the same inputs
K = TypeVar("K", bound=Hashable)

# the code each kind of row runs: an edit to any of these is a miss, never a stale number
KL_CODE = ("cost_models.accuracy", "techniques.fakequant", "techniques.quantize",
           "techniques.prune", "techniques.lowrank", "techniques.share", "formats.quant_math")
BYTES_CODE = ("techniques.flash_image", "techniques.fakequant", "techniques.quantize",
              "techniques.prune", "techniques.share", "formats.quant_math",
              "formats.sparse_format", "formats.entropy")


@cache
def code_version(modules: tuple[str, ...], functions: tuple[Callable[..., Any], ...] = ()
                 ) -> str:
    """sha256 (16 hex) of the source of these modules and of these functions (of a module
    whose other edits must not be a miss; a wrapper made with functools.wraps is unwrapped)."""
    import importlib

    h = hashlib.sha256()
    for name in modules:
        h.update(inspect.getsource(importlib.import_module(name)).encode())
    for fn in functions:
        h.update(inspect.getsource(fn).encode())
    return h.hexdigest()[:16]


def model_code(module: Any) -> str:
    """sha256 (16 hex) of what a model computes besides its weights: its module tree (types and
    hyperparameters) and the source of every module class not from torch itself, or the
    generated forward of a traced graph. Two models with the same weights and another
    forward() are other rows."""
    h = hashlib.sha256(repr(module).encode())
    for cls in sorted({type(m) for m in module.modules()}, key=lambda c: c.__qualname__):
        code = None
        if not cls.__module__.startswith("torch."):
            try:
                code = inspect.getsource(cls)
            except (OSError, TypeError):  # defined in a notebook or generated
                code = f"{cls.__module__}.{cls.__qualname__}"
        h.update((code or cls.__qualname__).encode())
    for m in module.modules():
        generated = getattr(m, "code", None)  # a torch.fx GraphModule's forward
        if isinstance(generated, str):
            h.update(generated.encode())
    return h.hexdigest()[:16]


def config_docs(configs: Sequence[Any]) -> list[Any]:
    """A technique config list as JSON (what plan.json stores)."""
    out = []
    for c in configs:
        dump = getattr(c, "model_dump", None)
        out.append(dump(mode="json") if callable(dump) else repr(c))
    return out


Emit = Callable[[Any, Any], None]  # (item, value): one row measured


def cached(kind: str, keys: Mapping[K, str],
           compute: Callable[[list[K], Emit], Mapping[K, Any]],
           cache_: RowCache | None = None) -> dict[K, Any]:
    """Every item's value: the cached rows, and ``compute(missing, emit)`` of the missing items
    only. Rows are stored as ``compute`` emits them (batched: one transaction every
    FLUSH_EVERY_S) and whatever it returns at the end; an interrupted ``compute`` keeps the rows
    it emitted, so the next run resumes from them."""
    with _opened(cache_) as rows:
        values = rows.get_many(kind, keys.values())
    # one item per missing key: two options with the same configs are measured once
    missing: list[K] = []
    seen: set[str] = set()
    for item, key in keys.items():
        if key not in values and key not in seen:
            seen.add(key)
            missing.append(item)
    if missing:
        with _Writer(kind, keys, cache_) as writer:
            fresh = dict(compute(missing, writer.emit))
            for item, value in fresh.items():
                writer.emit(item, value)
        values.update({keys[item]: value for item, value in fresh.items()})
    return {item: values[key] for item, key in keys.items()}


FLUSH_EVERY_S = 5.0


class _Writer:
    """Rows as they are measured, written in short batched transactions, the rest on exit
    (also on an exception or Ctrl-C: what was measured is kept)."""

    def __init__(self, kind: str, keys: Mapping[Any, str], given: RowCache | None) -> None:
        self.kind, self.keys, self.given = kind, keys, given
        self.pending: dict[str, Any] = {}
        self.written: set[str] = set()
        self.last = time.monotonic()

    def emit(self, item: Any, value: Any) -> None:
        key = self.keys[item]
        if key not in self.written:
            self.pending[key] = value
        if time.monotonic() - self.last >= FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            with _opened(self.given) as rows:
                rows.put_many(self.kind, self.pending)
            self.written.update(self.pending)
            self.pending = {}
        self.last = time.monotonic()

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()


class _opened:
    """The given cache, left open; or the default one, closed on the way out."""

    def __init__(self, given: RowCache | None) -> None:
        self.given, self.own = given, None if given is not None else RowCache()

    def __enter__(self) -> RowCache:
        return self.given if self.given is not None else self.own  # type: ignore[return-value]

    def __exit__(self, *exc: object) -> None:
        if self.own is not None:
            self.own.close()


# --------------------------------------------------------------------------- accuracy


def cached_output_kl(module: Any, options: Mapping[str, Mapping[str, Sequence[Any]]],
                     x: np.ndarray, cache_: RowCache | None = None) -> Any:
    """cost_models.accuracy.measured_output_kl, one row per (layer, configs): only the pairs
    no earlier plan measured are measured. The same numbers and text as measuring all."""
    from cost_models import accuracy
    from cost_models.estimate import AccuracyEstimate
    from workloads.data import data_hash
    from workloads.models import weights_hash

    base = (ROWS_VERSION, weights_hash(module), model_code(module), data_hash(x),
            getattr(module, "output_kind", "logits"), code_version(KL_CODE))
    keys = {(layer, option): row_key(*base, layer, config_docs(configs))
            for layer, row in options.items() for option, configs in row.items() if configs}

    def measure(missing: list[tuple[str, str]], emit: Emit) -> dict[tuple[str, str], float]:
        # through the seam: in-process one task of every pair (as before), on Ray chunks of
        # ~10 pairs with the model and images shipped once; the driver writes every row
        from edgefit_common.execution import current

        executor, got = current(), {}

        def record(pair_value: tuple[tuple[str, str], float]) -> None:
            got[pair_value[0]] = pair_value[1]
            emit(*pair_value)

        items = [(layer, option, list(options[layer][option])) for layer, option in missing]
        executor.map_tasks(output_kl_task, executor.chunks(items), record, shared=(module, x),
                           label=_pair_label, title=accuracy.SENSITIVITY)
        return got

    values = cached("output-kl", keys, measure, cache_)
    loss = {(layer, option): float(values[layer, option]) if configs else 0.0
            for layer, row in options.items() for option, configs in row.items()}
    unit, provenance = accuracy.output_kl_description(module, len(x))
    return AccuracyEstimate(loss, unit, provenance)


def output_kl_task(module: Any, x: np.ndarray, chunk: Sequence[tuple[str, str, list[Any]]],
                   emit: Callable[[Any], None]) -> None:
    """One task of the sensitivity pass (edgefit_common.execution): the output KL of each
    (layer, option, configs) of ``chunk``, emitted as ``((layer, option), value)`` as each is
    measured. The same function measures in-process and on a Ray worker: the same numbers."""
    from cost_models import accuracy

    todo: dict[str, dict[str, Sequence[Any]]] = {}
    for layer, option, configs in chunk:
        todo.setdefault(layer, {})[option] = configs
    accuracy.measured_output_kl(module, todo, x, on_value=lambda pair, value: emit((pair, value)))


def _pair_label(item: tuple[str, str, Any]) -> str:
    return f"({item[0]}, {item[1]})"


def cached_channel_pruning_kl(module: Any, groups: Sequence[Any], example_input: Any,
                              x: np.ndarray, cache_: RowCache | None = None
                              ) -> dict[tuple[str, int], float | None]:
    """cost_models.accuracy.channel_pruning_kl, one row per (group, width) (None: refused)."""
    from cost_models import accuracy
    from workloads.data import data_hash
    from workloads.models import weights_hash

    base = (ROWS_VERSION, weights_hash(module), model_code(module), data_hash(x),
            list(example_input), code_version(KL_CODE))
    by_name = {g.name: g for g in groups}
    keys = {(g.name, width): row_key(*base, _group_doc(g), width)
            for g in groups for width in g.widths[:-1]}

    def measure(missing: list[tuple[str, int]], emit: Emit
                ) -> dict[tuple[str, int], float | None]:
        # through the seam like the sensitivity pass: items (group, width), one KL record each
        from edgefit_common.execution import current

        executor, got = current(), {}

        def record(cut_value: tuple[tuple[str, int], float | None]) -> None:
            got[cut_value[0]] = cut_value[1]
            emit(*cut_value)

        items = [(by_name[name], width) for name, width in missing]
        executor.map_tasks(prune_kl_task, executor.chunks(items), record,
                           shared=(module, example_input, x), title=accuracy.PRUNE_SENSITIVITY,
                           label=lambda item: f"(group {item[0].name}, width {item[1]})")
        return got

    return cached("prune-kl", keys, measure, cache_)


def prune_kl_task(module: Any, example_input: Any, x: np.ndarray,
                  chunk: Sequence[tuple[Any, int]], emit: Callable[[Any], None]) -> None:
    """One task of the channel-pruning pass: the KL of each (group, width) of ``chunk``, each
    group pruned alone, emitted as ``((group name, width), value or None)``."""
    from cost_models import accuracy

    groups = list({g.name: g for g, _ in chunk}.values())
    todo = [_with_widths(g, {w for h, w in chunk if h.name == g.name}) for g in groups]
    accuracy.channel_pruning_kl(module, todo, example_input, x,
                                on_value=lambda cut, value: emit((cut, value)))


def _group_doc(g: Any) -> dict[str, Any]:
    return {"name": g.name, "channels": g.channels, "multiple": g.multiple,
            "layers": list(g.layers), "consumers": list(g.consumers),
            "depthwise": list(g.depthwise)}


def _with_widths(g: Any, widths: set[int]) -> Any:
    """The group offering only these cut widths (channel_pruning_kl measures widths[:-1])."""
    import dataclasses

    return dataclasses.replace(g, widths=(*sorted(widths), g.channels))


# --------------------------------------------------------------------------- stored bytes


def module_hash(module: Any) -> str:
    """A layer's own weights (type, state_dict): what its stored bytes are counted on."""
    from workloads.models import weights_hash

    return f"{type(module).__name__}:{weights_hash(module)}"


def stored_bytes_key(weights: str, layer: str, cut: Any, configs: Sequence[Any],
                     functions: tuple[Callable[..., Any], ...]) -> str:
    """The key of one (layer, configs)'s stored bytes counted on ``weights`` (a hash) at ``cut``
    (the kept shape or the group widths), by BYTES_CODE and ``functions``."""
    return row_key(ROWS_VERSION, weights, layer, cut, config_docs(configs),
                   code_version(BYTES_CODE, functions))


__all__ = ["Emit", "cached", "cached_channel_pruning_kl", "cached_output_kl", "code_version",
           "config_docs", "model_code", "module_hash", "output_kl_task", "prune_kl_task",
           "stored_bytes_key"]
