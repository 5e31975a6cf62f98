"""Merge a budget file (or ./edgefit.yaml) with command-line flags into one Budget.

A module:factory model is code: it is accepted from --model, or from ./edgefit.yaml (the
project's own file in the current directory) when that file says ``allow_factory: true`` --
never from another budget file (workloads.refs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_specs.budget import (
    LIMIT_FAMILIES,
    Budget,
    Limits,
    find_project_file,
    input_shape_problem,
    load_budget,
)
from device_specs.scenario import Scenario, battery_energy, load_scenario
from edgefit_common import units
from edgefit_common.errors import SpecError
from edgefit_common.fsutil import shown
from edgefit_common.yamlio import validate
from workloads.refs import is_factory_ref, is_well_formed_factory

DEFAULT_MODEL = "lenet5-mnist"  # workloads.zoo.DEFAULT_MODEL, repeated so this stays torch-free


@dataclass(frozen=True)
class ResolvedBudget:
    budget: Budget
    source: str  # which file (if any) the budget came from
    model_origin: str
    factory: str | None = None  # a module:factory the user allowed to run (--model, edgefit.yaml)
    target_origin: str = "command line"  # where the target came from: the flag or a file
    scenario: Scenario | None = None  # --scenario: the catalog scenario the budget started from
    origins: dict[str, str] = field(default_factory=dict)  # limit / period -> file, scenario, flag


def resolve_budget(cwd: Path, *, budget_file: Path | None, target: str | None,
                   profile: str | None, model: str | None, weights: str | None,
                   data: str | None, margin: str | None, period: str | None = None,
                   input_shape: str | None = None,
                   limits: dict[str, str | None],
                   scenario: str | None = None, mean: str | None = None,
                   std: str | None = None, link: str | None = None,
                   ab_slots: int | None = None,
                   sparsity_levels: str | None = None,
                   allow_unmeasured: bool = False,
                   fleet: dict[str, Any] | None = None) -> ResolvedBudget:
    if scenario is not None and budget_file is not None:
        raise SpecError("--scenario and --budget: choose one (flags override either)")
    scn = load_scenario(scenario) if scenario is not None else None
    # a scenario stands in for the budget file: ./edgefit.yaml is not read beside it
    project = find_project_file(cwd) if budget_file is None and scn is None else None
    if budget_file is not None:
        base, source = load_budget(budget_file), str(budget_file)
    elif scn is not None:
        base, source = None, f"scenario {scn.name}"
    elif project is not None:
        base, source = load_budget(project), str(project)
    else:
        base, source = None, "command line"
    own_file = _is_project_file(cwd, budget_file if budget_file is not None else project)
    if base is not None and base.allow_factory and not own_file:
        raise SpecError(f"{shown(source)}: allow_factory is honoured only in ./edgefit.yaml "
                        "(the current directory's project file); pass a factory as --model")
    fields: dict[str, Any] = base.model_dump(mode="json") if base else {}
    if scn is not None:
        fields = scn.budget_fields()
    fields.pop("allow_factory", None)
    fields.setdefault("limits", {})
    given = _check_flags(limits)
    fields["limits"] = {**{k: v for k, v in fields["limits"].items() if v is not None}, **given}
    for key, value in (("target", target), ("profile", profile), ("model", model),
                       ("weights", weights), ("data", data)):
        if value is not None:
            fields[key] = value
    _delivery_flags(fields, link, ab_slots)
    _fleet_flags(fields, fleet or {})
    if sparsity_levels is not None:
        fields["sparsity_levels"] = _parse_levels(sparsity_levels)
    if allow_unmeasured:
        fields["allow_unmeasured"] = True
    if margin is not None:
        fields["margin"] = _parse_margin(margin)
    if input_shape is not None:
        fields["input_shape"] = _parse_shape(input_shape)
    if mean is not None or std is not None:
        fields["preprocess"] = _parse_preprocess(mean, std)
    if period is not None:
        period_ms = units.parse(period, units.TIME, field="--period")
        fields["period"] = period
        if scn is not None and scn.battery is not None and "energy" not in given:
            # the battery's energy per inference depends on the period: derive it again
            energy = battery_energy(scn.battery, period_ms).energy_per_inference_limit_mj
            fields["limits"]["energy"] = f"{energy!r}mJ"
    if not fields.get("target"):
        raise SpecError("no target: pass --target (see `edgefit devices`) or set `target:` in a "
                        "budget file / edgefit.yaml")
    if not fields["limits"] and not (fields.get("fleet") or {}).get("max_cost"):
        raise SpecError("no limits: pass at least one of --max-latency, --max-flash, --max-ram, "
                        "--max-energy, --max-accuracy-drop, --max-update-time, "
                        "--max-update-cost")
    if scn is not None and model is None:
        raise SpecError(f"scenario {scn.name}: pass --model (its example run: --model "
                        f"{scn.example_model}{_shape_flag(scn)}; see `edgefit scenarios`)")
    if model is not None:
        origin = "--model flag"
    elif fields.get("model"):
        origin = source
    else:
        fields["model"] = DEFAULT_MODEL
        origin = "built-in default workload (LeNet-5 on MNIST; no edgefit.yaml here)"
    factory = _allowed_factory(fields["model"], model is not None,
                               own_file and base is not None and base.allow_factory, source)
    budget = validate(fields, Budget, path="command line" if base is None else source)
    return ResolvedBudget(budget, source, origin, factory,
                          "--target flag" if target is not None else source, scn,
                          _origins(budget, given, period is not None, source))


def _parse_levels(text: str) -> list[float]:
    """--sparsity-levels 50,75,90,95 (percent; a trailing % allowed): the Budget checks them."""
    try:
        return [float(v.strip().removesuffix("%")) for v in text.split(",")]
    except ValueError:
        raise SpecError(f"--sparsity-levels {text[:60]!r}: give percentages separated by "
                        "commas, e.g. 50,75,90,95") from None


def _delivery_flags(fields: dict[str, Any], link: str | None, ab_slots: int | None) -> None:
    """--link and --ab-slots into `fields` (over the file's), each checked with one line."""
    from device_specs.budget import MAX_AB_SLOTS
    from device_specs.links import load_link

    if link is not None:
        try:
            load_link(link)
        except SpecError as exc:
            raise SpecError(f"--link: {exc}") from None
        fields["link"] = link
    if ab_slots is not None:
        if not 1 <= ab_slots <= MAX_AB_SLOTS:
            raise SpecError(f"--ab-slots {ab_slots}: give 1 to {MAX_AB_SLOTS} model images "
                            "(2 for A/B updates)")
        fields["ab_slots"] = ab_slots
    if fields["limits"].get("update_time") is not None and not fields.get("link"):
        raise SpecError("--max-update-time needs --link NAME, the link the update travels over "
                        "(see device_specs/links.yaml)")


_FLEET_FLAGS = {"size": "--fleet-size", "updates_per_month": "--updates-per-month",
                "data_price": "--data-price", "max_cost": "--max-update-cost"}


def _fleet_flags(fields: dict[str, Any], flags: dict[str, Any]) -> None:
    """--fleet-size, --updates-per-month, --data-price, --max-update-cost into `fields` (over
    the file's `fleet:`), checked here so a refusal names the flag (docs/delivery.md)."""
    from pydantic import ValidationError

    from device_specs.fleet import Fleet

    given = {k: v for k, v in flags.items() if v is not None}
    if not given:
        return
    merged = {**(fields.get("fleet") or {}), **given}
    try:
        Fleet.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = err["msg"].removeprefix("Value error, ")
        where = _FLEET_FLAGS.get(str(err["loc"][0])) if err["loc"] else None
        for key, flag in _FLEET_FLAGS.items():
            msg = msg.replace(f"{key}:", f"{flag}:")
        raise SpecError(f"{where}: {msg}" if where else msg) from None
    if not fields.get("link"):
        flag = next(_FLEET_FLAGS[k] for k in _FLEET_FLAGS if k in given)
        raise SpecError(f"{flag} needs --link NAME, the link the update's bytes travel over "
                        "(its overhead counts in the bytes billed; see device_specs/links.yaml)")
    fields["fleet"] = merged


def _origins(budget: Budget, flags: dict[str, str], period_flag: bool,
             source: str) -> dict[str, str]:
    """Where each limit (and the period) came from: its flag, else the file or scenario."""
    found = {k: f"--max-{k.replace('_', '-')} flag" if k in flags else source
             for k in budget.limits.given()}
    if budget.period is not None:
        found["period"] = "--period flag" if period_flag else source
    return found


def _shape_flag(scn: Scenario) -> str:
    shape = scn.example_input_shape
    return f" --input-shape {'x'.join(str(d) for d in shape)}" if shape else ""


def _is_project_file(cwd: Path, path: Path | None) -> bool:
    """Whether `path` is ./edgefit.yaml of the current directory (the user's own project)."""
    if path is None:
        return False
    try:
        return Path(cwd, path).resolve() == (cwd / "edgefit.yaml").resolve()
    except (OSError, RuntimeError):  # a symbolic link loop
        return False


def _allowed_factory(ref: str, from_flag: bool, opted_in: bool, source: str) -> str | None:
    """The factory the user allowed to run, None for any other model; a factory named only by
    a file that did not opt in is refused before anything is imported."""
    if not is_factory_ref(ref):
        return None
    if not (from_flag or opted_in):
        raise SpecError(f"{shown(source)}: model {shown(ref, 80)!r} is a module:factory, i.e. "
                        "code, which edgefit never runs because a file names it; pass it as "
                        f"--model {shown(ref, 80)} (or set allow_factory: true in ./edgefit.yaml)")
    if not is_well_formed_factory(ref):
        raise SpecError(f"--model {shown(ref, 80)!r}: write a factory as package.module:function")
    return ref


def _parse_shape(text: str) -> list[int]:
    """`1x28x28` (or `1,28,28`): ASCII digits only, within device_specs.budget's bounds."""
    parts = text.lower().replace(",", "x").split("x")
    if len(text) > 100 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise SpecError(f"--input-shape {shown(text, 60)!r}: write the dimensions of one sample "
                        "in digits 0-9, e.g. 1x28x28")
    dims = [int(p) for p in parts]
    if (problem := input_shape_problem(dims)) is not None:
        raise SpecError(f"--input-shape {shown(text, 60)!r}: {problem}")
    return dims


def _parse_preprocess(mean: str | None, std: str | None) -> dict[str, list[float]]:
    """--mean / --std: one number, or one per channel separated by commas; both or neither."""
    if mean is None or std is None:
        raise SpecError("--mean and --std go together (the normalisation the model was trained "
                        "with, e.g. --mean 0.1307 --std 0.3081)")
    values = {}
    for flag, text in (("--mean", mean), ("--std", std)):
        parts = [p.strip() for p in text.split(",")]
        try:
            if len(text) > 200 or not all(p.isascii() and p for p in parts):
                raise ValueError
            values[flag] = [float(p) for p in parts]
        except ValueError:
            raise SpecError(f"{flag} {shown(text, 60)!r}: one number, or one per channel "
                            "separated by commas, e.g. 0.485,0.456,0.406") from None
        if not all(math.isfinite(v) for v in values[flag]):
            raise SpecError(f"{flag} {shown(text, 60)!r}: finite numbers only")
    if len(values["--mean"]) != len(values["--std"]):
        raise SpecError(f"--mean has {len(values['--mean'])} values, --std "
                        f"{len(values['--std'])}: give the same number (one per channel, or one)")
    if any(v <= 0 for v in values["--std"]):
        raise SpecError(f"--std {shown(std, 60)!r}: every value must be > 0")
    return {"mean": values["--mean"], "std": values["--std"]}


def _parse_margin(text: str) -> float:
    value = units.parse(text, units.ACCURACY, field="--margin") / 100.0
    if value >= 1.0:
        raise SpecError(f"--margin: {text!r} must be below 100%")
    return value


def merge_limits(base: Limits, flags: dict[str, str | None]) -> Limits:
    """`base` with the limits given as flags (`--max-latency 30ms`) replaced."""
    given = _check_flags(flags)
    merged = {k: v for k, v in base.model_dump(mode="json").items() if v is not None}
    return validate({**merged, **given}, Limits, path="command line")


def _check_flags(flags: dict[str, str | None]) -> dict[str, str]:
    """The limit flags that were given, each parsed once so errors name the flag."""
    given = {k: v for k, v in flags.items() if v is not None}
    for key, text in given.items():
        units.parse(text, LIMIT_FAMILIES[key], field=f"--max-{key.replace('_', '-')}")
    return given


def refleet(plan: Any, plan_file: Path, data_price: str | None,
            max_update_cost: str | None) -> Any:
    """`resolve --data-price / --max-update-cost`: the plan with its fleet's price or cost
    limit replaced (over the link it was planned with), each checked in one line."""
    if data_price is None and max_update_cost is None:
        return plan
    d = plan.delivery
    if d is None or d.link is None:
        raise SpecError(f"--data-price / --max-update-cost: {shown(str(plan_file))} was planned "
                        "without a link; re-plan with --link NAME (its transfer bytes are "
                        "costed then)")
    fields: dict[str, Any] = {} if d.fleet is None else d.fleet.model_dump(mode="json")
    if data_price is not None:
        fields.pop("currency", None)  # the new price says its own
    probe: dict[str, Any] = {"link": d.link, "fleet": fields}
    _fleet_flags(probe, {"data_price": data_price, "max_cost": max_update_cost})
    from device_specs.fleet import Fleet

    fleet = Fleet.model_validate(probe["fleet"])
    return plan.model_copy(update={"delivery": d.model_copy(update={"fleet": fleet})})
