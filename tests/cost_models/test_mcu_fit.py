"""The MCU latency model per runtime family (cost_models/mcu_fit.py): its data are the published
rows, its features the capture of the MLPerf Tiny models, its fit recovers known parameters,
its held-out predictions do not see the held-out rows, and the catalog profiles that cite it
reproduce it through the planner's own cost model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cost_models.mcu_fit import (
    CHOSEN,
    FORMS,
    FamilyParams,
    McuRow,
    estimate_cycles,
    family_fits,
    fit,
    latency_ms,
    load_rows,
    mcu_family_error,
    mcu_family_fit,
    predict,
    residuals,
)
from device_specs.catalog import catalog_files, load_spec

PUBLISHED_MD = Path(__file__).resolve().parents[3] / "shared" / "reference" / "mcu-published.md"


def _md_rows() -> list[tuple[str, float, str, str, str, float, str]]:
    rows = []
    for line in PUBLISHED_MD.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and re.fullmatch(r"S-TINY\d+", cells[8]):
            rows.append((cells[0], float(cells[1]), cells[3], cells[4], cells[5],
                         float(cells[6]), cells[8]))
    return rows


@pytest.mark.skipif(not PUBLISHED_MD.exists(), reason="shared/reference/mcu-published.md is "
                    "not beside this checkout")
def test_the_data_file_holds_every_published_row_unchanged() -> None:
    ours = [(r.board, r.clock_mhz, r.runtime, r.round, r.model, r.latency_ms, r.source)
            for r in load_rows().rows]
    assert ours == _md_rows()


def test_model_features_are_the_capture_of_the_reference_models() -> None:
    from cost_models.mcu_report import graph_features, tiny_graph

    for key, stored in load_rows().models.items():
        captured = graph_features(tiny_graph(key))
        assert captured.macs_by_class == stored.macs_by_class, key
        assert captured.ops == stored.ops, key


def test_cycles_are_the_named_terms() -> None:
    feats = load_rows().models["kws"]
    params = FamilyParams(mac_per_cycle=0.5, op_efficiency={"depthwise": 0.25},
                          overhead_cycles=1000.0)
    terms = estimate_cycles(feats, params)
    assert terms["compute_cycles.depthwise"] == pytest.approx(288_000 / 0.125)
    assert terms["compute_cycles.pointwise"] == pytest.approx(2_048_000 / 0.5)
    assert terms["overhead_cycles"] == 11 * 1000.0
    assert terms["cycles"] == pytest.approx(terms["compute_cycles"] + terms["overhead_cycles"])
    assert latency_ms(feats, params, 100e6) == pytest.approx(terms["cycles"] / 1e5)


def test_the_fit_recovers_known_parameters() -> None:
    truth = FamilyParams(mac_per_cycle=0.42, op_efficiency={"depthwise": 0.3},
                         overhead_cycles=9000.0)
    models = load_rows().models
    rows = [McuRow(board=b, clock_mhz=clk, core="cortex-m4", runtime="r", family="microtvm",
                   round="v1", model=m, source="S-TINY10",
                   latency_ms=latency_ms(models[m], truth, clk * 1e6))
            for b, clk in (("A", 80.0), ("B", 150.0)) for m in models]
    got = fit(rows).params["microtvm"]
    assert got.mac_per_cycle == pytest.approx(0.42, rel=1e-3)
    assert got.op_efficiency["depthwise"] == pytest.approx(0.3, rel=1e-3)
    assert got.overhead_cycles == pytest.approx(9000.0, rel=1e-2)


def test_a_held_out_prediction_does_not_see_its_row() -> None:
    rows = list(load_rows().rows)
    target = next(i for i, r in enumerate(rows) if r.family == "x-cube-ai" and r.model == "vww")
    before = next(r for r in residuals() if r.row is rows[target])
    # a held-out row 10x off changes the in-sample fit, not its own leave-one-model-out value
    changed = [r.model_copy(update={"latency_ms": r.latency_ms * 10}) if i == target else r
               for i, r in enumerate(rows)]
    after = next(r for r in residuals(rows=changed) if r.row is changed[target])
    assert after.lomo_ms == pytest.approx(before.lomo_ms, rel=1e-6)
    assert after.in_sample_ms != pytest.approx(before.in_sample_ms, rel=1e-3)


def test_leave_one_board_out_only_where_a_family_has_two_boards() -> None:
    fits = family_fits()
    assert fits["microtvm-cmsis-nn"].boards == ("STM32L4R5", "nRF5340")
    assert fits["microtvm-cmsis-nn"].lobo_mape is not None
    for family in ("tflm-reference", "microtvm", "x-cube-ai", "vendor-engine"):
        assert fits[family].lobo_mape is None and len(fits[family].boards) == 1
        assert "not possible" in fits[family].error_basis


def test_family_error_api() -> None:
    cmsis = mcu_family_fit("microtvm-cmsis-nn")
    assert cmsis is not None and mcu_family_error("microtvm-cmsis-nn") == cmsis.lobo_mape
    xcube = mcu_family_fit("x-cube-ai")
    assert xcube is not None and mcu_family_error("x-cube-ai") == xcube.lomo_mape
    assert mcu_family_error("tflm-cmsis-nn") is None  # no published row: assumed
    tflm = mcu_family_fit("tflm-cmsis-nn")
    assert tflm is not None and tflm.assumed_from == "microtvm-cmsis-nn"
    assert mcu_family_fit("tflm-esp-nn") is None and mcu_family_error("tflm-esp-nn") is None
    # which cores the error was established on: a Cortex-M7 x-cube-ai profile is clock-scaled
    assert xcube.fitted_on("cortex-m4") and not xcube.fitted_on("cortex-m7")
    assert tflm.fitted_on("cortex-m33") and not tflm.fitted_on("xtensa-lx7")


def test_the_chosen_form_is_the_best_held_out_of_those_compared() -> None:
    def lomo(form) -> float:  # type: ignore[no-untyped-def]
        res = residuals(form)
        return sum(abs(r.lomo_ms / r.row.latency_ms - 1) for r in res) / len(res)

    assert CHOSEN in FORMS
    assert lomo(CHOSEN) == min(lomo(f) for f in FORMS)


def test_parameters_stay_within_their_bounds_and_order_runtimes() -> None:
    fits = family_fits()
    rate = {f: ff.params.mac_per_cycle for f, ff in fits.items()}
    assert all(0.005 <= r <= 4.0 for r in rate.values())
    # what the published rows say, in the fit: reference < CMSIS-NN < X-CUBE-AI < vendor
    assert rate["tflm-reference"] < rate["microtvm-cmsis-nn"] < rate["x-cube-ai"] < rate[
        "vendor-engine"]


def test_catalog_profiles_citing_the_fit_reproduce_it_through_analytical() -> None:
    from cost_models.mcu_report import analytical_ms, tiny_graph

    checked = 0
    for path in catalog_files():
        spec = load_spec(path.stem)
        for name, profile in spec.profiles.items():
            int8 = profile.kernels.get("int8")
            family = profile.runtime_family
            if not (int8 and family and "scripts/fit_mcu.py" in int8.macs_per_s.provenance):
                continue
            params = family_fits()[family].params
            for model, feats in load_rows().models.items():
                catalog = analytical_ms(tiny_graph(model), spec, name)
                assert catalog == pytest.approx(latency_ms(feats, params, spec.clock.value),
                                                rel=0.02), (spec.name, name, model)
            checked += 1
    assert checked >= 6  # arduino, f746, l4r5 x3, h743 x2


def test_in_sample_prediction_matches_predict() -> None:
    full = fit(load_rows().rows)
    row = load_rows().rows[0]
    assert predict(full, row) == pytest.approx(
        next(r.in_sample_ms for r in residuals() if r.row is row))
