"""Merge a budget file (or ./edgefit.yaml) with command-line flags into one Budget."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device_specs.budget import (
    LIMIT_FAMILIES,
    Budget,
    Limits,
    find_project_file,
    load_budget,
)
from edgefit_common import units
from edgefit_common.errors import SpecError
from edgefit_common.yamlio import validate

DEFAULT_MODEL = "lenet5-mnist"  # workloads.zoo.DEFAULT_MODEL, repeated so this stays torch-free


@dataclass(frozen=True)
class ResolvedBudget:
    budget: Budget
    source: str  # which file (if any) the budget came from
    model_origin: str


def resolve_budget(cwd: Path, *, budget_file: Path | None, target: str | None,
                   profile: str | None, model: str | None, weights: str | None,
                   data: str | None, margin: str | None, period: str | None = None,
                   input_shape: str | None = None,
                   limits: dict[str, str | None]) -> ResolvedBudget:
    if budget_file is not None:
        base, source = load_budget(budget_file), str(budget_file)
    elif (project := find_project_file(cwd)) is not None:
        base, source = load_budget(project), str(project)
    else:
        base, source = None, "command line"
    fields: dict[str, Any] = base.model_dump(mode="json") if base else {}
    fields.setdefault("limits", {})
    given = _check_flags(limits)
    fields["limits"] = {**{k: v for k, v in fields["limits"].items() if v is not None}, **given}
    for key, value in (("target", target), ("profile", profile), ("model", model),
                       ("weights", weights), ("data", data)):
        if value is not None:
            fields[key] = value
    if margin is not None:
        fields["margin"] = _parse_margin(margin)
    if input_shape is not None:
        fields["input_shape"] = _parse_shape(input_shape)
    if period is not None:
        units.parse(period, units.TIME, field="--period")
        fields["period"] = period
    if not fields.get("target"):
        raise SpecError("no target: pass --target (see `edgefit devices`) or set `target:` in a "
                        "budget file / edgefit.yaml")
    if not fields["limits"]:
        raise SpecError("no limits: pass at least one of --max-latency, --max-flash, --max-ram, "
                        "--max-energy, --max-accuracy-drop")
    if model is not None:
        origin = "--model flag"
    elif fields.get("model"):
        origin = source
    else:
        fields["model"] = DEFAULT_MODEL
        origin = "built-in default workload (LeNet-5 on MNIST; no edgefit.yaml here)"
    budget = validate(fields, Budget, path="command line" if base is None else source)
    return ResolvedBudget(budget, source, origin)


def _parse_shape(text: str) -> list[int]:
    try:
        dims = [int(d) for d in text.lower().replace(",", "x").split("x")]
    except ValueError:
        raise SpecError(f"--input-shape {text!r}: write the dimensions of one sample, "
                        "e.g. 1x28x28") from None
    if not dims or any(d <= 0 for d in dims):
        raise SpecError(f"--input-shape {text!r}: every dimension must be positive")
    return dims


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
