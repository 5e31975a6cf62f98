"""The sweep file of `edgefit sweep` (models x targets x budgets), read and checked torch-free.

Everything a sweep can get wrong is found here, before any model is loaded: the YAML, unknown
keys (strict pydantic), unit strings, empty lists, duplicate names, unknown targets or
profiles, missing model / data files, a factory the command line did not allow. Each problem
is one line naming the file, the line and the entry (`sweep.yaml:9: targets[1] (jetson-nan):
...`). Relative paths (a model or data file, a weights file, a device YAML) are read from the
sweep file's own folder, as a budget file's target is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from device_specs.budget import LIMIT_FAMILIES, Budget, Limits, Preprocess, input_shape_problem
from device_specs.catalog import target_relative_to
from device_specs.quantities import Strict
from edgefit_common import units
from edgefit_common.errors import EdgefitError, SpecError, UnitError
from edgefit_common.fsutil import shown
from edgefit_common.yamlio import _line_of, describe, read_yaml, validate

SWEEP_SCHEMA_VERSION = 1

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""A budget's (or a model's) name: it names a folder of the sweep's output."""

LIMIT_FLAGS = {"max_latency": "latency", "max_flash": "flash", "max_ram": "ram",
               "max_energy": "energy", "max_accuracy_drop": "accuracy_drop"}
"""A budget's keys, spelled as `plan`'s flags (--max-latency ...), -> the Limits field."""

class SweepModel(Strict):
    """One model, as `plan --model` takes it (a bare string in the file is `model:` alone)."""

    model: str = Field(description="built-in name (lenet5-mnist, ...), a .pt2 / .onnx file or "
                       "package.module:factory (allowed by `edgefit sweep --allow-factory`)")
    name: str | None = Field(default=None, pattern=NAME,
                             description="its name in the table and its output folder "
                             "(default: from `model`)")
    weights: str | None = Field(default=None, description="state_dict for module:factory")
    input_shape: list[int] | None = Field(default=None, description="one sample's shape "
                                          "(module:factory, symbolic ONNX inputs), e.g. "
                                          "[1, 28, 28]")
    data: str | None = Field(default=None, description="data set: mnist, fashion-mnist, an "
                             ".npz file or a folder of <class>/*.png (default: the model's)")
    preprocess: Preprocess | None = Field(default=None, description="the model's input "
                                          "normalisation (mean / std per channel)")
    allow_unmeasured: bool = Field(default=False, description="without data, offer compressed "
                                   "options at an unmeasured (zero) accuracy cost")

    @property
    def label(self) -> str:
        """The folder and table name: `name`, else the model reference made file-safe."""
        if self.name is not None:
            return self.name
        stem = Path(self.model).stem if Path(self.model).suffix else self.model
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.")[:64] or "model"


class SweepTarget(Strict):
    """One device, as `plan --target` / `--profile` take it (a bare string: `target:` alone)."""

    target: str = Field(description="catalog name (see `edgefit devices`), host or a spec "
                        ".yaml")
    profile: str | None = Field(default=None, description="device profile; default: the "
                                "spec's")

    @property
    def label(self) -> str:
        name = Path(self.target).stem if Path(self.target).suffix else self.target
        return name + (f"-{self.profile}" if self.profile else "")


