"""Re-solve a plan from plan.json alone (no torch, no model): pins, exclusions, new limits.

A plan stores every layer's alternatives with their costs and the execution steps' live
tensors, so the CLI and the review TUI can rebuild the exact problem the planner solved.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from device_specs.budget import Limits
from edgefit_common.errors import PlanError
from planner.plan import (
    Alternative,
    Costs,
    Explanation,
    LayerPlan,
    Plan,
    Relaxation,
    SolverInfo,
)
from planner.problem import Choice, PairTerm, Problem, crossed
from planner.result import SolveResult, SolverOptions
from planner.solve import solve

LIMIT_METRIC = {"latency": "latency_ms", "flash": "flash_bytes", "ram": "ram_bytes",
                "energy": "energy_mj"}


def solver_limits(limits: Limits, margin: float = 0.0) -> dict[str, float]:
    """Budget limits in solver units, tightened by the safety margin."""
    return {LIMIT_METRIC[k]: v * (1.0 - margin)
            for k, v in limits.given().items() if k in LIMIT_METRIC}


def delivery_limits(plan: Plan, limits: dict[str, float]) -> dict[str, float]:
    """`limits` (solver units, margin applied) with the plan's delivery in them: an update-time
    limit becomes a limit on the artifact's bytes (time x the link's bytes per second), and
    with A/B slots the flash limit L must hold the runtime R plus k model images M:
    R + k M <= L, i.e. R + M <= R + (L - R) / k, the single-image total the solver sums."""
    d = plan.delivery
    out = {k: v for k, v in limits.items() if k != "update_time_ms"}
    if d is None:
        return out
    update_ms = plan.limits.update_time
    if update_ms is not None and d.link_bytes_per_s is not None:
        out["transfer_bytes"] = update_ms / 1e3 * d.link_bytes_per_s * (1.0 - plan.margin)
    if (cost_bytes := cost_limit_bytes(plan)) is not None:  # a cost limit is a byte limit too
        out["transfer_bytes"] = min(out.get("transfer_bytes", cost_bytes), cost_bytes)
    if d.ab_slots > 1 and "flash_bytes" in out:
        r = d.runtime_flash_bytes
        out["flash_bytes"] = r + (out["flash_bytes"] - r) / d.ab_slots
    return out


def cost_limit_bytes(plan: Plan) -> float | None:
    """The artifact bytes the fleet's cost limit allows (margin applied), or None: the cost
    per device per month is linear in them (device_specs.fleet)."""
    d = plan.delivery
    if d is None or d.fleet is None or d.link_overhead is None:
        return None
    cap = d.fleet.max_transfer_bytes(d.link_overhead)
    return None if cap is None else cap * (1.0 - plan.margin)


def fp32_latency_ms(plan: Plan, pins: Mapping[str, str] | None = None) -> float | None:
    """The all-fp32 plan's predicted latency, the runtime's per-inference overhead included,
    with each pinned layer (the plan's own pins and ``pins``) at its pinned option; None where
    a free layer has no plain fp32 alternative (an int8-only device has no such plan)."""
    pins = {**{n: lp.option for n, lp in plan.layers.items() if lp.pinned and lp.option},
            **dict(pins or {})}
    full = {g.name: g.channels for g in plan.channel_groups}
    total = float(plan.fixed.get("latency_ms", 0.0))
    chosen = {}
    for name, lp in plan.layers.items():
        plain = [(a.latency_ms, a.option) for a in lp.alternatives
                 if (a.option == pins[name] if name in pins else
                     not a.techniques and all(full.get(g) == w for g, w in a.widths.items()))]
        if not plain:
            return None
        ms, chosen[name] = min(plain)
        total += ms
    # a pinned int8 layer among fp32 ones crosses precision boundaries
    return total + sum(crossed(plan.latency_pairs(), chosen).values())


def latency_cap(plan: Plan, limits: Mapping[str, float],
                pins: Mapping[str, str] | None = None) -> float | None:
    """The latency a plan may not exceed when it beats the asked limit: the fp32 plan's own,
    pinned layers at their pins (issue #22: with a latency limit, the layers edgefit chooses
    never make the model slower than fp32; a user's pin is the user's choice). None: no
    latency limit, no fp32 plan on this device, or the asked limit is the tighter."""
    if "latency_ms" not in limits:
        return None
    fp32_ms = fp32_latency_ms(plan, pins)
    return fp32_ms if fp32_ms is not None and fp32_ms < limits["latency_ms"] else None


def _capped(plan: Plan, limits: dict[str, float], pins: Mapping[str, str]) -> dict[str, float]:
    cap = latency_cap(plan, limits, pins)
    return limits if cap is None else {**limits, "latency_ms": cap}


def problem_from_plan(plan: Plan, pins: Mapping[str, str] | None = None,
                      exclude: Iterable[str] = ()) -> Problem:
    """The problem behind `plan`, with `pins` (layer -> option), and without the options that
    the plan's own exclusions and `exclude` name (by option name, by kernel, e.g. int4, or by
    technique, e.g. quantize) except where a pin asks for them."""
    pins = {**{n: lp.option for n, lp in plan.layers.items() if lp.pinned and lp.option},
            **dict(pins or {})}
    excluded = set(plan.excluded) | set(exclude)
    _check_exclusions(plan, excluded)
    for layer, option in pins.items():
        if layer not in plan.layers:
            raise PlanError(f"--pin {layer}={option}: no layer {layer!r}; layers: "
                            f"{', '.join(plan.layers)}")
        known = [a.option for a in plan.layers[layer].alternatives]
        if option not in known:
            raise PlanError(f"--pin {layer}={option}: {layer} has options {', '.join(known)}")
    choices = {}
    for name, lp in plan.layers.items():
        alts = [a for a in lp.alternatives
                if (a.option == pins[name] if name in pins else not _excluded(a, excluded))]
        if not alts:
            raise PlanError(f"layer {name}: excluding {', '.join(sorted(excluded))} leaves no "
                            "option")
        choices[name] = tuple(Choice(a.option, a.latency_ms, a.flash_bytes, a.energy_mj,
                                     a.act_bytes, a.acc_loss, tuple(sorted(a.widths.items())),
                                     a.in_act_bytes, a.transfer_bytes or 0.0)
                              for a in alts)
    return Problem(
        layers=tuple(plan.layers),
        choices=choices,
        limits=_capped(plan, delivery_limits(plan, solver_limits(plan.limits, plan.margin)),
                       pins),
        fixed={**plan.fixed},
        ram_steps=tuple(tuple((o, n) for o, n in step.live) for step in plan.ram_steps),
        weights_in_ram=plan.weights_in_ram,
        step_extra=_step_extra(plan),
        step_pairs=_step_pairs(plan),
        latency_pairs=plan.latency_pairs(),
    )


def _step_pairs(plan: Plan) -> tuple[tuple[PairTerm, ...], ...]:
    """Problem.step_pairs from the plan's RAM steps (none when no step has a pair term)."""
    if not any(step.pairs for step in plan.ram_steps):
        return ()
    return tuple(tuple(PairTerm(a, tuple(ao), b, tuple(bo), nb) for a, ao, b, bo, nb in step.pairs)
                 for step in plan.ram_steps)


