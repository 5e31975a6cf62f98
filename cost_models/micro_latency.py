"""Measured host latency of the options that change a layer's shape: low-rank factors and
channel-pruned widths.

The host profiler (:mod:`cost_models.profiler`) measures each kernel by building the whole model
at it. A factorised or narrowed layer cannot be measured that way (its shape depends on the
option, and a narrowed layer's input width on its neighbours' choices), so before this module
their latency was a formula: the kernel's measured latency x an analytical factor (the factors'
roofline ratio, or the kept fraction of MACs). On a CPU those formulas are wrong where it
matters -- two small GEMMs are not cheaper than one in proportion to their MACs, a 12-channel
convolution is not half as fast as a 24-channel one -- which is how a plan predicted at 41 µs
measured 101 µs (issue #22).

Here each such option is measured: a one-layer ONNX model of the variant (the layer cut to the
option's kept shape, then factorised, exactly as apply does it, written in the kernel's form by
:func:`techniques.onnx.writer.quantize_onnx`) is timed against a one-layer model of the dense
full-width layer in the same form, interleaved in one process with the session settings plans
are judged by, and an empty model's run time is subtracted from both. The option's latency is
then the kernel's measured in-model latency x that measured ratio. Each (layer, form, variant
shape) is measured once per host and cached in the profile cache.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cost_models.graph import LayerGraph
from cost_models.options import pruned_shape
from cost_models.profile_cache import DeviceFingerprint, LayerSignature, ProfileCache
from edgefit_common.errors import PlanError
from techniques.option import Option

if TYPE_CHECKING:
    from torch import nn

    from cost_models.table import CostTable

METHOD = "one-layer-model/v1"
"""How a row was measured (in the signature: another method never reuses a row)."""
ROUNDS = 15  # interleaved rounds; each model's latency is its lowest round median
RUNS_PER_ROUND = 30
WARMUP = 20
CALIBRATION_SAMPLES = 16  # int8 activation ranges of a one-layer model (timing only)
RATIO_BOUNDS = (0.05, 20.0)  # a ratio outside these is noise on a sub-µs layer, not a kernel
NET_FLOOR_US = 0.05  # a layer's time never reads below this after subtracting the empty run


@dataclass(frozen=True)
class Variant:
    """One shape to time: the weighted modules the layer computes with, in order, on an input
    of ``input_shape`` (batch 1), in the ONNX form ``form``."""

    form: str
    modules: tuple[Any, ...]  # torch modules (Conv2d / Linear)
    input_shape: tuple[int, ...]

    @property
    def key(self) -> str:
        """The cache's option key: form + every module's weight shape and conv attributes."""
        return f"micro:{self.form}:" + "+".join(_module_key(m) for m in self.modules)


def _module_key(m: Any) -> str:
    shape = "x".join(str(d) for d in m.weight.shape)
    if hasattr(m, "stride"):
        return (f"conv{shape}/s{m.stride}/p{m.padding}/d{m.dilation}/g{m.groups}"
                f"/b{m.bias is not None}").replace(" ", "")
    return f"linear{shape}/b{m.bias is not None}"


def needs_measuring(option: Option) -> bool:
    """Options whose layer shape differs from the dense layer's: low rank or narrowed."""
    return option.narrowed or option.has("lowrank")


def variant_modules(module: nn.Module, option: Option, shape: tuple[int, ...] | None,
                    where: str) -> tuple[Any, ...]:
    """The modules ``option`` leaves in place of ``module``, in apply's order: the kept
    channels first (``shape``: the pruned weight shape), then the factors."""
    from techniques.lowrank import factorize, lowrank_config
    from techniques.prune import kept_slice

    layer = kept_slice(module, shape) if shape else copy.deepcopy(module)
    config = lowrank_config(option.techniques)
    if config is None:
        return (layer,)
    return tuple(factorize(layer, config, where).children())


