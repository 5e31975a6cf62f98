"""The review TUI's logic without any widget: edits, local re-evaluation, dominance, diffs.

Everything here works on `Plan` objects and returns new ones (plans are never mutated), so
the app keeps an undo stack of plans. Nothing here imports a solver: a manual edit is
evaluated exactly (the plan holds every alternative's costs and the execution steps' live
tensors), the solver only runs when the user asks for a re-solve.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from device_specs.budget import Limits
from edgefit_common.units import fmt_bytes, fmt_mj, fmt_ms
from planner.plan import Alternative, Costs, LayerPlan, Plan
from planner.presolve import dominates
from planner.problem import Choice
from planner.result import BINDING_FRACTION

# Limit name (Limits field) -> (Costs attribute, label, formatter). Order = display order.
LIMIT_METRICS: dict[str, tuple[str, str, Callable[[float], str]]] = {
    "latency": ("latency_ms", "latency", fmt_ms),
    "flash": ("flash_bytes", "flash", fmt_bytes),
    "ram": ("ram_bytes", "peak RAM", fmt_bytes),
    "energy": ("energy_mj", "energy", fmt_mj),
}
METRIC_FORMAT: dict[str, Callable[[float], str]] = {
    metric: fmt for metric, _, fmt in LIMIT_METRICS.values()}
OVER_BUDGET = "OVER_BUDGET"  # status of a hand-edited plan whose totals break a limit
MEASURED_TOLERANCE = 0.20  # measured flash this far from predicted is highlighted


# ---------------------------------------------------------------------------------------------
# edits


def choice_of(alt: Alternative) -> Choice:
    return Choice(alt.option, alt.latency_ms, alt.flash_bytes, alt.energy_mj, alt.act_bytes,
                  alt.acc_loss, tuple(sorted(alt.widths.items())), alt.in_act_bytes,
                  alt.transfer_bytes or 0.0)


def _costs(alt: Alternative, ram: float | None) -> Costs:
    return Costs(latency_ms=alt.latency_ms, flash_bytes=alt.flash_bytes,
                 energy_mj=alt.energy_mj, acc_loss=alt.acc_loss, ram_bytes=ram,
                 transfer_bytes=alt.transfer_bytes)


def solver_limits(plan: Plan) -> dict[str, float]:
    """The limits the solver enforces (tightened by the margin), by Costs attribute."""
    return {LIMIT_METRICS[k][0]: v * (1.0 - plan.margin)
            for k, v in plan.limits.given().items() if k in LIMIT_METRICS}


def evaluate(plan: Plan) -> Plan:
    """`plan` with totals, per-layer peak RAM, binding limits and status recomputed from the
    chosen options. A plan with a layer left without an option (infeasible) is returned as is.

    Status after an edit: FEASIBLE when every limit holds (a valid plan, not proven optimal),
    OVER_BUDGET otherwise (`edgefit apply` refuses it; re-solve to get a valid plan)."""
    if any(lp.option is None for lp in plan.layers.values()):
        return plan
    # the plan's own problem with every layer pinned to its choice: coupled widths, RAM
    # workspace and limits exactly as the solver sees them (a width edit that breaks a
    # channel group is then OVER_BUDGET, not silently accepted)
    import dataclasses

    from planner.resolve import problem_from_plan

    problem = problem_from_plan(plan, pins={n: lp.option or "" for n, lp in plan.layers.items()})
    # the limits of the plan's own problem: pinning every layer here only fixes the choice, it
    # must not lift the fp32 latency cap (planner.resolve.latency_cap) to this plan's latency
    problem = dataclasses.replace(problem, limits=problem_from_plan(plan).limits)
    chosen = {name: problem.choices[name][0] for name in plan.layers}
    totals = problem.totals(dict.fromkeys(plan.layers, 0))
    ram = dict.fromkeys(plan.layers, 0.0)
    for step, value in zip(plan.ram_steps, problem.step_ram(chosen), strict=False):
        ram[step.owner] = max(ram.get(step.owner, 0.0), value)
    layers = {name: lp.model_copy(update={
        "predicted": _costs(lp.alternative(chosen[name].option), ram[name])})
        for name, lp in plan.layers.items()}
    feasible = problem.feasible(totals)
    return plan.model_copy(update={
        "layers": layers,
        "totals": Costs(latency_ms=totals["latency_ms"], flash_bytes=totals["flash_bytes"],
                        energy_mj=totals["energy_mj"], acc_loss=totals["acc_loss"],
                        ram_bytes=totals["ram_bytes"],
                        transfer_bytes=totals["transfer_bytes"]
                        if plan.delivery is not None and plan.delivery.link else None),
        "binding": [m for m, lim in problem.limits.items()
                    if totals[m] >= BINDING_FRACTION * lim],
        "status": "FEASIBLE" if feasible else OVER_BUDGET,
        "explanation": None,
    })


def choose(plan: Plan, layer: str, option: str) -> Plan:
    """Set `layer` to `option` and pin it there (re-solving keeps it)."""
    lp = plan.layers[layer]
    alt = lp.alternative(option)
    layers = dict(plan.layers)
    layers[layer] = lp.model_copy(update={"option": alt.option, "techniques": alt.techniques,
                                          "pinned": True, "predicted": _costs(alt, None)})
    return evaluate(plan.model_copy(update={"layers": layers}))


def cycle(plan: Plan, layer: str, step: int = 1) -> Plan:
    """Move `layer` to its next (or previous) alternative, pinned."""
    lp = plan.layers[layer]
    names = [a.option for a in lp.alternatives]
    if not names:
        return plan
    index = names.index(lp.option) + step if lp.option in names else (0 if step > 0 else -1)
    return choose(plan, layer, names[index % len(names)])


def set_pinned(plan: Plan, layer: str, pinned: bool) -> Plan:
    layers = dict(plan.layers)
    layers[layer] = plan.layers[layer].model_copy(update={"pinned": pinned})
    return plan.model_copy(update={"layers": layers})


def pins(plan: Plan) -> dict[str, str]:
    return {name: lp.option for name, lp in plan.layers.items()
            if lp.pinned and lp.option is not None}


def keep_pinned_options(before: Plan, after: Plan) -> Plan:
    """An infeasible re-solve clears every option; put the pinned ones back so the pins (and
    what they were pinned to) survive to the next re-solve and into the saved file."""
    lost = {name: option for name, option in pins(before).items()
            if after.layers[name].option is None}
    if not lost:
        return after
    layers = dict(after.layers)
    for name, option in lost.items():
        alt = after.layers[name].alternative(option)
        layers[name] = after.layers[name].model_copy(update={
            "option": option, "techniques": alt.techniques, "pinned": True,
            "predicted": _costs(alt, None)})
    return after.model_copy(update={"layers": layers})


def known_exclusions(plan: Plan) -> list[str]:
    """Every name `exclude` understands for this plan: kernels, option names and techniques."""
    names: dict[str, None] = {}
    for lp in plan.layers.values():
        for alt in lp.alternatives:
            names[alt.kernel] = None
            names[alt.option] = None
            for t in alt.techniques:
                names[t.technique] = None
    return list(names)


def with_limit(limits: Limits, text: str) -> Limits:
    """`limits` with one changed from "name=value" ("latency=40ms"; "ram=none" removes it);
    a SpecError naming the problem otherwise."""
    from edgefit_common.errors import SpecError

    name, sep, value = (part.strip() for part in text.partition("="))
    known = list(Limits.model_fields)
    if not sep or name not in known:
        raise SpecError(f"write NAME=VALUE with NAME one of {', '.join(known)}, e.g. "
                        "latency=40ms")
    current = {k: v for k, v in limits.model_dump().items() if v is not None}
    if value.lower() in ("none", "off", ""):
        current.pop(name, None)
    else:
        current[name] = value
    try:
        return Limits.model_validate(current)
    except ValueError as exc:
        raise SpecError(f"{name}: {str(exc).splitlines()[-1].strip()}") from None


def is_excluded(alt: Alternative, excluded: Iterable[str]) -> bool:
    ex = set(excluded)
    return (alt.option in ex or alt.kernel in ex
            or any(t.technique in ex for t in alt.techniques))


# ---------------------------------------------------------------------------------------------
# reading a plan


def dominated(alternatives: list[Alternative]) -> set[str]:
    """Options another option of the same layer and the same channel widths beats in every
    cost and in accuracy (presolve's test, without the plan's RAM-step terms)."""
    choices = [choice_of(a) for a in alternatives]
    return {c.option for c in choices if any(dominates(o, c) for o in choices)}


def never_picked(plan: Plan) -> dict[str, set[str]]:
    """Per layer, the options the solver's presolve removes from this plan's problem (pins
    aside): dominated at the same widths, RAM workspace and precision-boundary terms included,
    or naming a width another member of its group lacks. The solver's choice is never among
    them."""
    from planner.presolve import remove_dominated
    from planner.resolve import problem_from_plan

    free = plan.model_copy(update={"layers": {
        n: lp.model_copy(update={"pinned": False}) for n, lp in plan.layers.items()}})
    kept, _ = remove_dominated(problem_from_plan(free))
    return {n: {a.option for a in lp.alternatives} - {c.option for c in kept.choices[n]}
            for n, lp in plan.layers.items()}


@dataclass(frozen=True)
class LimitUsage:
    name: str  # Limits field: latency, flash, ram, energy
    label: str
    used: float
    limit: float | None  # as the user gave it
    enforced: float | None  # limit tightened by the margin: what the solver enforces
    binding: bool
    fmt: Callable[[float], str]

    @property
    def fraction(self) -> float | None:
        return self.used / self.limit if self.limit else None

    @property
    def headroom(self) -> float | None:
        """Share of the limit still free (negative: over)."""
        return 1.0 - self.used / self.limit if self.limit else None

    @property
    def level(self) -> str:
        """ok (green), tight (yellow: within 10 % or binding), over (red: breaks the limit)."""
        if self.limit is None or self.enforced is None:
            return "none"
        if self.used > self.enforced * (1 + 1e-9):
            return "over"
        if self.binding or self.used >= 0.9 * self.enforced:
            return "tight"
        return "ok"


def _latency_cap(plan: Plan) -> float | None:
    from planner.resolve import latency_cap, solver_limits

    return latency_cap(plan, solver_limits(plan.limits, plan.margin))


def limit_usage(plan: Plan) -> list[LimitUsage]:
    """One row per metric of the totals, with its limit when the budget has one."""
    if plan.totals is None:
        return []
    given = plan.limits.given()
    delivery = plan.delivery
    rows = []
    for name, (metric, label, fmt) in LIMIT_METRICS.items():
        used = getattr(plan.totals, metric)
        if used is None:
            continue
        if name == "flash" and delivery is not None and delivery.ab_slots > 1:
            # as `plan` prints it: the runtime once plus every model slot
            used, label = delivery.flash_with_slots(used), f"flash x{delivery.ab_slots}"
        limit = given.get(name)
        cap = _latency_cap(plan) if name == "latency" else None
        rows.append(LimitUsage(name, label, float(used), limit,
                               None if limit is None else limit * (1.0 - plan.margin),
                               metric in plan.binding and cap is None, fmt))
        if cap is not None:  # as `plan` prints it: the fp32 plan's latency is the limit held
            rows.append(LimitUsage("latency_cap", "fp32 cap", float(used), cap, cap,
                                   metric in plan.binding, fmt))
    transfer = plan.totals.transfer_bytes
    if delivery is not None and transfer is not None and (
            update_ms := delivery.update_time_ms(transfer)) is not None:
        limit = given.get("update_time")
        rows.append(LimitUsage("update_time", f"update {delivery.link}", update_ms, limit,
                               None if limit is None else limit * (1.0 - plan.margin),
                               "transfer_bytes" in plan.binding, fmt_ms))
    return rows


def explanation_lines(plan: Plan) -> list[str]:
    """Why an infeasible plan has no solution and what would be reachable (as `plan` prints)."""
    if plan.explanation is None:
        return [f"no solution (status {plan.status}); re-solve with r"]
    lines = ["The budget cannot be met. What is reachable instead:"]
    for r in plan.explanation.relaxations:
        fmt = METRIC_FORMAT.get(r.limit, str)
        name = r.limit.split("_")[0]
        if r.best_reachable is None:
            lines.append(f"{name}: relaxing only this limit does not help "
                         f"(asked {fmt(r.asked)})")
        else:
            lines.append(f"{name}: needs {fmt(r.best_reachable)} instead of {fmt(r.asked)} "
                         "(other limits kept)")
    for metric, value in plan.explanation.minimum.items():
        fmt = METRIC_FORMAT.get(metric, str)
        lines.append(f"smallest {metric.split('_')[0]} reachable: {fmt(value)} "
                     "(runtime included)")
    return lines


@dataclass(frozen=True)
class Measured:
    """What `edgefit apply` measured for one layer: the stored bytes in the flash image."""

    image_bytes: float
    option: str  # the option the layer had when it was applied
    predicted: float | None  # the plan's flash bytes for that option

    @property
    def deviation(self) -> float | None:
        if not self.predicted:
            return None
        return (self.image_bytes - self.predicted) / self.predicted

    @property
    def deviates(self) -> bool:
        dev = self.deviation
        return dev is not None and abs(dev) > MEASURED_TOLERANCE


def measured_flash(plan: Plan, report: Mapping[str, Any] | None) -> dict[str, Measured]:
    if not report:
        return {}
    out: dict[str, Measured] = {}
    for row in report.get("verification", {}).get("layers", []):
        name = row.get("layer")
        if name not in plan.layers or row.get("image_bytes") is None:
            continue
        option = str(row.get("planned") or plan.layers[name].option or "")
        try:
            predicted: float | None = plan.layers[name].alternative(option).flash_bytes
        except KeyError:
            predicted = row.get("planned_bytes")
        out[name] = Measured(float(row["image_bytes"]), option, predicted)
    return out


def matches(name: str, lp: LayerPlan, text: str) -> bool:
    """The `/` filter: a case-insensitive substring of the name, op type or option."""
    needle = text.strip().lower()
    if not needle:
        return True
    return any(needle in (field or "").lower() for field in (name, lp.op_type, lp.option))


# ---------------------------------------------------------------------------------------------
# diff


@dataclass(frozen=True)
class LayerChange:
    layer: str
    before: str | None
    after: str | None
    pinned_before: bool
    pinned_after: bool
    before_costs: Costs | None
    after_costs: Costs | None


def diff_layers(old: Plan, new: Plan) -> list[LayerChange]:
    out = []
    for name, lp in new.layers.items():
        was = old.layers.get(name)
        if was is None:
            continue
        if was.option != lp.option or was.pinned != lp.pinned:
            out.append(LayerChange(name, was.option, lp.option, was.pinned, lp.pinned,
                                   was.predicted, lp.predicted))
    return out


def diff_totals(old: Plan, new: Plan) -> list[tuple[str, float | None, float | None,
                                                     Callable[[float], str]]]:
    """(metric label, before, after, formatter) for each total, accuracy cost last."""
    rows: list[tuple[str, float | None, float | None, Callable[[float], str]]] = []
    for metric, label, fmt in LIMIT_METRICS.values():
        rows.append((label, _total(old, metric), _total(new, metric), fmt))
    rows.append(("acc cost", _total(old, "acc_loss"), _total(new, "acc_loss"), fmt_acc))
    return rows


def _total(plan: Plan, metric: str) -> float | None:
    if plan.totals is None:
        return None
    value = getattr(plan.totals, metric)
    return None if value is None else float(value)


def fmt_acc(value: float) -> str:
    return f"{value:.3g}" if value else "0"


def fmt_int(value: float) -> str:
    return f"{int(value):,}"
