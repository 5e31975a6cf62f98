"""Fit the analytical cost model of every catalog device to the published latencies.

    .venv/bin/python benchmarks/fit_catalog.py [--out docs/cost-model-fit.md]

For every catalog device and profile: the points of cost_models/published_points.yaml marked
`fit` are fitted (cost_models.published_fit.fit_profile), the points marked `aside` are predicted
with the fitted parameters; both are also predicted with the CURRENT catalog parameters
(uncalibrated, through cost_models.analytical), so the tables show before / after. Writes the
report (markdown) and prints it. No timing of this machine is involved: the numbers are
deterministic functions of the catalog and the published points.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cost_models.fit import Params
from cost_models.mcu_report import report_lines as mcu_report_lines
from cost_models.published import (
    POINTS_FILE,
    PublishedPoint,
    load_points_file,
    models_summary_yaml,
    points,
)
from cost_models.published_fit import FitResult, PointResidual, evaluate, fit_profile
from device_specs.catalog import catalog_files, load_spec
from device_specs.schema import Profile
from edgefit_common.fsutil import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "cost-model-fit.md"
COMMAND = ".venv/bin/python benchmarks/fit_catalog.py"


def pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if x < 1000 else f"{x:.0f}"


def rate(x: float) -> str:
    for unit, f in (("TMAC/s", 1e12), ("GMAC/s", 1e9), ("MMAC/s", 1e6)):
        if x >= f:
            return f"{x / f:.3g} {unit}"
    return f"{x:.3g} MAC/s"


def mape(res: Sequence[PointResidual], which: str) -> float | None:
    errs = [getattr(r, which) for r in res]
    errs = [e for e in errs if e is not None]
    return float(np.mean(np.abs(errs))) if errs else None


def rms_log(res: Sequence[PointResidual], which: str) -> float | None:
    vals = [getattr(r, which) for r in res]
    logs = [math.log(v / r.measured_ms) for v, r in zip(vals, res, strict=True)]
    return math.sqrt(float(np.mean(np.square(logs)))) if logs else None


def circular_sources(profile: Profile, pts: Sequence[PublishedPoint]) -> list[str]:
    """Source keys of these points that the catalog's rates / overhead already cite."""
    texts = " ".join([k.macs_per_s.provenance for k in profile.kernels.values()]
                     + [profile.layer_overhead.provenance])
    return sorted({p.source for p in pts if p.source in texts})


class Row:
    def __init__(self, device: str, profile_name: str, profile: Profile) -> None:
        self.device, self.profile_name, self.profile = device, profile_name, profile
        self.fit_points = points(device, profile_name, "fit")
        self.aside_points = points(device, profile_name, "aside")
        self.fit: FitResult = fit_profile(self.fit_points, profile)
        self.aside: list[PointResidual] = evaluate(self.aside_points, profile, self.fit.params)
        self.circular = circular_sources(profile, [*self.fit_points, *self.aside_points])


