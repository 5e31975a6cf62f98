"""Fit the analytical model's parameters to measurements: published points or `measure` files.

The model is the per-layer roofline of :mod:`cost_models.analytical`, unchanged::

    layer ms = layer_overhead + 1e3 * max(macs / (macs_per_s[option] * eff[option][op_class]),
                                          bytes moved / memory_bandwidth)
             + sum over the elementwise/pool ops charged to the layer of
               (layer_overhead + 1e3 * bytes / memory_bandwidth)
    network ms = sum of its layers + run_overhead

Parameters are fitted by least squares on log latency (relative errors count the same for a
1 ms and a 100 ms point) with a small Levenberg-Marquardt in log-parameter space (numpy only;
scipy is not a dependency). The parameters that are free are chosen from the data, in a fixed
order, with a fixed rule (so leave-one-out runs the same rule on each fold):

* candidates, most to least essential: one rate per option measured (`rate:<option>`), the
  per-layer overhead (`overhead`), per-op-class efficiencies (`eff:<class>` shared by the
  options for published points, offered when >= 2 models spend >= 2 % of their MACs in the
  class; `eff:<option>:<class>` for measured layers), the memory bandwidth (`bandwidth`; for
  published points only when the median point spends >= half its predicted time in
  memory-bound layers under the spec's values);
* keep at most n - 1 free parameters for n points (at least one residual degree of freedom);
  with more candidates than that, every subset of n - 1 is tried and the best fit kept;
* a parameter the data cannot pin down (the Jacobian at the optimum is rank-deficient, e.g. the
  overhead when it is a negligible part of every point) is dropped and the fit repeated; every
  parameter that is not free keeps the device spec's value.

Public API:

* :func:`fit_profile` (published points or :class:`FitPoint`) -> :class:`FitResult`, with
  residuals and leave-one-out error when there are >= 3 points; :func:`evaluate` for points
  kept aside; :func:`apply_fit` -> a Profile with the fitted values.
* :func:`calibrate` (device, ``edgefit_measure`` JSON files, the models' layer graphs) ->
  :class:`CalibrationResult`, written atomically to ``<dir>/<device>.calibration.yaml``
  (default dir: the edgefit cache).
* :func:`load_calibration`, :func:`apply_calibration` (Profile), :func:`calibrated_spec`
  (DeviceSpec): what the planner uses.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import yaml
from pydantic import Field

from cost_models.analytical import activation_bytes, layer_flash_bytes, layer_latency_ms
from cost_models.graph import Layer, LayerGraph
from cost_models.published import PublishedPoint, Workload, workload
from device_specs.quantities import Bandwidth, Count, MacRate, Millis, Sourced, Strict
from device_specs.schema import DeviceSpec, Profile
from edgefit_common.errors import SpecError
from edgefit_common.fsutil import atomic_write_text
from edgefit_common.jsonio import read_json
from edgefit_common.yamlio import validate

S = TypeVar("S", bound=Sourced)

CALIBRATION_FORMAT = "edgefit-calibration"
CALIBRATION_FORMAT_VERSION = 1
MEASURE_FORMAT = "edgefit-measure"
MEASURE_FORMAT_VERSION = 1
RANK_TOL = 1e-3  # smallest / largest singular value of the log-Jacobian below this: drop one
THETA_RANGE = 12.0  # a free parameter stays within e^-12 .. e^12 of the spec's value
MEMORY_BOUND_SHARE = 0.5  # published fits free the bandwidth above this median share
MAX_SUBSETS = 64  # subsets of candidates tried when there are more than n - 1
JUDGED_LAYER_US = 20.0  # per-layer errors below this are reported, not judged (profiler floor)


# --------------------------------------------------------------------------------------------
# resolved parameters and a vectorised predictor


@dataclass(frozen=True)
class Params:
    """Every number the roofline uses for one profile (canonical units: MAC/s, ms, B/s)."""

    rates: dict[str, float]  # option -> macs_per_s
    efficiency: dict[str, dict[str, float]]  # option -> op_class -> factor (absent: 1)
    layer_overhead_ms: float
    bandwidth: float
    run_overhead_ms: float = 0.0

    @classmethod
    def of_profile(cls, profile: Profile) -> Params:
        return cls(
            rates={k: v.macs_per_s.value for k, v in profile.kernels.items()},
            efficiency={k: {c: e.value for c, e in v.op_efficiency.items()}
                        for k, v in profile.kernels.items()},
            layer_overhead_ms=profile.layer_overhead.value,
            bandwidth=profile.memory_bandwidth.value,
            run_overhead_ms=profile.run_overhead.value if profile.run_overhead else 0.0,
        )

    def rate(self, option: str, op_class: str) -> float:
        return self.rates[option] * self.efficiency.get(option, {}).get(op_class, 1.0)


@dataclass(frozen=True)
class FitPoint:
    """A latency to fit: a whole network (published) or one layer (measured)."""

    label: str
    layers: tuple[Layer, ...]
    option: str  # the kernel (precision option) every layer runs with
    latency_ms: float
    charged: tuple[tuple[int, ...], ...] = ()  # per layer: elements of the ops charged to it
    whole_network: bool = True  # adds run_overhead once
    source: str = ""
    model: str = ""

    @classmethod
    def of_workload(cls, w: Workload, option: str, latency_ms: float, label: str = "",
                    source: str = "") -> FitPoint:
        return cls(label or f"{w.name} {option}", w.layers, option, latency_ms,
                   source=source, model=w.name)


class _Features:
    """All layers of all points as flat arrays, built once: a prediction is a few numpy
    operations (the fit evaluates it thousands of times)."""

    def __init__(self, points: Sequence[FitPoint], profile: Profile) -> None:
        self.points = list(points)
        if not self.points:
            raise ValueError("no points")
        for p in self.points:
            if p.option not in profile.kernels:
                raise SpecError(f"{p.label}: the profile has no kernel {p.option!r} "
                                f"(it has {', '.join(profile.kernels)})")
            if not p.layers:
                raise SpecError(f"{p.label}: no layers")
        self.options = sorted({p.option for p in self.points})
        macs: list[float] = []
        moved: list[float] = []
        cls: list[int] = []
        opt: list[int] = []
        starts: list[int] = []
        n_over: list[int] = []
        op_bytes: list[float] = []
        for p in self.points:
            kernel = profile.kernels[p.option]
            act_b = activation_bytes(kernel)
            starts.append(len(macs))
            for layer in p.layers:
                macs.append(float(layer.macs))
                moved.append(float(layer_flash_bytes(layer, kernel)
                                   + act_b * (layer.input_numel + layer.output_numel)))
                cls.append(_CLASS_INDEX.get(layer.op_class, len(_CLASSES)))
                opt.append(self.options.index(p.option))
            charged = p.charged or ()
            n_over.append(len(p.layers) + sum(len(c) for c in charged))
            op_bytes.append(float(act_b * sum(sum(c) for c in charged)))
        self.macs, self.moved = np.array(macs), np.array(moved)
        self.cls, self.opt = np.array(cls, dtype=np.int64), np.array(opt, dtype=np.int64)
        self.starts = np.array(starts, dtype=np.int64)
        self.n_over, self.op_bytes = np.array(n_over, dtype=np.float64), np.array(op_bytes)
        self.whole = np.array([p.whole_network for p in self.points], dtype=np.float64)
        self.measured = np.array([p.latency_ms for p in self.points], dtype=np.float64)

    def _rates(self, params: Params) -> np.ndarray:
        table = np.ones((len(self.options), len(_CLASSES) + 1))
        for i, option in enumerate(self.options):
            table[i, :] *= params.rates[option]
            for c, v in params.efficiency.get(option, {}).items():
                if c in _CLASS_INDEX:
                    table[i, _CLASS_INDEX[c]] *= v
        return table[self.opt, self.cls]

    def memory_share(self, params: Params) -> np.ndarray:
        """Per point, the fraction of its predicted time spent in memory-bound layers."""
        compute, memory = self.macs / self._rates(params), self.moved / params.bandwidth
        bound = np.add.reduceat(np.where(memory > compute, memory, 0.0), self.starts)
        return 1e3 * bound / self.predict(params)

    def predict(self, params: Params) -> np.ndarray:
        rate = self._rates(params)
        per_layer = np.maximum(self.macs / rate, self.moved / params.bandwidth)
        compute_s = np.add.reduceat(per_layer, self.starts)
        return (self.n_over * params.layer_overhead_ms
                + 1e3 * (compute_s + self.op_bytes / params.bandwidth)
                + self.whole * params.run_overhead_ms)


_CLASSES = ("conv", "pointwise", "depthwise", "linear", "matmul", "elementwise")
_CLASS_INDEX = {c: i for i, c in enumerate(_CLASSES)}


def predict_analytical(point: FitPoint, profile: Profile) -> float:
    """The planner's own formula (analytical.layer_latency_ms), summed: the 'catalog' number."""
    kernel = profile.kernels[point.option]
    charged = point.charged or tuple(() for _ in point.layers)
    total = 0.0
    total += sum(layer_latency_ms(layer, kernel, profile, layer_flash_bytes(layer, kernel),
                                 [(None, e) for e in c])  # type: ignore[misc]
                for layer, c in zip(point.layers, charged, strict=True))
    if point.whole_network and profile.run_overhead is not None:
        total += profile.run_overhead.value
    return float(total)


