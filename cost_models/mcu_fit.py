"""MCU latency per runtime family, fitted on the published MLPerf Tiny rows
(cost_models/mcu_published.yaml, copied from shared/reference/mcu-published.md).

The model, per network on a board at ``clock_hz`` running a runtime of ``family``::

    compute_cycles[class] = MACs[class] / (mac_per_cycle[family] x op_efficiency[class])
    overhead_cycles       = overhead_cycles_per_op x operators
    latency_ms            = (sum of compute_cycles + overhead_cycles) / clock_hz x 1e3

with op classes conv (dense k x k), depthwise, pointwise (1x1) and linear (fully connected),
and operators = the weighted layers + the non-fused ops a runtime dispatches (pooling, residual
adds). It is the analytical roofline of cost_models.analytical with the rates in cycles
(macs_per_s = mac_per_cycle x clock, layer_overhead = overhead cycles / clock): the memory term
never binds on these models at 4 B/cycle, which a test checks through analytical.

What is free (the data: 4 models per board, a 5th family without rows): one MAC/cycle per
family; the depthwise efficiency and the per-operator overhead shared by all families;
conv, pointwise and linear efficiency fixed at 1. The other forms tried (per-family overhead,
per-family depthwise, a linear efficiency) are in :data:`FORMS` and in the report: they fit
the rows better in sample and predict a held-out model worse. The form was chosen on that
leave-one-model-out figure, so the figure is optimistic by the choice among 5 forms.

Held-out errors: leave-one-model-out (every row of that model removed, all families, then
predicted), leave-one-board-out where a family has rows on 2 boards (only microtvm-cmsis-nn:
Cortex-M4 STM32L4R5 and Cortex-M33 nRF5340, one MAC/cycle for both cores, so the core
difference is part of that error). tflm-cmsis-nn has no row: its parameters are assumed from
microtvm-cmsis-nn (the same CMSIS-NN kernels) and it has no held-out error.

scipy's bounded least squares on log(predicted / published).

For a plan: ``mcu_family_error(profile.runtime_family)`` is the held-out error to print,
``mcu_family_fit(...).error_basis`` says which hold-out it is, ``.fitted_on(spec.core)`` whether
the board's core type was in the fit (else the rate was clock-scaled across core types).
Torch-free: the models' features are stored in the data file (a test checks them against the
capture).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from device_specs.quantities import Strict
from device_specs.schema import Core, RuntimeFamily
from edgefit_common.errors import SpecError
from edgefit_common.yamlio import load_model

DATA_FILE = Path(__file__).with_name("mcu_published.yaml")
OP_CLASSES = ("conv", "depthwise", "pointwise", "linear")
# families with MLPerf Tiny rows, and the one assumed from another family's fit
UNFITTED: dict[str, str] = {"tflm-cmsis-nn": "microtvm-cmsis-nn"}
# bounds of the free parameters (a MAC/cycle beyond 4 is above any published MCU kernel;
# overhead per operator up to 200k cycles)
BOUNDS: dict[str, tuple[float, float]] = {"mac_per_cycle": (0.005, 4.0),
                                          "efficiency": (0.05, 5.0),
                                          "overhead": (0.0, 2e5)}


class ModelFeatures(Strict):
    published_macs: int | None
    source: str
    macs_by_class: dict[str, int]
    ops: int = Field(ge=1)


class McuRow(Strict):
    board: str
    clock_mhz: float = Field(gt=0)
    core: Core
    runtime: str
    family: RuntimeFamily
    round: str
    model: str
    latency_ms: float = Field(gt=0)
    source: str

    @property
    def clock_hz(self) -> float:
        return self.clock_mhz * 1e6


class BaselineProfile(Strict):
    """A catalog profile as it was before the fit: the int8 numbers the roofline used."""

    device: str
    profile: str
    clock_mhz: float = Field(gt=0)
    int8_macs_per_s: float = Field(gt=0)
    depthwise: float = Field(gt=0)
    layer_overhead_ms: float = Field(ge=0)
    bandwidth_bytes_per_s: float = Field(gt=0)


class Baseline(Strict):
    commit: str
    profiles: dict[RuntimeFamily, BaselineProfile]


class McuPublished(Strict):
    format: Literal["edgefit-mcu-published"]
    format_version: Literal[1]
    sources: dict[str, str]
    models: dict[str, ModelFeatures]
    rows: list[McuRow]
    baseline: Baseline


@cache
def load_rows(path: Path = DATA_FILE) -> McuPublished:
    data = load_model(path, McuPublished, "MCU published rows")
    for i, row in enumerate(data.rows):
        if row.model not in data.models:
            raise SpecError(f"{path}: rows[{i}].model {row.model!r} is not in models")
        if row.source not in data.sources:
            raise SpecError(f"{path}: rows[{i}].source {row.source!r} is not in sources")
    return data


# --------------------------------------------------------------------------------------------
# the model


@dataclass(frozen=True)
class FamilyParams:
    mac_per_cycle: float
    op_efficiency: Mapping[str, float]  # op class -> factor (absent: 1)
    overhead_cycles: float  # per operator


def estimate_cycles(features: ModelFeatures, params: FamilyParams) -> dict[str, float]:
    """The cycles of one inference, term by term (named like the model above)."""
    out: dict[str, float] = {}
    for cls in OP_CLASSES:
        eff = params.op_efficiency.get(cls, 1.0)
        out[f"compute_cycles.{cls}"] = features.macs_by_class.get(cls, 0) / (
            params.mac_per_cycle * eff)
    out["compute_cycles"] = sum(out[f"compute_cycles.{c}"] for c in OP_CLASSES)
    out["overhead_cycles"] = params.overhead_cycles * features.ops
    out["cycles"] = out["compute_cycles"] + out["overhead_cycles"]
    return out


def latency_ms(features: ModelFeatures, params: FamilyParams, clock_hz: float) -> float:
    return estimate_cycles(features, params)["cycles"] / clock_hz * 1e3


@dataclass(frozen=True)
class Form:
    """Which parameters are free: per family or shared by all families."""

    name: str
    per_family: tuple[str, ...]  # "mac_per_cycle", "overhead", "eff:<class>"
    shared: tuple[str, ...]


FORMS: tuple[Form, ...] = (
    Form("per-family rate + overhead", ("mac_per_cycle", "overhead"), ()),
    Form("per-family rate, overhead, depthwise", ("mac_per_cycle", "overhead", "eff:depthwise"),
         ()),
    Form("per-family rate + overhead, shared depthwise", ("mac_per_cycle", "overhead"),
         ("eff:depthwise",)),
    Form("per-family rate + overhead, shared depthwise + linear", ("mac_per_cycle", "overhead"),
         ("eff:depthwise", "eff:linear")),
    Form("per-family rate, shared depthwise + overhead", ("mac_per_cycle",),
         ("eff:depthwise", "overhead")),
)
CHOSEN = FORMS[-1]


@dataclass(frozen=True)
class Fit:
    form: Form
    params: dict[str, FamilyParams]  # family -> parameters
    rows: tuple[McuRow, ...]


def _bounds(name: str) -> tuple[float, float]:
    return BOUNDS["efficiency" if name.startswith("eff:") else name]


def _unpack(theta: np.ndarray, names: Sequence[tuple[str, str]],
            families: Sequence[str]) -> dict[str, FamilyParams]:
    values: dict[str, dict[str, float]] = {f: {} for f in families}
    for (owner, name), v in zip(names, theta, strict=True):
        for f in families if owner == "*" else (owner,):
            values[f][name] = float(v)
    return {f: FamilyParams(
        mac_per_cycle=v["mac_per_cycle"],
        op_efficiency={k[4:]: x for k, x in v.items() if k.startswith("eff:")},
        overhead_cycles=v.get("overhead", 0.0)) for f, v in values.items()}


def fit(rows: Sequence[McuRow], form: Form = CHOSEN,
        models: Mapping[str, ModelFeatures] | None = None) -> Fit:
    """Least squares on log(predicted / published) over ``rows``, bounded (BOUNDS)."""
    from scipy.optimize import least_squares

    feats = models if models is not None else load_rows().models
    families = sorted({r.family for r in rows})
    names = [(f, p) for f in families for p in form.per_family] + [("*", p)
                                                                    for p in form.shared]
    x0 = np.array([{"mac_per_cycle": 0.3, "overhead": 5e3}.get(p, 1.0) for _, p in names])
    lower = np.array([_bounds(p)[0] for _, p in names])
    upper = np.array([_bounds(p)[1] for _, p in names])
    measured = np.array([r.latency_ms for r in rows])

    def residuals(theta: np.ndarray) -> np.ndarray:
        params = _unpack(theta, names, families)
        pred = np.array([latency_ms(feats[r.model], params[r.family], r.clock_hz)
                         for r in rows])
        return np.log(pred / measured)

    scale = np.array([{"overhead": 1e3}.get(p, 0.1) for _, p in names])
    result = least_squares(residuals, x0, bounds=(lower, upper), x_scale=scale)
    return Fit(form, _unpack(result.x, names, families), tuple(rows))


def predict(fitted: Fit, row: McuRow, models: Mapping[str, ModelFeatures] | None = None
            ) -> float:
    feats = models if models is not None else load_rows().models
    return latency_ms(feats[row.model], fitted.params[row.family], row.clock_hz)


# --------------------------------------------------------------------------------------------
# held-out errors


@dataclass(frozen=True)
class Residual:
    row: McuRow
    in_sample_ms: float
    lomo_ms: float  # fitted without any row of this model
    lobo_ms: float | None  # fitted without this family's rows on this board (None: one board)


def _rel(pred: float, meas: float) -> float:
    return pred / meas - 1


def _mape(errors: Sequence[float]) -> float:
    return float(np.mean(np.abs(errors)))


def _held_out(rows: Sequence[McuRow], held: Sequence[McuRow], form: Form) -> dict[int, float]:
    """Predictions of the ``held`` rows by a fit on all the other rows (keyed by row id)."""
    held_ids = {id(r) for r in held}
    fitted = fit([r for r in rows if id(r) not in held_ids], form)
    return {id(r): predict(fitted, r) for r in held if r.family in fitted.params}


def residuals(form: Form = CHOSEN, rows: Sequence[McuRow] | None = None) -> list[Residual]:
    rows = list(rows if rows is not None else load_rows().rows)
    full = fit(rows, form)
    lomo: dict[int, float] = {}
    for model in sorted({r.model for r in rows}):
        lomo |= _held_out(rows, [r for r in rows if r.model == model], form)
    lobo: dict[int, float] = {}
    for family in sorted({r.family for r in rows}):
        boards = sorted({r.board for r in rows if r.family == family})
        for board in boards if len(boards) > 1 else []:
            lobo |= _held_out(rows, [r for r in rows if r.family == family and r.board == board],
                              form)
    return [Residual(r, predict(full, r), lomo[id(r)], lobo.get(id(r))) for r in rows]


@dataclass(frozen=True)
class FamilyFit:
    """One family's fitted parameters and its errors on the published rows."""

    family: str
    params: FamilyParams
    boards: tuple[str, ...]
    cores: tuple[str, ...]
    n_rows: int
    in_sample_mape: float | None  # None: no rows (assumed parameters)
    lomo_mape: float | None
    lomo_max: float | None
    lobo_mape: float | None  # None: not possible (one board) or no rows
    assumed_from: str | None = None  # the family whose parameters stand in (no rows)
    sources: tuple[str, ...] = ()

    def fitted_on(self, core: str | None) -> bool:
        """Whether rows on this core type are in the fit (a profile on another core carries
        the family's rate clock-scaled across core types: its error is not established)."""
        fits = family_fits()
        cores = fits[self.assumed_from].cores if self.assumed_from else self.cores
        return core is not None and core in cores

    @property
    def held_out_error(self) -> float | None:
        """Leave-one-board-out MAPE where the family has >= 2 boards, else leave-one-model-out."""
        return self.lobo_mape if self.lobo_mape is not None else self.lomo_mape

    @property
    def error_basis(self) -> str:
        if self.lobo_mape is not None:
            return "leave-one-board-out"
        if self.lomo_mape is not None:
            return "leave-one-model-out (one board: leave-one-board-out not possible)"
        return f"none: no published row (parameters assumed from {self.assumed_from})"