class SweepBudget(Strict):
    """A named set of limits, written as `plan`'s flags are (30ms, 1MB, 256KiB, 5mJ, 1pp)."""

    name: str = Field(pattern=NAME, description="names the budget's rows and output folders")
    max_latency: str | None = Field(default=None, description="per inference, e.g. 30ms")
    max_flash: str | None = Field(default=None, description="model + runtime, e.g. 1MB")
    max_ram: str | None = Field(default=None, description="peak RAM, e.g. 256KB")
    max_energy: str | None = Field(default=None, description="per inference, e.g. 5mJ")
    max_accuracy_drop: str | None = Field(default=None, description="percentage points, e.g. "
                                         "1pp (checked when the plan is applied)")
    margin: str | None = Field(default=None, description="safety margin on every limit, "
                               "e.g. 10%")
    apply: bool | None = Field(default=None, description="apply and measure this budget's "
                               "plans (default: the sweep's `apply`)")

    @field_validator(*LIMIT_FLAGS, mode="before")
    @classmethod
    def _unit(cls, value: Any, info: Any) -> Any:
        """A quantity with its unit, parsed as the flag would be (a bare number is refused:
        `30` could be ms or s)."""
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError(f"write the value with its unit as a string, e.g. "
                             f"{_EXAMPLES[info.field_name]}")
        _parse(value, LIMIT_FAMILIES[LIMIT_FLAGS[info.field_name]], info.field_name)
        return value

    @field_validator("margin")
    @classmethod
    def _margin(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ok = units.parse(value, units.ACCURACY, field="margin") < 100.0
        except UnitError:
            ok = False
        if not ok:
            raise ValueError(f"{value[:40]!r}: a percentage from 0 to below 100%, e.g. 10%")
        return value

    @model_validator(mode="after")
    def _some_limit(self) -> SweepBudget:
        if not any(getattr(self, key) is not None for key in LIMIT_FLAGS):
            raise ValueError(f"budget {self.name!r} has no limit: give at least one of "
                             f"{', '.join(LIMIT_FLAGS)}")
        return self

    def limits(self) -> Limits:
        return Limits(**{LIMIT_FLAGS[k]: getattr(self, k) for k in LIMIT_FLAGS})

    def margin_fraction(self) -> float:
        return 0.0 if self.margin is None else units.parse(self.margin, units.ACCURACY) / 100.0


_EXAMPLES = {"max_latency": "'30ms'", "max_flash": "'1MB'", "max_ram": "'256KB'",
             "max_energy": "'5mJ'", "max_accuracy_drop": "'1pp'"}


def _parse(text: str, family: units.Family, name: str) -> float:
    try:
        return units.parse(text, family, field=name)
    except UnitError as exc:
        raise ValueError(str(exc).split(": ", 1)[-1]) from None


def _entry(value: Any, key: str) -> Any:
    """A bare string in a list of models / targets is the entry's one required key."""
    return {key: value} if isinstance(value, str) else value


def _bare_strings(schema: dict[str, Any]) -> None:
    """The JSON Schema says what the file accepts: a model or a target may be a bare string."""
    for key in ("models", "targets"):
        prop = schema["properties"][key]
        prop["items"] = {"anyOf": [{"type": "string"}, prop["items"]]}


class SweepFile(Strict):
    """`edgefit sweep SWEEP.yaml`: every model on every target under every budget."""

    model_config = ConfigDict(json_schema_extra=_bare_strings)

    schema_version: Literal[1] = 1  # SWEEP_SCHEMA_VERSION
    models: list[SweepModel] = Field(min_length=1, description="a model reference, or a "
                                     "mapping with `model:` and its weights, shape and data")
    targets: list[SweepTarget] = Field(min_length=1, description="a catalog name, or a mapping "
                                       "with `target:` and `profile:`")
    budgets: list[SweepBudget] = Field(min_length=1, description="named sets of limits")
    apply: bool = Field(default=False, description="apply and measure every feasible plan "
                        "(a budget's own `apply` wins)")
    out: str | None = Field(default=None, description="the output folder, relative to this "
                            "file (default: ./sweep-out; `--out` wins); replaced as a whole")
    time_limit: float = Field(default=10.0, gt=0, le=86_400, description="solver time limit "
                              "per solve, seconds")
    solver: Literal["cpsat", "cbc"] = Field(default="cpsat", description="the exact backend")

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, value: Any) -> Any:
        return [_entry(v, "model") for v in value] if isinstance(value, list) else value

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, value: Any) -> Any:
        return [_entry(v, "target") for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _unique(self) -> SweepFile:
        """Names that would share a row and an output folder."""
        for what, labels in (("models", [m.label for m in self.models]),
                             ("targets", [t.label for t in self.targets]),
                             ("budgets", [b.name for b in self.budgets])):
            seen = {label for i, label in enumerate(labels) if label in labels[:i]}
            if seen:
                raise ValueError(f"{what}: {sorted(seen)[0]!r} appears twice (each needs its "
                                 "own name: a row and an output folder each)")
        return self


@dataclass(frozen=True)
class Cell:
    """One (model, target, budget) of the sweep: its indices and the Budget `plan` would get."""

    model: int
    target: int
    budget: int
    fields: Budget
    folder: Path  # MODEL/TARGET/BUDGET under the output folder (each name folder-safe)


@dataclass(frozen=True)
class Sweep:
    path: Path
    spec: SweepFile
    cells: list[Cell]
    factories: frozenset[str]  # the module:factory models the command line allowed

    def applies(self, cell: Cell) -> bool:
        own = self.spec.budgets[cell.budget].apply
        return self.spec.apply if own is None else own


def load_sweep(path: Path, allowed_factories: Sequence[str] = ()) -> Sweep:
    """The sweep file, every entry checked (one-line SpecError naming the file, the line and
    the entry), and its cells in order: model, then target, then budget."""
    data, root = read_yaml(path, "sweep file")
    if not isinstance(data, dict):
        raise SpecError(f"{shown(path)}: expected a mapping with models, targets and budgets "
                        "at the top level")
    spec = _validated(data, path, root)
    spec = _relative_to(spec, path.parent)
    where = _Where(path, root, spec)
    factories = _check_models(spec, where, set(allowed_factories))
    _check_targets(spec, where)
    cells = [Cell(m, t, b, _budget(spec, m, t, b, where),
                  Path(model.label, target.label, budget.name))
             for m, model in enumerate(spec.models) for t, target in enumerate(spec.targets)
             for b, budget in enumerate(spec.budgets)]
    return Sweep(path, spec, cells, frozenset(factories))


def _validated(data: dict[str, Any], path: Path, root: Any) -> SweepFile:
    """SweepFile, or yamlio's one line with the entry also named: `budgets[1] (tight).max_ram`
    rather than `budgets.1.max_ram`."""
    try:
        return SweepFile.model_validate(data)
    except ValidationError as exc:
        line = describe(exc, path, root, SweepFile)
        loc = exc.errors()[0]["loc"]
        if len(loc) > 1 and loc[0] in ("models", "targets", "budgets") and isinstance(loc[1], int):
            entries = data.get(str(loc[0]))
            entry = entries[loc[1]] if isinstance(entries, list) else None
            name = entry if isinstance(entry, str) else (
                entry.get("name") or entry.get("model") or entry.get("target")
                if isinstance(entry, dict) else None)
            if isinstance(name, str):
                line = line.replace(f": {loc[0]}.{loc[1]}", f": {loc[0]}[{loc[1]}] "
                                    f"({shown(name, 60)})", 1)
        raise SpecError(line) from None


@dataclass(frozen=True)
class _Where:
    """Names an entry of the file in an error line: `file:line: targets[1] (name)`."""

    path: Path
    root: Any
    spec: SweepFile

    def __call__(self, key: str, index: int) -> str:
        line = _line_of(self.root, (key, index)) if self.root is not None else None
        entry = getattr(self.spec, key)[index]
        name = str(getattr(entry, "label", None) or getattr(entry, "name", None) or "")
        return f"{shown(self.path)}{f':{line}' if line else ''}: {key}[{index}] ({shown(name, 60)})"


def _relative_to(spec: SweepFile, folder: Path) -> SweepFile:
    """Paths in the file read from its folder (a built-in name or data set stays a name)."""
    def path(value: str | None) -> str | None:
        if value is None or Path(value).is_absolute():
            return value
        candidate = folder / value
        return str(candidate) if candidate.exists() else value

    models = [m.model_copy(update={
        "model": path(m.model) if Path(m.model).suffix in (".onnx", ".pt2") else m.model,
        "weights": path(m.weights), "data": path(m.data), "name": m.label})
        for m in spec.models]
    targets = [t.model_copy(update={"target": target_relative_to(t.target, folder)})
               for t in spec.targets]
    return spec.model_copy(update={"models": models, "targets": targets})


def _check_models(spec: SweepFile, where: _Where, allowed: set[str]) -> set[str]:
    """Each model and data reference as `plan` checks it before torch; a module:factory only
    when `--allow-factory` named it (a file never makes edgefit run code)."""
    from workloads.data import check_dataset_ref
    from workloads.refs import check_model_ref, is_factory_ref, is_well_formed_factory

    factories = set()
    for i, m in enumerate(spec.models):
        try:
            if is_factory_ref(m.model):
                if not is_well_formed_factory(m.model):
                    raise SpecError("write a factory as package.module:function")
                if m.model not in allowed:
                    raise SpecError(f"{m.model!r} is a module:factory, i.e. code, which edgefit "
                                    "runs only when the command line names it: add "
                                    f"--allow-factory {m.model}")
                factories.add(m.model)
            check_model_ref(m.model, m.weights)
            if m.data is not None:
                check_dataset_ref(m.data)
            if m.input_shape is not None and (bad := input_shape_problem(m.input_shape)):
                raise SpecError(f"input_shape: {bad}")
        except EdgefitError as exc:
            raise SpecError(f"{where('models', i)}: {exc}") from None
    unused = sorted(allowed - factories)
    if unused:
        raise SpecError(f"--allow-factory {unused[0]}: no model of {shown(where.path)} is that "
                        "factory")
    return factories


def _check_targets(spec: SweepFile, where: _Where) -> None:
    """Each target and profile as `plan` checks them before torch (the closest catalog name
    when one is unknown)."""
    from edgefit.precheck import check_target

    for i, t in enumerate(spec.targets):
        try:
            check_target(t.target, t.profile)
        except EdgefitError as exc:
            raise SpecError(f"{where('targets', i)}: {exc}") from None


def _budget(spec: SweepFile, m: int, t: int, b: int, where: _Where) -> Budget:
    """The Budget `plan --model ... --target ... --max-... ` would build for this cell."""
    model, target, budget = spec.models[m], spec.targets[t], spec.budgets[b]
    fields: dict[str, Any] = {
        "target": target.target, "profile": target.profile, "model": model.model,
        "weights": model.weights, "data": model.data, "input_shape": model.input_shape,
        "preprocess": model.preprocess, "allow_unmeasured": model.allow_unmeasured,
        "limits": budget.limits(), "margin": budget.margin_fraction(),
    }
    return validate(fields, Budget, path=where("budgets", b))