# --------------------------------------------------------------------------------------------
# the fit


def _with(base: Params, names: Sequence[str], values: np.ndarray) -> Params:
    rates = dict(base.rates)
    eff = {k: dict(v) for k, v in base.efficiency.items()}
    overhead, bandwidth = base.layer_overhead_ms, base.bandwidth
    for name, v in zip(names, values, strict=True):
        parts = name.split(":")
        if parts[0] == "rate":
            rates[parts[1]] = float(v)
        elif parts[0] == "eff" and len(parts) == 2:
            for option in rates:
                eff.setdefault(option, {})[parts[1]] = float(v)
        elif parts[0] == "eff":
            eff.setdefault(parts[1], {})[parts[2]] = float(v)
        elif name == "overhead":
            overhead = float(v)
        elif name == "bandwidth":
            bandwidth = float(v)
        else:
            raise ValueError(f"unknown parameter {name!r}")
    return Params(rates, eff, overhead, bandwidth, base.run_overhead_ms)


def _value(base: Params, name: str, options: Sequence[str]) -> float:
    parts = name.split(":")
    if parts[0] == "rate":
        return base.rates[parts[1]]
    if parts[0] == "eff" and len(parts) == 2:
        vals = [base.efficiency.get(o, {}).get(parts[1], 1.0) for o in options]
        return float(np.exp(np.mean(np.log(vals)))) if vals else 1.0
    if parts[0] == "eff":
        return base.efficiency.get(parts[1], {}).get(parts[2], 1.0)
    if name == "overhead":
        return max(base.layer_overhead_ms, 1e-6)
    return base.bandwidth


def _jacobian(fun: Callable[[np.ndarray], np.ndarray], theta: np.ndarray,
              r0: np.ndarray, h: float = 1e-6) -> np.ndarray:
    jac = np.empty((r0.size, theta.size))
    for j in range(theta.size):
        t = theta.copy()
        t[j] += h
        jac[:, j] = (fun(t) - r0) / h
    return jac


def levenberg_marquardt(fun: Callable[[np.ndarray], np.ndarray], theta0: np.ndarray,
                        lo: np.ndarray, hi: np.ndarray,
                        max_iter: int = 200) -> tuple[np.ndarray, float]:
    """Minimise |fun(theta)|^2 within [lo, hi] (clipped steps); returns (theta, cost)."""
    theta = np.clip(theta0, lo, hi)
    r = fun(theta)
    cost = float(r @ r)
    lam = 1e-3
    for _ in range(max_iter):
        jac = _jacobian(fun, theta, r)
        a, g = jac.T @ jac, jac.T @ r
        improved = False
        while lam < 1e12:
            damp = a + lam * np.diag(np.maximum(np.diag(a), 1e-12))
            step = np.linalg.lstsq(damp, -g, rcond=None)[0]
            cand = np.clip(theta + step, lo, hi)
            rc = fun(cand)
            cc = float(rc @ rc)
            if cc < cost:
                improved = True
                gain = cost - cc
                theta, r, cost = cand, rc, cc
                lam = max(lam / 3, 1e-12)
                break
            lam *= 4
        if not improved or gain <= 1e-14 * (1 + cost) or float(np.abs(step).max()) < 1e-10:
            break
    return theta, cost


