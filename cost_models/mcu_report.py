"""The MCU latency fit's report (scripts/fit_mcu.py prints it; docs/cost-model-fit.md carries
it): per family the fitted parameters, in-sample, leave-one-model-out and leave-one-board-out
errors, the catalog's profiles before the fit on the same rows (through the planner's own
cost model, cost_models.analytical, on the models captured from workloads.mlperf_tiny), the
catalog now, the forms compared, and the one published MCU row of another board.

Imports torch (the capture); cost_models.mcu_fit does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from cost_models.graph import LayerGraph
from cost_models.mcu_fit import (
    CHOSEN,
    FORMS,
    OP_CLASSES,
    UNFITTED,
    BaselineProfile,
    FamilyFit,
    ModelFeatures,
    Residual,
    bound_from_literature,
    family_fits,
    fit,
    latency_ms,
    load_rows,
    residuals,
)
from device_specs.catalog import catalog_files, load_spec
from device_specs.quantities import Bandwidth, Count, MacRate, Millis
from device_specs.schema import DeviceSpec, Profile

COMMAND = ".venv/bin/python scripts/fit_mcu.py"  # benchmarks/fit_catalog.py writes it too
# the one published whole-network MCU latency outside the MLPerf Tiny rows (devices.md s.2c):
# TFLM (Arduino library) on the Nano 33 BLE, MobileNetV1-0.25 128x128x3, 11,512 ms (S-DEB)
ARDUINO_ROW = ("arduino-nano-33-ble", 64e6, "mobilenet_v1_0.25_128", 11512.0, "S-DEB")


@cache
def tiny_graph(key: str) -> LayerGraph:
    from cost_models.capture import capture
    from workloads.mlperf_tiny import TINY_MODELS, tiny_model

    return capture(tiny_model(key), TINY_MODELS[key].input_shape, key)


def graph_features(graph: LayerGraph) -> ModelFeatures:
    """MACs per op class and operators (weighted layers + the ops charged to them), as the
    data file stores them."""
    by_class = {c: sum(ly.macs for ly in graph.layers if ly.op_class == c) for c in OP_CLASSES}
    ops = len(graph.layers) + sum(1 for s in graph.steps if s.kind == "op" and s.owner)
    return ModelFeatures(published_macs=None, source="capture", macs_by_class=by_class, ops=ops)


def analytical_ms(graph: LayerGraph, spec: DeviceSpec, profile_name: str,
                  option: str = "int8") -> float:
    """The planner's latency for the whole graph at one kernel: the sum of its per-layer
    costs (cost_models.analytical) plus the run overhead."""
    from cost_models.analytical import build_cost_table

    table = build_cost_table(graph, spec, profile_name)
    per_layer = sum(next(c.latency_ms for c in row if c.option == option)
                    for row in table.options.values())
    return per_layer + table.run_overhead_ms


def scaled_spec(base: BaselineProfile, clock_hz: float) -> tuple[DeviceSpec, str]:
    """The baseline profile (catalog before the fit) on a board at ``clock_hz``: rate and
    bandwidth x clock ratio, per-layer overhead / clock ratio (what a user's clock-scaled
    device file did)."""
    spec = load_spec(base.device)
    ratio = clock_hz / (base.clock_mhz * 1e6)
    why = "baseline: catalog before the MCU fit, clock-scaled"
    profile: Profile = spec.profile(base.profile)
    rate = MacRate.model_construct(value=base.int8_macs_per_s * ratio, unverified=why)
    dw = Count.model_construct(value=base.depthwise, unverified=why)
    kernel = profile.kernels["int8"].model_copy(update={
        "macs_per_s": rate,
        "op_efficiency": {} if base.depthwise == 1.0 else {"depthwise": dw}})
    overhead = Millis.model_construct(value=base.layer_overhead_ms / ratio, unverified=why)
    bandwidth = Bandwidth.model_construct(value=base.bandwidth_bytes_per_s * ratio,
                                          unverified=why)
    profile = profile.model_copy(update={"kernels": {"int8": kernel},
                                         "layer_overhead": overhead,
                                         "memory_bandwidth": bandwidth})
    return spec.model_copy(update={"profiles": {base.profile: profile},
                                   "default_profile": base.profile}), base.profile


def baseline_ms(family: str, model: str, clock_hz: float) -> float:
    base = load_rows().baseline.profiles[family]  # type: ignore[index]
    spec, name = scaled_spec(base, clock_hz)
    return analytical_ms(tiny_graph(model), spec, name)


def catalog_profiles() -> dict[str, list[tuple[DeviceSpec, str]]]:
    """family -> the catalog's MCU profiles of that family (device, profile name)."""
    out: dict[str, list[tuple[DeviceSpec, str]]] = {}
    for path in catalog_files():
        spec = load_spec(path.stem)
        for name, profile in spec.profiles.items():
            if profile.runtime_family:
                out.setdefault(profile.runtime_family, []).append((spec, name))
    return out


