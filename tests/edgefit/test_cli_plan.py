"""The issue's "done when" commands, run as a user runs them (console scripts, real cwd)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=cwd, capture_output=True,
                          text=True, env=env, timeout=600)


def test_plan_jetson_nano_30ms_in_an_empty_directory(tmp_path: Path) -> None:
    out = run(["plan", "--target", "jetson-nano", "--max-latency", "30ms"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "built-in default workload" in out.stdout
    assert "jetson-nano / tensorrt-gpu" in out.stdout
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["status"] == "OPTIMAL" and plan["model"]["name"] == "lenet5-mnist"
    assert plan["totals"]["latency_ms"] <= 30
    assert set(lp["option"] for lp in plan["layers"].values()) <= {"fp32", "fp16"}


def test_plan_arduino_500ms_with_model_flag(tmp_path: Path) -> None:
    out = run(["plan", "--target", "arduino-nano-33-ble", "--max-latency", "500ms",
               "--model", "lenet5-mnist"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "--model flag" in out.stdout
    for column in ("layer", "params", "MACs", "option", "latency", "flash", "peak RAM"):
        assert column in out.stdout
    assert "totals against limits" in out.stdout
    # issue #17 item 5: how far the MCU latency model is trusted, in the table and as a margin
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["latency_backed"] is False and plan["latency_band"] > 0
    assert "no published measurement of this board backs the model" in out.stdout
    assert "not backed by a published measurement" in out.stdout
    assert f"--margin {100 * plan['latency_band']:.0f}%" in out.stdout


def test_plan_arduino_4kb_flash_is_explained(tmp_path: Path) -> None:
    out = run(["plan", "--target", "arduino-nano-33-ble", "--max-flash", "4KB",
               "--model", "lenet5-mnist"], tmp_path)
    assert out.returncode == 1, out.stderr  # an answer, not a crash: exit 1, no traceback
    assert "Traceback" not in out.stderr
    assert "cannot be met" in out.stdout
    assert "flash: needs" in out.stdout and "instead of 4KB" in out.stdout
    assert json.loads((tmp_path / "plan.json").read_text())["status"] == "INFEASIBLE"


def test_edgefit_yaml_in_cwd_supplies_model_and_target(tmp_path: Path) -> None:
    (tmp_path / "edgefit.yaml").write_text(
        "schema_version: 1\ntarget: raspberry-pi-4\nlimits:\n  latency: 1s\nmodel: lenet5-mnist\n")
    out = run(["plan", "--max-ram", "64MB", "--out", "p.json"], tmp_path)
    assert out.returncode == 0, out.stderr
    plan = json.loads((tmp_path / "p.json").read_text())
    assert plan["target"]["device"] == "raspberry-pi-4"
    assert plan["model"]["origin"].endswith("edgefit.yaml")
    assert plan["limits"]["latency"] == "1000ms" and plan["limits"]["ram"] == "64000000B"


@pytest.mark.parametrize("verb", ["devices", "schemas"])
def test_other_verbs(verb: str, tmp_path: Path) -> None:
    out = run(["edgefit", verb, *(["--out", str(tmp_path)] if verb == "schemas" else [])],
              tmp_path)
    assert out.returncode == 0, out.stderr
    if verb == "devices":
        for name in ("jetson-nano", "arduino-nano-33-ble", "coral-dev-board", "host"):
            assert name in out.stdout
    else:
        assert (tmp_path / "plan.schema.json").exists()


def test_plan_apply_flag_writes_the_artifacts(tmp_path: Path) -> None:
    out = run(["plan", "--target", "arduino-nano-33-ble", "--max-latency", "60ms",
               "--model", "lenet5-mnist", "--margin", "5%", "--apply", "--report-dir", "art"],
              tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout
    for name in ("model.onnx", "model.fp32.onnx", "model.flash.bin", "report.json"):
        assert (tmp_path / "art" / name).is_file()
    assert "[ok  ] trained lenet5-mnist meets its floor" in out.stdout
    report = json.loads((tmp_path / "art" / "report.json").read_text())
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert report["options"] == {name: lp["option"] for name, lp in plan["layers"].items()}
    assert plan["margin"] == pytest.approx(0.05)
