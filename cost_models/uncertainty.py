"""How far to trust a latency prediction: the error band of the model that made it.

For a catalog device the band is the error of the catalog's analytical model on the published
measurements of that device and profile (cost_models/published_points.yaml), or, where the
planner runs the parameters fitted to those measurements, the fit's leave-one-out error; with
fewer than two points there is no band, and the plan says so instead of pretending to one.

An MCU profile that names its runtime family (`runtime_family`) and runs the catalog's fitted
rates gets that family's held-out error on the published MLPerf Tiny rows
(cost_models/mcu_fit.py: leave-one-board-out where the family has rows on two boards, else
leave-one-model-out), and says whether a published row backs this board and core at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from device_specs.schema import DeviceSpec


@dataclass(frozen=True)
class Band:
    fraction: float | None  # typical relative error (MAPE); None = unknown
    text: str
    # a published measurement of this board and runtime backs the model (False: the parameters
    # are assumed, clock-scaled or borrowed; None: not judged)
    backed: bool | None = None


def latency_band(spec: DeviceSpec, profile: str, provenance: str) -> Band:
    """The band of the board's own published measurements where there are two or more, else
    (an MCU runtime family) the family's error on the MLPerf Tiny rows, else unknown."""
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
                        "(docs/cost-model-fit.md)", True)
    published = points(spec.name, profile)
    usable = [p for p in published if p.precision in spec.profile(profile).kernels]
    family = spec.profile(profile).runtime_family
    if len(usable) < 2:
        band = (mcu_band(spec, family) if family is not None and "calibrated: " not in provenance
                else None)
        return band or Band(None, f"unknown: {len(usable)} published measurement(s) for "
                                  f"{spec.name}/{profile}, too few to judge the model", False)
    fit = fit_profile(usable, spec.profile(profile), loo=False)
    mape = fit.catalog_mape
    if mape is None:
        return Band(None, "unknown: the published points could not be evaluated")
    source = "calibrated parameters" if "calibrated" in provenance else "catalog parameters"
    return Band(mape, f"±{100 * mape:.0f} % typical error of the {source}' model against "
                      f"{len(usable)} published whole-network measurements "
                      "(docs/cost-model-fit.md)", True)


def _board_key(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def mcu_band(spec: DeviceSpec, family: str) -> Band | None:
    """The runtime family's held-out error on the MLPerf Tiny rows, and how far this board is
    from them (the same board, the same core type clock-scaled, or another core type); None
    for a family the rows say nothing about (the device's own published points decide)."""
    from cost_models.mcu_fit import mcu_family_fit

    fit = mcu_family_fit(family)
    if fit is None:
        return None
    if fit.held_out_error is None:
        stand_in = mcu_family_fit(fit.assumed_from or "")
        err = None if stand_in is None else stand_in.held_out_error
        shown = "" if err is None else f" (whose held-out error is ±{100 * err:.0f} %)"
        return Band(err, f"not backed by a published measurement: no MLPerf Tiny row for "
                         f"{family}; its parameters are those of {fit.assumed_from}{shown}, "
                         "an assumption; calibrate with a timing file (docs/calibrate.md)",
                    False)
    board = _board_key(f"{spec.name} {spec.board}")
    on_board = any(_board_key(b) in board for b in fit.boards)
    core = spec.core
    where = ("this board is in the fit set" if on_board else
             f"this board is not in the fit set: clock-scaled from {', '.join(fit.boards)}"
             + ("" if core is None or core in fit.cores else
                f" ({', '.join(fit.cores)}) to a {core}, another core type"))
    return Band(fit.held_out_error,
                f"±{100 * fit.held_out_error:.0f} % {fit.error_basis} error of the {family} "
                f"model fitted on {fit.n_rows} published MLPerf Tiny rows "
                f"({', '.join(fit.sources)}; docs/cost-model-fit.md); {where}", on_board)