# --------------------------------------------------------------------------------------------
# formatting


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f} %"


def apct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def ms(x: float | None) -> str:
    return "-" if x is None else (f"{x:.3g}" if x < 1000 else f"{x:.0f}")


def _err(pred: float | None, meas: float) -> str:
    return "-" if pred is None else f"{ms(pred)} ({pct(pred / meas - 1)})"


def _mape(pairs: Sequence[tuple[float, float]]) -> float:
    return sum(abs(p / m - 1) for p, m in pairs) / len(pairs)


def family_table(fits: dict[str, FamilyFit], res: Sequence[Residual]) -> list[str]:
    base = load_rows().baseline.profiles
    lines = ["| family | rows | boards (cores) | MAC/cycle | in-sample MAPE | "
             "leave-one-model-out MAPE (max) | leave-one-board-out MAPE | catalog before the "
             "fit: profile, MAPE on the rows |",
             "|---|---|---|---|---|---|---|---|"]
    for family, ff in fits.items():
        mine = [r for r in res if r.row.family == family]
        if ff.assumed_from:
            lines.append(f"| {family} | 0 | - | {ff.params.mac_per_cycle:.3f} (assumed = "
                         f"{ff.assumed_from}) | - | - | none: no published row | - |")
            continue
        b = base[family]  # type: ignore[index]
        before = _mape([(baseline_ms(family, r.row.model, r.row.clock_hz), r.row.latency_ms)
                        for r in mine])
        cores = ", ".join(f"{bd} ({c})" for bd, c in sorted({(r.row.board, r.row.core)
                                                              for r in mine}))
        lobo = apct(ff.lobo_mape) if ff.lobo_mape is not None else "not possible: one board"
        lines.append(f"| {family} | {ff.n_rows} | {cores} | {ff.params.mac_per_cycle:.3f} | "
                     f"{apct(ff.in_sample_mape)} | {apct(ff.lomo_mape)} ({apct(ff.lomo_max)}) "
                     f"| {lobo} | {b.device}/{b.profile} @{b.clock_mhz:g} MHz clock-scaled: "
                     f"{apct(before)} |")
    return lines


