"""The measure -> calibrate -> plan loop: a plan for a calibrated device says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefit.cli import _run, app


def test_measure_calibrate_then_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str],
                                     lenet5_plan_factory) -> None:
    from cost_models.export import export_fp32
    from workloads.train import pretrained

    model = pretrained("lenet5-mnist").model
    onnx_path = tmp_path / "lenet5.onnx"
    export_fp32(model, (1, 28, 28), onnx_path)
    files = []
    for i in range(2):
        out = tmp_path / f"m{i}.json"
        assert _run(app, ["measure", str(onnx_path), "--runs", "30", "--out", str(out)]) == 0
        files.append(str(out))
    # calibrations live in the cache dir; point it at tmp so the real cache is untouched
    import edgefit_common.paths

    monkeypatch.setattr(edgefit_common.paths, "cache_dir", lambda: tmp_path)
    code = _run(app, ["calibrate", *files, "--device", "raspberry-pi-4", "--model",
                      str(onnx_path), "--min-layer-us", "0"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "raspberry-pi-4.calibration.yaml").is_file()
    plan, _ = lenet5_plan_factory(target="raspberry-pi-4", latency="1s")
    assert "calibrated" in plan.provenance["latency"]


def test_calibrate_rejects_mismatched_models(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code = _run(app, ["calibrate", "a.json", "b.json", "c.json", "--device", "raspberry-pi-4",
                      "--model", "x.onnx", "--model", "y.onnx"])
    assert code == 2 and "one model for all files or one per file" in capsys.readouterr().err