@cache
def family_fits(form: Form = CHOSEN) -> dict[str, FamilyFit]:
    rows = load_rows().rows
    full = fit(rows, form)
    res = residuals(form)
    out: dict[str, FamilyFit] = {}
    for family, params in full.params.items():
        mine = [r for r in res if r.row.family == family]
        lobo = [_rel(r.lobo_ms, r.row.latency_ms) for r in mine if r.lobo_ms is not None]
        lomo = [_rel(r.lomo_ms, r.row.latency_ms) for r in mine]
        out[family] = FamilyFit(
            family, params, tuple(sorted({r.row.board for r in mine})),
            tuple(sorted({r.row.core for r in mine})), len(mine),
            _mape([_rel(r.in_sample_ms, r.row.latency_ms) for r in mine]),
            _mape(lomo), float(np.max(np.abs(lomo))), _mape(lobo) if lobo else None,
            sources=tuple(sorted({r.row.source for r in mine})))
    for family, stand_in in UNFITTED.items():
        base = out[stand_in]
        out[family] = FamilyFit(family, base.params, (), (), 0, None, None, None, None,
                                assumed_from=stand_in, sources=base.sources)
    return out


def mcu_family_fit(family: str) -> FamilyFit | None:
    """The family's fitted parameters and held-out errors; None for a family the MLPerf Tiny
    rows say nothing about (e.g. tflm-esp-nn)."""
    return family_fits().get(family)


def mcu_family_error(family: str) -> float | None:
    """The family's held-out latency error (mean |predicted / published - 1|):
    leave-one-board-out where it has rows on >= 2 boards, else leave-one-model-out
    (:attr:`FamilyFit.error_basis` says which); None without a published row."""
    found = mcu_family_fit(family)
    return None if found is None else found.held_out_error


def bound_from_literature(reference: FamilyParams) -> tuple[float, float]:
    """MAC/cycle range devices.md's "optimised kernels are typically 5-10x faster than
    reference kernels" (s.3, UNVERIFIED) gives from the tflm-reference fit."""
    return 5 * reference.mac_per_cycle, 10 * reference.mac_per_cycle