def _module_check(modules: Sequence[Any]) -> None:
    for m in modules:
        if isinstance(getattr(m, "padding", None), str):
            raise PlanError(f"padding {m.padding!r} is not written by the one-layer model")


def _input_shape(full: tuple[int, ...], first: Any) -> tuple[int, ...]:
    """The layer's input shape with its channel dimension at the first module's inputs."""
    w = first.weight
    if hasattr(first, "stride"):  # NCHW: channels on axis 1
        return (full[0], int(w.shape[1]) * int(first.groups), *full[2:])
    return (*full[:-1], int(w.shape[1]))  # Linear: features last


# --------------------------------------------------------------------------------------------
# the one-layer ONNX model


def _conv_node(name: str, m: Any, x: str, out: str) -> tuple[list[Any], list[Any]]:
    from onnx import helper, numpy_helper

    w = numpy_helper.from_array(m.weight.detach().numpy().astype(np.float32), f"{name}.weight")
    inputs, inits = [x, w.name], [w]
    if m.bias is not None:
        b = numpy_helper.from_array(m.bias.detach().numpy().astype(np.float32), f"{name}.bias")
        inputs.append(b.name)
        inits.append(b)
    ph, pw = m.padding
    node = helper.make_node("Conv", inputs, [out], name=name, kernel_shape=list(m.kernel_size),
                            strides=list(m.stride), pads=[ph, pw, ph, pw],
                            dilations=list(m.dilation), group=int(m.groups))
    return [node], inits


def _linear_nodes(name: str, m: Any, x: str, out: str, rank: int
                  ) -> tuple[list[Any], list[Any]]:
    """Gemm (transB) on a 2-D input, MatMul on W^T + Add on a token input: the forms
    torch's exporter writes and the ONNX writer expects."""
    from onnx import helper, numpy_helper

    w = m.weight.detach().numpy().astype(np.float32)
    b = m.bias.detach().numpy().astype(np.float32) if m.bias is not None else None
    if rank == 2:
        inits = [numpy_helper.from_array(w, f"{name}.weight")]
        inputs = [x, inits[0].name]
        if b is not None:
            inits.append(numpy_helper.from_array(b, f"{name}.bias"))
            inputs.append(inits[1].name)
        return [helper.make_node("Gemm", inputs, [out], name=name, transB=1)], inits
    wt = numpy_helper.from_array(np.ascontiguousarray(w.T), f"{name}.weight_t")
    if b is None:
        return [helper.make_node("MatMul", [x, wt.name], [out], name=name)], [wt]
    bias = numpy_helper.from_array(b, f"{name}.bias")
    return ([helper.make_node("MatMul", [x, wt.name], [f"{name}_mm"], name=name),
             helper.make_node("Add", [f"{name}_mm", bias.name], [out], name=f"{name}/add")],
            [wt, bias])


