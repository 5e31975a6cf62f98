"""`edgefit devices` says, per device and profile, what the published points support."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

import edgefit.report as report
from cost_models.published import points
from cost_models.published_fit import fit_profile
from device_specs.catalog import load_spec


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFIT_CACHE", str(tmp_path / "cache"))


def _text(device: str, profile: str) -> str:
    return report.evidence_text(device, profile, load_spec(device).profile(profile))


def test_no_points_and_one_point_say_so() -> None:
    assert not points("arduino-nano-33-ble", "tflm-cmsis-nn")
    assert _text("arduino-nano-33-ble", "tflm-cmsis-nn") == (
        "no published points of this board; tflm-cmsis-nn: no MLPerf Tiny row, "
        "parameters assumed from microtvm-cmsis-nn (±20 % held out there)")
    assert len(points("arduino-nano-33-ble", "tflm-reference", "fit")) == 1
    assert _text("arduino-nano-33-ble", "tflm-reference") == (
        "1 point: no fit error; tflm-reference fit: ±28 % leave-one-model-out on 4 MLPerf Tiny "
        "rows (clock-scaled)")
    assert _text("stm32l4r5-nucleo", "x-cube-ai").endswith(
        "x-cube-ai fit: ±33 % leave-one-model-out on 8 MLPerf Tiny rows (this board in them)")


def test_two_points_claim_no_leave_one_out() -> None:
    aside = len(points("coral-dev-board", "edgetpu", "aside"))
    assert len(points("coral-dev-board", "edgetpu", "fit")) == 2 and aside
    assert _text("coral-dev-board", "edgetpu") == (
        "2 points: fitted, too few for a leave-one-out error; "
        f"{aside} more kept aside as a test")


def test_leave_one_out_error_is_the_fits() -> None:
    spec = load_spec("esp32-s3")
    fit = fit_profile(points("esp32-s3", "esp-nn", "fit"), spec.profile("esp-nn"))
    assert fit.loo_mape is not None and len(fit.loo) >= 1
    assert _text("esp32-s3", "esp-nn") == (
        f"{fit.n_points} points: leave-one-out error {100 * fit.loo_mape:.0f} % "
        f"({len(fit.loo)} of {fit.n_points} predicted)")


def test_table_has_every_profile_and_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    import device_specs.catalog as catalog

    names = ["arduino-nano-33-ble", "coral-dev-board", "host"]
    monkeypatch.setattr(catalog, "catalog_names", lambda: names)
    con = Console(record=True, width=400)
    report.print_devices(con)
    out = con.export_text()
    assert "tflm-cmsis-nn: no published points of this board; tflm-cmsis-nn: no MLPerf" in out
    assert "tflm-reference: 1 point: no fit error; tflm-reference fit" in out
    assert "edgetpu: 2 points: fitted, too few for a leave-one-out error" in out
    assert "probed on this machine" in out
    calls: list[str] = []

    def counting(device: str, *_: object) -> str:
        calls.append(device)
        return "x"

    monkeypatch.setattr(report, "evidence_text", counting)
    assert report.published_evidence(load_spec("coral-dev-board"))["edgetpu"].startswith("2 ")
    assert calls == []  # read from the cache written by the first call