def rows_table(res: Sequence[Residual]) -> list[str]:
    lines = ["| board | core | runtime | round | model | published ms | source | fit ms "
             "(error) | leave-one-model-out ms | leave-one-board-out ms | catalog before ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res:
        row = r.row
        before = baseline_ms(row.family, row.model, row.clock_hz)
        lines.append(f"| {row.board} | {row.core} | {row.runtime} | {row.round} | {row.model} "
                     f"| {ms(row.latency_ms)} | {row.source} | "
                     f"{_err(r.in_sample_ms, row.latency_ms)} | "
                     f"{_err(r.lomo_ms, row.latency_ms)} | {_err(r.lobo_ms, row.latency_ms)} "
                     f"| {_err(before, row.latency_ms)} |")
    return lines


def forms_table() -> list[str]:
    rows = load_rows().rows
    lines = ["| form | free parameters | in-sample MAPE (36 rows) | leave-one-model-out MAPE "
             "(max) |", "|---|---|---|---|"]
    families = len({r.family for r in rows})
    for form in FORMS:
        res = residuals(form)
        n = families * len(form.per_family) + len(form.shared)
        ins = _mape([(r.in_sample_ms, r.row.latency_ms) for r in res])
        lomo = [abs(r.lomo_ms / r.row.latency_ms - 1) for r in res]
        mark = " (chosen)" if form == CHOSEN else ""
        lines.append(f"| {form.name}{mark} | {n} | {apct(ins)} | "
                     f"{apct(sum(lomo) / len(lomo))} ({apct(max(lomo))}) |")
    return lines


def fit_cores(fits: dict[str, FamilyFit], family: str) -> tuple[str, ...]:
    """The cores a family's parameters were fitted on (a stand-in family's, if assumed)."""
    ff = fits[family]
    return fits[ff.assumed_from].cores if ff.assumed_from else ff.cores


def catalog_now_table(fits: dict[str, FamilyFit]) -> list[str]:
    """Every catalog MCU profile on the MLPerf Tiny models through analytical, next to the
    family model at the board's clock (equal when the profile's rates are the fit's). The
    family model is not carried to another instruction set (Xtensa)."""
    lines = ["| device / profile | family (fitted on) | core | clock | " + " | ".join(
        f"{m} ms: catalog / family model" for m in ("kws", "ic", "vww", "ad")) + " |",
        "|---|---|---|---|---|---|---|---|"]
    feats = load_rows().models
    for family, entries in sorted(catalog_profiles().items()):
        for spec, name in entries:
            cores = fit_cores(fits, family) if family in fits else ()
            usable = bool(cores) and str(spec.core).startswith("cortex-m")
            cells = []
            for model in ("kws", "ic", "vww", "ad"):
                cat = analytical_ms(tiny_graph(model), spec, name)
                fam = (latency_ms(feats[model], fits[family].params, spec.clock.value)
                       if usable else None)
                cells.append(f"{ms(cat)} / {ms(fam)}")
            fitted_on = ", ".join(cores) if cores else "no MLPerf Tiny row"
            lines.append(f"| {spec.name} / {name} | {family} ({fitted_on}) | {spec.core} | "
                         f"{spec.clock.value / 1e6:g} MHz | " + " | ".join(cells) + " |")
    return lines


def arduino_check(fits: dict[str, FamilyFit]) -> list[str]:
    from cost_models.published import workload

    device, clock_hz, model, measured, source = ARDUINO_ROW
    wl = workload(model)
    feats = ModelFeatures(published_macs=None, source=source, macs_by_class={
        c: sum(ly.macs for ly in wl.layers if ly.op_class == c) for c in OP_CLASSES},
        ops=len(wl.layers) + 1)  # + the average pool
    pred = latency_ms(feats, fits["tflm-reference"].params, clock_hz)
    return [f"* **A board outside the fit set** ({device}, Cortex-M4 at 64 MHz; devices.md "
            f"s.2c, {source}): TFLM (Arduino library) runs MobileNetV1-0.25 at 128x128 "
            f"({wl.macs / 1e6:.2f} M MACs) in {measured:,.0f} ms; the tflm-reference family "
            f"model, clock-scaled, predicts {ms(pred)} ms ({pct(pred / measured - 1)}). The "
            "family model does not explain that row: either that library build ran slower "
            "kernels than TFLM v2.3.1's reference kernels on the L4R5 (weights in flash "
            "with wait states, an older TFLM, timing that includes more than the "
            "inference) or the row is not comparable; it is kept as the catalog's "
            "tflm-reference rate for that board (a measurement on that board) and reported "
            "here, not fitted."]


def shared_params(fits: dict[str, FamilyFit]) -> list[str]:
    p = next(iter(fits.values())).params
    lo, hi = bound_from_literature(fits["tflm-reference"].params)
    cmsis = fits[UNFITTED["tflm-cmsis-nn"]].params.mac_per_cycle
    ref = fits["tflm-reference"].params.mac_per_cycle
    return [
        f"* Shared by every family: depthwise efficiency {p.op_efficiency['depthwise']:.3f} "
        f"(a depthwise MAC costs {1 / p.op_efficiency['depthwise']:.2f}x a dense one), "
        f"overhead {p.overhead_cycles:,.0f} cycles per operator; conv, pointwise and linear "
        "efficiency fixed at 1 (4 models per board cannot separate them).",
        f"* **tflm-cmsis-nn has no MLPerf Tiny row.** Its rate is assumed equal to "
        f"microtvm-cmsis-nn's ({cmsis:.3f} MAC/cycle: the same CMSIS-NN kernels, called by "
        f"TFLM's interpreter instead of microTVM's generated code; UNVERIFIED), which is "
        f"{cmsis / ref:.2f}x the TFLM reference fit ({ref:.3f}). devices.md's literature "
        f"factor (optimised kernels 5-10x faster than reference, s.3, UNVERIFIED) would give "
        f"{lo:.2f}-{hi:.2f} MAC/cycle, above the vendor engines fitted here "
        f"({fits['vendor-engine'].params.mac_per_cycle:.2f}): the published rows contradict "
        "that factor, so it bounds nothing useful. Plans on a tflm-cmsis-nn profile have no "
        "held-out error (mcu_family_error returns None).",
    ]


def report_lines() -> list[str]:
    fits = family_fits()
    res = residuals()
    data = load_rows()
    return [
        "## MCU latency per runtime family (MLPerf Tiny)",
        "",
        f"Generated by `{COMMAND}` (also written by benchmarks/fit_catalog.py; "
        "cost_models/mcu_fit.py, cost_models/mcu_report.py, "
        "cost_models/mcu_published.yaml); deterministic, no timing of this machine.",
        "",
        f"**Data**: the {len(data.rows)} MLPerf Tiny rows of shared/reference/mcu-published.md "
        "(closed division, int8, batch 1; sources " + ", ".join(sorted(
            {r.source for r in data.rows})) + "), 3 boards, 4 models each (kws DS-CNN, ic "
        "ResNet-8, vww MobileNetV1-0.25, ad FC autoencoder with an UNVERIFIED topology), "
        "built in workloads/mlperf_tiny.py and captured by edgefit (MACs within 0.01 % of "
        "the published totals: tests/workloads/test_mlperf_tiny.py).",
        "",
        "**Model** (per family): `cycles = sum over layers of MACs / (mac_per_cycle[family] x "
        "op_efficiency[op class]) + overhead_cycles x operators`, `latency_ms = cycles / "
        "clock x 1e3`; operators = weighted layers + pooling / residual adds. It is the "
        "planner's roofline (cost_models/analytical.py) with rates in cycles; catalog "
        "profiles carry it as `macs_per_s = mac_per_cycle x clock`, `layer_overhead = "
        "overhead_cycles / clock`. Fitted by scipy's bounded least squares on log(predicted "
        "/ published).",
        "",
        "**Held out**: leave-one-model-out = every row of one model removed (all families), "
        "refitted, predicted; leave-one-board-out = a family's rows on one board removed, "
        "predicted from its other board (clock-scaled cycles). Only microtvm-cmsis-nn has "
        "two boards (Cortex-M4 STM32L4R5 at 120 MHz, Cortex-M33 nRF5340 at 128 MHz): one "
        "MAC/cycle is fitted for both cores, so its leave-one-board-out error includes the "
        "core difference. Every other family: one board, leave-one-board-out not possible. "
        "These are fit-set figures: no MCU board outside these rows has MLPerf Tiny data "
        "here, so accuracy on other boards and runtimes is not established.",
        "",
        *family_table(fits, res),
        "",
        "MAPE = mean |predicted / published - 1|. The baseline column predicts the same rows "
        f"with the catalog profiles as they were before this fit (commit "
        f"{data.baseline.commit}), clock-scaled to each row's board, through "
        "cost_models.analytical: the TFLM reference rows with arduino-nano-33-ble/"
        "tflm-reference, microTVM and X-CUBE-AI rows with arduino-nano-33-ble/tflm-cmsis-nn "
        "(the catalog's only optimised Cortex-M4 profile), the vendor engines with "
        "stm32f746-disco/tflm-cmsis-nn (same board).",
        "",
        *shared_params(fits),
        *arduino_check(fits),
        "",
        "### Forms compared",
        "",
        "The form was chosen on the leave-one-model-out column below, so the chosen form's "
        "figure is optimistic by that choice among five.",
        "",
        *forms_table(),
        "",
        "### Every row",
        "",
        *rows_table(res),
        "",
        "### The catalog's MCU profiles now, on the MLPerf Tiny models",
        "",
        "Through cost_models.analytical (what `plan` uses), int8 everywhere, next to the "
        "family model at the board's clock. Boards not in the fit set are clock-scaled from "
        "the family's fit (their files say so); tflm-esp-nn (ESP32-S3) has no MLPerf Tiny "
        "row and keeps its own published fit.",
        "",
        *catalog_now_table(fits),
    ]


def refit_count() -> int:
    """Fits run for one report (for the tests: the held-out folds are real refits)."""
    rows = load_rows().rows
    return 1 + len({r.model for r in rows}) + sum(
        len({r.board for r in rows if r.family == f}) for f in {r.family for r in rows}
        if len({r.board for r in rows if r.family == f}) > 1)


__all__ = ["fit", "report_lines", "refit_count"]