def _step_extra(plan: Plan) -> tuple[dict[tuple[str, str], float], ...]:
    """Problem.step_extra from the plan's RAM steps (none when no step has a workspace)."""
    if not any(step.workspace for step in plan.ram_steps):
        return ()
    return tuple({(ly, o): b for ly, o, b in step.workspace} for step in plan.ram_steps)


def _check_exclusions(plan: Plan, excluded: set[str]) -> None:
    """Every name in `excluded` is one `_excluded` understands: an option or precision of this
    plan, or a technique edgefit knows (a typo would otherwise exclude nothing, silently)."""
    from techniques.registry import REGISTRY

    options = [alt.option for lp in plan.layers.values() for alt in lp.alternatives]
    known = dict.fromkeys([*(o.split("+", 1)[0] for o in options), *REGISTRY, *options])
    unknown = sorted(excluded - set(known))
    if unknown:
        names = list(known)
        raise PlanError(f"--exclude {unknown[0][:60]!r}: not an option, precision or technique "
                        f"of this plan; known: {', '.join(names[:12])}"
                        f"{f', ... ({len(names)} in all)' if len(names) > 12 else ''}")


def _excluded(alt: Alternative, excluded: set[str]) -> bool:
    """By full option name (int8+s50), by its kernel (int4 also drops int4+s75, int4+w8), or
    by technique (prune_channels, lowrank, quantize)."""
    return (alt.option in excluded or alt.kernel in excluded
            or any(t.technique in excluded for t in alt.techniques))


