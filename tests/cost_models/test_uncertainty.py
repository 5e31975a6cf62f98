"""How far a latency prediction is trusted (cost_models.uncertainty): the board's own published
measurements first, then an MCU runtime family's held-out error on the MLPerf Tiny rows (issue
#17 item 5), and whether a published measurement backs this board at all."""

from __future__ import annotations

import pytest

from cost_models.mcu_fit import mcu_family_fit
from cost_models.uncertainty import latency_band
from device_specs.catalog import catalog_names, load_spec


def test_a_board_in_the_fit_set_gets_its_family_held_out_error_and_is_backed() -> None:
    spec = load_spec("stm32l4r5-nucleo")
    band = latency_band(spec, "x-cube-ai", "")
    fit = mcu_family_fit("x-cube-ai")
    assert fit is not None and fit.held_out_error is not None
    assert band.fraction == fit.held_out_error and band.backed is True
    assert "leave-one-model-out" in band.text and "in the fit set" in band.text


def test_another_core_type_is_said_to_be_clock_scaled_and_not_backed() -> None:
    band = latency_band(load_spec("stm32h743"), "x-cube-ai", "")
    assert band.backed is False and band.fraction is not None
    assert "not in the fit set" in band.text and "cortex-m7, another core type" in band.text


def test_a_family_without_rows_says_its_parameters_are_assumed() -> None:
    band = latency_band(load_spec("stm32f746-disco"), "tflm-cmsis-nn", "")
    stand_in = mcu_family_fit("microtvm-cmsis-nn")
    assert stand_in is not None
    assert band.backed is False and band.fraction == stand_in.held_out_error
    assert band.text.startswith("not backed by a published measurement")


def test_the_boards_own_measurements_come_before_the_family_fit() -> None:
    band = latency_band(load_spec("esp32-s3"), "tflm-reference", "")
    assert band.backed is True and "3 published whole-network measurements" in band.text


def test_a_user_calibration_is_not_judged_by_the_family_fit() -> None:
    band = latency_band(load_spec("stm32f746-disco"), "tflm-cmsis-nn",
                        "analytical roofline: int8 (measured: calibrated: fitted on 9 layers)")
    assert "MLPerf Tiny" not in band.text and band.fraction is None


@pytest.mark.parametrize("name", [n for n in catalog_names() if n != "host"])
def test_every_mcu_profile_with_a_family_gets_a_band_or_says_why_not(name: str) -> None:
    spec = load_spec(name)
    for profile, prof in spec.profiles.items():
        band = latency_band(spec, profile, "")
        if prof.runtime_family is not None:
            assert band.backed is not None, (name, profile)
            assert band.fraction is not None or band.text.startswith("unknown"), band.text
