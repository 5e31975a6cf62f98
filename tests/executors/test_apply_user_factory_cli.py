"""Issue #21's done-when, the command-line route: a user's own network (BatchNorm, a residual
add) in a module of the current directory, planned and applied as `module:factory` with its
weights, then applied again from the plan file. No edgefit code names the module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

BIN = Path(sys.executable).parent
NET = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = nn.Linear(8 * 16, 10)

    def forward(self, x):
        y = torch.relu(self.bn(self.stem(x)))
        y = y + torch.relu(self.body(y))  # the residual add
        return self.head(torch.flatten(self.pool(y), 1))


def make_net():
    return Net()
'''


def _run(cmd: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / cmd), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "160"}, timeout=900)


def test_a_factory_in_the_current_directory_plans_and_applies(tmp_path: Path) -> None:
    (tmp_path / "mynets.py").write_text(NET)
    sys.path.insert(0, str(tmp_path))
    try:
        import mynets  # type: ignore[import-not-found]

        torch.manual_seed(0)
        net = mynets.make_net()
        with torch.no_grad():  # a BatchNorm that is not the identity, so folding matters
            net.bn.running_mean.uniform_(-0.2, 0.2)
            net.bn.running_var.uniform_(0.5, 2.0)
        torch.save(net.state_dict(), tmp_path / "w.pt")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mynets", None)
    model = ["--model", "mynets:make_net", "--weights", "w.pt"]
    out = _run("plan", ["--target", "jetson-nano", "--max-latency", "30ms", *model,
                        "--input-shape", "1x28x28", "--data", "mnist", "--apply",
                        "--report-dir", "out"], tmp_path)
    assert out.returncode == 0, out.stderr + out.stdout[-2000:]
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["model"]["kind"] == "factory" and plan["model"]["path"] == "mynets:make_net"
    assert plan["model"]["input_shape"] == [1, 28, 28] and plan["data"] == "mnist"
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["verification"]["ok"] and (tmp_path / "out" / "model.onnx").is_file()
    assert plan["model"]["weights_path"] == str((tmp_path / "w.pt").resolve())
    # again from the plan file, elsewhere: the factory is named on the command line, the
    # weights come from the file the plan recorded (its hash checked)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "mynets.py").write_text(NET)
    again = _run("edgefit", ["apply", "../plan.json", "--model", "mynets:make_net", "--out",
                             "out2"], tmp_path / "elsewhere")
    assert again.returncode == 0, again.stderr + again.stdout[-2000:]
    assert json.loads((tmp_path / "elsewhere" / "out2" / "report.json").read_text())[
        "verification"]["ok"]


def test_a_missing_module_names_where_it_was_looked_for(tmp_path: Path) -> None:
    out = _run("plan", ["--target", "jetson-nano", "--max-latency", "30ms", "--model",
                        "nosuchnets:make_net", "--input-shape", "1x28x28"], tmp_path)
    assert out.returncode == 2
    assert "No module named 'nosuchnets'" in out.stderr
    assert f"the current directory {tmp_path}" in out.stderr
