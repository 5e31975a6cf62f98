"""Label-free data (issue #21 item 0): an .npz of inputs only, or inputs alone in the Python API.
The model is planned on its output KL to the fp32 model (no labels needed) and `apply` reports
its fidelity to the fp32 model instead of accuracy; an accuracy-drop limit is checked as the
top-1 disagreement (which bounds the accuracy drop under any labels), so it is refused for a
model whose output is not a class output; fine-tuning distils from the fp32 model alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgefit.cli import EXIT_BAD_INPUT, _plan_app, _run

BIN = Path(sys.executable).parent


def _agreement(a: Path, b: Path, x: np.ndarray) -> float:
    from cost_models.accuracy_onnx import onnx_predict

    return float(np.mean(onnx_predict(a, x).argmax(1) == onnx_predict(b, x).argmax(1)))


def _cli(cmd: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / cmd), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "160"},
                          timeout=900)


def test_lenet5_on_inputs_only_through_the_cli(tmp_path: Path) -> None:
    from workloads.data import load_dataset, mnist_split

    _, test = mnist_split()
    np.savez(tmp_path / "inputs.npz", x=np.rint(test.x[:200, 0] * 255).astype(np.uint8))
    out = _cli("plan", ["--target", "jetson-nano", "--max-latency", "30ms", "--model",
                        "lenet5-mnist", "--data", "inputs.npz", "--pin", "fc1=fp32+s75",
                        "--pin", "conv2=fp16+s50", "--finetune", "1",
                        "--max-accuracy-drop", "60pp", "--apply", "--report-dir", "out"],
               tmp_path)
    assert out.returncode in (0, 1), out.stderr + out.stdout[-3000:]
    assert "fidelity cost" in out.stdout and "no labels (inputs only)" in out.stdout
    assert "2. fidelity to the fp32 model (no labels)" in out.stdout
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["labels"] is False and plan["data"] == "inputs.npz"
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    acc = report["accuracy"]
    assert acc["measure"] == "fidelity to fp32" and acc["labels"] is False
    _, held_out = load_dataset(tmp_path / "inputs.npz")
    assert len(held_out) == acc["test_size"] == 40 and not held_out.labelled
    # the figure is the written model's top-1 agreement with the written fp32 model
    agreement = _agreement(tmp_path / "out" / "model.fp32.onnx", tmp_path / "out" / "model.onnx",
                           held_out.x)
    assert acc["fp32"] == 1.0 and acc["compressed"] == pytest.approx(agreement)
    assert acc["drop_pp"] == pytest.approx(100 * (1 - agreement))
    assert "distillation from the fp32 model only" in acc["how"]
    assert acc["finetune"]["epochs_run"] == 1
    check = next(c for c in report["checks"] if "disagreement" in c["check"])
    assert check["ok"] == (100 * (1 - agreement) <= 60)
    assert not any("floor" in c["check"] for c in report["checks"]), "no labels: no floor"
    # the plan file applies again on its own, to the same figures
    again = _cli("edgefit", ["apply", "plan.json", "--out", "again", "--json"], tmp_path)
    assert again.returncode in (0, 1), again.stderr
    assert json.loads(again.stdout)["accuracy"]["compressed"] == pytest.approx(agreement)


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Label-free data and two tiny .pt2 models: 4 logits (a classifier), 1 value (not)."""
    import torch
    from torch import nn

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EDGEFIT_CACHE", str(tmp_path / "cache"))
    for name, outputs in (("classes.pt2", 4), ("value.pt2", 1)):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, outputs))
        torch.export.save(torch.export.export(net.eval(), (torch.zeros(1, 1, 4, 4),)),
                          str(tmp_path / name))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "inputs.npz", rng.integers(0, 256, (80, 4, 4), dtype=np.uint8))
    return tmp_path


LIMITS = ["--target", "jetson-nano", "--max-latency", "30ms", "--data", "inputs.npz"]


def test_an_accuracy_drop_without_labels_needs_class_outputs(
        cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*LIMITS, "--max-accuracy-drop", "1pp"]
    assert _run(_plan_app, [*argv, "--model", "value.pt2"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-accuracy-drop without labels" in err[0], err
    assert "output 0 of value is not a class output" in err[0]
    assert not (cwd / "plan.json").exists()
    # the same model without the limit plans; a classifier plans with it
    assert _run(_plan_app, [*LIMITS, "--model", "value.pt2", "--out", "v.json"]) == 0
    assert _run(_plan_app, [*argv, "--model", "classes.pt2", "--out", "c.json"]) == 0
    assert json.loads((cwd / "c.json").read_text())["labels"] is False


def test_the_api_takes_inputs_alone(cwd: Path) -> None:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    import edgefit

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 4)).eval()
    x = np.random.default_rng(2).random((120, 1, 4, 4), dtype=np.float32)
    limits = {"latency": "30ms", "accuracy_drop": "50pp"}
    a = edgefit.plan(net, "jetson-nano", limits=limits, data=x)
    assert a.labels is False and a.calibration_sha256 is not None
    for same in (torch.from_numpy(x),
                 DataLoader(TensorDataset(torch.from_numpy(x)), batch_size=50),
                 [torch.from_numpy(s) for s in x]):
        assert edgefit.plan(net, "jetson-nano", limits=limits,
                            data=same).calibration_sha256 == a.calibration_sha256
    pinned = edgefit.plan(net, "jetson-nano", limits=limits, data=x,
                          pins={name: "fp16" for name in a.layers})
    result = edgefit.apply(pinned, net, data=x, test_data=x[:40], out=cwd / "api")
    acc = result.report["accuracy"]
    assert acc["measure"] == "fidelity to fp32" and acc["fp32"] == 1.0
    assert acc["compressed"] == pytest.approx(_agreement(result.out / "model.fp32.onnx",
                                                         result.onnx, x[:40]))