@dataclass
class _Solved:
    free: list[str]
    params: Params
    cost: float  # sum of squared log residuals


def _fit_set(feats: _Features, base: Params, names: list[str],
             ) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Fit `names` (others fixed at `base`): theta, cost, Jacobian at theta, at-bound mask."""
    options = sorted({p.option for p in feats.points})
    log_meas = np.log(feats.measured)
    theta_base = np.log([_value(base, f, options) for f in names])
    lo, hi = theta_base - THETA_RANGE, theta_base + THETA_RANGE

    def residual(theta: np.ndarray) -> np.ndarray:
        pred = feats.predict(_with(base, names, np.exp(theta)))
        return np.log(np.maximum(pred, 1e-300)) - log_meas

    best: tuple[np.ndarray, float] | None = None
    for start in _starts(feats, base, names, theta_base):
        theta, cost = levenberg_marquardt(residual, start, lo, hi)
        if best is None or cost < best[1] - 1e-12:
            best = (theta, cost)
    assert best is not None
    theta = best[0]
    jac = _jacobian(residual, theta, residual(theta))
    at_bound = (theta <= lo + 1e-6) | (theta >= hi - 1e-6)
    return theta, best[1], jac, at_bound


def _eliminate(feats: _Features, base: Params, names: Sequence[str]) -> _Solved | None:
    """Fit `names`; while the optimum leaves a parameter undetermined (rank-deficient
    Jacobian, or a parameter pinned at its range limit), drop it and fit again."""
    free = list(names)
    while free:
        theta, cost, jac, at_bound = _fit_set(feats, base, free)
        s = np.linalg.svd(jac, compute_uv=False)
        if s[-1] <= RANK_TOL * max(s[0], 1e-300) or at_bound.any():
            free.pop(_least_identified(jac, free, at_bound))
            continue
        return _Solved(free, _with(base, free, np.exp(theta)), cost)
    return None


def _solve(feats: _Features, base: Params, candidates: Sequence[str]) -> _Solved | None:
    """The rule of the module docstring. At most n - 1 free parameters: when there are more
    candidates, every subset of that size is tried (the first n - 1 by priority if there are
    more than MAX_SUBSETS); each is reduced to what the data determines; the largest result
    wins, then the lowest cost, then priority order. None when nothing can be fitted."""
    max_k = len(feats.points) - 1
    if max_k < 1:
        return None
    cands = list(candidates)
    if len(cands) <= max_k:
        starts: list[tuple[str, ...]] = [tuple(cands)]
    else:
        starts = list(itertools.combinations(cands, max_k))
        if len(starts) > MAX_SUBSETS:
            starts = [tuple(cands[:max_k])]
    best: _Solved | None = None
    seen: set[tuple[str, ...]] = set()
    for names in starts:
        solved = _eliminate(feats, base, names)
        if solved is None or tuple(solved.free) in seen:
            continue
        seen.add(tuple(solved.free))
        if best is None or (len(solved.free), -solved.cost) > (len(best.free),
                                                                -best.cost + 1e-9):
            best = solved
    return best


def _starts(feats: _Features, base: Params, names: list[str],
            theta_base: np.ndarray) -> list[np.ndarray]:
    """The spec's values, and the same with each rate rescaled to fit its points' median."""
    starts = [theta_base.copy()]
    scaled = theta_base.copy()
    pred = feats.predict(base)
    for j, name in enumerate(names):
        if name.startswith("rate:"):
            option = name.split(":")[1]
            idx = [i for i, p in enumerate(feats.points) if p.option == option]
            if idx:
                ratio = np.median(pred[idx] / feats.measured[idx])
                scaled[j] += float(np.log(max(ratio, 1e-12)))
    starts.append(scaled)
    low_overhead = scaled.copy()
    for j, name in enumerate(names):
        if name == "overhead":
            low_overhead[j] -= np.log(10.0)
    starts.append(low_overhead)
    return starts


def _least_identified(jac: np.ndarray, names: list[str], at_bound: np.ndarray) -> int:
    """Index of the free parameter to drop: among those pinned at a range limit, else among
    those the weakest direction of the Jacobian moves (|v| > 0.1), the least essential one
    (latest in candidate order; a rate only when nothing else is involved)."""
    if at_bound.any():
        involved = [int(i) for i in np.flatnonzero(at_bound)]
    else:
        _, _, vt = np.linalg.svd(jac, full_matrices=False)
        weight = np.abs(vt[-1])
        involved = [i for i in range(len(names)) if weight[i] > 0.1] or [int(np.argmax(weight))]
    others = [i for i in involved if not names[i].startswith("rate:")]
    return max(others or involved)


def _published_candidates(points: Sequence[FitPoint]) -> list[str]:
    counts: dict[str, int] = {}
    for p in points:
        counts[p.option] = counts.get(p.option, 0) + 1
    cands = [f"rate:{o}" for o in sorted(counts, key=lambda o: (-counts[o], o))]
    cands.append("overhead")
    for cls in ("depthwise", "pointwise"):
        models = {p.model or p.label for p in points
                  if _class_share(p.layers, cls) >= 0.02}
        if len(models) >= 2:
            cands.append(f"eff:{cls}")
    return cands


def _solve_published(pts: list[FitPoint], profile: Profile, base: Params) -> _Solved | None:
    """Rates, overhead, class efficiencies; the bandwidth too when the points are mostly
    memory-bound under the spec's values (its bandwidth then decides the prediction)."""
    feats = _Features(pts, profile)
    cands = _published_candidates(pts)
    if float(np.median(feats.memory_share(base))) >= MEMORY_BOUND_SHARE:
        cands.append("bandwidth")
    return _solve(feats, base, cands)


def _class_share(layers: Sequence[Layer], cls: str) -> float:
    total = sum(layer.macs for layer in layers)
    return sum(layer.macs for layer in layers if layer.op_class == cls) / total if total else 0.0


# --------------------------------------------------------------------------------------------
# fitting published points