def summary_table(rows: list[Row]) -> list[str]:
    out = ["| device / profile | fit points | free parameters | fit MAPE catalog -> fitted | "
           "RMS log error catalog -> fitted | leave-one-out MAPE | aside points | aside MAPE "
           "catalog -> fitted |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r.fit
        n = f.n_points
        if f.params is None:
            free = f"**{f.message}**" if n else "**0 points: no fit**"
        else:
            free = ", ".join(f.free) + f" ({n - len(f.free)} dof)"
        fit_mape = (f"{pct(f.catalog_mape)} -> {pct(f.mape)}" if f.params else
                    f"{pct(f.catalog_mape)} -> (no fit)" if n else "-")
        rms = (f"{rms_log(f.residuals, 'catalog_ms'):.3f} -> "
               f"{rms_log(f.residuals, 'predicted_ms'):.3f}" if f.params else
               (f"{rms_log(f.residuals, 'catalog_ms'):.3f}" if n else "-"))
        if n >= 3:
            loo = f"{pct(f.loo_mape)} ({len(f.loo)} of {n} predictable)"
        else:
            loo = f"- ({n} point{'s' if n != 1 else ''}: needs >= 3)"
        aside = (f"{pct(mape(r.aside, 'catalog_error'))} -> "
                 f"{pct(mape(r.aside, 'error')) if f.params else '(no fit)'}"
                 if r.aside else "-")
        out.append(f"| {r.device} / {r.profile_name} | {n} | {free} | {fit_mape} | {rms} | "
                   f"{loo} | {len(r.aside)} | {aside} |")
    return out


def params_table(rows: list[Row]) -> list[str]:
    out = ["| device / profile | parameter | catalog | fitted |", "|---|---|---|---|"]
    for r in rows:
        if r.fit.params is None:
            continue
        cat, fit = r.fit.catalog, r.fit.params
        opts = sorted({p.precision for p in r.fit_points})
        for name in r.fit.free:
            out.append(f"| {r.device} / {r.profile_name} | {name} | {_param(cat, name, opts)} "
                       f"| {_param(fit, name, opts)} |")
    return out


def _param(p: Params, name: str, options: Sequence[str]) -> str:
    parts = name.split(":")
    if parts[0] == "rate":
        return rate(p.rates[parts[1]])
    if parts[0] == "eff" and len(parts) == 2:
        vals = sorted({f"{p.efficiency.get(o, {}).get(parts[1], 1.0):.3g}" for o in options})
        return " / ".join(vals)
    if parts[0] == "eff":
        return f"{p.efficiency.get(parts[1], {}).get(parts[2], 1.0):.3g}"
    if name == "overhead":
        return f"{p.layer_overhead_ms:.3g} ms/layer"
    if name == "bandwidth":
        return f"{p.bandwidth / 1e9:.3g} GB/s"
    return "?"


def points_table(rows: list[Row]) -> list[str]:
    out = ["| device / profile | model | precision | source | use | measured ms | catalog ms "
           "(error) | fitted ms (error) | leave-one-out ms (error) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for res, use in [(x, "fit") for x in r.fit.residuals] + [(x, "aside") for x in r.aside]:
            fitted = (f"{ms(res.predicted_ms)} ({pct(res.error)})" if r.fit.params else "-")
            loo = (f"{ms(res.loo_ms)} ({pct(res.loo_error)})" if res.loo_ms is not None
                   else "-")
            out.append(f"| {r.device} / {r.profile_name} | {res.model} | {res.option} | "
                       f"{res.source} | {use} | {ms(res.measured_ms)} | "
                       f"{ms(res.catalog_ms)} ({pct(res.catalog_error)}) | {fitted} | {loo} |")
    return out


def macs_table() -> list[str]:
    data = load_points_file()
    computed = models_summary_yaml()
    out = ["| model | enumerated MACs | published | difference | conv / pointwise / depthwise / "
           "linear | params | layers |", "|---|---|---|---|---|---|---|"]
    for name, m in data.models.items():
        s = computed[name]
        by = s["macs_by_class"]
        split = " / ".join(f"{100 * by[c] / s['macs']:.1f} %" for c in
                           ("conv", "pointwise", "depthwise", "linear"))
        pub = m.published_macs
        diff = pct(s["macs"] / pub.value - 1) if pub else "-"
        pub_text = (f"{pub.value / 1e6:.4g} M ({pub.source or pub.derived})" if pub else
                    "(none published)")
        out.append(f"| {name} | {s['macs'] / 1e6:.4g} M | {pub_text} | {diff} | {split} | "
                   f"{s['params'] / 1e6:.3g} M | {s['layers']} |")
    return out


def report(rows: list[Row]) -> str:
    data = load_points_file()
    lines = [
        "# Cost-model fit to published latencies",
        "",
        f"Generated by `{COMMAND}` (cost_models/published_fit.py, {POINTS_FILE.name}); rerun to "
        "regenerate. Deterministic: no timing of this machine is involved.",
        "",
        "**Model**: the planner's per-layer roofline (`cost_models/analytical.py`), per layer "
        "`layer_overhead + max(MACs / (macs_per_s[precision] x efficiency[op class]), bytes / "
        "bandwidth)`, summed over the network's conv/linear layers as enumerated in "
        "`cost_models/published.py` (MAC totals checked below). **Catalog** = the current "
        "`device_specs/catalog/*.yaml` values, uncalibrated. **Fitted** = least squares on log "
        "latency; free parameters chosen by the rule in `cost_models/fit.py` (at most "
        "n - 1 for n points, only what the points determine; everything else keeps the "
        "catalog value). MAPE = mean |predicted / measured - 1|; the fit minimises the RMS log "
        "error, which can rise MAPE on a few points while lowering its own objective.",
        "",
        f"**Split** ({POINTS_FILE.name}): {data.rule}",
        "",
        "**Leave-one-out**: each point is predicted by the same rule fitted on the other "
        "points; a point counts only if that fold fitted the rate of the point's precision "
        "(otherwise the prediction would fall back to a catalog rate that was often derived "
        "from that very point).",
        "",
        "## Per device and profile",
        "",
        *summary_table(rows),
        "",
    ]
    circ = [r for r in rows if r.circular]
    if circ:
        lines += ["Catalog rates that already cite a source among these points (so the catalog "
                  "column is not independent of them either): "
                  + "; ".join(f"{r.device}/{r.profile_name}: {', '.join(r.circular)}"
                              for r in circ) + ".", ""]
    lines += [
        "Reading the table (caveats about the data, independent of this run's numbers):",
        "",
        "* Kept-aside rows often come from another runtime or thread count than the rows the "
        "profile is fitted on (ncnn 1 thread vs TFLite on the Jetson Nano CPU; MLPerf's "
        "TFLite 2.2 ruy on 32-bit Raspbian vs DeepEdgeBench's TFLite on the Pi 4; the Coral "
        "table vs DeepEdgeBench's Dev Board). A large aside error there measures a runtime "
        "difference the profile does not model, not only a fitting error.",
        "* ncnn runs 3x3 convolutions with Winograd, so its effective MAC/s on ResNets can "
        "exceed the cores' multiply-accumulate peak.",
        "* The Edge TPU profile's memory bandwidth is an UNVERIFIED stand-in (devices.md has "
        "none); the roofline has no on-chip parameter cache, so ResNet-50 (weights streamed) "
        "and cached MobileNets are predicted by the same formula.",
        "* YOLOX-S (S-AIC) is assumed at 640x640 (UNVERIFIED; devices.md does not say).",
        "* With 2-3 points and 1 degree of freedom a low fit error says little; the "
        "leave-one-out column (>= 3 points) and the kept-aside column are the tests.",
        "",
        "## Fitted parameters", "", *params_table(rows), "",
              "## Every point", "", *points_table(rows), "",
              "## Workloads: enumerated MACs against published totals", "", *macs_table(), "",
              "## Rows of devices.md not used", "",
              "| device | row | source | reason |", "|---|---|---|---|"]
    lines += [f"| {e.device} | {e.row} | {e.source} | {e.reason} |" for e in data.excluded]
    # the MCU fit per runtime family (MLPerf Tiny rows): its own section, also printed by
    # scripts/fit_mcu.py
    lines += ["", *mcu_report_lines()]
    return "\n".join(lines) + "\n"


def all_rows() -> list[Row]:
    rows = []
    for path in catalog_files():
        spec = load_spec(path.stem)
        for name, profile in spec.profiles.items():
            rows.append(Row(spec.name, name, profile))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown report")
    args = parser.parse_args(argv)
    text = report(all_rows())
    atomic_write_text(args.out, text)
    sys.stdout.write(text)
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
