"""`plan`: budget -> device spec -> captured model -> cost table -> solver -> Plan (uses torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import edgefit
from cost_models.analytical import CostTable, build_cost_table
from cost_models.estimate import AccuracyEstimate
from cost_models.graph import LayerGraph
from device_specs.budget import Budget
from device_specs.catalog import load_spec
from device_specs.schema import DeviceSpec, Kernel
from edgefit.errors import SpecError
from executors.quantize import QuantizeConfig, onnx_option
from planner import plan as plan_schema
from planner.cpsat import SolverOptions, solve
from planner.problem import Choice, Problem
from planner.result import SolveResult
from workloads.models import LoadedModel

CALIBRATION_SIZE = 512
LIMIT_METRIC = {"latency": "latency_ms", "flash": "flash_bytes", "ram": "ram_bytes",
                "energy": "energy_mj"}


@dataclass
class PlanContext:
    budget: Budget
    spec: DeviceSpec
    profile: str
    model: LoadedModel
    graph: LayerGraph
    table: CostTable
    problem: Problem
    result: SolveResult
    model_origin: str


def technique_configs(kernel: Kernel) -> list[QuantizeConfig]:
    if kernel.weights == "fp32" and kernel.activations == "fp32":
        return []
    return [QuantizeConfig(weights=kernel.weights, activations=kernel.activations)]


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
               "energy_mj": table.run_overhead_ms * table.power_w},
        ram_steps=ram_steps,
        weights_in_ram=table.weights_in_ram,
    )


def solver_limits(budget: Budget) -> dict[str, float]:
    """Budget limits in solver units, tightened by the safety margin."""
    return {LIMIT_METRIC[k]: v * (1.0 - budget.margin)
            for k, v in budget.limits.given().items() if k in LIMIT_METRIC}


def make_plan(budget: Budget, model_origin: str, options: SolverOptions | None = None
              ) -> tuple[plan_schema.Plan, PlanContext]:
    from workloads.models import load_model_ref

    spec = load_spec(budget.target)
    profile = budget.profile or spec.default_profile
    if profile not in spec.profiles:
        raise SpecError(f"profile {profile!r} is not a profile of {spec.name}; "
                        f"known: {', '.join(spec.profiles)}")
    kernels = spec.profile(profile).kernels
    if budget.model is None:
        raise SpecError("no model given (use --model or `model:` in the budget file)")
    loaded = load_model_ref(budget.model, budget.weights)
    graph = _capture(loaded)
    calib = calibration_split(budget.data or loaded.dataset)
    if calib is not None:
        estimate = _estimate_accuracy(loaded, graph, kernels, calib[0])
        acc, unit, acc_prov = estimate.loss, estimate.unit, estimate.provenance
    else:
        acc, unit, acc_prov = {}, "none", "no data: accuracy cost not estimated (all zero)"
    table = build_cost_table(graph, spec, profile, acc, unit)
    problem = build_problem(graph, table, solver_limits(budget))
    result = solve(problem, options)
    ctx = PlanContext(budget, spec, profile, loaded, graph, table, problem, result, model_origin)
    return to_plan(ctx, acc_prov), ctx


def _capture(loaded: LoadedModel) -> LayerGraph:
    if loaded.kind == "onnx":
        from cost_models.capture_onnx import capture_onnx

        assert loaded.onnx_path is not None
        return capture_onnx(loaded.onnx_path, loaded.name)
    from cost_models.capture import capture

    return capture(loaded.torch_module(), loaded.input_shape, loaded.name)


def _estimate_accuracy(loaded: LoadedModel, graph: LayerGraph, kernels: dict[str, Kernel],
                       x: np.ndarray) -> AccuracyEstimate:
    """Per (layer, kernel) accuracy cost: torch fake-quant, or the real ONNX for ONNX models."""
    if loaded.kind != "onnx":
        from cost_models.accuracy import measured_output_kl

        configs: dict[str, QuantizeConfig | None] = {
            name: next(iter(technique_configs(k)), None) for name, k in kernels.items()}
        return measured_output_kl(loaded.torch_module(), graph.layer_names, configs, x)
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


def to_plan(ctx: PlanContext, accuracy_provenance: str) -> plan_schema.Plan:
    r, table, kernels = ctx.result, ctx.table, ctx.spec.profile(ctx.profile).kernels
    layers = {}
    if r.feasible:
        ram = per_layer_ram(ctx)
        for layer in ctx.graph.layers:
            option = r.picks[layer.name]
            c = table.cost(layer.name, option)
            layers[layer.name] = plan_schema.LayerPlan(
                option=option,
                techniques=technique_configs(kernels[option]),
                op_type=layer.op_type, op_class=layer.op_class,
                params=layer.params, macs=layer.macs,
                predicted=plan_schema.Costs(latency_ms=c.latency_ms, flash_bytes=c.flash_bytes,
                                            energy_mj=c.energy_mj, acc_loss=c.acc_loss,
                                            ram_bytes=ram[layer.name]),
            )
    totals = plan_schema.Costs(
        latency_ms=r.totals["latency_ms"], flash_bytes=r.totals["flash_bytes"],
        energy_mj=r.totals["energy_mj"], acc_loss=r.totals["acc_loss"],
        ram_bytes=r.totals["ram_bytes"]) if r.feasible else None
    explanation = None if r.feasible else plan_schema.Explanation(
        relaxations=[plan_schema.Relaxation(limit=x.limit, asked=x.asked,
                                            best_reachable=x.best_reachable)
                     for x in r.relaxations],
        minimum=r.minimum)
    spec_path = ctx.budget.target if Path(ctx.budget.target).suffix in (".yaml", ".yml") else None
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
        status=r.status,
        layers=layers,
        fixed={"flash_bytes": table.runtime_flash_bytes, "ram_bytes": table.runtime_ram_bytes,
               "latency_ms": table.run_overhead_ms},
        totals=totals,
        binding=list(r.binding),
        solver=plan_schema.SolverInfo(backend=r.backend, status=r.status,
                                      wall_time_s=r.wall_time_s,
                                      options_considered=r.options_considered,
                                      resolution=r.resolution),
        provenance={**table.provenance, "accuracy": accuracy_provenance},
        accuracy_unit=table.accuracy,
        explanation=explanation,
    )


def per_layer_ram(ctx: PlanContext) -> dict[str, float]:
    """Peak RAM while each layer (and the ops charged to it) runs, under the chosen options."""
    chosen = {ly: next(c for c in ctx.problem.choices[ly] if c.option == o)
              for ly, o in ctx.result.picks.items()}
    out: dict[str, float] = dict.fromkeys(ctx.graph.layer_names, 0.0)
    for step, ram in zip(ctx.graph.steps, ctx.problem.step_ram(chosen), strict=True):
        owner = step.owner or ctx.graph.layer_names[0]
        out[owner] = max(out[owner], ram)
    return out