@dataclass(frozen=True)
class PointResidual:
    label: str
    model: str
    option: str
    source: str
    measured_ms: float
    predicted_ms: float  # with the fitted parameters (the spec's when there is no fit)
    catalog_ms: float  # with the spec's parameters, through analytical.layer_latency_ms
    loo_ms: float | None = None  # predicted by a fit on the other points (None: not possible)

    @property
    def error(self) -> float:
        return self.predicted_ms / self.measured_ms - 1

    @property
    def catalog_error(self) -> float:
        return self.catalog_ms / self.measured_ms - 1

    @property
    def loo_error(self) -> float | None:
        return None if self.loo_ms is None else self.loo_ms / self.measured_ms - 1


@dataclass
class FitResult:
    status: Literal["fit", "no fit"]
    message: str  # "8 points, 5 free parameters: ..." / "1 point: no fit"
    n_points: int
    free: list[str]
    params: Params | None  # None without a fit
    catalog: Params
    residuals: list[PointResidual] = field(default_factory=list)

    @property
    def mape(self) -> float | None:
        return _mape([r.error for r in self.residuals]) if self.params else None

    @property
    def catalog_mape(self) -> float | None:
        return _mape([r.catalog_error for r in self.residuals])

    @property
    def loo(self) -> list[float]:
        return [e for r in self.residuals if (e := r.loo_error) is not None]

    @property
    def loo_mape(self) -> float | None:
        return _mape(self.loo) if self.n_points >= 3 else None


def _mape(errors: Sequence[float]) -> float | None:
    return float(np.mean(np.abs(errors))) if len(errors) else None


def _as_fit_points(points: Sequence[PublishedPoint | FitPoint]) -> list[FitPoint]:
    out = []
    for p in points:
        if isinstance(p, FitPoint):
            out.append(p)
        else:
            out.append(FitPoint.of_workload(
                workload(p.model), p.precision, p.latency_ms,
                label=f"{p.model} {p.precision} [{p.source}]", source=p.source))
    return out


def fit_profile(points: Sequence[PublishedPoint | FitPoint], profile: Profile,
                loo: bool = True) -> FitResult:
    """Fit `profile`'s rates (and overhead / class efficiencies when the points pin them down)
    to whole-network latencies; residuals, and leave-one-out when there are >= 3 points."""
    pts = _as_fit_points(points)
    for p in pts:
        if p.option not in profile.kernels:
            raise SpecError(f"{p.label}: the profile has no kernel {p.option!r} "
                            f"(it has {', '.join(profile.kernels)})")
    catalog = Params.of_profile(profile)
    n = len(pts)
    word = "point" if n == 1 else "points"
    if n <= 1:
        return FitResult("no fit", f"{n} {word}: no fit", n, [], None, catalog,
                         _residuals(pts, profile, None, [None] * n))
    solved = _solve_published(pts, profile, catalog)
    loo_ms: list[float | None] = [None] * n
    if loo and n >= 3:
        for i in range(n):
            rest = pts[:i] + pts[i + 1:]
            fold = _solve_published(rest, profile, catalog)
            if fold is not None and f"rate:{pts[i].option}" in fold.free:
                loo_ms[i] = float(_Features([pts[i]], profile).predict(fold.params)[0])
    if solved is None:
        return FitResult("no fit", f"{n} {word}: under-determined, no fit", n, [], None,
                         catalog, _residuals(pts, profile, None, loo_ms))
    k = len(solved.free)
    msg = f"{n} {word}, {k} free ({', '.join(solved.free)}), {n - k} degrees of freedom"
    return FitResult("fit", msg, n, solved.free, solved.params, catalog,
                     _residuals(pts, profile, solved.params, loo_ms))


def _residuals(pts: list[FitPoint], profile: Profile, params: Params | None,
               loo_ms: Sequence[float | None]) -> list[PointResidual]:
    pred = _Features(pts, profile).predict(params) if (params and pts) else None
    out = []
    for i, p in enumerate(pts):
        cat = predict_analytical(p, profile)
        out.append(PointResidual(p.label, p.model, p.option, p.source, p.latency_ms,
                                 float(pred[i]) if pred is not None else cat, cat, loo_ms[i]))
    return out


def evaluate(points: Sequence[PublishedPoint | FitPoint], profile: Profile,
             params: Params | None) -> list[PointResidual]:
    """Residuals of points that were not fitted (kept aside), under `params` and the spec's."""
    pts = _as_fit_points(points)
    return _residuals(pts, profile, params, [None] * len(pts))


# --------------------------------------------------------------------------------------------
# applying parameters to a profile


def _sourced(cls: type[S], value: float | str, key: str, text: str) -> S:
    return cls.model_validate({"value": value, key: text})


def _apply_params(profile: Profile, params: Params, fitted: Sequence[str], text: str,
                  key: Literal["measured", "derived"]) -> Profile:
    """`profile` with the fitted values (provenance `key: text`); the rest untouched."""
    kernels = dict(profile.kernels)
    options = {f.split(":")[1] for f in fitted if f.startswith("rate:")}
    shared = {f.split(":")[1] for f in fitted if f.startswith("eff:") and f.count(":") == 1}
    for option in sorted(options):
        old = profile.kernels.get(option)
        if old is None:
            raise SpecError(f"calibration has kernel {option!r}, the profile has only "
                            f"{', '.join(profile.kernels)}")
        old_eff: dict[str, Count] = {str(c): v for c, v in old.op_efficiency.items()}
        new_eff = params.efficiency.get(option, {})
        fitted_classes = shared | {f.split(":")[2] for f in fitted
                                   if f.startswith(f"eff:{option}:")}
        eff: dict[str, Count] = {}
        for cls in sorted(set(old_eff) | fitted_classes):
            if cls in fitted_classes:
                eff[cls] = _sourced(Count, new_eff[cls], key, text)
            elif cls not in new_eff:
                continue  # the fit's reference class (factor 1): rated by macs_per_s itself
            elif abs(new_eff[cls] - old_eff[cls].value) > 1e-12:
                eff[cls] = _sourced(Count, new_eff[cls], "derived", (
                    f"spec value {old_eff[cls].value:g} ({old_eff[cls].provenance}) "
                    "re-expressed relative to the calibrated reference class; not itself "
                    "measured"))
            else:
                eff[cls] = old_eff[cls]
        kernels[option] = old.model_copy(update={
            "macs_per_s": _sourced(MacRate, f"{params.rates[option]:.10g}MAC/s", key, text),
            "op_efficiency": eff,
        })
    update: dict[str, Any] = {"kernels": kernels}
    if "overhead" in fitted:
        update["layer_overhead"] = _sourced(Millis, f"{params.layer_overhead_ms:.10g}ms",
                                            key, text)
    if "bandwidth" in fitted:
        update["memory_bandwidth"] = _sourced(Bandwidth, f"{params.bandwidth:.10g}B/s",
                                              key, text)
    if "run_overhead" in fitted:
        update["run_overhead"] = _sourced(Millis, f"{params.run_overhead_ms:.10g}ms", key, text)
    return profile.model_copy(update=update)


