"""`plan`: budget -> device spec -> captured model -> cost table -> solver -> Plan (uses torch)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cost_models.analytical import build_cost_table
from cost_models.channels import ChannelGroupSpec, LayerCoupling, layer_couplings
from cost_models.estimate import AccuracyEstimate
from cost_models.graph import Layer, LayerGraph
from cost_models.host_probe import target_spec
from cost_models.micro_latency import scaled_pruned_latency
from cost_models.options import RankResolver, graph_options, plain_option, pruned_shape
from cost_models.ram_terms import blocked_entries, boundary_terms, option_workspace
from cost_models.runtime_memory import RuntimeMemory
from cost_models.table import CostTable
from device_specs.budget import Budget
from device_specs.schema import DeviceSpec, Kernel, NMSparsity, TfliteFormat
from edgefit_common import __version__
from edgefit_common.errors import DataError, PlanError, SpecError
from edgefit_common.progress import task, track
from planner import plan as plan_schema
from planner.problem import INPUT_SUFFIX, Choice, LatencyPair, PairTerm, Problem
from planner.resolve import problem_from_plan, with_result
from planner.result import SolveResult, SolverOptions
from planner.solve import solve
from techniques.flash_image import image_overhead_bytes
from techniques.lowrank import LowRankConfig
from techniques.option import OfferContext, Option, sized_by_weights
from techniques.quantize import onnx_option, weight_precision
from workloads.data import data_hash
from workloads.models import LoadedModel, weights_sha256

CALIBRATION_SIZE = 512


@dataclass
class PlanContext:
    budget: Budget
    spec: DeviceSpec
    profile: str
    model: LoadedModel
    graph: LayerGraph
    table: CostTable
    terms: ProblemTerms
    model_origin: str
    channel_groups: list[ChannelGroupSpec] = dataclasses.field(default_factory=list)
    calibration_sha256: str | None = None
    solved: Problem | None = None  # built once, from the base plan (pins and exclusions in)
    result: SolveResult | None = None

    @property
    def problem(self) -> Problem:
        if self.solved is None:
            raise PlanError("the plan's problem is built from the base plan; none yet")
        return self.solved


def layer_options(graph: LayerGraph, kernels: Mapping[str, Kernel], module: Any,
                  coupling: Mapping[str, LayerCoupling] | None = None,
                  nm_sparsity: NMSparsity | None = None, weights: bool | None = None,
                  tflite: TfliteFormat | None = None,
                  sparsity_levels: Sequence[float] | None = None
                  ) -> dict[str, dict[str, Option]]:
    """layer -> option name -> option, enumerated once for the whole plan. Sparse and
    weight-shared options need the weights (their stored size is computed from them): a torch
    model's, or an ONNX file's initializers (``weights=True`` with no module: then only the
    techniques with an array form are offered). Low-rank options need the module (their ranks
    follow the layer's shape, after channel pruning where the option prunes) and are kept only
    where the factors hold fewer weights and MACs than the layer. ``coupling``: the layers'
    channel groups (channel-pruned widths, cost_models.channels). ``module``: the torch model
    (None for an ONNX model); ``weights``: whether its weights are at hand (default: a module)."""
    from techniques.share import SHARE_BITS

    # budget percent -> sparsity fraction; sharing takes the same levels for its pruned
    # variants (Deep Compression: prune, then share the survivors, then Huffman)
    fractions = tuple(v / 100 for v in sparsity_levels or ())
    levels = ({"prune_unstructured": fractions,
               "share": ((SHARE_BITS, 0.0), *((SHARE_BITS, f) for f in fractions))}
              if fractions else {})
    ctx = OfferContext(weights=module is not None if weights is None else weights,
                       modules=module is not None, nm=nm_sparsity, levels=levels)
    options = graph_options(graph, kernels, ctx, coupling,
                            _rank_resolver(module) if _factorisable_model(module) else None,
                            tflite)
    return {layer: {o.name: o for o in row} for layer, row in options.items()}


def _weights_path(weights: str | None) -> str | None:
    """--weights as an absolute path (apply may run in another directory)."""
    return None if weights is None else str(Path(weights).resolve())


NO_DATA_UNCOMPRESSED = (
    "no data: accuracy costs cannot be measured, so each layer is offered only its "
    "uncompressed option (--data to measure them; --allow-unmeasured to offer compressed "
    "options at an unmeasured cost)")
NO_DATA_ALLOWED = (
    "NOT MEASURED: no data, so every option's accuracy cost is counted as 0 (--allow-unmeasured):"
    " the solver treats every compression as free; give --data to measure them")


def uncompressed_only(offered: Mapping[str, Mapping[str, Option]], device: str
                      ) -> dict[str, dict[str, Option]]:
    """Each layer's uncompressed options (no technique, full width): without data nothing
    destructive is offered unless the user asks (issue #21). A device without an fp32 kernel
    has none: that is an error naming the way out."""
    out = {layer: {name: o for name, o in row.items() if not o.techniques and not o.narrowed}
           for layer, row in offered.items()}
    bare = [layer for layer, row in out.items() if not row]
    if bare:
        raise PlanError(f"no data to measure accuracy costs, and {device} has no uncompressed "
                        f"option for {', '.join(bare[:3])}{' ...' if len(bare) > 3 else ''}: "
                        "give --data (a data set the model was not trained on, with labels), "
                        "or --allow-unmeasured to plan with unmeasured accuracy costs")
    return out


def _rank_resolver(module: Any) -> RankResolver:
    from techniques.lowrank import module_rank_for_fraction

    modules = dict(module.named_modules())

    def ranks(layer: Layer, option: Option, fraction: float) -> LowRankConfig | None:
        if layer.name not in modules:
            return None
        return module_rank_for_fraction(modules[layer.name], fraction, layer.input_numel,
                                        layer.output_numel, pruned_shape(layer, option))
    return ranks


def configs_of(options: Mapping[str, Mapping[str, Option]], full_width: bool = False
               ) -> dict[str, dict[str, list[Any]]]:
    """layer -> option name -> its technique configs (full_width: the unpruned options only)."""
    return {layer: {name: o.to_list() for name, o in row.items()
                    if not (full_width and o.narrowed)} for layer, row in options.items()}


def pruned_shapes(graph: LayerGraph, options: Mapping[str, Mapping[str, Option]]
                  ) -> dict[tuple[str, str], tuple[int, ...]]:
    """(layer, option) -> weight shape, for every channel-pruned option."""
    out = {}
    for layer in graph.layers:
        for name, option in options.get(layer.name, {}).items():
            shape = pruned_shape(layer, option)
            if shape is not None:
                out[layer.name, name] = shape
    return out


def _factorisable_model(module: Any) -> bool:
    """A torch model whose layers are modules that can be swapped for their factors: a plain
    nn.Module, or an exported program's graph once workloads.models.remodularize gave it its
    nn.Conv2d / nn.Linear back (only layers found among its modules are offered low rank)."""
    return module is not None


def lowrank_factors(module: Any, graph: LayerGraph, options: dict[str, dict[str, list[Any]]],
                    shapes: Mapping[tuple[str, str], tuple[int, ...]] | None = None
                    ) -> dict[tuple[str, str], list[Any]]:
    """The factor layers of every low-rank (layer, option), for the cost table. ``shapes``:
    the weight shape of each channel-pruned option (:func:`pruned_shapes`)."""
    from cost_models.analytical import factor_layers
    from techniques.lowrank import lowrank_config, module_cost_delta

    modules = dict(module.named_modules())
    out = {}
    for layer in graph.layers:
        for name, configs in options.get(layer.name, {}).items():
            cfg = lowrank_config(configs)
            if cfg is not None:
                delta = module_cost_delta(modules[layer.name], cfg, layer.input_numel,
                                          layer.output_numel, (shapes or {}).get(
                                              (layer.name, name)))
                out[layer.name, name] = factor_layers(layer, delta["factors"])
    return out


def sparse_flash_bytes(module: Any, options: dict[str, dict[str, list[Any]]],
                       shapes: Mapping[tuple[str, str], tuple[int, ...]] | None = None
                       ) -> dict[tuple[str, str], int]:
    """Stored bytes of every sparse or weight-shared (layer, option): prune (and share) the
    real weights, then count what the flash image will hold (format, index overhead, scales or
    codebook, bias, its header entry). Exact at full width. A channel-pruned option
    (``shapes``) is counted on the layer's own weights cut to the kept shape by channel L1
    norm (techniques.prune.kept_slice): the shape, hence a sparse layout's size, is exact.
    Not for a weight-shared channel-pruned option: Torch-Pruning ranks channels over the whole
    group, so the values its codebook and Huffman-coded indices are fitted to differ, and so
    does the size (:func:`shared_channel_flash_bytes` counts those on the weights apply
    stores)."""
    from cost_models.cached_rows import Emit, cached, module_hash, stored_bytes_key
    from techniques.prune import kept_slice

    modules = dict(module.named_modules())
    todo = {(layer, name): configs for layer, opts in options.items()
            for name, configs in opts.items() if sized_by_weights(configs)}
    weights = {layer: module_hash(modules[layer]) for layer, _ in todo}
    keys = {(layer, name): stored_bytes_key(
        weights[layer], layer, list((shapes or {}).get((layer, name), ())), configs,
        (sparse_flash_bytes, _stored_bytes))
        for (layer, name), configs in todo.items()}

    def count(missing: list[tuple[str, str]], emit: Emit) -> dict[tuple[str, str], int]:
        out = {}
        for layer, name in track(missing, "flash bytes of sparse and shared options"):
            shape = (shapes or {}).get((layer, name))
            source = modules[layer] if shape is None else kept_slice(modules[layer], shape)
            out[layer, name] = _stored_bytes(layer, source, todo[layer, name])
            emit((layer, name), out[layer, name])
        return out
    return {k: int(v) for k, v in cached("stored-bytes", keys, count).items()}


def shared_channel_flash_bytes(module: Any, input_shape: tuple[int, ...],
                               options: Mapping[str, Mapping[str, Option]],
                               groups: list[ChannelGroupSpec]) -> dict[tuple[str, str], int]:
    """Stored bytes of every weight-shared, channel-pruned (layer, option), counted on exactly
    the weights apply stores: the model channel-pruned as apply prunes it
    (techniques.prune.prune_channels, Torch-Pruning's group L1 ranking) at the option's group
    widths, then pruned and shared as the option says. A shared layer's size depends on its
    values (k-means codebook, Huffman-coded indices), so a stand-in with other channels
    (kept_slice) is not its size. prune_channels ranks every group on the unpruned model, so a
    layer's kept weights depend on the widths of its own groups only: one pruned copy per
    combination of those widths serves every option and layer that prunes exactly them."""
    import copy

    from cost_models.cached_rows import Emit, cached, module_hash, stored_bytes_key
    from techniques.prune import prune_channels

    by_name = {g.name: g for g in groups}
    cuts: dict[tuple[str, str], tuple[tuple[str, int], ...]] = {}
    for layer, opts in options.items():
        for name, option in opts.items():
            cut = tuple(sorted((g, w) for g, w in option.widths if w < by_name[g].channels))
            if cut and option.has("share"):
                cuts[layer, name] = cut
    weights = module_hash(module) if cuts else ""
    keys = {(layer, name): stored_bytes_key(
        weights, layer, [list(input_shape), [[*_group_key(by_name[g]), w] for g, w in cut]],
        options[layer][name].to_list(),
        (shared_channel_flash_bytes, _stored_bytes))
        for (layer, name), cut in cuts.items()}

    def count(missing: list[tuple[str, str]], emit: Emit) -> dict[tuple[str, str], int]:
        todo: dict[tuple[tuple[str, int], ...], list[tuple[str, str]]] = {}
        for item in missing:
            todo.setdefault(cuts[item], []).append(item)
        out = {}
        for cut, wanted in track(todo.items(), "flash bytes of shared, channel-pruned options"):
            prune = {member: by_name[g].prune_config(w) for g, w in cut
                     for member in by_name[g].layers}
            narrow = dict(prune_channels(copy.deepcopy(module), prune,
                                         input_shape).named_modules())
            for layer, name in wanted:
                out[layer, name] = _stored_bytes(layer, narrow[layer],
                                                 options[layer][name].to_list())
                emit((layer, name), out[layer, name])
        return out
    return {k: int(v) for k, v in cached("stored-bytes", keys, count).items()}


def _group_key(g: ChannelGroupSpec) -> list[Any]:
    return [g.name, g.channels, g.multiple, list(g.layers), list(g.consumers)]


def _stored_bytes(layer: str, source: Any, configs: list[Any]) -> int:
    """What the flash image holds for ``source`` (a module at its stored width) after the
    option's per-layer techniques (``configs``; channel pruning is already in ``source``)."""
    from techniques.fakequant import pruned_copy
    from techniques.flash_image import FlashLayer, layer_file_bytes
    from techniques.prune import ChannelPruneConfig
    from techniques.share import WeightSharingConfig

    share = next((c for c in configs if isinstance(c, WeightSharingConfig)), None)
    per_layer = [c for c in configs if not isinstance(c, ChannelPruneConfig)]
    pruned = dict(pruned_copy(source, {"": per_layer}).named_modules())[""]
    bias = getattr(pruned, "bias", None)
    return layer_file_bytes(FlashLayer(
        layer, weight_precision(configs), pruned.weight.detach().numpy(),
        None if bias is None else bias.detach().numpy(), sparse=True, share=share))


MIN_CALIBRATION = 32
"""Fewer samples than this cannot rank options (the KL of a handful of outputs is noise)."""


def calibration_split(dataset: str | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    if dataset is None:
        return None
    from workloads.data import load_dataset

    train, _ = load_dataset(dataset)
    return calibration_sample(train.x, train.y, seed)


def calibration_sample(x: np.ndarray, y: np.ndarray | None, seed: int = 0
                       ) -> tuple[np.ndarray, np.ndarray]:
    """CALIBRATION_SIZE samples drawn without replacement (seeded: the same arrays give the
    same sample, hence the same calibration hash), or all of them when there are fewer; fewer
    than MIN_CALIBRATION is a DataError. ``y`` None: inputs only (labels all 0, as a
    label-free Dataset holds them)."""
    from edgefit_common.errors import DataError

    if y is None:
        y = np.zeros(len(x), np.int64)
    if len(x) != len(y):
        raise DataError(f"{len(x)} calibration inputs but {len(y)} labels")
    if len(x) < MIN_CALIBRATION:
        raise DataError(f"{len(x)} calibration samples; at least {MIN_CALIBRATION} are needed "
                        f"({CALIBRATION_SIZE} are used when there are that many)")
    n = min(CALIBRATION_SIZE, len(x))
    idx = np.random.default_rng(seed).choice(len(x), n, replace=False)
    return x[idx], y[idx]


@dataclass(frozen=True)
class ProblemTerms:
    """The problem's data besides the choices and the limits: fixed costs and RAM steps."""

    fixed: dict[str, float]
    ram_steps: tuple[tuple[tuple[str, int], ...], ...]
    weights_in_ram: bool
    step_extra: tuple[dict[tuple[str, str], float], ...]
    step_pairs: tuple[tuple[PairTerm, ...], ...]
    latency_pairs: tuple[LatencyPair, ...] = ()


def latency_pairs(graph: LayerGraph, table: CostTable) -> tuple[LatencyPair, ...]:
    """The precision boundaries' latency and energy (cost_models.boundary_latency)."""
    from cost_models.boundary_latency import boundary_latency_terms

    return tuple(LatencyPair(a, ao, b, bo, ms, ms * table.power_w)
                 for a, ao, b, bo, ms in boundary_latency_terms(graph, table))


def problem_terms(graph: LayerGraph, table: CostTable) -> ProblemTerms:
    before_first = _model_input_tensors(graph)
    # weights outside planned layers (norms, ...) are stored as they are (fp32)
    unplanned = float(graph.meta.get("unplanned_weight_bytes", 0))
    # the flash image's magic, length and header framing (each layer's entry is in its cost)
    image = float(image_overhead_bytes()) if all(ly.weight_shape for ly in graph.layers) else 0.0
    # the deployed file's bytes beyond its layers': the image's framing, or the .tflite's
    frame = table.tflite_frame_bytes if table.flash_format == "tflite" else image
    mem = table.memory
    if mem.tflm_arena:
        return _tflm_problem_terms(graph, table, unplanned, image, frame)
    blocked = blocked_entries(graph, mem)
    ram_steps = tuple(
        tuple((_ram_owner(graph, t, before_first),
               _allocated_numel(graph.tensors[t].numel, mem, t in before_first)) for t in live)
        + ((blocked[i],) if i in blocked else ())
        for i, live in enumerate(held_tensors(graph, mem))
    )
    return ProblemTerms(
        fixed={"flash_bytes": table.runtime_flash_bytes + unplanned + frame,
               "ram_bytes": table.runtime_ram_bytes + (unplanned if table.weights_in_ram else 0),
               "latency_ms": table.run_overhead_ms,
               "energy_mj": table.run_overhead_ms * table.power_w + table.idle_energy_mj,
               "unplanned_weight_bytes": unplanned, "image_overhead_bytes": image,
               **_tflite_fixed(table)},
        ram_steps=ram_steps,
        weights_in_ram=table.weights_in_ram,
        step_extra=_step_workspace(graph, table),
        step_pairs=_step_pairs(graph, table),
        latency_pairs=latency_pairs(graph, table),
    )


TFLM_RAM_UNCERTAINTY = (
    "TFLite Micro's arena (cost_models.tflm_ram): within 3.5 % of tflite-micro's measured "
    "arena on 10 models (docs/cost-model-accuracy.md), below it by TFLM's greedy "
    "fragmentation where residual branches fragment it (-3.5 % on ResNet-8; apply prints the "
    "exact arena model); on the board, the structs at its pointer width and CMSIS-NN's "
    "scratch buffers (cost_models.tflm_structs, from the C sources: derived, not measured; "
    "the allocator's own objects kept at their 64-bit size, an upper bound); the runtime's "
    "RAM outside the arena as the spec says")


def _tflite_fixed(table: CostTable) -> dict[str, float]:
    return ({"tflite_frame_bytes": table.tflite_frame_bytes}
            if table.flash_format == "tflite" else {})


def _tflm_problem_terms(graph: LayerGraph, table: CostTable, unplanned: float, image: float,
                        frame: float) -> ProblemTerms:
    """A TFLM profile's terms: the converted graph's tensors as TFLM's arena holds them and its
    persistent tail (cost_models.tflm_ram; the profile's runtime_ram stays the RAM outside the
    arena)."""
    from cost_models.tflm_ram import tflm_terms

    terms = tflm_terms(graph, table, INPUT_SUFFIX)
    return ProblemTerms(
        fixed={"flash_bytes": table.runtime_flash_bytes + unplanned + frame,
               "ram_bytes": table.runtime_ram_bytes + terms.fixed_ram_bytes
               + (unplanned if table.weights_in_ram else 0),
               "latency_ms": table.run_overhead_ms,
               "energy_mj": table.run_overhead_ms * table.power_w + table.idle_energy_mj,
               "unplanned_weight_bytes": unplanned, "image_overhead_bytes": image,
               "tflm_tail_bytes": terms.fixed_ram_bytes, **_tflite_fixed(table)},
        ram_steps=terms.ram_steps, weights_in_ram=table.weights_in_ram,
        step_extra=terms.step_extra,
        step_pairs=tuple(tuple(PairTerm(*p) for p in step) for step in terms.step_pairs)
        if any(terms.step_pairs) else (),
        latency_pairs=latency_pairs(graph, table))


def build_problem(graph: LayerGraph, table: CostTable, limits: dict[str, float]) -> Problem:
    """The problem of a cost table with no plan around it (the host check, tests); `plan`
    builds its problem from the base plan instead (planner.resolve.problem_from_plan)."""
    terms = problem_terms(graph, table)
    choices = {
        layer: tuple(Choice(c.option, c.latency_ms, c.flash_bytes, c.energy_mj, c.act_bytes,
                            c.acc_loss, c.widths, c.in_act_bytes) for c in table.options[layer])
        for layer in graph.layer_names
    }
    return Problem(layers=tuple(graph.layer_names), choices=choices, limits=limits,
                   fixed=terms.fixed, ram_steps=terms.ram_steps,
                   weights_in_ram=terms.weights_in_ram, step_extra=terms.step_extra,
                   step_pairs=terms.step_pairs, latency_pairs=terms.latency_pairs)


def held_tensors(graph: LayerGraph, mem: RuntimeMemory) -> list[list[str]]:
    """Per step, the tensors whose buffers the runtime holds: the live ones, or, where it
    reuses buffers of exactly the same shape (onnxruntime), the occupants of every buffer still
    allocated (LayerGraph.held_tensors; the reuse is worked out once, at 4 bytes per element
    and full width: a plan's narrower or integer tensors are charged at their own size in the
    same buffers)."""
    if mem.exact_shape_reuse:
        return graph.held_tensors(mem.outputs_outside_plan, lambda n: round(mem.rounded(n)))
    return graph.live_tensors(mem.outputs_outside_plan)


def _step_pairs(graph: LayerGraph, table: CostTable) -> tuple[tuple[PairTerm, ...], ...]:
    """Per step, the precision-boundary copies (none: empty)."""
    terms = boundary_terms(graph, table)
    if not any(terms):
        return ()
    return tuple(tuple(PairTerm(a, ao, b, bo, nb) for a, ao, b, bo, nb in step)
                 for step in terms)


def _step_workspace(graph: LayerGraph, table: CostTable
                    ) -> tuple[dict[tuple[str, str], float], ...]:
    """Per step, the bytes each option adds beyond the live tensors (none: empty)."""
    steps = option_workspace(graph, table)
    return tuple(steps) if any(steps) else ()


def _allocated_numel(numel: int, mem: RuntimeMemory, caller_buffer: bool) -> int:
    """Elements a tensor takes in the runtime's allocator: its grain, at 4 bytes/element (the
    widest activation; an int8 tensor's grain is then under-counted). The model input is the
    caller's buffer, not the runtime's."""
    return numel if caller_buffer else round(mem.rounded(4 * numel) / 4)


def _model_input_tensors(graph: LayerGraph) -> set[str]:
    """The model input and what ops before the first layer make of it: stored in the first
    layer's element type, but never shrunk by its channel pruning."""
    first = next((i for i, st in enumerate(graph.steps) if st.kind == "layer"), len(graph.steps))
    produced = {st.output: i for i, st in enumerate(graph.steps)}
    return {t for t in graph.tensors if produced.get(t, -1) < first}


def _ram_owner(graph: LayerGraph, tensor: str, model_input: set[str]) -> str:
    owner = graph.tensors[tensor].owner or graph.layer_names[0]
    return owner + INPUT_SUFFIX if tensor in model_input else owner


def channel_groups(loaded: LoadedModel, multiple: int, x: np.ndarray
                   ) -> tuple[list[ChannelGroupSpec], dict[tuple[str, str], float]]:
    """The model's coupled channel groups with the widths Torch-Pruning really produced, and
    each pruned width's measured accuracy cost, keyed (group, "w<width>")."""
    from cost_models.cached_rows import cached_channel_pruning_kl
    from cost_models.channels import channel_group_specs
    from techniques.prune import coupling

    module = loaded.torch_module()
    try:
        groups = channel_group_specs(coupling(module, loaded.input_shape), multiple)
    except Exception:  # Torch-Pruning cannot trace every model: then no channel options
        return [], {}
    # an embedding table takes no channel options (its width is not pruned): no group of it
    tables = {n for n, m in module.named_modules() if type(m).__name__ == "Embedding"}
    groups = [g for g in groups if not tables & {*g.layers, *g.consumers}]
    kl = cached_channel_pruning_kl(module, groups, loaded.input_shape, x)  # one row a width
    kept = [dataclasses.replace(g, widths=tuple(
        w for w in g.widths if w == g.channels or kl.get((g.name, w)) is not None))
        for g in groups]
    return kept, {(g, f"w{w}"): v for (g, w), v in kl.items() if v is not None}


def width_accuracy(graph: LayerGraph, options: Mapping[str, Mapping[str, Option]],
                   coupling: dict[str, LayerCoupling], acc: dict[tuple[str, str], float],
                   prune_kl: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """Accuracy cost of every channel-pruned option: its full-width option's cost (kernel and
    storage technique), plus each group's pruning cost, charged once, on the group's first
    layer (additive: the two were measured apart)."""
    out = dict(acc)
    for layer in graph.layers:
        c = coupling.get(layer.name)
        if c is None:
            continue
        for option in options.get(layer.name, {}).values():
            if option.base == option.name:  # full width
                continue
            charge = sum(prune_kl.get((g, f"w{w}"), 0.0) for g, w in option.widths
                         if g == layer.name and c.out is not None and c.out.name == g)
            out[layer.name, option.name] = acc.get((layer.name, option.base), 0.0) + charge
    return out


def make_plan(budget: Budget, model_origin: str, options: SolverOptions | None = None,
              pins: dict[str, str] | None = None, exclude: tuple[str, ...] = (),
              backend: str = "cpsat", search: SearchSettings | None = None,
              finetune_epochs: int = 0, quantization_aware: bool = False,
              loaded: LoadedModel | None = None,
              calibration: tuple[np.ndarray, np.ndarray] | None = None,
              labelled: bool | None = None, metric: tuple[str, Any] | None = None,
              student: Any = None) -> tuple[plan_schema.Plan, PlanContext]:
    """pins: layer -> option fixed before solving; exclude: options no layer may take;
    quantization_aware: the fine-tuning (needs finetune_epochs) trains through the
    quantisation. loaded / calibration: the model and calibration sample when the caller has
    them in memory (the Python API) instead of naming them in the budget; labelled: whether
    that sample has labels (default: whether the budget's data holds them). metric: (its
    module:function, the callable) apply scores with; tried here on the fp32 model. student:
    a techniques.student.StudentSpec: the distilled student is planned (edgefit.student_plan)."""
    from workloads.models import load_model_ref

    if quantization_aware and not finetune_epochs:
        raise SpecError("quantization_aware fine-tuning needs finetune_epochs >= 1")
    spec = target_spec(budget.target)
    profile = budget.profile or spec.default_profile
    if profile not in spec.profiles:
        raise SpecError(f"profile {profile!r} is not a profile of {spec.name}; "
                        f"known: {', '.join(spec.profiles)}")
    spec = _calibrated(spec, profile)
    kernels = spec.profile(profile).kernels
    if loaded is None:
        if budget.model is None:
            raise SpecError("no model given (use --model or `model:` in the budget file)")
        with task(f"load model {budget.model}"):
            loaded = load_model_ref(budget.model, budget.weights,
                                    tuple(budget.input_shape) if budget.input_shape else None)
    teacher = None
    if student is not None:  # the distilled student stands in for the model from here on
        from edgefit.student_plan import planned_student

        teacher, (loaded, student_record) = loaded, planned_student(loaded, student, budget,
                                                                    finetune_epochs)
    with task(f"capture {loaded.name}"):
        graph = _capture(loaded)
    calib = calibration
    if calib is None and (data_name := budget.data or loaded.dataset) is not None:
        with task(f"load data {data_name}"):
            calib = calibration_split(data_name)
    if calib is not None and budget.preprocess is not None:  # the model's own normalisation
        from workloads.data import normalize

        calib = (normalize(calib[0], budget.preprocess.mean, budget.preprocess.std), calib[1])
    if labelled is None:
        from workloads.data import has_labels

        labelled = calib is None or has_labels(budget.data or loaded.dataset)
    if calib is not None:
        with task("check the data against the limits and the metric"):
            check_judging(loaded, calib, labelled, budget.limits.accuracy_drop,
                          None if metric is None else metric[1])
    groups: list[ChannelGroupSpec] = []
    prune_kl: dict[tuple[str, str], float] = {}
    # channel pruning only with data: its accuracy cost is measured, never assumed zero
    if calib is not None and loaded.module is not None and _logits_model(loaded):
        groups, prune_kl = channel_groups(loaded, spec.profile(profile).preferred_channel_multiple,
                                          calib[0])
    coupling = layer_couplings(groups)
    offered = layer_options(graph, kernels, loaded.module, coupling,
                            spec.profile(profile).nm_sparsity,
                            weights=loaded.module is not None or loaded.onnx_path is not None,
                            tflite=spec.profile(profile).tflite,
                            sparsity_levels=budget.sparsity_levels)
    if calib is None and not budget.allow_unmeasured:
        offered = uncompressed_only(offered, spec.name)
    configs, shapes = configs_of(offered), pruned_shapes(graph, offered)
    if calib is not None:
        estimate = _estimate_accuracy(loaded, graph, kernels, configs_of(offered, True), calib[0])
        acc, unit, acc_prov = estimate.loss, estimate.unit, estimate.provenance
        if coupling:
            acc = width_accuracy(graph, offered, coupling, acc, prune_kl)
            acc_prov += ("; channel pruning: each coupled group pruned alone to each width "
                         "(Torch-Pruning, L1 group importance), KL measured on the same "
                         "images, charged once per group (on its first layer)")
    else:
        acc, unit, acc_prov = {}, "none", (
            NO_DATA_ALLOWED if budget.allow_unmeasured else NO_DATA_UNCOMPRESSED)
    sparse: dict[tuple[str, str], int] = {}
    if loaded.module is not None:
        # shared + channel-pruned options on the weights apply stores; the rest by shape
        sparse = shared_channel_flash_bytes(loaded.module, loaded.input_shape, offered,
                                            groups) if groups else {}
        sparse = {**sparse_flash_bytes(loaded.module, {
            layer: {o: c for o, c in opts.items() if (layer, o) not in sparse}
            for layer, opts in configs.items()}, shapes), **sparse}
    elif loaded.onnx_path is not None:  # the initializers pruned / shared, counted the same way
        from cost_models.onnx_techniques import onnx_stored_bytes

        sparse = onnx_stored_bytes(Path(loaded.onnx_path), configs)
    factored = (lowrank_factors(loaded.module, graph, configs, shapes)
                if loaded.module is not None else {})
    # a TFLite profile's flash is the model.tflite apply writes from a torch model (an
    # ONNX-only model gets no .tflite: its deployed bytes stay the packed image's)
    tflite = spec.profile(profile).tflite is not None and loaded.module is not None
    table = build_cost_table(graph, spec, profile, acc, unit, sparse, budget.period, factored,
                             layer_options={ly: list(row.values()) for ly, row in offered.items()},
                             flash_format="tflite" if tflite else "image")
    if loaded.kind == "onnx":  # say which techniques the ONNX route offers
        from cost_models.onnx_techniques import route_note

        table = dataclasses.replace(table, provenance={**table.provenance,
                                                       "techniques": route_note(offered)})
    if spec.kind == "host" and calib is not None and (
            loaded.module is not None or loaded.onnx_path is not None):
        table = _measured_host_latency(loaded, graph, table, list(kernels), calib[0], offered)
    ctx = PlanContext(budget, spec, profile, loaded, graph, table, problem_terms(graph, table),
                      model_origin,
                      groups, None if calib is None else data_hash(*calib))
    base = base_plan(ctx, acc_prov, offered)
    if teacher is not None:  # plan.json's model is the teacher apply loads
        from edgefit.student_plan import with_student

        base = with_student(base, teacher, student_record)
    if finetune_epochs:
        from techniques.distill import DistillConfig

        base = base.model_copy(update={"finetune": DistillConfig(
            epochs=finetune_epochs, quantization_aware=quantization_aware)})
    base = base.model_copy(update={"excluded": sorted(set(exclude))})  # kept by re-solves
    if not labelled or metric is not None:  # how apply judges the model (issue #21)
        base = base.model_copy(update={
            "labels": labelled, "metric": None if metric is None else metric[0],
            "provenance": {**base.provenance, "judged": judged_note(labelled, metric)}})
    if budget.link is not None or budget.ab_slots > 1:  # A/B slots, the update's link
        from edgefit.delivery import with_delivery

        with task("delivery: transfer bytes per option (zstd ratios)"):
            base = with_delivery(base, budget, table.runtime_flash_bytes, loaded.module)
    problem = ctx.solved = problem_from_plan(base, pins)  # the one Problem
    with task(f"solve ({'optuna' if search is not None else backend})"):
        ctx.result = (_bayes(problem, search, options) if search is not None
                      else solve(problem, options, backend=backend))
    plan = with_result(base, problem, ctx.result, pins)
    if search is None:  # a TFLite plan's file built, its size exact (edgefit.exact_flash)
        from edgefit.exact_flash import with_exact_tflite

        exact = with_exact_tflite(plan, loaded, None if calib is None else calib[0], options,
                                  backend)
        if exact is not plan:
            plan, ctx.solved = exact, problem_from_plan(exact, pins)
    return plan, ctx


NO_LABELS_DROP = (
    "--max-accuracy-drop without labels is checked as the top-1 disagreement with the fp32 "
    "model (it bounds the accuracy drop under any labelling), which needs class outputs; "
    "{outputs}: give data with labels ('y' in the .npz), or no accuracy-drop limit")


def check_judging(loaded: LoadedModel, calib: tuple[np.ndarray, np.ndarray], labelled: bool,
                  accuracy_drop: float | None, metric: Any) -> None:
    """What apply will judge the model by is possible with this data, found before the costs
    are measured: a metric needs labels (and must score the fp32 model: it is tried here on
    the calibration sample); without labels an accuracy-drop limit is the top-1 disagreement
    with the fp32 model, defined for class outputs only."""
    from cost_models.output_fidelity import output_kinds
    from edgefit.metric import NO_LABELS, score

    if metric is not None and not labelled:
        raise DataError(NO_LABELS)
    if metric is None and (labelled or accuracy_drop is None):
        return
    outputs = fp32_outputs(loaded, calib[0][:256])
    if metric is not None:
        score(metric, calib[1][:256], outputs)
        return
    kinds = output_kinds(outputs)
    if "values" in kinds:
        names = ", ".join(f"output {i}" for i, k in enumerate(kinds) if k == "values")
        raise DataError(NO_LABELS_DROP.format(outputs=f"{names} of {loaded.name} "
                                              "is not a class output"))


def judged_note(labelled: bool, metric: tuple[str, Any] | None) -> str:
    """The plan's provenance line on how apply judges the model."""
    if metric is not None:
        return (f"apply scores the fp32 and the compressed model with the metric {metric[0]}"
                "(labels, outputs), higher is better (drop: 100 x the difference, in points)")
    if not labelled:
        return ("no labels (inputs only): apply reports fidelity to the fp32 model's outputs "
                "(top-1 agreement for class outputs, 1 - relative squared error for others; "
                "the worst output) instead of accuracy, and an accuracy-drop limit is checked "
                "as the top-1 disagreement, which bounds the accuracy drop under any labels")
    return "top-1 accuracy against the data's labels"


def fp32_outputs(loaded: LoadedModel, x: np.ndarray) -> list[np.ndarray]:
    """Every output of the uncompressed model on ``x`` (torch, or onnxruntime for an ONNX
    model), batch first."""
    if loaded.kind == "onnx" and loaded.onnx_path is not None:
        from cost_models.accuracy_onnx import onnx_predict_all

        return onnx_predict_all(Path(loaded.onnx_path), x)
    import torch

    module = loaded.torch_module().eval()
    chunks: list[list[np.ndarray]] = []
    with torch.no_grad():
        for i in range(0, len(x), 128):
            out = module(torch.from_numpy(np.ascontiguousarray(x[i:i + 128])))
            outs = list(out) if isinstance(out, tuple | list) else [out]
            chunks.append([o.detach().numpy() for o in outs])
    return [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]


@dataclass(frozen=True)
class SearchSettings:
    """`plan --search bayes`: Optuna TPE over the same decision space (the yardstick)."""

    trials: int = 200
    study: Path | None = None  # SQLite file: resume or inspect a search
    seed: int = 0


def _bayes(problem: Problem, search: SearchSettings, options: SolverOptions | None
           ) -> SolveResult:
    from planner.bayes import search as tpe_search

    storage = f"sqlite:///{search.study}" if search.study else None
    result = tpe_search(problem, search.trials, (options or SolverOptions()).time_limit_s,
                        storage=storage, seed=search.seed)
    if result.feasible:
        return result
    # TPE found no feasible plan, which proves nothing: let CP-SAT answer and explain
    return solve(problem, options)


def _calibrated(spec: DeviceSpec, profile: str) -> DeviceSpec:
    """The spec with the profile's parameters fitted to measurements: yours, when `edgefit
    calibrate` has stored some for it; else the device's published measurements, when that fit
    predicts them leave-one-out better than the catalog values do
    (cost_models.published_fit). The plan's provenance says which, on which points."""
    from cost_models.calibration_file import calibrated_spec, load_calibration
    from cost_models.published_fit import published_spec

    calibration = load_calibration(spec.name)
    if calibration is not None and calibration.profile == profile:
        return calibrated_spec(spec, calibration)
    return published_spec(spec, profile)


def _measured_host_latency(loaded: LoadedModel, graph: LayerGraph, table: CostTable,
                           options: list[str], x: np.ndarray,
                           offered: Mapping[str, Mapping[str, Option]]) -> CostTable:
    """On the host itself latency is measured, not modelled: per layer and option with
    onnxruntime, cached in SQLite across runs and models -- for a torch model and for an
    ONNX-only one (its prepared file is the fp32 model every option is written from); low-rank
    and channel-pruned options by one-layer models (cost_models.micro_latency)."""
    from cost_models.micro_latency import measure_host_variants
    from cost_models.profile_cache import ProfileCache
    from cost_models.profiler import profile_host, with_measured_latency
    from edgefit_common.paths import cache_dir

    with ProfileCache(cache_dir() / "profiles.sqlite") as cache:
        model = (Path(loaded.onnx_path) if loaded.kind == "onnx" and loaded.onnx_path
                 else loaded.torch_module())
        measured = profile_host(model, loaded.input_shape, graph, options, cache, x[:128])
        table = scaled_pruned_latency(with_measured_latency(table, measured, run_overhead=True))
        if isinstance(model, Path):  # an ONNX-only model offers no shape-changing option
            return table
        return measure_host_variants(model, loaded.input_shape, graph, table, offered, cache)


def _logits_model(loaded: LoadedModel) -> bool:
    """Channel pruning's accuracy cost is a KL of class outputs: classifiers only."""
    return getattr(loaded.module, "output_kind", "logits") == "logits"


def _capture(loaded: LoadedModel) -> LayerGraph:
    if loaded.kind == "onnx":
        from cost_models.capture_onnx import capture_onnx

        assert loaded.onnx_path is not None
        return capture_onnx(loaded.onnx_path, loaded.name, loaded.path)  # errors: user's file
    from cost_models.capture import capture

    return capture(loaded.torch_module(), loaded.input_shape, loaded.name)


def _cached_output_kl(module: Any, options: dict[str, dict[str, list[Any]]],
                      x: np.ndarray) -> AccuracyEstimate:
    """measured_output_kl, one cached row per (layer, technique configs), keyed by weights +
    images + layer + configs + the code that simulates the techniques (a change to any of
    them is a miss; the option set is not in the key): only pairs never measured are measured,
    and a plan is the same whichever rows came from the cache (cost_models.cached_rows)."""
    from cost_models.cached_rows import cached_output_kl

    est: AccuracyEstimate = cached_output_kl(module, options, x)
    return est


def _estimate_accuracy(loaded: LoadedModel, graph: LayerGraph, kernels: dict[str, Kernel],
                       options: dict[str, dict[str, list[Any]]],
                       x: np.ndarray) -> AccuracyEstimate:
    """Per (layer, option) accuracy cost: torch (real pruning + fake quantisation), or the real
    quantised ONNX for ONNX-only models."""
    if loaded.kind != "onnx":
        return _cached_output_kl(loaded.torch_module(), options, x)
    import tempfile

    from cost_models.accuracy_onnx import onnx_output_kl

    assert loaded.onnx_path is not None
    forms = {name: onnx_option(plain_option(name, k).to_list()) for name, k in kernels.items()}
    with tempfile.TemporaryDirectory() as tmp:
        est = onnx_output_kl(loaded.onnx_path, graph.layer_names, sorted(set(forms.values())), x,
                             Path(tmp))
    loss = {(layer, name): est.loss[layer, form] for layer in graph.layer_names
            for name, form in forms.items()}
    from cost_models.onnx_techniques import PROVENANCE, onnx_technique_accuracy

    techniques = onnx_technique_accuracy(Path(loaded.onnx_path), options, x)  # sparse, shared
    return AccuracyEstimate({**loss, **techniques}, est.unit,
                            est.provenance + (PROVENANCE if techniques else ""))


def _boundary_provenance(terms: ProblemTerms) -> dict[str, str]:
    from cost_models.boundary_latency import PROVENANCE

    return {"boundary_latency": PROVENANCE} if terms.latency_pairs else {}


def base_plan(ctx: PlanContext, accuracy_provenance: str,
              options: Mapping[str, Mapping[str, Option]]) -> plan_schema.Plan:
    """The unsolved plan: every layer with all its alternatives and the execution steps, so
    plan.json alone can be solved again (planner.resolve)."""
    table = ctx.table
    layers = {
        layer.name: plan_schema.LayerPlan(
            option=None, op_type=layer.op_type, op_class=layer.op_class, params=layer.params,
            macs=layer.macs, predicted=None,
            alternatives=[plan_schema.Alternative(
                option=c.option, kernel=options[layer.name][c.option].kernel,
                techniques=options[layer.name][c.option].to_list(),
                latency_ms=c.latency_ms, flash_bytes=c.flash_bytes, energy_mj=c.energy_mj,
                acc_loss=c.acc_loss, act_bytes=c.act_bytes, widths=dict(c.widths),
                in_act_bytes=c.in_act_bytes,
                image_bytes=c.image_bytes if table.flash_format == "tflite" else None)
                for c in table.options[layer.name]],
        )
        for layer in ctx.graph.layers
    }
    terms = ctx.terms
    extra = terms.step_extra or ({},) * len(terms.ram_steps)
    pairs = terms.step_pairs or ((),) * len(terms.ram_steps)
    ram_steps = [plan_schema.RamStep(owner=step.owner or ctx.graph.layer_names[0],
                                     live=list(live),
                                     workspace=[(ly, o, b) for (ly, o), b in ws.items()],
                                     pairs=[(t.a, list(t.a_options), t.b, list(t.b_options),
                                             t.nbytes) for t in step_pairs])
                 for step, live, ws, step_pairs in zip(ctx.graph.steps, terms.ram_steps,
                                                       extra, pairs, strict=True)]
    spec_path = ctx.budget.target if Path(ctx.budget.target).suffix in (".yaml", ".yml") else None
    from cost_models.uncertainty import latency_band

    band = latency_band(ctx.spec, ctx.profile, table.provenance.get("latency", ""))
    return plan_schema.Plan(
        edgefit_version=__version__,
        model=plan_schema.ModelRef(name=ctx.model.name, kind=ctx.model.given_kind,  # type: ignore[arg-type]
                                   path=ctx.model.path, input_shape=list(ctx.model.input_shape),
                                   origin=ctx.model_origin,
                                   weights_sha256=weights_sha256(ctx.model),
                                   weights_path=_weights_path(ctx.budget.weights)),
        data=ctx.budget.data or ctx.model.dataset,
        preprocess=ctx.budget.preprocess,
        calibration_sha256=ctx.calibration_sha256,
        target=plan_schema.TargetRef(device=ctx.spec.name, profile=ctx.profile,
                                     spec_path=spec_path),
        limits=ctx.budget.limits,
        margin=ctx.budget.margin,
        status="UNSOLVED",
        layers=layers,
        fixed=dict(terms.fixed),
        totals=None,
        solver=plan_schema.SolverInfo(backend="none", status="UNSOLVED", wall_time_s=0.0,
                                      options_considered=0, resolution={}),
        provenance={**table.provenance, "accuracy": accuracy_provenance,
                    **_boundary_provenance(terms)},
        accuracy_unit=table.accuracy,
        latency_band=band.fraction,
        latency_backed=band.backed,
        uncertainty={"latency": band.text,
                     "flash": ("model.tflite's bytes: constants and quantisation parameters "
                               "exact, the flatbuffer's framing fitted (within 0.5 % of the "
                               "written files; float layers among integer ones add ~0.2 KB of "
                               "boundary ops each, not in the solver); apply checks the file"
                               if table.flash_format == "tflite" else
                               "exact: the packed image's bytes are computed from the weights "
                               "and checked on the file by apply"),
                     "ram": (TFLM_RAM_UNCERTAINTY if table.memory.tflm_arena else
                             "activation liveness model; the runtime's own RAM as the spec "
                             "says (see its provenance)")},
        ram_steps=ram_steps,
        weights_in_ram=terms.weights_in_ram,
        boundaries=[(t.a, list(t.a_options), t.b, list(t.b_options), t.latency_ms, t.energy_mj)
                    for t in terms.latency_pairs],
        channel_groups=[plan_schema.ChannelGroup(
            name=g.name, channels=g.channels, multiple=g.multiple, widths=list(g.widths),
            layers=list(g.layers), consumers=list(g.consumers))
            for g in ctx.channel_groups if len(g.widths) > 1],
    )

