"""`plan`: budget -> device spec -> captured model -> cost table -> solver -> Plan (uses torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import edgefit
from cost_models.analytical import CostTable, build_cost_table
from cost_models.estimate import AccuracyEstimate
from cost_models.graph import LayerGraph
from cost_models.options import SPARSITY_LEVELS, OptionSpec, option_specs, techniques
from device_specs.budget import Budget
from device_specs.catalog import load_spec
from device_specs.schema import DeviceSpec, Kernel
from edgefit.errors import SpecError
from executors.prune import UnstructuredPruneConfig
from executors.quantize import onnx_option, weight_precision
from planner import plan as plan_schema
from planner.problem import Choice, Problem
from planner.resolve import problem_from_plan, solver_limits, with_result
from planner.result import SolveResult, SolverOptions
from planner.solve import solve
from workloads.models import LoadedModel

CALIBRATION_SIZE = 512


@dataclass
class PlanContext:
    budget: Budget
    spec: DeviceSpec
    profile: str
    model: LoadedModel
    graph: LayerGraph
    table: CostTable
    problem: Problem
    result: SolveResult | None
    model_origin: str


def technique_configs(kernel: Kernel) -> list[Any]:
    """The techniques of a plain kernel option (no pruning)."""
    return techniques(OptionSpec("", ""), kernel)


def layer_options(graph: LayerGraph, kernels: dict[str, Kernel], torch_model: bool
                  ) -> dict[str, dict[str, list[Any]]]:
    """layer -> option name -> technique configs. Sparse options need the torch weights (their
    stored size is computed from them), so ONNX-only models get the kernel options only."""
    out = {}
    for layer in graph.layers:
        specs = option_specs(kernels, layer, SPARSITY_LEVELS if torch_model else ())
        out[layer.name] = {s.name: techniques(s, kernels[s.kernel]) for s in specs}
    return out


def sparse_flash_bytes(module: Any, options: dict[str, dict[str, list[Any]]]
                       ) -> dict[tuple[str, str], int]:
    """Exact stored bytes of every sparse (layer, option): prune the real weights, then count
    what the flash image will hold (format, index overhead, scales, bias)."""
    from executors.fakequant import pruned_copy
    from executors.flash_image import layer_weight_bytes
    from executors.quant_math import stored_bias_bytes

    out = {}
    modules = dict(module.named_modules())
    for layer, opts in options.items():
        for name, configs in opts.items():
            if not any(isinstance(c, UnstructuredPruneConfig) for c in configs):
                continue
            pruned = dict(pruned_copy(modules[layer], {"": configs}).named_modules())[""]
            weight = pruned.weight.detach().numpy()
            bias = getattr(pruned, "bias", None)
            precision = weight_precision(configs)
            out[layer, name] = layer_weight_bytes(weight, precision, sparse=True) + (
                stored_bias_bytes(precision, bias.numel()) if bias is not None else 0)
    return out


def calibration_split(dataset: str | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    if dataset is None:
        return None
    from workloads.data import load_dataset

    train, _ = load_dataset(dataset)
    idx = np.random.default_rng(seed).choice(len(train.y), CALIBRATION_SIZE, replace=False)
    return train.x[idx], train.y[idx]


def build_problem(graph: LayerGraph, table: CostTable, limits: dict[str, float]) -> Problem:
    choices = {
        layer: tuple(Choice(c.option, c.latency_ms, c.flash_bytes, c.energy_mj, c.act_bytes,
                            c.acc_loss) for c in table.options[layer])
        for layer in graph.layer_names
    }
    ram_steps = tuple(
        tuple((graph.tensors[t].owner or graph.layer_names[0], graph.tensors[t].numel)
              for t in live)
        for live in graph.live_tensors()
    )
    return Problem(
        layers=tuple(graph.layer_names),
        choices=choices,
        limits=limits,
        fixed={"flash_bytes": table.runtime_flash_bytes, "ram_bytes": table.runtime_ram_bytes,
               "latency_ms": table.run_overhead_ms,
               "energy_mj": table.run_overhead_ms * table.power_w + table.idle_energy_mj},
        ram_steps=ram_steps,
        weights_in_ram=table.weights_in_ram,
    )


def make_plan(budget: Budget, model_origin: str, options: SolverOptions | None = None,
              pins: dict[str, str] | None = None, exclude: tuple[str, ...] = (),
              backend: str = "cpsat", search: SearchSettings | None = None,
              finetune_epochs: int = 0) -> tuple[plan_schema.Plan, PlanContext]:
    """pins: layer -> option fixed before solving; exclude: options no layer may take."""
    from workloads.models import load_model_ref

    spec = load_spec(budget.target)
    profile = budget.profile or spec.default_profile
    if profile not in spec.profiles:
        raise SpecError(f"profile {profile!r} is not a profile of {spec.name}; "
                        f"known: {', '.join(spec.profiles)}")
    spec = _calibrated(spec, profile)
    kernels = spec.profile(profile).kernels
    if budget.model is None:
        raise SpecError("no model given (use --model or `model:` in the budget file)")
    loaded = load_model_ref(budget.model, budget.weights,
                            tuple(budget.input_shape) if budget.input_shape else None)
    graph = _capture(loaded)
    calib = calibration_split(budget.data or loaded.dataset)
    options_by_layer = layer_options(graph, kernels, loaded.module is not None)
    if calib is not None:
        estimate = _estimate_accuracy(loaded, graph, kernels, options_by_layer, calib[0])
        acc, unit, acc_prov = estimate.loss, estimate.unit, estimate.provenance
    else:
        acc, unit, acc_prov = {}, "none", "no data: accuracy cost not estimated (all zero)"
    sparse = (sparse_flash_bytes(loaded.module, options_by_layer)
              if loaded.module is not None else {})
    table = build_cost_table(graph, spec, profile, acc, unit, sparse, budget.period)
    if spec.kind == "host" and loaded.module is not None and calib is not None:
        table = _measured_host_latency(loaded, graph, table, list(kernels), calib[0])
    problem = build_problem(graph, table, solver_limits(budget.limits, budget.margin))
    ctx = PlanContext(budget, spec, profile, loaded, graph, table, problem, None, model_origin)
    base = base_plan(ctx, acc_prov, options_by_layer)
    if finetune_epochs:
        from executors.distill import DistillConfig

        base = base.model_copy(update={"finetune": DistillConfig(epochs=finetune_epochs)})
    ctx.problem = problem_from_plan(base, pins, exclude)  # the same problem, pins applied
    ctx.result = (_bayes(ctx.problem, search, options) if search is not None
                  else solve(ctx.problem, options, backend=backend))
    return with_result(base, ctx.problem, ctx.result, pins), ctx


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
    """The spec with the profile's parameters fitted to measurements, when `edgefit calibrate`
    has stored some for it (the plan's provenance then says calibrated, on which points)."""
    from cost_models.calibrate import calibrated_spec, load_calibration

    calibration = load_calibration(spec.name)
    if calibration is not None and calibration.profile == profile:
        return calibrated_spec(spec, calibration)
    return spec


def _measured_host_latency(loaded: LoadedModel, graph: LayerGraph, table: CostTable,
                           options: list[str], x: np.ndarray) -> CostTable:
    """On the host itself latency is measured, not modelled: per layer and option with
    onnxruntime, cached in SQLite across runs and models."""
    from cost_models.profile_cache import ProfileCache
    from cost_models.profiler import profile_host, with_measured_latency
    from edgefit.paths import cache_dir

    with ProfileCache(cache_dir() / "profiles.sqlite") as cache:
        measured = profile_host(loaded.torch_module(), loaded.input_shape, graph, options,
                                cache, x[:128])
    return with_measured_latency(table, measured, run_overhead=True)


def _capture(loaded: LoadedModel) -> LayerGraph:
    if loaded.kind == "onnx":
        from cost_models.capture_onnx import capture_onnx

        assert loaded.onnx_path is not None
        return capture_onnx(loaded.onnx_path, loaded.name)
    from cost_models.capture import capture

    return capture(loaded.torch_module(), loaded.input_shape, loaded.name)


def _estimate_accuracy(loaded: LoadedModel, graph: LayerGraph, kernels: dict[str, Kernel],
                       options: dict[str, dict[str, list[Any]]],
                       x: np.ndarray) -> AccuracyEstimate:
    """Per (layer, option) accuracy cost: torch (real pruning + fake quantisation), or the real
    quantised ONNX for ONNX-only models."""
    if loaded.kind != "onnx":
        from cost_models.accuracy import measured_output_kl

        return measured_output_kl(loaded.torch_module(), options, x)
    import tempfile

    from cost_models.accuracy_onnx import onnx_output_kl

    assert loaded.onnx_path is not None
    forms = {name: onnx_option(technique_configs(k)) for name, k in kernels.items()}
    with tempfile.TemporaryDirectory() as tmp:
        est = onnx_output_kl(loaded.onnx_path, graph.layer_names, sorted(set(forms.values())), x,
                             Path(tmp))
    loss = {(layer, name): est.loss[layer, form] for layer in graph.layer_names
            for name, form in forms.items()}
    return AccuracyEstimate(loss, est.unit, est.provenance)


def base_plan(ctx: PlanContext, accuracy_provenance: str,
              options: dict[str, dict[str, list[Any]]]) -> plan_schema.Plan:
    """The unsolved plan: every layer with all its alternatives and the execution steps, so
    plan.json alone can be solved again (planner.resolve)."""
    table = ctx.table
    layers = {
        layer.name: plan_schema.LayerPlan(
            option=None, op_type=layer.op_type, op_class=layer.op_class, params=layer.params,
            macs=layer.macs, predicted=None,
            alternatives=[plan_schema.Alternative(
                option=c.option, techniques=options[layer.name][c.option],
                latency_ms=c.latency_ms, flash_bytes=c.flash_bytes, energy_mj=c.energy_mj,
                acc_loss=c.acc_loss, act_bytes=c.act_bytes) for c in table.options[layer.name]],
        )
        for layer in ctx.graph.layers
    }
    ram_steps = [plan_schema.RamStep(owner=step.owner or ctx.graph.layer_names[0],
                                     live=list(live))
                 for step, live in zip(ctx.graph.steps, ctx.problem.ram_steps, strict=True)]
    spec_path = ctx.budget.target if Path(ctx.budget.target).suffix in (".yaml", ".yml") else None
    from cost_models.uncertainty import latency_band

    band = latency_band(ctx.spec, ctx.profile, table.provenance.get("latency", ""))
    return plan_schema.Plan(
        edgefit_version=edgefit.__version__,
        model=plan_schema.ModelRef(name=ctx.model.name, kind=ctx.model.kind,  # type: ignore[arg-type]
                                   path=ctx.model.path, input_shape=list(ctx.model.input_shape),
                                   origin=ctx.model_origin),
        data=ctx.budget.data or ctx.model.dataset,
        target=plan_schema.TargetRef(device=ctx.spec.name, profile=ctx.profile,
                                     spec_path=spec_path),
        limits=ctx.budget.limits,
        margin=ctx.budget.margin,
        status="UNSOLVED",
        layers=layers,
        fixed=dict(ctx.problem.fixed),
        totals=None,
        solver=plan_schema.SolverInfo(backend="none", status="UNSOLVED", wall_time_s=0.0,
                                      options_considered=0, resolution={}),
        provenance={**table.provenance, "accuracy": accuracy_provenance},
        accuracy_unit=table.accuracy,
        latency_band=band.fraction,
        uncertainty={"latency": band.text,
                     "flash": "exact: the packed image's bytes are computed from the weights "
                              "and checked on the file by apply",
                     "ram": "activation liveness model; the runtime's own RAM as the spec "
                            "says (see its provenance)"},
        ram_steps=ram_steps,
        weights_in_ram=ctx.problem.weights_in_ram,
    )