def apply_fit(profile: Profile, fit: FitResult) -> Profile:
    """A profile with a published-point fit applied (provenance `derived: calibrated ...`)."""
    if fit.params is None:
        return profile
    keys = sorted({r.source for r in fit.residuals if r.source})
    sources = f" ({', '.join(keys)})" if keys else ""
    loo = (f", leave-one-out MAPE {100 * fit.loo_mape:.1f} % on {len(fit.loo)} points"
           if fit.loo_mape is not None and len(fit.loo) else "")
    text = (f"calibrated: fitted on {fit.n_points} published points{sources} "
            f"({fit.message}); fit MAPE {100 * (fit.mape or 0):.1f} %{loo}")
    return _apply_params(profile, fit.params, fit.free, text, "derived")


MIN_LOO_POINTS = 3  # published points a fit must predict unseen before the planner uses it


def published_fit(spec: DeviceSpec, profile: str) -> FitResult | None:
    """The fit of the profile to its device's published measurements (the "fit" split of
    published_points.yaml), when it has earned its place: at least MIN_LOO_POINTS points
    predicted leave-one-out, with a leave-one-out MAPE below the catalog parameters' own
    error on the same points. None otherwise (the catalog values stay). Worked out once per
    spec and profile (a plan asks twice: its parameters and its error band)."""
    key = (hashlib.sha256(spec.model_dump_json().encode()).hexdigest(), profile)
    if key not in _PUBLISHED_FITS:
        _PUBLISHED_FITS[key] = _published_fit(spec, profile)
    return _PUBLISHED_FITS[key]


_PUBLISHED_FITS: dict[tuple[str, str], FitResult | None] = {}  # (spec digest, profile)


def _published_fit(spec: DeviceSpec, profile: str) -> FitResult | None:
    from cost_models.published import points

    prof = spec.profile(profile)
    usable = [p for p in points(spec.name, profile, "fit") if p.precision in prof.kernels]
    if len(usable) < MIN_LOO_POINTS:
        return None
    fit = fit_profile(usable, prof)
    if fit.params is None or len(fit.loo) < MIN_LOO_POINTS or fit.loo_mape is None or \
            fit.catalog_mape is None or fit.loo_mape >= fit.catalog_mape:
        return None
    return fit


def published_spec(spec: DeviceSpec, profile: str) -> DeviceSpec:
    """`spec` with `profile` fitted to its published points (:func:`published_fit`), or
    `spec` itself when the fit does not qualify."""
    fit = published_fit(spec, profile)
    if fit is None:
        return spec
    profiles = {**spec.profiles, profile: apply_fit(spec.profiles[profile], fit)}
    return spec.model_copy(update={"profiles": profiles})


# --------------------------------------------------------------------------------------------
# calibration from edgefit_measure JSON files


class CalibratedKernel(Strict):
    macs_per_s: float = Field(gt=0)
    op_efficiency: dict[str, float] = Field(default_factory=dict)


class CalibratedParameters(Strict):
    fitted: list[str] = Field(description="free parameters; every other number is the spec's")
    kernels: dict[str, CalibratedKernel]
    layer_overhead_ms: float = Field(ge=0)
    memory_bandwidth_bytes_per_s: float = Field(gt=0)
    run_overhead_ms: float = Field(ge=0)


class MeasurePoint(Strict):
    file: str
    sha256: str
    model: str  # the model path the board measured
    graph: str  # the layer graph's model name
    model_bytes: int | None = None
    layers: int
    fitted_layers: int
    options: list[str]
    latency_median_ms: float
    cpu_model: str | None = None
    onnxruntime: str | None = None
    threads: int | None = None
    timestamp: str | None = None


class LayerResidual(Strict):
    file: str
    layer: str
    op_class: str
    option: str
    macs: int
    measured_ms: float
    predicted_ms: float
    error: float
    fitted: bool


class EndToEndResidual(Strict):
    file: str
    measured_ms: float
    predicted_ms: float
    error: float


class HeldOutFile(Strict):
    file: str
    layers: int
    layer_mape: float | None
    end_to_end_error: float | None
    note: str | None = None


class Residuals(Strict):
    layers: list[LayerResidual]
    end_to_end: list[EndToEndResidual]
    summary: dict[str, float | int | str | None]
    leave_one_file_out: list[HeldOutFile] = Field(default_factory=list)


class CalibrationResult(Strict):
    format: Literal["edgefit-calibration"] = "edgefit-calibration"
    format_version: Literal[1] = 1
    device: str
    profile: str
    created: str
    method: str
    message: str
    parameters: CalibratedParameters
    points: list[MeasurePoint]
    residuals: Residuals

    def params(self, profile: Profile) -> Params:
        base = Params.of_profile(profile)
        eff = {k: dict(v) for k, v in base.efficiency.items()}
        rates = dict(base.rates)
        for option, k in self.parameters.kernels.items():
            rates[option] = k.macs_per_s
            eff[option] = dict(k.op_efficiency)
        return Params(rates, eff, self.parameters.layer_overhead_ms,
                      self.parameters.memory_bandwidth_bytes_per_s,
                      self.parameters.run_overhead_ms)

    def provenance(self) -> str:
        files = ", ".join(f"{Path(p.file).name} sha256:{p.sha256[:12]}" for p in self.points)
        s = self.residuals.summary
        mape = s.get("layer_mape")
        n = sum(p.fitted_layers for p in self.points)
        return (f"calibrated: fitted on {n} layers of {len(self.points)} measure file"
                f"{'s' if len(self.points) != 1 else ''} ({files}) on {self.created[:10]}; "
                f"layer MAPE {100 * float(mape):.1f} %" if isinstance(mape, float) else
                f"calibrated: fitted on {n} layers ({files})")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_measure_file(path: Path) -> dict[str, Any]:
    """An edgefit_measure JSON result, checked for its format; SpecError naming the file."""
    path = Path(path)
    data = read_json(path, "measure file")
    if not isinstance(data, dict) or data.get("format") != MEASURE_FORMAT:
        raise SpecError(f"{path}: not an edgefit-measure result (format "
                        f"{data.get('format') if isinstance(data, dict) else None!r})")
    if data.get("format_version") != MEASURE_FORMAT_VERSION:
        raise SpecError(f"{path}: format_version {data.get('format_version')!r} is not "
                        f"supported (this edgefit reads {MEASURE_FORMAT_VERSION})")
    for key in ("layers", "latency_ms", "model"):
        if not isinstance(data.get(key), dict):
            raise SpecError(f"{path}: missing or malformed {key!r}")
    if not isinstance(data["latency_ms"].get("median"), int | float):
        raise SpecError(f"{path}: latency_ms.median missing")
    return data