def micro_model(modules: Sequence[Any], input_shape: tuple[int, ...]) -> Any:
    """A one-layer ONNX model (opset 20, like torch's exporter): ``modules`` in a chain,
    nodes named ``m0``, ``m1``, ... and listed in ``edgefit.layers``."""
    import onnx
    from onnx import TensorProto, helper

    from formats.onnx_io import LAYERS_KEY

    nodes: list[Any] = []
    inits: list[Any] = []
    x = "input"
    for i, m in enumerate(modules):
        out = "output" if i == len(modules) - 1 else f"t{i}"
        made = (_conv_node(f"m{i}", m, x, out) if hasattr(m, "stride")
                else _linear_nodes(f"m{i}", m, x, out, len(input_shape)))
        nodes += made[0]
        inits += made[1]
        x = out
    graph = helper.make_graph(
        nodes, "one-layer", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                           list(input_shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT,
                                       _output_shape(modules, input_shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    entry = model.metadata_props.add()
    entry.key, entry.value = LAYERS_KEY, "[" + ",".join(f'"m{i}"' for i in
                                                        range(len(modules))) + "]"
    onnx.checker.check_model(model)
    return model


def _output_shape(modules: Sequence[Any], input_shape: tuple[int, ...]) -> list[int]:
    import torch

    with torch.no_grad():
        x = torch.zeros(input_shape)
        for m in modules:
            x = m(x)
    return list(x.shape)


def _empty_model(input_shape: tuple[int, ...]) -> Any:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"], name="id")], "empty",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(input_shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    return model


def write_variant(variant: Variant, path: Path, seed: int = 0) -> Path:
    """The variant's one-layer model in its form, at ``path``."""
    import onnx

    from techniques.onnx.writer import quantize_onnx

    fp32 = path.with_suffix(".fp32.onnx")
    onnx.save(micro_model(variant.modules, variant.input_shape), str(fp32))
    if variant.form == "fp32":
        return fp32
    rng = np.random.default_rng(seed)
    calibration = rng.random((CALIBRATION_SAMPLES, *variant.input_shape[1:]), np.float32)
    names = {f"m{i}": variant.form for i in range(len(variant.modules))}
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime's quantiser warns of the opset it upgrades
    try:
        quantize_onnx(fp32, path, names, calibration)
    finally:
        root.setLevel(level)
    return path


# --------------------------------------------------------------------------------------------
# timing


def interleaved_us(paths: Sequence[Path], threads: int = 1, opt_level: str = "all",
                   rounds: int = ROUNDS, runs: int = RUNS_PER_ROUND) -> list[float]:
    """Each model's ``session.run`` time in µs: the lowest of ``rounds`` round medians, the
    models taking turns round by round (load drifts hit them alike)."""
    import time

    import edgefit_measure as em

    sessions = [em.open_session(p, em.session_options(threads, opt_level), None)
                for p in paths]
    feeds = [em.random_feed(em.input_specs(s)) for s in sessions]
    for s, f in zip(sessions, feeds, strict=True):
        for _ in range(WARMUP):
            s.run(None, f)
    best = [float("inf")] * len(paths)
    for r in range(rounds):
        order = list(range(len(paths)))
        if r % 2:
            order.reverse()
        for i in order:
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                sessions[i].run(None, feeds[i])
                times.append(time.perf_counter() - t0)
            best[i] = min(best[i], 1e6 * float(np.median(times)))
    return best


def _signature(sig: LayerSignature) -> LayerSignature:
    return dataclasses.replace(sig, charged=(), method=METHOD + "|" + sig.method)


def measure_variants(variants: Mapping[str, Sequence[Variant]],
                     signatures: Mapping[str, LayerSignature], fp: DeviceFingerprint,
                     cache: ProfileCache, threads: int = 1, opt_level: str = "all",
                     who: dict[str, list[str]] | None = None
                     ) -> dict[tuple[str, str], float]:
    """{(layer, variant key): net µs}: every variant's one-layer time less the empty model's,
    cached per (host, layer signature, variant key); the dense variants of each layer are
    among ``variants`` (the caller adds them). On a cluster the layers go to the nodes with
    this host's fingerprint, one layer a task and one task at a time per node (as the host
    profile's options, cost_models.profiler); ``who`` collects {who measured: [layers]}."""
    from edgefit_common.progress import track

    out: dict[tuple[str, str], float] = {}
    todo: list[tuple[str, Variant]] = []
    for layer, row in variants.items():
        sig = _signature(signatures[layer])
        for v in row:
            hit = cache.get(fp, sig, v.key)
            if hit is not None:
                out[(layer, v.key)] = 1e3 * hit.median_ms
            else:
                todo.append((layer, v))
    by_layer: dict[str, list[Variant]] = {}
    for layer, v in todo:
        by_layer.setdefault(layer, []).append(v)
    by = _on_nodes(by_layer, signatures, fp, cache, threads, opt_level, out, who)
    if by and not by_layer:  # the nodes measured every layer: no empty step on the driver
        return out
    for layer in track(list(by_layer), "profile: low-rank and narrowed layers"):
        out.update(_measure_layer(layer, by_layer[layer], _signature(signatures[layer]), fp,
                                  cache, threads, opt_level, by))
        if who is not None and by:
            who.setdefault(by, []).append(layer)
    return out


def _on_nodes(by_layer: dict[str, list[Variant]], signatures: Mapping[str, LayerSignature],
              fp: DeviceFingerprint, cache: ProfileCache, threads: int, opt_level: str,
              out: dict[tuple[str, str], float], who: dict[str, list[str]] | None) -> str:
    """On a cluster: the layers of ``by_layer`` measured on the nodes with this host's
    fingerprint (their rows written here, into ``out``, and removed from ``by_layer``); what
    the driver should call itself for the rest ("" in-process)."""
    from cost_models.profiler import host_key
    from edgefit_common.execution import DRIVER, IN_PROCESS, current

    executor = current()
    if executor is IN_PROCESS or not by_layer:
        return ""
    nodes = executor.matching_nodes(host_key, (threads, opt_level), fp.key())
    if not nodes:
        return (f"{DRIVER} (no node of {executor.describe()} has this host's fingerprint: "
                f"{fp.cpu_model}, {fp.cores} cores, onnxruntime {fp.ort_version})")
    method_here = next(iter(signatures.values())).method

    def record(node: Any, rec: tuple[str, list[float], dict[str, Any], str]) -> None:
        layer, times, fp_doc, method_there = rec
        there = DeviceFingerprint(**fp_doc)
        if there.key() != fp.key() or method_there != method_here:  # its own key, never ours
            own = _signature(dataclasses.replace(signatures[layer], method=method_there))
            _store_layer(layer, by_layer[layer], times, own, there, cache, node.label)
            return
        out.update(_store_layer(layer, by_layer.pop(layer), times,
                                _signature(signatures[layer]), fp, cache, node.label))
        if who is not None:
            who.setdefault(node.label, []).append(layer)

    chunks = [[(layer, row)] for layer, row in by_layer.items()]
    executor.map_on_nodes(micro_layer_task, chunks, record, nodes, shared=(threads, opt_level),
                          label=lambda item: f"(one-layer models of {item[0]})",
                          title="host profile (one-layer models)")
    return f"{DRIVER} (the matching nodes reported another measuring method)"


def micro_layer_task(threads: int, opt_level: str, chunk: Sequence[tuple[str, list[Variant]]],
                     emit: Any) -> None:
    """One task on a node: each layer's variants timed (:func:`_time_layer`), emitted as
    ``(layer, times µs, this node's fingerprint as a dict, its measuring method)``. Writes no
    cache: the driver stores what it gets."""
    from cost_models.profiler import host_fingerprint, method

    here = dataclasses.asdict(host_fingerprint(threads, opt_level))
    for layer, row in chunk:
        emit((layer, _time_layer(row, threads, opt_level), here, method()))


def _time_layer(row: Sequence[Variant], threads: int, opt_level: str) -> list[float]:
    """The variants' run times in µs, then one empty model's per input shape (sorted)."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="edgefit-micro-") as tmp:
        paths = [write_variant(v, Path(tmp) / f"v{i}.onnx") for i, v in enumerate(row)]
        empties = []
        for j, shape in enumerate(sorted({v.input_shape for v in row})):
            empties.append(Path(tmp) / f"empty{j}.onnx")
            onnx.save(_empty_model(shape), str(empties[-1]))
        return interleaved_us([*paths, *empties], threads, opt_level)


def _measure_layer(layer: str, row: Sequence[Variant], sig: LayerSignature,
                   fp: DeviceFingerprint, cache: ProfileCache, threads: int, opt_level: str,
                   measured_by: str = "") -> dict[tuple[str, str], float]:
    """One layer's variants timed together (with one empty model per input shape)."""
    return _store_layer(layer, row, _time_layer(row, threads, opt_level), sig, fp, cache,
                        measured_by)


def _store_layer(layer: str, row: Sequence[Variant], times: Sequence[float],
                 sig: LayerSignature, fp: DeviceFingerprint, cache: ProfileCache,
                 measured_by: str = "") -> dict[tuple[str, str], float]:
    """The net µs of each variant (its time less its input shape's empty model), stored."""
    shapes = sorted({v.input_shape for v in row})
    empty_us = dict(zip(shapes, times[len(row):], strict=True))
    out, rows = {}, []
    for v, t in zip(row, times[:len(row)], strict=True):
        net_us = max(NET_FLOOR_US, t - empty_us[v.input_shape])
        out[(layer, v.key)] = net_us
        extra = {"run_us": t, "empty_us": empty_us[v.input_shape], "layer": layer,
                 **({"measured_by": measured_by} if measured_by else {})}
        rows.append((fp, sig, v.key, net_us / 1e3, ROUNDS * RUNS_PER_ROUND, 1, extra, None))
    cache.put_many(rows)
    return out


# --------------------------------------------------------------------------------------------
# into the cost table


def variants_of(module: nn.Module, graph: LayerGraph,
                offered: Mapping[str, Mapping[str, Option]],
                signatures: Mapping[str, LayerSignature]
                ) -> tuple[dict[str, list[Variant]], dict[tuple[str, str], tuple[str, str]]]:
    """(layer -> the variants to time, (layer, option) -> (its variant key, its dense
    variant's key)) for every low-rank or narrowed option of ``offered``."""
    from techniques.quantize import onnx_option

    modules = dict(module.named_modules())
    layers = {ly.name: ly for ly in graph.layers}
    variants: dict[str, dict[str, Variant]] = {}
    pairs: dict[tuple[str, str], tuple[str, str]] = {}
    for name, row in offered.items():
        todo = [o for o in row.values() if needs_measuring(o)]
        if not todo or name not in modules or name not in signatures:
            continue
        full_shape = signatures[name].input_shape
        for option in todo:
            form = onnx_option(option.to_list())
            try:
                mods = variant_modules(modules[name], option,
                                       pruned_shape(layers[name], option), name)
                var = Variant(form, mods, _input_shape(full_shape, mods[0]))
                _module_check(mods)
            except PlanError:  # not writable as a one-layer model: keeps its formula
                continue
            dense = Variant(form, (modules[name],), full_shape)
            variants.setdefault(name, {})[var.key] = var
            variants[name][dense.key] = dense
            pairs[(name, option.name)] = (var.key, dense.key)
    return {k: list(v.values()) for k, v in variants.items()}, pairs


def measured_ratios(net_us: Mapping[tuple[str, str], float],
                    pairs: Mapping[tuple[str, str], tuple[str, str]]
                    ) -> dict[tuple[str, str], float]:
    """{(layer, option): variant time / dense time}, clipped to :data:`RATIO_BOUNDS`."""
    lo, hi = RATIO_BOUNDS
    return {key: min(hi, max(lo, net_us[(key[0], var)] / net_us[(key[0], dense)]))
            for key, (var, dense) in pairs.items()}


STORAGE_ONLY = ("sparse and weight-shared options: their kernel's measured latency (dense "
                "kernels compute the zeros; shared weights are decoded at load time)")
SCALED = ("low-rank options: their kernel's measured latency x the analytical ratio of the "
          "factors' latency to the dense layer's; channel-pruned options: their full-width "
          "option's latency x the kept fraction of the layer's MACs (none of these measured)")
MEASURED = ("low-rank and channel-pruned options: their kernel's latency measured in the whole "
            "model x the measured ratio of a one-layer model of the factorised / narrowed "
            "layer to one of the dense layer (same form and session settings, interleaved, an "
            "empty model's run time subtracted; cost_models.micro_latency)")


def scaled_pruned_latency(table: CostTable) -> CostTable:
    """Latency of the options not measured, from the measured ones: a full-width storage
    technique takes its kernel's measured latency x the model's ratio to it (1 where the dense
    kernel computes the zeros or decodes shared weights at load time; the factors' ratio for
    low rank); a channel-pruned option takes its full-width option's latency x its kept MAC
    fraction. The provenance says so; :func:`with_measured_ratios` then replaces the
    shape-changing ones by measurements."""
    if not any(c.latency_of or (c.base and c.base != c.option)
               for row in table.options.values() for c in row):
        return table
    options = {}
    for layer, row in table.options.items():
        plain = {c.option: c for c in row}
        full = {c.option: dataclasses.replace(
            c, latency_ms=plain[c.latency_of].latency_ms * c.latency_ratio,
            energy_mj=plain[c.latency_of].energy_mj * c.latency_ratio)
            if c.latency_of in plain else c for c in row}
        options[layer] = [dataclasses.replace(
            c, latency_ms=full[c.base].latency_ms * c.mac_fraction,
            energy_mj=full[c.base].energy_mj * c.mac_fraction)
            if c.base and c.base != c.option and c.base in full else full[c.option] for c in row]
    provenance = {**table.provenance, "latency": table.provenance.get("latency", "") +
                  f"; {STORAGE_ONLY}; {SCALED}"}
    return dataclasses.replace(table, options=options, provenance=provenance)


def with_measured_ratios(table: CostTable, ratios: Mapping[tuple[str, str], float],
                         kernel_of: Mapping[tuple[str, str], str]) -> CostTable:
    """A copy of ``table`` whose low-rank and narrowed options take their kernel's latency
    (measured in the whole model) x their measured one-layer ratio; the provenance says so."""
    options = {}
    for layer, row in table.options.items():
        plain = {c.option: c for c in row}
        options[layer] = [
            dataclasses.replace(c, latency_ms=plain[k].latency_ms * r,
                                energy_mj=plain[k].energy_mj * r)
            if (r := ratios.get((layer, c.option))) is not None
            and (k := kernel_of[(layer, c.option)]) in plain else c for c in row]
    text = table.provenance.get("latency", "")
    text = text.replace(SCALED, MEASURED) if SCALED in text else f"{text}; {MEASURED}"
    provenance = {**table.provenance, "latency": text}
    return dataclasses.replace(table, options=options, provenance=provenance)


def measure_host_variants(module: nn.Module, input_shape: tuple[int, ...], graph: LayerGraph,
                          table: CostTable, offered: Mapping[str, Mapping[str, Option]],
                          cache: ProfileCache, threads: int = 1, opt_level: str = "all"
                          ) -> CostTable:
    """The table with every low-rank and narrowed option's host latency measured."""
    from cost_models.profiler import host_fingerprint, layer_signatures

    sigs = layer_signatures(module, input_shape, graph)
    variants, pairs = variants_of(module, graph, offered, sigs)
    if not pairs:
        return table
    who: dict[str, list[str]] = {}
    net = measure_variants(variants, sigs, host_fingerprint(threads, opt_level), cache,
                           threads, opt_level, who)
    kernel_of = {(layer, name): offered[layer][name].kernel for layer, name in pairs}
    table = with_measured_ratios(table, measured_ratios(net, pairs), kernel_of)
    if not who:
        return table
    from cost_models.profiler import MEASURED_BY

    text = "one-layer models: " + "; ".join(f"{by}: {', '.join(layers)}"
                                           for by, layers in who.items())
    before = table.provenance.get(MEASURED_BY)
    provenance = {**table.provenance, MEASURED_BY: f"{before}; {text}" if before else text}
    return dataclasses.replace(table, provenance=provenance)


__all__ = [
    "METHOD",
    "Variant",
    "interleaved_us",
    "measure_host_variants",
    "micro_layer_task",
    "scaled_pruned_latency",
    "measured_ratios",
    "micro_model",
    "needs_measuring",
    "variant_modules",
    "with_measured_ratios",
]
