"""Fit the analytical model's parameters to latencies: the least squares every calibration
runs (published points: :mod:`cost_models.published_fit`; `measure` files:
:mod:`cost_models.calibrate`).

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

Here: :class:`Params` (every number the roofline uses), :class:`FitPoint` (a latency to fit),
:class:`Features` (the vectorised predictor), :func:`solve` (the rule above),
:func:`levenberg_marquardt`, :func:`apply_params` (a Profile with fitted values).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np

from cost_models.analytical import activation_bytes, layer_flash_bytes, layer_latency_ms
from cost_models.graph import Layer
from cost_models.published import Workload
from device_specs.quantities import Bandwidth, Count, MacRate, Millis, Sourced
from device_specs.schema import Profile
from edgefit_common.errors import SpecError

S = TypeVar("S", bound=Sourced)

RANK_TOL = 1e-3  # smallest / largest singular value of the log-Jacobian below this: drop one
THETA_RANGE = 12.0  # a free parameter stays within e^-12 .. e^12 of the spec's value
MAX_SUBSETS = 64  # subsets of candidates tried when there are more than n - 1


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


class Features:
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
class Solved:
    free: list[str]
    params: Params
    cost: float  # sum of squared log residuals


def _fit_set(feats: Features, base: Params, names: list[str],
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


def _eliminate(feats: Features, base: Params, names: Sequence[str]) -> Solved | None:
    """Fit `names`; while the optimum leaves a parameter undetermined (rank-deficient
    Jacobian, or a parameter pinned at its range limit), drop it and fit again."""
    free = list(names)
    while free:
        theta, cost, jac, at_bound = _fit_set(feats, base, free)
        s = np.linalg.svd(jac, compute_uv=False)
        if s[-1] <= RANK_TOL * max(s[0], 1e-300) or at_bound.any():
            free.pop(_least_identified(jac, free, at_bound))
            continue
        return Solved(free, _with(base, free, np.exp(theta)), cost)
    return None


def solve(feats: Features, base: Params, candidates: Sequence[str]) -> Solved | None:
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
    best: Solved | None = None
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


def _starts(feats: Features, base: Params, names: list[str],
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


def mape_of(errors: Sequence[float]) -> float | None:
    """Mean absolute relative error (errors as predicted / measured - 1); None for none."""
    return float(np.mean(np.abs(errors))) if len(errors) else None


def _sourced(cls: type[S], value: float | str, key: str, text: str) -> S:
    return cls.model_validate({"value": value, key: text})


def apply_params(profile: Profile, params: Params, fitted: Sequence[str], text: str,
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