def charged_ops(graph: LayerGraph) -> dict[str, list[int]]:
    """Per layer, elements read + written by each non-layer op charged to it (as
    analytical's cost table does)."""
    out: dict[str, list[int]] = {name: [] for name in graph.layer_names}
    for s in graph.steps:
        if s.kind == "op" and s.owner is not None and s.owner in out:
            out[s.owner].append(graph.tensors[s.output].numel
                                + sum(graph.tensors[t].numel for t in s.inputs))
    return out


@dataclass
class _FileData:
    path: Path
    data: dict[str, Any]
    graph: LayerGraph
    points: list[FitPoint]  # every measured layer
    fit_mask: list[bool]


def _file_points(path: Path, data: dict[str, Any], graph: LayerGraph,
                 min_layer_us: float) -> _FileData:
    options = data["model"].get("options") or {}
    if not isinstance(options, dict):
        raise SpecError(f"{path}: model.options is not a mapping")
    known = set(graph.layer_names)
    missing = [name for name in data["layers"] if name not in known]
    if missing:
        raise SpecError(f"{path}: layers {', '.join(missing[:5])} are not in the layer graph "
                        f"{graph.model!r} (it has {', '.join(graph.layer_names[:5])}...)")
    charged = charged_ops(graph)
    pts, mask = [], []
    for name, entry in data["layers"].items():
        try:
            # the closed time (its share of the unprofiled run) where the file has one
            us = (1e3 * float(entry["closed_ms"]) if "closed_ms" in entry
                  else float(entry["calibrated_us"]))
        except (KeyError, TypeError, ValueError):
            raise SpecError(f"{path}: layers.{name}.calibrated_us missing") from None
        layer = graph.layer(name)
        option = str(options.get(name, "fp32"))
        pts.append(FitPoint(f"{path.name}:{name}", (layer,), option, max(us, 1e-3) / 1e3,
                            (tuple(charged[name]),), whole_network=False, model=graph.model))
        mask.append(us >= min_layer_us)
    return _FileData(path, data, graph, pts, mask)


def _measured_candidates(points: Sequence[FitPoint]) -> tuple[list[str], dict[str, str]]:
    """Free-parameter candidates for measured layers and the reference class per option."""
    macs: dict[str, dict[str, int]] = {}
    count: dict[tuple[str, str], int] = {}
    for p in points:
        layer = p.layers[0]
        macs.setdefault(p.option, {}).setdefault(layer.op_class, 0)
        macs[p.option][layer.op_class] += layer.macs
        count[(p.option, layer.op_class)] = count.get((p.option, layer.op_class), 0) + 1
    ref = {o: max(by, key=lambda c: (by[c], c)) for o, by in macs.items()}
    by_option = sorted(macs, key=lambda o: (-sum(macs[o].values()), o))
    cands = [f"rate:{o}" for o in by_option] + ["overhead"]
    for o in by_option:
        for c in sorted(macs[o], key=lambda c: -macs[o][c]):
            if c != ref[o] and count[(o, c)] >= 2 and macs[o][c] > 0:
                cands.append(f"eff:{o}:{c}")
    cands.append("bandwidth")
    return cands, ref


def _normalised(base: Params, ref: Mapping[str, str]) -> Params:
    """Same predictions, with each option's reference class at efficiency 1."""
    rates = dict(base.rates)
    eff = {k: dict(v) for k, v in base.efficiency.items()}
    for option, cls in ref.items():
        factor = eff.get(option, {}).get(cls, 1.0)
        if factor != 1.0:
            rates[option] *= factor
            eff[option] = {c: v / factor for c, v in eff[option].items() if c != cls}
    return Params(rates, eff, base.layer_overhead_ms, base.bandwidth, base.run_overhead_ms)


def _fit_layers(files: list[_FileData], profile: Profile,
                ) -> tuple[_Solved | None, list[FitPoint]]:
    train = [p for f in files for p, keep in zip(f.points, f.fit_mask, strict=True) if keep]
    if len(train) <= 1:
        return None, train
    cands, ref = _measured_candidates(train)
    base = _normalised(Params.of_profile(profile), ref)
    return _solve(_Features(train, profile), base, cands), train


def _run_overhead(files: list[_FileData], profile: Profile, params: Params) -> float:
    gaps = [float(f.data["latency_ms"]["median"])
            - float(_Features(f.points, profile).predict(params).sum()) for f in files]
    return max(0.0, float(np.median(gaps))) if gaps else 0.0


def graphs_from_onnx(models: Sequence[Path]) -> list[LayerGraph]:
    """Layer graphs of fp32 ONNX models (prepared or not), for :func:`calibrate`.

    For a file measured on a compressed model (`edgefit apply` output), give the model it was
    made from: layer names are kept by apply, and the file's `model.options` says which option
    each layer ran. Imports onnx (lazily).
    """
    from cost_models.capture_onnx import capture_onnx, prepare_onnx

    out = []
    with tempfile.TemporaryDirectory(prefix="edgefit-calibrate-") as tmp:
        for i, model in enumerate(models):
            copy = Path(tmp) / f"{i}.onnx"
            prepare_onnx(Path(model), copy)
            out.append(capture_onnx(copy, Path(model).stem))
    return out


