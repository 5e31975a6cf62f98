"""The published-point fit: a profile's parameters fitted (:mod:`cost_models.fit`) to the
whole-network latencies of published_points.yaml.

* :func:`fit_profile` (published points or :class:`~cost_models.fit.FitPoint`) ->
  :class:`FitResult`, with residuals and leave-one-out error when there are >= 3 points;
  :func:`evaluate` for points kept aside; :func:`apply_fit` -> a Profile with the fitted values.
* :func:`published_fit`, :func:`published_spec`: the fit the planner uses, when it has earned its
  place.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from cost_models.fit import (
    Features,
    FitPoint,
    Params,
    Solved,
    apply_params,
    mape_of,
    predict_analytical,
    solve,
)
from cost_models.graph import Layer
from cost_models.published import PublishedPoint, workload
from device_specs.schema import DeviceSpec, Profile
from edgefit_common.errors import SpecError

MEMORY_BOUND_SHARE = 0.5  # published fits free the bandwidth above this median share


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
        return mape_of([r.error for r in self.residuals]) if self.params else None

    @property
    def catalog_mape(self) -> float | None:
        return mape_of([r.catalog_error for r in self.residuals])

    @property
    def loo(self) -> list[float]:
        return [e for r in self.residuals if (e := r.loo_error) is not None]

    @property
    def loo_mape(self) -> float | None:
        return mape_of(self.loo) if self.n_points >= 3 else None


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
                loo_ms[i] = float(Features([pts[i]], profile).predict(fold.params)[0])
    if solved is None:
        return FitResult("no fit", f"{n} {word}: under-determined, no fit", n, [], None,
                         catalog, _residuals(pts, profile, None, loo_ms))
    k = len(solved.free)
    msg = f"{n} {word}, {k} free ({', '.join(solved.free)}), {n - k} degrees of freedom"
    return FitResult("fit", msg, n, solved.free, solved.params, catalog,
                     _residuals(pts, profile, solved.params, loo_ms))


def _residuals(pts: list[FitPoint], profile: Profile, params: Params | None,
               loo_ms: Sequence[float | None]) -> list[PointResidual]:
    pred = Features(pts, profile).predict(params) if (params and pts) else None
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


def _solve_published(pts: list[FitPoint], profile: Profile, base: Params) -> Solved | None:
    """Rates, overhead, class efficiencies; the bandwidth too when the points are mostly
    memory-bound under the spec's values (its bandwidth then decides the prediction)."""
    feats = Features(pts, profile)
    cands = _published_candidates(pts)
    if float(np.median(feats.memory_share(base))) >= MEMORY_BOUND_SHARE:
        cands.append("bandwidth")
    return solve(feats, base, cands)


def _class_share(layers: Sequence[Layer], cls: str) -> float:
    total = sum(layer.macs for layer in layers)
    return sum(layer.macs for layer in layers if layer.op_class == cls) / total if total else 0.0


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
    return apply_params(profile, fit.params, fit.free, text, "derived")


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
