"""How far to trust a latency prediction: the error band of the model that made it.

For a catalog device the band is the error of the catalog's analytical model on the published
measurements of that device and profile (cost_models/published_points.yaml), or, where the
planner runs the parameters fitted to those measurements, the fit's leave-one-out error; with
fewer than two points there is no band, and the plan says so instead of pretending to one.
"""

from __future__ import annotations

from dataclasses import dataclass

from device_specs.schema import DeviceSpec


@dataclass(frozen=True)
class Band:
    fraction: float | None  # typical relative error (MAPE); None = unknown
    text: str


def latency_band(spec: DeviceSpec, profile: str, provenance: str) -> Band:
    if provenance.startswith("measured on this host"):
        return Band(None, "measured on this host (per-layer medians; run-to-run noise only)")
    from cost_models.published import points
    from cost_models.published_fit import fit_profile, published_fit

    if "published points" in provenance:  # the planner runs the published fit's parameters
        from cost_models.host_probe import target_spec

        fit = published_fit(target_spec(spec.name), profile)
        if fit is not None and fit.loo_mape is not None:
            return Band(fit.loo_mape, f"±{100 * fit.loo_mape:.0f} % leave-one-out error of the "
                        f"model fitted to {fit.n_points} published whole-network measurements "
                        "(docs/cost-model-fit.md)")
    published = points(spec.name, profile)
    usable = [p for p in published if p.precision in spec.profile(profile).kernels]
    if len(usable) < 2:
        return Band(None, f"unknown: {len(usable)} published measurement(s) for "
                          f"{spec.name}/{profile}, too few to judge the model")
    fit = fit_profile(usable, spec.profile(profile), loo=False)
    mape = fit.catalog_mape
    if mape is None:
        return Band(None, "unknown: the published points could not be evaluated")
    source = "calibrated parameters" if "calibrated" in provenance else "catalog parameters"
    return Band(mape, f"±{100 * mape:.0f} % typical error of the {source}' model against "
                      f"{len(usable)} published whole-network measurements "
                      "(docs/cost-model-fit.md)")