def summary_lines(result: CalibrationResult) -> list[str]:
    """A few lines for the terminal: what was fitted, on what, and how well."""
    p, s = result.parameters, result.residuals.summary
    lines = [f"calibrated {result.device}/{result.profile}: {result.message}"]
    for option, k in p.kernels.items():
        eff = ", ".join(f"{c} x{v:.3g}" for c, v in k.op_efficiency.items())
        lines.append(f"  {option}: {k.macs_per_s / 1e9:.4g} GMAC/s" + (f" ({eff})" if eff
                                                                       else ""))
    lines.append(f"  layer overhead {p.layer_overhead_ms:.4g} ms, bandwidth "
                 f"{p.memory_bandwidth_bytes_per_s / 1e9:.4g} GB/s, run overhead "
                 f"{p.run_overhead_ms:.4g} ms")
    judged = s.get("layer_mape_ge_20us")
    lines.append(f"  per-layer MAPE {_fmt_pct(s.get('layer_mape'))} (layers >= "
                 f"{JUDGED_LAYER_US:g} µs: {_fmt_pct(judged)}), end-to-end MAPE "
                 f"{_fmt_pct(s.get('end_to_end_mape'))}")
    for h in result.residuals.leave_one_file_out:
        lines.append(f"  held out {h.file}: layer MAPE {_fmt_pct(h.layer_mape)}, end to end "
                     f"{_fmt_pct(h.end_to_end_error)}" + (f" ({h.note})" if h.note else ""))
    return lines


def _fmt_pct(x: object) -> str:
    return f"{100 * x:.1f} %" if isinstance(x, float) and not math.isnan(x) else "-"


def calibration_path(device: str, directory: Path | None = None) -> Path:
    from edgefit_common.paths import cache_dir

    return (directory or cache_dir()) / f"{device}.calibration.yaml"


def calibrate(device: str, measure_files: Sequence[Path], graphs: Sequence[LayerGraph], *,
              profile: str | None = None, out_dir: Path | None = None,
              min_layer_us: float = 5.0, write: bool = True) -> CalibrationResult:
    """Fit `device`'s profile to per-layer times of `edgefit_measure` JSON files.

    graphs[i] is the layer graph of the model measured in measure_files[i] (layer names as in
    the file, e.g. from :func:`cost_models.capture_onnx.capture_onnx`). A layer's option is
    the file's `model.options` entry (written by `edgefit apply`), else fp32. Layers faster
    than `min_layer_us` are not fitted (profiler granularity), but their residuals are
    reported. Writes `<out_dir or cache>/<device>.calibration.yaml` atomically unless
    `write` is False.
    """
    from cost_models.host_probe import target_spec

    if len(measure_files) != len(graphs):
        raise SpecError(f"{len(measure_files)} measure files but {len(graphs)} layer graphs: "
                        "give one graph per file")
    if not measure_files:
        raise SpecError("calibrate: no measure files given")
    spec = target_spec(device)
    profile_name = profile or spec.default_profile
    if profile_name not in spec.profiles:
        raise SpecError(f"profile {profile_name!r} is not a profile of {spec.name}; known: "
                        f"{', '.join(spec.profiles)}")
    prof = spec.profile(profile_name)
    files = [_file_points(Path(p), read_measure_file(Path(p)), g, min_layer_us)
             for p, g in zip(measure_files, graphs, strict=True)]
    for f in files:
        for p in f.points:
            if p.option not in prof.kernels:
                raise SpecError(f"{f.path}: layer {p.layers[0].name} ran {p.option!r}, which "
                                f"{spec.name}/{profile_name} has no kernel for")
    solved, train = _fit_layers(files, prof)
    if solved is None:
        raise SpecError(f"calibrate: {len(train)} layer{'s' if len(train) != 1 else ''} of "
                        f"at least {min_layer_us:g} µs in {len(files)} files: no fit")
    run_ovh = _run_overhead(files, prof, solved.params)
    params = Params(solved.params.rates, solved.params.efficiency,
                    solved.params.layer_overhead_ms, solved.params.bandwidth, run_ovh)
    fitted = [*solved.free, "run_overhead"]
    residuals = _calibration_residuals(files, prof, params)
    held_out = _leave_one_file_out(files, prof) if len(files) >= 2 else []
    options = sorted({f.split(":")[1] for f in solved.free if f.startswith("rate:")})
    result = CalibrationResult(
        device=spec.name, profile=profile_name,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        method="least squares on log per-layer latency (Levenberg-Marquardt, log parameters) "
               "of the analytical roofline (cost_models.analytical); run_overhead = median "
               "over files of end-to-end median minus the sum of predicted layers",
        message=f"{len(train)} layers fitted, {len(solved.free)} free parameters "
                f"({', '.join(solved.free)}), {len(train) - len(solved.free)} degrees of "
                "freedom",
        parameters=CalibratedParameters(
            fitted=fitted,
            kernels={o: CalibratedKernel(macs_per_s=params.rates[o],
                                         op_efficiency=dict(params.efficiency.get(o, {})))
                     for o in options},
            layer_overhead_ms=params.layer_overhead_ms,
            memory_bandwidth_bytes_per_s=params.bandwidth,
            run_overhead_ms=params.run_overhead_ms),
        points=[_measure_point(f) for f in files],
        residuals=Residuals(layers=residuals[0], end_to_end=residuals[1],
                            summary=residuals[2], leave_one_file_out=held_out),
    )
    if write:
        save_calibration(result, calibration_path(spec.name, out_dir))
    return result


def _measure_point(f: _FileData) -> MeasurePoint:
    host = f.data.get("host") or {}
    settings = f.data.get("settings") or {}
    return MeasurePoint(
        file=str(f.path), sha256=_sha256(f.path), model=str(f.data["model"].get("path", "")),
        graph=f.graph.model, model_bytes=f.data["model"].get("bytes"), layers=len(f.points),
        fitted_layers=sum(f.fit_mask), options=sorted({p.option for p in f.points}),
        latency_median_ms=float(f.data["latency_ms"]["median"]),
        cpu_model=host.get("cpu_model"), onnxruntime=host.get("onnxruntime"),
        threads=settings.get("threads"), timestamp=f.data.get("timestamp"))


