"""Applying a plan to a model: channel pruning, the per-layer techniques, fine-tuning, the ONNX
export and quantisation, the packed flash image, and the checks read back from those files.
The orchestration (what ``edgefit apply`` runs, the report, the host check) is the app's:
:mod:`edgefit.applying`.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from cost_models.capture import capture
from cost_models.export import export_fp32
from cost_models.graph import LayerGraph
from edgefit_common.errors import PlanError
from planner.plan import Plan
from techniques.fakequant import pruned_copy, quantized_copy
from techniques.flash_image import FlashLayer, payload_bytes, read_flash_image
from techniques.lowrank import (
    confirm_ranks,
    factor_modules,
    factor_names,
    image_ranks,
    lowrank_config,
    onnx_ranks,
)
from techniques.onnx.inspect import inspect_onnx
from techniques.onnx.weights import flash_layer, layer_arrays, with_weight_techniques
from techniques.onnx.writer import quantize_onnx
from techniques.option import sized_by_weights
from techniques.prune import (
    ChannelPruneConfig,
    NMPruneConfig,
    UnstructuredPruneConfig,
    check_onnx_zeros,
    prune_channels,
)
from techniques.quantize import weight_precision
from techniques.registry import technique
from techniques.share import WeightSharingConfig, check_onnx_shared, share_config
from workloads.data import Dataset, load_dataset
from workloads.models import LoadedModel
from workloads.train import evaluate

C = TypeVar("C")

FLASH_TOLERANCE_FRACTION = 0.02
FLASH_TOLERANCE_BYTES = 1024  # the criterion; the prediction is meant to be exact


def onnx_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    from techniques.onnx.writer import ort_session_options

    sess = ort.InferenceSession(str(path), ort_session_options(),
                                providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


@dataclass
class Built:
    """What each model kind's branch produces; the rest of apply is shared."""

    graph: LayerGraph
    fp32_onnx: Path
    runnable: Path
    flash_layers: list[FlashLayer]
    fp32_accuracy: float
    accuracy: float
    how: str
    fidelity: dict[str, Any] | None
    finetune: dict[str, Any] | None = None
    base_graph: LayerGraph | None = None  # the uncompressed geometry (when channels shrink)
    narrow: Any = None  # the torch model after channel pruning (before per-layer techniques)
    float_model: Any = None  # torch, every technique applied but quantisation (the .tflite's)
    compressed: Any = None  # torch, with the plan's quantisation simulated (fake-quant)
    simulated_accuracy: float | None = None  # the fake-quant torch model's (accuracy: the ONNX)


