"""Measured per-layer latencies on this host, cached, in the shape the cost table uses.

For each option, the *whole* model is built with every planned layer at that option (fp32 is
the ``export_fp32`` export itself; the others go through ``quantize_onnx``) and measured by
``edgefit_measure`` exactly as the command does on a device: onnxruntime CPU, 1 thread by
default, ``ORT_ENABLE_ALL`` (what ``apply`` measures with), an unprofiled timed pass and a
separate profiled pass. Node time is attributed to layers by ``edgefit_measure``'s rules: the
layer's own (possibly fused) node; the activation Q/DQ/Cast chain feeding its input and the
weight DequantizeLinear / Cast nodes it reads; for an embedding table (a Gather layer) its
Gather and the nodes that decode the gathered rows (``<layer>/...``, carrying the layer's torch
scope), so a table's latency is measured like any layer's; the ops charged to it -- pooling,
activations, reshapes -- which follow the graph's step owners (a module called once is mapped
from its ONNX node's ``pkg.torch.onnx.name_scopes`` to its fx step and takes that step's owner;
other nodes follow their first activation input, the same rule ``capture`` uses). ORT's
profiler adds about 2 µs to every node's ``dur``; that offset is calibrated on this machine
(``edgefit_measure.calibrate``) and subtracted, so the per-layer numbers add up to the
unprofiled end-to-end time (``Measured.closure`` says how well).

Results are stored in a :class:`~cost_models.profile_cache.ProfileCache` keyed by the device
fingerprint and a layer signature; a (layer, option) already there is not measured again, and
when every layer of an option is cached the model is neither exported nor quantised.

On a cluster (edgefit_common.execution) the options still to measure go to the nodes whose
fingerprint (:func:`host_key`, run on the node) equals this host's, one uniform model at a time
per node; the driver exports the fp32 model once, ships its bytes, and writes the rows the
nodes return. A record from a node of another CPU is stored under that node's own fingerprint
and never used for this host's; what no matching node measured is measured on the driver.
Each row says who measured it (``Measured.measured_by``) and the plan's provenance lists it
(``MEASURED_BY``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from cost_models.graph import LayerGraph
from cost_models.profile_cache import (
    CachedProfile,
    DeviceFingerprint,
    LayerSignature,
    ProfileCache,
)
from edgefit_common.errors import PlanError
from techniques.onnx.writer import GRAPH_FORM_VERSION

if TYPE_CHECKING:
    from cost_models.table import CostTable


def _import_measure() -> ModuleType:
    """``edgefit_measure`` is a top-level script; import it, or load it from the project root."""
    try:
        import edgefit_measure

        return edgefit_measure
    except ImportError:
        path = Path(__file__).resolve().parents[1] / "edgefit_measure.py"
        spec = importlib.util.spec_from_file_location("edgefit_measure", path)
        if spec is None or spec.loader is None:
            raise
        module = importlib.util.module_from_spec(spec)
        sys.modules["edgefit_measure"] = module
        spec.loader.exec_module(module)
        return module


if TYPE_CHECKING:
    import edgefit_measure as em
else:
    em = _import_measure()

METHOD = (f"uniform-model/ort-profile/calibrated/v2-closed/forms-{GRAPH_FORM_VERSION}"
          f"/attribution-{em.ATTRIBUTION_VERSION}"
          + ("" if em.MEM_PATTERN else "/mem-pattern-off") + f"/steady-of-{em.ROUNDS}"
          + "".join(f"/{k}={v}" for k, v in sorted(em.SESSION_CONFIG.items())))
"""Goes into every layer signature: a different measuring method never reuses a row (with
:func:`method`'s int8 kernel form, measured on first use)."""


def method() -> str:
    """``METHOD`` plus the session entries this CPU needs (``edgefit_measure.session_config``):
    on a CPU whose u8 x s8 kernels saturate, int8 layers run s8 x s8."""
    extra = {k: v for k, v in em.session_config().items() if k not in em.SESSION_CONFIG}
    return METHOD + "".join(f"/{k}={v}" for k, v in sorted(extra.items()))

DEFAULT_RUNS = 200
DEFAULT_PROFILE_RUNS = 120
DEFAULT_WARMUP = 20

profiled_models = 0
"""How many models :func:`profile_host` has measured in this process (cache hits add none)."""


@dataclass(frozen=True)
class Measured:
    """One (layer, option) latency measured on this host.

    ``latency_ms``: the layer's time per inference with profiling overhead removed (median over
    the profiled runs of the sum of its nodes, minus the calibrated per-node offset).
    ``raw_ms``: the same sum as profiled. ``model_latency_ms``: unprofiled end-to-end median of
    the uniform model it was measured in (``model``); ``closure``: (calibrated node sum +
    ``run_overhead_ms``) / ``model_latency_ms`` for that model. ``cached``: read from the cache
    rather than measured by this call.
    """

    layer: str
    option: str
    latency_ms: float
    runs: int
    fingerprint: DeviceFingerprint
    measured_at: str
    source: str = "measured"
    cached: bool = False
    raw_ms: float | None = None
    nodes: tuple[str, ...] = ()
    model: str | None = None
    model_latency_ms: float | None = None
    run_overhead_ms: float | None = None
    closure: float | None = None
    format_version: int = 0
    closure_scale: float | None = None
    measured_by: str = ""  # on a cluster: "node ADDRESS/ID" or "the driver"; "" in-process

    @property
    def closed_ms(self) -> float:
        """``latency_ms`` x ``closure_scale``: scaled so the layers of the model it was profiled
        in add up to that model's unprofiled run (``edgefit_measure.closure_scale``): the
        profile gives the layer's share, the end-to-end median the total. What the planner
        charges."""
        return self.latency_ms * (self.closure_scale or 1.0)


# --------------------------------------------------------------------------------------------
# keys


def host_fingerprint(threads: int = 1, opt_level: str = "all") -> DeviceFingerprint:
    """This machine as the cache sees it (CPU model as the host probe reads it)."""
    import onnxruntime as ort

    return DeviceFingerprint(cpu_model=em.cpu_model(), cores=os.cpu_count() or 1,
                             ort_version=ort.__version__, threads=int(threads),
                             opt_level=opt_level)


def host_key(threads: int = 1, opt_level: str = "all") -> str:
    """This machine's fingerprint key: run on each node of a cluster to find the nodes whose
    measurements are this host's (edgefit_common.execution.Executor.matching_nodes)."""
    return host_fingerprint(threads, opt_level).key()


def layer_signatures(model: nn.Module, input_shape: tuple[int, ...],
                     graph: LayerGraph) -> dict[str, LayerSignature]:
    """Each planned layer's signature (shapes from one forward pass at batch 1)."""
    modules = dict(model.named_modules())
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    handles = []
    for name in graph.layer_names:
        if name not in modules:
            raise PlanError(f"layer {name!r} of the graph is not a module of the model")

        def hook(_m: nn.Module, args: tuple[Any, ...], out: Any, name: str = name) -> None:
            shapes.setdefault(name, (tuple(args[0].shape), tuple(out.shape)))

        handles.append(modules[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros((1, *input_shape)))
    finally:
        for h in handles:
            h.remove()
    charged = _charged(graph)
    sigs = {}
    for name in graph.layer_names:
        mod = modules[name]
        conv: tuple[tuple[str, str], ...] = ()
        if isinstance(mod, nn.modules.conv._ConvNd):
            conv = tuple((k, str(getattr(mod, k))) for k in
                         ("kernel_size", "stride", "padding", "dilation", "groups"))
        weight = getattr(mod, "weight", None)
        if name not in shapes:
            raise PlanError(f"layer {name!r} did not run in a forward pass of the model")
        sigs[name] = LayerSignature(
            op_type=type(mod).__name__,
            input_shape=shapes[name][0],
            output_shape=shapes[name][1],
            weight_shape=tuple(weight.shape) if isinstance(weight, torch.Tensor) else (),
            bias=getattr(mod, "bias", None) is not None,
            conv=conv,
            charged=tuple(charged[name]),
            method=method(),
        )
    return sigs


def onnx_layer_signatures(path: Path, graph: LayerGraph) -> dict[str, LayerSignature]:
    """:func:`layer_signatures` for a model given as a (prepared) ONNX file: shapes from ONNX
    shape inference at batch 1, the Conv attributes as the file has them. The op types are the
    ONNX ones (Conv, Gemm, MatMul), so a row is never shared with a torch layer's."""
    import onnx

    from cost_models.capture_onnx import inferred_shapes

    model = onnx.load(str(path))
    inits = {i.name: tuple(int(d) for d in i.dims) for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    shapes, _ = inferred_shapes(model, inputs[0], str(path))
    nodes = {n.name: n for n in model.graph.node}
    readers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    charged = _charged(graph)
    sigs = {}
    for name in graph.layer_names:
        node = nodes.get(name)
        if node is None:
            raise PlanError(f"layer {name!r} of the graph is not a node of {path}")
        after = readers.get(node.output[0], [])
        bias = (len(node.input) > 2 and bool(node.input[2])) or (
            node.op_type == "MatMul" and len(after) == 1 and after[0].op_type == "Add"
            and any(t in inits for t in after[0].input))
        conv: tuple[tuple[str, str], ...] = ()
        if node.op_type == "Conv":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            conv = tuple((k, str(attrs.get(k))) for k in
                         ("kernel_shape", "strides", "pads", "dilations", "group"))
        sigs[name] = LayerSignature(
            op_type=node.op_type,
            input_shape=tuple(d or 1 for d in shapes.get(node.input[0], [])),
            output_shape=tuple(d or 1 for d in shapes.get(node.output[0], [])),
            weight_shape=inits.get(node.input[1], ()),
            bias=bool(bias), conv=conv, charged=tuple(charged[name]), method=method(),
        )
    return sigs


def _charged(graph: LayerGraph) -> dict[str, list[str]]:
    charged: dict[str, list[str]] = {name: [] for name in graph.layer_names}
    for step in graph.steps:
        if step.kind != "layer" and step.owner in charged:
            charged[step.owner].append(f"{step.kind}:{step.op}:{graph.tensors[step.output].numel}")
    return charged


# --------------------------------------------------------------------------------------------
# ONNX node -> graph step owner


def _fx_name(module: str) -> str:
    """The name torch.fx gives a module's (first) call node: snake_case, '.' -> '_'."""
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", module).lower()
    name = re.sub(r"[^0-9a-zA-Z_]", "_", snake)
    return f"_{name}" if name[:1].isdigit() else name


def step_owner_overrides(onnx_graph: Any, graph: LayerGraph) -> dict[str, str]:
    """{ONNX node name: layer} for nodes whose torch module maps to exactly one graph step.

    Only modules that appear in one ONNX node (so called once) are mapped; the step is found
    by its fx name, and its owner is the layer the planner charges it to. Nodes inside a layer
    module are handled by ``edgefit_measure`` itself.
    """
    layers = set(graph.layer_names)
    per_module: dict[str, list[str]] = {}
    for node in onnx_graph.nodes:
        scopes = node.scopes
        if scopes and len(scopes) >= 2 and scopes[-2] and scopes[-2] not in layers:
            per_module.setdefault(scopes[-2], []).append(node.name)
    steps = {s.name: s for s in graph.steps}
    out: dict[str, str] = {}
    for module, names in per_module.items():
        step = steps.get(_fx_name(module))
        if len(names) == 1 and step is not None and step.kind != "layer" and step.owner:
            out[names[0]] = step.owner
    return out


# --------------------------------------------------------------------------------------------
# profiling


def _from_cache(layer: str, hit: CachedProfile) -> Measured:
    x = hit.extra
    return Measured(
        layer=layer, option=hit.option, latency_ms=hit.median_ms, runs=hit.runs,
        fingerprint=hit.fingerprint, measured_at=hit.measured_at, cached=True,
        raw_ms=x.get("raw_ms"), nodes=tuple(x.get("nodes", ())), model=x.get("model"),
        model_latency_ms=x.get("model_latency_ms"), run_overhead_ms=x.get("run_overhead_ms"),
        closure=x.get("closure"), format_version=hit.format_version,
        closure_scale=x.get("closure_scale"), measured_by=str(x.get("measured_by", "")),
    )


def _build(option: str, fp32: Path, out_dir: Path, layers: Sequence[str],
           calibration: np.ndarray) -> Path:
    if option == "fp32":
        return fp32
    from techniques.onnx.writer import quantize_onnx

    path = out_dir / f"model.{option}.onnx"
    quantize_onnx(fp32, path, {name: option for name in layers}, calibration)
    return path


def profile_host(
    model: nn.Module | Path,
    input_shape: tuple[int, ...],
    graph: LayerGraph,
    options: list[str],
    cache: ProfileCache,
    calibration: np.ndarray,
    progress: bool = True,
    *,
    runs: int = DEFAULT_RUNS,
    profile_runs: int = DEFAULT_PROFILE_RUNS,
    warmup: int = DEFAULT_WARMUP,
    threads: int = 1,
    opt_level: str = "all",
) -> dict[tuple[str, str], Measured]:
    """Measured latency of every (layer, option) on this host; see the module docstring.

    ``model``: a torch module (exported here), or a prepared ONNX file (an ONNX-only model:
    the file itself is the fp32 model, every option written from it).
    ``calibration``: model inputs (N, *input_shape) for int8 activation ranges (only used when
    ``int8`` is among ``options``). An option whose layers are all cached (by a measurement of
    the current ``edgefit_measure.FORMAT_VERSION``) is not measured; otherwise the uniform model
    is measured once and every layer's row is (re)written.
    """
    global profiled_models
    from techniques.onnx.writer import ONNX_OPTIONS as OPTIONS

    unknown = [o for o in options if o not in OPTIONS]
    if unknown:
        raise PlanError(f"unknown option(s) {', '.join(unknown)}; allowed: {', '.join(OPTIONS)}")
    layers = graph.layer_names
    fp = host_fingerprint(threads, opt_level)
    sigs = (onnx_layer_signatures(model, graph) if isinstance(model, Path)
            else layer_signatures(model, input_shape, graph))
    result, todo = _cached_rows(options, layers, fp, sigs, cache)
    if not todo:
        return result

    from contextlib import nullcontext

    from cost_models.export import export_fp32
    from edgefit_common.progress import Task, task

    settings = {"runs": runs, "profile_runs": profile_runs, "warmup": warmup,
                "threads": threads, "opt_level": opt_level}
    todo, by = _on_cluster(model, input_shape, graph, todo, calibration, settings, fp, sigs,
                           cache, result)
    if not todo:
        return result
    steps = task("profile: export fp32", 1 + 2 * len(todo)) if progress else nullcontext(Task())
    with tempfile.TemporaryDirectory(prefix="edgefit-profile-") as tmp, steps as bar:
        fp32 = Path(tmp) / "model.fp32.onnx"
        if isinstance(model, Path):
            import shutil

            shutil.copyfile(model, fp32)
        else:
            export_fp32(model, input_shape, fp32)
        _check_layer_names(fp32, graph)
        overhead = em.calibrate(threads, opt_level)
        bar.advance()
        for option in todo:
            bar.update(description=f"profile: build {option}")
            path = _build(option, fp32, Path(tmp), layers, calibration)
            bar.advance()
            bar.update(description=f"profile: measure {option}")
            overrides = step_owner_overrides(em.read_graph(path), graph)
            try:
                m = em.measure(path, runs, warmup, threads, opt_level, profile_runs=profile_runs,
                               profile_warmup=warmup, owners=overrides, calibration=overhead)
            except em.MeasureError as exc:
                raise PlanError(f"profiling {graph.model} at {option}: {exc}") from None
            profiled_models += 1
            bar.advance()
            result.update(_store(m, option, graph, fp, sigs, cache, by))
    return result


def _cached_rows(options: list[str], layers: list[str], fp: Any, sigs: dict[str, Any],
                 cache: ProfileCache) -> tuple[dict[tuple[str, str], Measured], list[str]]:
    """The rows of options whose every layer is cached at this format version, and the
    options still to measure."""
    result: dict[tuple[str, str], Measured] = {}
    todo: list[str] = []
    for option in dict.fromkeys(options):
        hits = {name: cache.get(fp, sigs[name], option) for name in layers}
        if all(h is not None and h.format_version == em.FORMAT_VERSION for h in hits.values()):
            for name, hit in hits.items():
                assert hit is not None
                result[(name, option)] = _from_cache(name, hit)
        else:
            todo.append(option)
    return result, todo


def _on_cluster(model: nn.Module | Path, input_shape: tuple[int, ...], graph: LayerGraph,
                todo: list[str], calibration: np.ndarray, settings: dict[str, Any], fp: Any,
                sigs: dict[str, Any], cache: ProfileCache,
                result: dict[tuple[str, str], Measured]) -> tuple[list[str], str]:
    """On a cluster, the options measured by nodes with this host's fingerprint (their rows
    added to ``result``); (the options left for the driver, what its rows say of who measured
    them). In-process: nothing runs, rows say nothing of who measured them, as before."""
    from edgefit_common.execution import DRIVER, IN_PROCESS, current

    executor = current()
    if executor is IN_PROCESS:
        return todo, ""
    nodes = executor.matching_nodes(host_key, (settings["threads"], settings["opt_level"]),
                                    fp.key())
    if nodes:
        result.update(_profile_on_nodes(executor, nodes, model, input_shape, graph, todo,
                                        calibration, settings, fp, sigs, cache))
        todo = [o for o in todo if (graph.layer_names[0], o) not in result]
    by = (f"{DRIVER} (no node of {executor.describe()} has this host's fingerprint: "
          f"{fp.cpu_model}, {fp.cores} cores, onnxruntime {fp.ort_version})" if not nodes
          else f"{DRIVER} (the matching nodes reported another measuring method)")
    return todo, by


def _export_bytes(model: nn.Module | Path, input_shape: tuple[int, ...], graph: LayerGraph
                  ) -> bytes:
    """The fp32 ONNX model every option is written from, as bytes to ship to the nodes."""
    from cost_models.export import export_fp32

    if isinstance(model, Path):
        data = model.read_bytes()
    with tempfile.TemporaryDirectory(prefix="edgefit-profile-") as tmp:
        fp32 = Path(tmp) / "model.fp32.onnx"
        if isinstance(model, Path):
            fp32.write_bytes(data)
        else:
            export_fp32(model, input_shape, fp32)
        _check_layer_names(fp32, graph)
        return fp32.read_bytes()


def _profile_on_nodes(executor: Any, nodes: Sequence[Any], model: nn.Module | Path,
                      input_shape: tuple[int, ...], graph: LayerGraph, todo: Sequence[str],
                      calibration: np.ndarray, settings: Mapping[str, Any],
                      fp: DeviceFingerprint, sigs: Mapping[str, LayerSignature],
                      cache: ProfileCache) -> dict[tuple[str, str], Measured]:
    """Every option of ``todo`` measured on ``nodes`` (one option a task, one task at a time
    per node), the rows written here. A record whose node reports another fingerprint (or
    measuring method) than this host's is stored under its own and left out of the result."""
    result: dict[tuple[str, str], Measured] = {}
    method_here = next(iter(sigs.values())).method

    def record(node: Any, rec: tuple[str, dict[str, Any], dict[str, Any], str]) -> None:
        global profiled_models
        option, m, fp_doc, method_there = rec
        there = DeviceFingerprint(**fp_doc)
        profiled_models += 1
        if there.key() != fp.key() or method_there != method_here:
            own = {name: dataclasses.replace(sig, method=method_there)
                   for name, sig in sigs.items()}
            _store(m, option, graph, there, own, cache, node.label)  # its own key only
            return
        result.update(_store(m, option, graph, fp, sigs, cache, node.label))

    executor.map_on_nodes(profile_option_task, [[option] for option in todo], record, nodes,
                          shared=(_export_bytes(model, input_shape, graph), graph,
                                  calibration, dict(settings)),
                          label=lambda option: f"({graph.model} at {option})",
                          title="host profile (option)")
    return result


def profile_option_task(fp32_bytes: bytes, graph: LayerGraph, calibration: np.ndarray,
                        settings: Mapping[str, Any], chunk: Sequence[str],
                        emit: Callable[[Any], None]) -> None:
    """One task of the host profile on a node: each option of ``chunk`` built from the fp32
    model and measured as :func:`profile_host` does on the driver, emitted as ``(option, the
    measurement, this node's fingerprint as a dict, this node's measuring method)``. Writes
    no cache: the driver stores what it gets."""
    threads, opt_level = int(settings["threads"]), str(settings["opt_level"])
    here = host_fingerprint(threads, opt_level)
    with tempfile.TemporaryDirectory(prefix="edgefit-profile-") as tmp:
        fp32 = Path(tmp) / "model.fp32.onnx"
        fp32.write_bytes(fp32_bytes)
        overhead = em.calibrate(threads, opt_level)
        for option in chunk:
            path = _build(option, fp32, Path(tmp), graph.layer_names, calibration)
            overrides = step_owner_overrides(em.read_graph(path), graph)
            try:
                m = em.measure(path, int(settings["runs"]), int(settings["warmup"]), threads,
                               opt_level, profile_runs=int(settings["profile_runs"]),
                               profile_warmup=int(settings["warmup"]), owners=overrides,
                               calibration=overhead)
            except em.MeasureError as exc:
                raise PlanError(f"profiling {graph.model} at {option}: {exc}") from None
            emit((option, m, dataclasses.asdict(here), method()))


def _check_layer_names(path: Path, graph: LayerGraph) -> None:
    named = em.read_graph(path).metadata.get(em.LAYERS_KEY)
    got = json.loads(named) if named else []
    if got != graph.layer_names:
        raise PlanError(
            f"the ONNX export of {graph.model} names its layers {', '.join(got) or '(none)'}, "
            f"the graph has {', '.join(graph.layer_names)} (a BatchNorm folded into its conv "
            "gives the conv the BatchNorm's name); cannot attribute time to the graph's layers"
        )


def _store(m: Mapping[str, Any], option: str, graph: LayerGraph, fp: DeviceFingerprint,
           sigs: Mapping[str, LayerSignature], cache: ProfileCache, measured_by: str = ""
           ) -> dict[tuple[str, str], Measured]:
    empty = [name for name in graph.layer_names if not m["layers"].get(name, {}).get("nodes")]
    if empty:
        raise PlanError(f"profiling {graph.model} at {option}: no onnxruntime node was "
                        f"attributed to layer(s) {', '.join(empty)}")
    model_ms = float(m["latency_ms"]["steady"])
    run_overhead_ms = float(m["calibration"]["run_overhead_us"]) / 1e3
    closure = m["closure"]["ratio"]
    scale = float(m["profile"]["closure_scale"])
    runs = int(m["profile"]["runs"])
    stamp = str(m["timestamp"])
    out: dict[tuple[str, str], Measured] = {}
    rows = []
    for name in graph.layer_names:
        entry = m["layers"][name]
        extra = {"model": graph.model, "raw_ms": entry["median_us"] / 1e3,
                 "nodes": list(entry["nodes"]), "model_latency_ms": model_ms,
                 "run_overhead_ms": run_overhead_ms, "closure": closure,
                 "closure_scale": scale, **({"measured_by": measured_by} if measured_by else {})}
        latency = float(entry["calibrated_ms"])
        rows.append((fp, sigs[name], option, latency, runs, em.FORMAT_VERSION, extra, stamp))
        out[(name, option)] = Measured(
            layer=name, option=option, latency_ms=latency, runs=runs, fingerprint=fp,
            measured_at=stamp, raw_ms=extra["raw_ms"], nodes=tuple(entry["nodes"]),
            model=graph.model, model_latency_ms=model_ms, run_overhead_ms=run_overhead_ms,
            closure=closure, format_version=em.FORMAT_VERSION, closure_scale=scale,
            measured_by=measured_by,
        )
    cache.put_many(rows)
    return out


# --------------------------------------------------------------------------------------------
# into the cost table


def latency_overrides(measured: Mapping[tuple[str, str], Measured]) -> dict[tuple[str, str], float]:
    """{(layer, option): latency_ms}: the per-layer latency a CostTable row should carry."""
    return {key: m.closed_ms for key, m in measured.items()}


def with_measured_latency(table: CostTable, measured: Mapping[tuple[str, str], Measured],
                          run_overhead: bool = False) -> CostTable:
    """A copy of ``table`` whose (layer, option) latencies (and energy = power x latency) are
    the measured ones; rows not measured keep the analytical value. ``run_overhead=True`` also
    takes the per-inference overhead from the measurement (calibrated ``session.run`` cost)."""
    over = latency_overrides(measured)
    options = {
        layer: [dataclasses.replace(c, latency_ms=over[(layer, c.option)],
                                    energy_mj=table.power_w * over[(layer, c.option)])
                if (layer, c.option) in over else c for c in row]
        for layer, row in table.options.items()
    }
    hit = sorted({o for (layer, o) in over if layer in table.options})
    provenance = dict(table.provenance)
    if hit:
        fp = next(iter(measured.values())).fingerprint
        provenance["latency"] = (
            f"measured on this host for {', '.join(hit)} ({fp.cpu_model}, {fp.cores} cores, "
            f"onnxruntime {fp.ort_version}, {fp.threads} thread(s), opt level {fp.opt_level}; "
            "whole model at each option, onnxruntime node profile attributed to layers, "
            "profiling offset calibrated out, scaled so each model's layers add up to its "
            "unprofiled run); other options: " + table.provenance.get(
                "latency", "analytical"))
    by = measured_by_text(measured)
    if by:
        provenance[MEASURED_BY] = f"whole models at each option: {by}"
    overhead = table.run_overhead_ms
    if run_overhead:
        values = [m.run_overhead_ms for m in measured.values() if m.run_overhead_ms is not None]
        if values:
            overhead = float(np.median(values))
    return dataclasses.replace(table, options=options, provenance=provenance,
                               run_overhead_ms=overhead)


MEASURED_BY = "latency measured by"
"""The provenance entry that says which node measured which rows (only on a cluster)."""


def measured_by_text(measured: Mapping[tuple[str, str], Measured]) -> str:
    """``node 127.0.0.1/5f3a9c1e: fp32, int8 (3 layers each); the driver (...): int4`` for
    the rows measured on a cluster (cached ones said as such); "" when every row was measured
    in-process."""
    done: dict[str, dict[str, int]] = {}
    for (_, option), m in measured.items():
        if m.measured_by:
            who = m.measured_by + (" (earlier, cached)" if m.cached else "")
            done.setdefault(who, {}).setdefault(option, 0)
            done[who][option] += 1
    return "; ".join(
        f"{who}: " + ", ".join(f"{o} ({n} layer{'s' * (n != 1)})" for o, n in opts.items())
        for who, opts in done.items())


def summarize(measured: Mapping[tuple[str, str], Measured],
              options: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Rows for printing: one per layer, latency_ms per option, plus a total row per option."""
    opts = list(options) if options is not None else sorted({o for _, o in measured})
    layers = list(dict.fromkeys(layer for layer, _ in measured))
    rows: list[dict[str, Any]] = [
        {"layer": layer, **{o: measured[(layer, o)].closed_ms for o in opts
                            if (layer, o) in measured}} for layer in layers
    ]
    rows.append({"layer": "sum of layers", **{
        o: sum(measured[(layer, o)].closed_ms for layer in layers if (layer, o) in measured)
        for o in opts}})
    rows.append({"layer": "end-to-end (measured)", **{
        o: next((m.model_latency_ms for (_, mo), m in measured.items() if mo == o), None)
        for o in opts}})
    return rows


__all__ = [
    "MEASURED_BY",
    "METHOD",
    "Measured",
    "host_fingerprint",
    "host_key",
    "measured_by_text",
    "profile_option_task",
    "latency_overrides",
    "layer_signatures",
    "profile_host",
    "step_owner_overrides",
    "summarize",
    "with_measured_latency",
]