def _calibration_residuals(files: list[_FileData], prof: Profile, params: Params,
                           ) -> tuple[list[LayerResidual], list[EndToEndResidual],
                                      dict[str, float | int | str | None]]:
    layers, e2e = [], []
    for f in files:
        pred = _Features(f.points, prof).predict(params)
        for p, pr, keep in zip(f.points, pred, f.fit_mask, strict=True):
            layers.append(LayerResidual(
                file=f.path.name, layer=p.layers[0].name, op_class=p.layers[0].op_class,
                option=p.option, macs=p.layers[0].macs, measured_ms=p.latency_ms,
                predicted_ms=float(pr), error=float(pr / p.latency_ms - 1), fitted=keep))
        meas = float(f.data["latency_ms"]["median"])
        total = float(pred.sum()) + params.run_overhead_ms
        e2e.append(EndToEndResidual(file=f.path.name, measured_ms=meas, predicted_ms=total,
                                    error=total / meas - 1 if meas > 0 else math.nan))
    fitted = [r.error for r in layers if r.fitted]
    judged = [r.error for r in layers if r.measured_ms * 1e3 >= JUDGED_LAYER_US]
    summary: dict[str, float | int | str | None] = {
        "layers": len(layers), "fitted_layers": len(fitted),
        "layer_mape": _mape(fitted),
        "layer_mape_ge_20us": _mape(judged), "layers_ge_20us": len(judged),
        "end_to_end_mape": _mape([r.error for r in e2e]),
        "note": "end-to-end of a single file is exact by construction (run_overhead absorbs "
                "the gap)" if len(files) == 1 else None,
    }
    return layers, e2e, summary


def _leave_one_file_out(files: list[_FileData], prof: Profile) -> list[HeldOutFile]:
    out = []
    for i, held in enumerate(files):
        rest = files[:i] + files[i + 1:]
        solved, _ = _fit_layers(rest, prof)
        name = held.path.name
        if solved is None:
            out.append(HeldOutFile(file=name, layers=len(held.points), layer_mape=None,
                                   end_to_end_error=None, note="the other files: no fit"))
            continue
        options = {f.split(":")[1] for f in solved.free if f.startswith("rate:")}
        usable = [p for p in held.points if p.option in options]
        if not usable:
            out.append(HeldOutFile(file=name, layers=len(held.points), layer_mape=None,
                                   end_to_end_error=None,
                                   note="its options were not measured in the other files"))
            continue
        params = Params(solved.params.rates, solved.params.efficiency,
                        solved.params.layer_overhead_ms, solved.params.bandwidth,
                        _run_overhead(rest, prof, solved.params))
        pred = _Features(usable, prof).predict(params)
        errs = [float(pr / p.latency_ms - 1) for p, pr in zip(usable, pred, strict=True)
                if p.latency_ms * 1e3 >= JUDGED_LAYER_US]
        e2e = None
        if len(usable) == len(held.points):
            meas = float(held.data["latency_ms"]["median"])
            e2e = (float(pred.sum()) + params.run_overhead_ms) / meas - 1
        out.append(HeldOutFile(file=name, layers=len(usable), layer_mape=_mape(errs),
                               end_to_end_error=e2e,
                               note=f"layer MAPE over layers >= {JUDGED_LAYER_US:g} µs"))
    return out


def save_calibration(result: CalibrationResult, path: Path) -> None:
    """Write atomically (temp file in the same directory + os.replace)."""
    text = ("# written by edgefit calibrate (cost_models/calibrate.py); do not edit by hand\n"
            + yaml.safe_dump(_plain(result.model_dump(mode="json")), sort_keys=False,
                             allow_unicode=True, width=100))
    atomic_write_text(path, text)


def _plain(obj: Any) -> Any:
    """JSON-mode dump with NaN turned into None (YAML readers differ on .nan)."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def read_calibration(path: Path) -> CalibrationResult:
    from edgefit_common.yamlio import read_yaml

    data, root = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping at the top level")
    if data.get("format") != CALIBRATION_FORMAT:
        raise SpecError(f"{path}: not an edgefit calibration file (format "
                        f"{data.get('format')!r})")
    if data.get("format_version") != CALIBRATION_FORMAT_VERSION:
        raise SpecError(f"{path}: format_version {data.get('format_version')!r} is not "
                        f"supported (this edgefit reads {CALIBRATION_FORMAT_VERSION})")
    return validate(data, CalibrationResult, path=path, root=root)


def load_calibration(device: str, directory: Path | None = None) -> CalibrationResult | None:
    """The stored calibration of `device` (catalog name), or None when there is none."""
    path = calibration_path(device, directory)
    if not path.exists():
        return None
    return read_calibration(path)


def apply_calibration(profile: Profile, calibration: CalibrationResult) -> Profile:
    """`profile` with the calibrated kernel rates / efficiencies / overhead / bandwidth /
    run overhead; provenance `measured: calibrated: fitted on N layers of ... (files)`."""
    for option in calibration.parameters.kernels:
        if option not in profile.kernels:
            raise SpecError(f"calibration of {calibration.device}/{calibration.profile} has "
                            f"kernel {option!r}; this profile has {', '.join(profile.kernels)}")
    fitted = list(calibration.parameters.fitted)
    # kernels listed in the file are fitted even if `fitted` names them only via rate:
    for option in calibration.parameters.kernels:
        if f"rate:{option}" not in fitted:
            fitted.append(f"rate:{option}")
    return _apply_params(profile, calibration.params(profile), fitted,
                         calibration.provenance(), "measured")


def calibrated_spec(spec: DeviceSpec, calibration: CalibrationResult) -> DeviceSpec:
    """`spec` with the calibrated profile swapped in (other profiles untouched)."""
    if calibration.device != spec.name:
        raise SpecError(f"calibration is for {calibration.device!r}, not {spec.name!r}")
    if calibration.profile not in spec.profiles:
        raise SpecError(f"calibration profile {calibration.profile!r} is not a profile of "
                        f"{spec.name}")
    profiles = dict(spec.profiles)
    profiles[calibration.profile] = apply_calibration(profiles[calibration.profile],
                                                      calibration)
    return spec.model_copy(update={"profiles": profiles})


__all__ = [
    "CalibrationResult", "FitPoint", "FitResult", "Params", "PointResidual",
    "apply_calibration", "apply_fit", "calibrate", "calibrated_spec", "calibration_path",
    "published_fit", "published_spec",
    "evaluate", "fit_profile", "graphs_from_onnx", "load_calibration", "predict_analytical",
    "read_calibration", "read_measure_file", "save_calibration", "summary_lines",
]