def build_torch(plan: Plan, loaded: LoadedModel, onnx_opts: dict[str, str],
                 calib_x: np.ndarray, test: Dataset, out_dir: Path) -> Built:
    """Torch model: pruning applied for real, quantisation simulated for accuracy; the pruned
    model exported (dynamo) and quantised with onnxruntime."""
    module = teacher = loaded.torch_module()
    student = None
    if plan.student is not None:  # the plan's layers are a student's, distilled from the model
        module, student = _student(plan, teacher, loaded)
    graph = capture(module, loaded.input_shape, loaded.name)
    if list(plan.layers) != graph.layer_names:
        raise PlanError("the plan's layers do not match the model's; re-run `plan`")
    # channels go first, on the whole model (consumers' inputs shrink with them); the
    # per-layer techniques then run on the smaller model
    techniques = {name: [t for t in lp.techniques if not isinstance(t, ChannelPruneConfig)]
                  for name, lp in plan.layers.items()}
    narrow = channel_pruned(module, plan, loaded.input_shape)
    base_graph = None
    if narrow is not module:
        base_graph = graph
        graph = capture(narrow, loaded.input_shape, loaded.name)  # the geometry that runs
    pruned = pruned_copy(narrow, techniques)
    tuned, finetune_report = "", None
    shared = shared_layers(plan)
    factorised = any(t.technique == "lowrank" for ts in techniques.values() for t in ts)
    from executors.qat import quantized_layers

    # quantisation-aware fine-tuning has something to do in a quantisation-only plan too
    qat = plan.finetune is not None and plan.finetune.quantization_aware
    quantized = quantized_layers(techniques) if qat else {}
    if plan.finetune is not None and (narrow is not module or shared or factorised or quantized
                                      or any(_sparsity(t) for t in techniques.values())):
        from executors.distill import distill
        from workloads.data import normalized, training_set

        # load_dataset looked up here, in this module (tests substitute it)
        train = training_set(plan.data or loaded.dataset, load_dataset)

        train = normalized(train, plan.preprocess)
        pruned, rep = distill(pruned, teacher, train, plan.finetune, shared=list(shared),
                              quantized=quantized, calibration=calib_x)
        # tuned centroids of a float16 codebook: rounded back to float16 (sharing is idempotent)
        pruned = pruned_copy(pruned, {name: [cfg] for name, cfg in shared.items()})
        finetune_report = dataclasses.asdict(rep)
        tuned = (f"; distilled {rep.epochs_run} epoch(s) "
                 + ("quantisation-aware (forward through the planned quantisation, "
                    "straight-through gradients; validation figures of the quantised model) "
                    if rep.quantization_aware else "after pruning/factorising/sharing ")
                 + f"(best {rep.best_epoch}, "
                 f"validation KL {rep.val_kl_before:.3g} -> {rep.val_kl_after:.3g}, accuracy "
                 f"{100 * rep.val_accuracy_before:.2f} -> {100 * rep.val_accuracy_after:.2f} %, "
                 f"zeros kept: {rep.zeros_kept}"
                 + (f", codebooks kept: {rep.codebook_kept}" if shared else "") + ")")
    compressed = quantized_copy(pruned, techniques, calib_x)
    # model.fp32.onnx: the uncompressed model (the host check's baseline); model.float.onnx:
    # the pruned / factorised / shared float model the quantiser starts from
    fp32_onnx, runnable = out_dir / "model.fp32.onnx", out_dir / "model.onnx"
    float_onnx = out_dir / "model.float.onnx"
    export_fp32(module, loaded.input_shape, fp32_onnx)
    if pruned_like(module, pruned):
        shutil.copyfile(fp32_onnx, float_onnx)
    else:
        export_fp32(pruned, loaded.input_shape, float_onnx)
    quantize_onnx(float_onnx, runnable, node_options(plan, onnx_opts), calib_x[:128])
    simulated = _quality(compressed, teacher, test)
    if student is not None:  # its distillation beside the fine-tuning's
        finetune_report = {**(finetune_report or {}), "student": student}
    return Built(
        graph, fp32_onnx, runnable, _flash_layers(pruned, plan),
        _quality(teacher, teacher, test), _shipped_quality(runnable, teacher, test),
        _metric_note(teacher) + _student_note(student)
        + "the shipped model.onnx run by onnxruntime on the held-out split (the torch model "
        "with the plan's pruning, factorisation and weight sharing applied and its "
        f"quantisation simulated: {_fmt_quality(simulated, module)}, fake-quant with "
        f"activation scales from {len(calib_x)} training images)"
        + (tuned or "; no fine-tuning"),
        _onnx_fidelity(runnable, compressed, test.x[:256], teacher), finetune_report,
        base_graph, narrow, pruned, compressed, simulated_accuracy=simulated)


def _student(plan: Plan, teacher: nn.Module, loaded: LoadedModel
             ) -> tuple[nn.Module, dict[str, Any]]:
    """The plan's student, distilled from ``teacher`` on the training split
    (executors.student; the weights plan measured, from the cache, when they are there)."""
    from executors.student import student_for_plan
    from workloads.data import normalized, training_set

    train = normalized(training_set(plan.data or loaded.dataset, load_dataset), plan.preprocess)
    return student_for_plan(plan, teacher, loaded.input_shape, train)


