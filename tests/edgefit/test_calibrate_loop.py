"""The measure -> calibrate -> plan loop: a plan for a calibrated device says so."""

from __future__ import annotations

import json
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
    args = ["calibrate", *files, "--device", "raspberry-pi-4", "--model", str(onnx_path),
            "--min-layer-us", "0"]
    # this machine is not a Raspberry Pi 4 (issue #17: it used to calibrate the Pi anyway)
    on_arm = "Raspberry Pi 4" in json.loads(Path(files[0]).read_text())["host"]["cpu_model"]
    if not on_arm:
        assert _run(app, args) == 2
        err = capsys.readouterr().err
        assert "timed on another machine than raspberry-pi-4" in err and err.count("\n") == 1
        assert not (tmp_path / "raspberry-pi-4.calibration.yaml").exists()
        args.append("--allow-other-machine")
    code = _run(app, args)
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "raspberry-pi-4.calibration.yaml").is_file()
    plan, _ = lenet5_plan_factory(target="raspberry-pi-4", latency="1s")
    assert "calibrated" in plan.provenance["latency"]
    assert ("WARNING: timings from another" in plan.provenance["latency"]) == (not on_arm)


def test_calibrate_rejects_mismatched_models(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    files = []
    for name in ("a.json", "b.json", "c.json"):
        (tmp_path / name).write_text(json.dumps({"format": "edgefit-measure"}))
        files.append(str(tmp_path / name))
    code = _run(app, ["calibrate", *files, "--device", "raspberry-pi-4",
                      "--model", "x.onnx", "--model", "y.onnx"])
    assert code == 2
    assert "one model for all measure files or one per file" in capsys.readouterr().err