def parse_pins(texts: Iterable[str]) -> dict[str, str]:
    """`--pin LAYER=OPTION` flags -> {layer: option}."""
    pins = {}
    for text in texts:
        layer, sep, option = text.partition("=")
        if not sep or not layer or not option:
            raise PlanError(f"--pin {text!r}: write LAYER=OPTION, e.g. --pin fc1=int8")
        pins[layer] = option
    return pins


def with_result(plan: Plan, problem: Problem, result: SolveResult,
                pins: Mapping[str, str] | None = None) -> Plan:
    """`plan` with the solver's answer filled in (options, per-layer and total costs)."""
    layers: dict[str, LayerPlan] = {}
    ram = _per_layer_ram(plan, problem, result) if result.feasible else {}
    for name, lp in plan.layers.items():
        pinned = lp.pinned or name in (pins or {})
        if not result.feasible:  # keep pins: the user's decisions survive an infeasible try
            pin = (pins or {}).get(name, lp.option if lp.pinned else None)
            techniques = lp.alternative(pin).techniques if pin else []
            layers[name] = lp.model_copy(update={"option": pin, "techniques": techniques,
                                                 "predicted": None, "pinned": pinned})
            continue
        alt = lp.alternative(result.picks[name])
        layers[name] = lp.model_copy(update={
            "option": alt.option, "techniques": alt.techniques, "pinned": pinned,
            "predicted": Costs(latency_ms=alt.latency_ms, flash_bytes=alt.flash_bytes,
                               energy_mj=alt.energy_mj, acc_loss=alt.acc_loss,
                               ram_bytes=ram[name], transfer_bytes=alt.transfer_bytes),
        })
    t = result.totals
    return plan.model_copy(update={
        "status": result.status,
        "layers": layers,
        "totals": Costs(latency_ms=t["latency_ms"], flash_bytes=t["flash_bytes"],
                        energy_mj=t["energy_mj"], acc_loss=t["acc_loss"],
                        ram_bytes=t["ram_bytes"], transfer_bytes=_transfer_total(plan, t))
        if result.feasible else None,
        "binding": list(result.binding),
        "binding_unknown": list(result.binding_unknown),
        "sensitivity": dict(result.sensitivity),
        "solver": SolverInfo(backend=result.backend, status=result.status,
                             wall_time_s=result.wall_time_s,
                             options_considered=result.options_considered,
                             dominated_removed=result.dominated_removed, gap=result.gap,
                             resolution=result.resolution, exact_check=result.exact_check,
                             note=result.note),
        "explanation": None if result.feasible else Explanation(
            relaxations=[Relaxation(limit=r.limit, asked=r.asked,
                                    best_reachable=r.best_reachable, status=r.status)
                         for r in result.relaxations],
            minimum=result.minimum, joint_relaxation=result.joint_relaxation,
            joint_relaxation_status=result.joint_relaxation_status),
    })


def _transfer_total(plan: Plan, totals: Mapping[str, float]) -> float | None:
    """The artifact's bytes when the plan has a link (None otherwise)."""
    if plan.delivery is None or plan.delivery.link is None:
        return None
    return totals.get("transfer_bytes")


def _per_layer_ram(plan: Plan, problem: Problem, result: SolveResult) -> dict[str, float]:
    """Peak RAM while each layer (and the steps charged to it) runs."""
    chosen = {ly: next(c for c in problem.choices[ly] if c.option == o)
              for ly, o in result.picks.items()}
    out = dict.fromkeys(plan.layers, 0.0)
    for step, ram in zip(plan.ram_steps, problem.step_ram(chosen), strict=False):
        out[step.owner] = max(out[step.owner], ram)
    return out


def resolve(plan: Plan, *, pins: Mapping[str, str] | None = None, exclude: Iterable[str] = (),
            limits: Limits | None = None, options: SolverOptions | None = None,
            backend: str = "cpsat") -> Plan:
    """Solve again after a change: pins, excluded options, or new limits (warm-started from
    the plan's current choices)."""
    if limits is not None:
        plan = plan.model_copy(update={"limits": limits})
    plan = plan.model_copy(update={"excluded": sorted(set(plan.excluded) | set(exclude))})
    problem = problem_from_plan(plan, pins)
    hint = {n: lp.option for n, lp in plan.layers.items() if lp.option}
    result = solve(problem, options, hint=hint, backend=backend)
    return with_result(plan, problem, result, pins)