def _student_note(student: dict[str, Any] | None) -> str:
    if student is None:
        return ""
    return (f"the student {student['spec']} ({student['params']:,} parameters, the teacher "
            f"{student['teacher_params']:,}) distilled from the fp32 model "
            f"{'(cached weights) ' if student['from_cache'] else ''}"
            f"{student['epochs_run']} epoch(s), validation accuracy "
            f"{100 * student['val_accuracy_after']:.2f} %, then compressed as planned; "
            "fp32 and drop are the teacher's; ")


def pruned_like(module: nn.Module, other: nn.Module) -> bool:
    """Whether ``other`` holds exactly ``module``'s parameters (a quantisation-only plan
    without fine-tuning): then one fp32 export serves as both baseline and quantiser input."""
    import torch

    a, b = module.state_dict(), other.state_dict()
    return a.keys() == b.keys() and all(
        a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def build_onnx(plan: Plan, loaded: LoadedModel, onnx_opts: dict[str, str],
                calib_x: np.ndarray, test: Dataset, out_dir: Path) -> Built:
    """ONNX-only model: pruned / weight-shared on its initializers and quantised at the ONNX
    level (model.float.onnx, then model.onnx), accuracy measured with onnxruntime."""
    from cost_models.accuracy_onnx import onnx_accuracy
    from cost_models.capture_onnx import capture_onnx

    assert loaded.onnx_path is not None
    graph = capture_onnx(loaded.onnx_path, loaded.name, loaded.path)
    if list(plan.layers) != graph.layer_names:
        raise PlanError("the plan's layers do not match the model's; re-run `plan`")
    if lowrank_layers(plan):
        raise PlanError(f"layers {', '.join(lowrank_layers(plan))}: lowrank factorises torch "
                        "models only; this model is ONNX only")
    fp32_onnx, runnable = out_dir / "model.fp32.onnx", out_dir / "model.onnx"
    float_onnx = out_dir / "model.float.onnx"
    shutil.copyfile(loaded.onnx_path, fp32_onnx)
    # the initializers pruned / shared as planned (model.float.onnx), then quantised
    changed = with_weight_techniques(fp32_onnx, float_onnx, {
        name: lp.techniques for name, lp in plan.layers.items()})
    quantize_onnx(float_onnx if changed else fp32_onnx, runnable, onnx_opts, calib_x[:128])
    if not changed:
        float_onnx.unlink()
    return Built(
        graph, fp32_onnx, runnable, onnx_flash_layers(float_onnx if changed else fp32_onnx, plan),
        onnx_accuracy(fp32_onnx, test.x, test.y), onnx_accuracy(runnable, test.x, test.y),
        "the shipped model.onnx itself run by onnxruntime on the held-out split (int8 "
        f"activation ranges from {min(128, len(calib_x))} training images"
        + (f"; {len(changed)} layer(s) pruned / weight-shared on their initializers first, "
           "model.float.onnx" if changed else "") + ")", None)


def onnx_flash_layers(path: Path, plan: Plan) -> list[FlashLayer]:
    """The planned ONNX nodes as the flash image stores them: weights (torch layout: output
    channels first, as read from ``path``, already pruned / shared) and biases in their
    kernel's form, sparse when pruned, on a codebook when shared."""
    arrays = layer_arrays(path, list(plan.layers))
    return [flash_layer(name, lp.techniques, *arrays[name]) for name, lp in plan.layers.items()]


def _flash_layers(model: nn.Module, plan: Plan) -> list[FlashLayer]:
    modules = dict(model.named_modules())
    layers = []
    for layer, lp in plan.layers.items():
        weights = weight_precision(lp.techniques)
        # a factorised layer stores each factor as a layer of its own (<layer>.0, ...)
        parts = (list(zip(factor_names(layer, lp.op_type), factor_modules(modules[layer]),
                          strict=True))
                 if lowrank_config(lp.techniques) else [(layer, modules[layer])])
        for name, mod in parts:
            bias = getattr(mod, "bias", None)
            layers.append(FlashLayer(
                name=name, option=weights,
                weight=mod.weight.detach().numpy().astype(np.float32),  # type: ignore[operator]
                bias=None if bias is None else bias.detach().numpy().astype(np.float32),
                sparse=_sparsity(lp.techniques) > 0,
                share=share_config(lp.techniques),  # codebook + Huffman-coded indices
            ))
    return layers


def channel_pruned(module: nn.Module, plan: Plan, input_shape: tuple[int, ...]) -> nn.Module:
    """A copy with the plan's channels removed (prune_channels), or `module` itself when the
    plan prunes none."""
    import copy

    configs = {name: t for name, lp in plan.layers.items() for t in lp.techniques
               if isinstance(t, ChannelPruneConfig)}
    if not configs:
        return module
    return prune_channels(copy.deepcopy(module), configs, input_shape)


def planned_channels(plan: Plan) -> dict[str, int]:
    """Output channels the plan keeps, for every layer of a channel group it prunes."""
    out = {}
    for g in plan.channel_groups:
        for name in g.layers:
            lp = plan.layers[name]
            kept = lp.alternative(lp.option).widths.get(g.name) if lp.option else None
            if kept is not None and kept < g.channels:
                out[name] = kept
    return out


def _onnx_out_channels(storage: Any) -> int | None:
    """Output channels of a planned node from its stored weight: Conv (out, in/g, kh, kw),
    Gemm as the exporter writes Linear (out, in), MatMul (in, out)."""
    shape = storage.weight_shape
    if not shape:
        return None
    return int(shape[-1] if storage.op_type.endswith("MatMul") else shape[0])


def check_channels_in_onnx(plan: Plan, in_onnx: dict[str, Any]
                           ) -> tuple[dict[str, dict[str, int | None]], list[str]]:
    """Per channel-pruned layer: planned kept channels against those the ONNX weight holds
    (a factorised layer's: its last factor's, which writes the layer's output)."""
    rows: dict[str, dict[str, int | None]] = {}
    problems = []
    factored = lowrank_layers(plan)
    for name, kept in planned_channels(plan).items():
        node = factor_names(name, factored[name])[-1] if name in factored else name
        found = _onnx_out_channels(in_onnx[node]) if node in in_onnx else None
        rows[name] = {"planned": kept, "onnx": found}
        if found != kept:
            problems.append(f"{name}: ONNX weight has {found} output channels, plan keeps {kept}")
    return rows, problems


def layers_with(plan: Plan, kind: type[C]) -> dict[str, C]:
    """{layer: its config of this type} of the plan's unfactorised layers that have one."""
    out: dict[str, C] = {}
    for name, lp in plan.layers.items():
        found: list[C] = [t for t in lp.techniques if isinstance(t, kind)]
        if found and not lowrank_config(lp.techniques):
            out[name] = found[0]
    return out


def shared_layers(plan: Plan) -> dict[str, WeightSharingConfig]:
    """{layer: its WeightSharingConfig} of the plan's weight-shared (unfactorised) layers."""
    return layers_with(plan, WeightSharingConfig)


def _verify_onnx_shared(name: str, cfg: WeightSharingConfig, in_onnx: dict[str, Any],
                        row: dict[str, Any]) -> list[str]:
    """A shared layer's decoded weights in the runnable ONNX: at most 2**bits distinct."""
    row["onnx_distinct_nonzero"] = in_onnx["distinct_nonzero"]
    if not in_onnx["ok"]:
        return [f"{name}: ONNX weight holds {in_onnx['distinct_nonzero']} distinct nonzero "
                f"values, more than 2**{cfg.bits} = {2 ** cfg.bits}"]
    return []


def _verify_onnx_zeros(name: str, cfg: UnstructuredPruneConfig, in_onnx: dict[str, Any],
                       row: dict[str, Any]) -> list[str]:
    """A pruned layer's weight in the runnable ONNX: at least the planned zeros."""
    row["onnx_zero_fraction"] = in_onnx["sparsity"]
    if not in_onnx["ok"]:
        return [f"{name}: ONNX weight holds {in_onnx['zeros']} zeros "
                f"({100 * in_onnx['sparsity']:.1f} %), plan prunes "
                f"{100 * cfg.sparsity:.0f} % ({in_onnx['expected_zeros']})"]
    return []


def _layer_bytes_match(stored: float, planned: float, by_weights: bool) -> bool:
    """Exact where the size follows from the shape; within the promised 2 % where it depends
    on the weights' values (zeros, a codebook's entropy-coded indices), which fine-tuning
    after planning moves."""
    if not by_weights:
        return stored == planned
    return abs(stored - planned) <= FLASH_TOLERANCE_FRACTION * planned


def _sparsity(techniques: list[Any]) -> float:
    """The fraction of the layer's weights its pruning zeroes (unstructured, or N:M's 1 - n/m)."""
    for t in techniques:
        if isinstance(t, UnstructuredPruneConfig):
            return t.sparsity
        if isinstance(t, NMPruneConfig):
            return 1 - t.n / t.m
    return 0.0


def _weight_only_int8(techniques: list[Any]) -> bool:
    """int8 weights with float activations: an embedding table's form (onnx_option "int8")."""
    cfg = next((t for t in techniques if t.technique == "quantize"), None)
    return cfg is not None and cfg.weights == "int8" and cfg.activations in ("fp32", "fp16")


def verify_artifacts(plan: Plan, runnable: Path, image: Path,
                     onnx_opts: dict[str, str]) -> dict[str, Any]:
    """Read both artifacts back and check, from the files alone, that the plan was applied."""
    in_onnx = inspect_onnx(runnable)
    in_image = {s.name: s for s in read_flash_image(image)}
    rows, problems = [], []
    factored = lowrank_layers(plan)
    shared = shared_layers(plan)
    onnx_shared = check_onnx_shared(runnable, shared) if shared else {}
    pruned = layers_with(plan, UnstructuredPruneConfig)
    onnx_zeros = check_onnx_zeros(runnable, pruned) if pruned else {}
    for name, lp in plan.layers.items():
        if name in factored:
            row, found = _verify_factored(name, lp, runnable, in_onnx, in_image, onnx_opts[name])
            rows.append(row)
            problems += found
            continue
        weights = weight_precision(lp.techniques)
        o, f = in_onnx.get(name), in_image.get(name)
        row = {
            "layer": name, "planned": lp.option,
            "onnx_option": o.option if o else None, "onnx_weight_dtype": o.weight_dtype if o
            else None, "onnx_weight_bytes": o.weight_bytes if o else None,
            "image_dtype": f.dtype if f else None, "image_bits": f.bits if f else None,
            "image_storage": f.storage if f else None,
            "image_zero_fraction": f.zero_fraction if f else None,
            "image_bytes": (f.weight_bytes + f.bias_bytes + f.header_bytes) if f else None,
            "planned_bytes": lp.image_bytes,
            "distinct_values": f.distinct_values if f else None,
        }
        rows.append(row)
        if o is None or o.option != onnx_opts[name]:
            problems.append(f"{name}: ONNX stores {o.option if o else 'nothing'}, plan says "
                            f"{onnx_opts[name]}")
        elif lp.op_type != "Embedding" and _weight_only_int8(lp.techniques):
            problems.append(f"{name}: int8 weights with float activations are written for "
                            "embedding tables only; the ONNX runs this layer as static int8")
        if f is None or f.option != weights:
            problems.append(f"{name}: flash image stores {f.option if f else 'nothing'}, plan "
                            f"says {weights}")
        elif not _layer_bytes_match(f.weight_bytes + f.bias_bytes + f.header_bytes,
                                    lp.image_bytes, sized_by_weights(lp.techniques)):
            problems.append(f"{name}: image holds {f.weight_bytes + f.bias_bytes} B + a "
                            f"{f.header_bytes} B header entry, plan predicted "
                            f"{lp.image_bytes:.0f} B")
        for cfg in lp.techniques if f is not None else ():  # each technique's own check
            check = technique(cfg).verify_image
            if check is not None:
                problems += check(name, cfg, f, row)
        if name in shared:
            problems += _verify_onnx_shared(name, shared[name], onnx_shared[name], row)
        if name in pruned:
            problems += _verify_onnx_zeros(name, pruned[name], onnx_zeros[name], row)
    channels, channel_problems = check_channels_in_onnx(plan, in_onnx)
    problems += channel_problems
    # layer costs hold their blobs and header entries; the plan's fixed part the framing
    planned = (sum(lp.image_bytes for lp in plan.layers.values())
               + plan.fixed.get("image_overhead_bytes", 0.0))
    actual = image.stat().st_size
    tolerance = max(FLASH_TOLERANCE_FRACTION * planned, FLASH_TOLERANCE_BYTES)
    match = abs(actual - planned) <= tolerance
    if not match:
        problems.append(f"flash image is {actual} B, plan predicted {planned:.0f} B")
    summary = ("every layer stored as planned in model.onnx and model.flash.bin; image "
               f"{actual} B vs planned {planned:.0f} B ("
               + ("exact" if actual == round(planned) else f"off by {actual - planned:+.0f} B")
               + f", header {actual - payload_bytes(image)} B included)"
               if not problems else "; ".join(problems))
    return {"layers": rows, "problems": problems, "ok": not problems, "summary": summary,
            "planned_model_flash_bytes": planned, "flash_image_bytes": actual,
            "flash_match": match, "channels": channels}


def lowrank_layers(plan: Plan) -> dict[str, str]:
    """{layer: op_type} of the plan's factorised layers."""
    return {n: lp.op_type for n, lp in plan.layers.items() if lowrank_config(lp.techniques)}


def node_options(plan: Plan, onnx_opts: dict[str, str]) -> dict[str, str]:
    """The runnable ONNX's option per layer node: every factor of a factorised layer (nodes
    ``<layer>.0``, ``<layer>.1`` ...) takes the layer's option."""
    factored = lowrank_layers(plan)
    return {node: option for name, option in onnx_opts.items()
            for node in (factor_names(name, factored[name]) if name in factored else [name])}


def _verify_factored(name: str, lp: Any, runnable: Path, in_onnx: dict[str, Any],
                     in_image: dict[str, Any], option: str) -> tuple[dict[str, Any], list[str]]:
    """A factorised layer read back: every factor's storage in both files, the factors' bytes
    against the plan, and the rank present (inner dimension) against the planned rank."""
    cfg = lowrank_config(lp.techniques)
    assert cfg is not None
    weights = weight_precision(lp.techniques)
    nodes = factor_names(name, lp.op_type)
    problems = [f"{name}: ONNX factor {n} stores {in_onnx[n].option if n in in_onnx else 'nothing'}"
                f", plan says {option}" for n in nodes
                if n not in in_onnx or in_onnx[n].option != option]
    problems += [f"{name}: flash image factor {n} stores "
                 f"{in_image[n].option if n in in_image else 'nothing'}, plan says {weights}"
                 for n in nodes if n not in in_image or in_image[n].option != weights]
    row: dict[str, Any] = {"layer": name, "planned": lp.option, "factors": nodes,
                           "planned_bytes": lp.image_bytes, "planned_rank": cfg.rank,
                           "planned_rank_in": cfg.rank_in}
    if problems:
        return row, problems
    stored = sum(in_image[n].weight_bytes + in_image[n].bias_bytes + in_image[n].header_bytes
                 for n in nodes)
    ranks = {"onnx": onnx_ranks(runnable, {name: lp.op_type})[name],
             "image": image_ranks(in_image, {name: lp.op_type})[name]}
    row.update({"onnx_option": option, "onnx_weight_bytes": sum(in_onnx[n].weight_bytes
                                                                for n in nodes),
                "image_dtype": in_image[nodes[0]].dtype, "image_bytes": stored,
                "onnx_rank": ranks["onnx"]["rank"], "onnx_rank_in": ranks["onnx"]["rank_in"],
                "image_rank": ranks["image"]["rank"], "image_rank_in": ranks["image"]["rank_in"]})
    if stored != lp.image_bytes:
        problems.append(f"{name}: image holds {stored} B in its factors, plan predicted "
                        f"{lp.image_bytes:.0f} B")
    for where, found in ranks.items():
        checked = confirm_ranks(dict(found), cfg)
        if not checked.get("ok", True):
            problems.append(f"{name}: {where} holds rank {found['rank']}"
                            f"{'/' + str(found['rank_in']) if found['rank_in'] else ''}, plan "
                            f"says {checked['expected']['rank']}")
    return row, problems


def _is_encoder(model: nn.Module) -> bool:
    """A model whose output is an embedding, judged by cosine similarity, not top-1."""
    return getattr(model, "output_kind", "logits") == "embedding"


def _shipped_quality(runnable: Path, reference: nn.Module, test: Dataset) -> float:
    """:func:`_quality` of the runnable ONNX file itself (what the user ships)."""
    if not _is_encoder(reference):
        from cost_models.accuracy_onnx import onnx_accuracy

        return onnx_accuracy(runnable, test.x, test.y)
    from workloads.minilm import embed, mean_cosine

    return mean_cosine(onnx_outputs(runnable, test.x), embed(reference, test.x))


def _fmt_quality(value: float, reference: nn.Module) -> str:
    return f"{100 * value:.2f} %" + (" cosine" if _is_encoder(reference) else "")


def _quality(model: nn.Module, reference: nn.Module, test: Dataset) -> float:
    """Top-1 accuracy; for an encoder, mean cosine similarity to `reference`'s embeddings."""
    if not _is_encoder(reference):
        return evaluate(model, test)
    from workloads.minilm import embed, mean_cosine

    return mean_cosine(embed(model, test.x), embed(reference, test.x))


def _metric_note(model: nn.Module) -> str:
    return ("metric: mean cosine similarity of the embeddings to the fp32 model's on the "
            "held-out sentences (shown as %; drop pp = 100 x (1 - cosine)); "
            if _is_encoder(model) else "")


def _onnx_fidelity(runnable: Path, compressed: nn.Module, x: np.ndarray,
                   reference: nn.Module | None = None) -> dict[str, Any]:
    ort_out = onnx_outputs(runnable, x)
    with torch.no_grad():
        torch_out = compressed(torch.from_numpy(x)).numpy()
    if reference is not None and _is_encoder(reference):
        from workloads.minilm import embed, mean_cosine

        return {"samples": int(len(x)),
                "max_abs_diff": float(np.abs(ort_out - torch_out).max()),
                "cosine_to_fake_quant": mean_cosine(ort_out, torch_out),
                "cosine_to_fp32": mean_cosine(ort_out, embed(reference, x)),
                "note": "runnable ONNX embeddings vs the fake-quant torch model's and vs the "
                        "fp32 model's (the deployed model's own fidelity)"}
    return {
        "samples": int(len(x)),
        "max_abs_diff": float(np.abs(ort_out - torch_out).max()),
        "top1_agreement": float((ort_out.argmax(1) == torch_out.argmax(1)).mean()),
        "note": "runnable ONNX vs the fake-quant torch model; int4 layers run weight-only "
                "(float activations) in ONNX",
    }
