"""Without data nothing destructive is offered unless the user asks (issue #21 item 0): every
layer stays uncompressed, or with --allow-unmeasured compressed options come with a warning in
the table and 'not measured' in the accuracy column."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from torch import nn

from cost_models.micro_latency import micro_model
from edgefit.planning import NO_DATA_UNCOMPRESSED, uncompressed_only
from edgefit_common.errors import PlanError
from techniques.lowrank import LowRankConfig
from techniques.option import Option
from techniques.quantize import QuantizeConfig

BIN = Path(sys.executable).parent


def _plan(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "plan"), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "160"}, timeout=600)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nodata") / "net.onnx"
    mods = (nn.Conv2d(1, 8, 3), nn.Conv2d(8, 16, 3), nn.Conv2d(16, 32, 3))
    onnx.save(micro_model(mods, (1, 1, 16, 16)), str(path))
    return path


def test_only_uncompressed_options_are_kept() -> None:
    int8 = QuantizeConfig(weights="int8", activations="int8")
    row = {"fp32": Option("fp32"), "int8": Option("int8", (int8,)),
           "fp32+r25": Option("fp32", (LowRankConfig(rank=2),), ("r25",)),
           "fp32+w8": Option("fp32", widths=(("g", 8),), width_tag="+w8", out_fraction=0.5,
                             weight_fraction=0.5)}
    assert list(uncompressed_only({"a": row}, "dev")["a"]) == ["fp32"]
    with pytest.raises(PlanError, match="--allow-unmeasured"):
        uncompressed_only({"a": {"int8": row["int8"]}}, "an-int8-only-board")


def test_no_data_plans_every_layer_uncompressed(model_file: Path, tmp_path: Path) -> None:
    out = _plan(["--target", "jetson-nano", "--max-latency", "30ms", "--model",
                 str(model_file)], tmp_path)
    assert out.returncode == 0, out.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert {lp["option"] for lp in plan["layers"].values()} == {"fp32"}
    assert all(len(lp["alternatives"]) == 1 for lp in plan["layers"].values())
    assert plan["provenance"]["accuracy"] == NO_DATA_UNCOMPRESSED
    assert "not measured" in out.stdout and "[WARN]" not in out.stdout


def test_allow_unmeasured_offers_compression_with_a_warning(model_file: Path,
                                                             tmp_path: Path) -> None:
    out = _plan(["--target", "jetson-nano", "--max-latency", "30ms", "--model",
                 str(model_file), "--allow-unmeasured"], tmp_path)
    assert out.returncode == 0, out.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert any(lp["option"] != "fp32" for lp in plan["layers"].values())
    assert "NOT MEASURED" in plan["provenance"]["accuracy"]
    assert "[WARN] no data" in out.stdout and "not measured" in out.stdout
