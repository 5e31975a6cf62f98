"""The Python API with a user's own module (BatchNorm, PReLU, residual add) and in-memory data:
plan, apply, every check read back from the files; DataLoaders and arrays give the same
calibration; the plan pins the module's weights (issue #21)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import edgefit
from edgefit_common.errors import DataError, PlanError


@pytest.fixture(scope="module")
def mnist():
    from workloads.data import load_dataset

    train, test = load_dataset("mnist")
    return (train.x[:2000], train.y[:2000]), (test.x[:400], test.y[:400])


LIMITS = {"latency": "400ms", "ram": "200KB"}


def test_plan_and_apply_a_module_object(user_net, mnist, tmp_path: Path) -> None:
    train, test = mnist
    plan = edgefit.plan(user_net, "arduino-nano-33-ble", limits=LIMITS, data=train)
    assert plan.feasible and plan.model.kind == "module" and plan.model.name == "UserNet"
    assert list(plan.layers) == ["conv0", "conv1", "fc"]
    assert plan.accuracy_unit != "none", "accuracy costs measured on the given data"
    result = edgefit.apply(plan, user_net, data=train, test_data=test, out=tmp_path / "out")
    assert result.ok, result.report["checks"]
    assert result.onnx.is_file() and result.flash_image.is_file()
    assert result.report["verification"]["ok"]
    plan.save(tmp_path / "plan.json")
    cli = subprocess.run([str(Path(sys.executable).parent / "edgefit"), "apply",
                          str(tmp_path / "plan.json"),
                          "--out", str(tmp_path / "cli")], capture_output=True, text=True)
    assert cli.returncode == 2 and "edgefit.apply(plan, model=...)" in cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1


def test_a_dataloader_gives_the_same_calibration_as_arrays(user_net, mnist) -> None:
    from torch.utils.data import DataLoader, TensorDataset

    (x, y), _ = mnist
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=300)
    a = edgefit.plan(user_net, "arduino-nano-33-ble", limits=LIMITS, data=(x, y))
    b = edgefit.plan(user_net, "arduino-nano-33-ble", limits=LIMITS, data=loader)
    assert a.calibration_sha256 == b.calibration_sha256 is not None
    assert a.options() == b.options()


def test_other_weights_and_bad_data_are_refused(user_net, mnist, tmp_path: Path) -> None:
    import copy

    train, test = mnist
    plan = edgefit.plan(user_net, "arduino-nano-33-ble", limits=LIMITS, data=train)
    other = copy.deepcopy(user_net)
    with torch.no_grad():
        other.fc.weight.add_(0.01)
    with pytest.raises(PlanError, match="other weights"):
        edgefit.apply(plan, other, data=train, test_data=test, out=tmp_path / "o")
    with pytest.raises(DataError, match="test_data"):
        edgefit.apply(plan, user_net, data=train, out=tmp_path / "o")
    with pytest.raises(DataError, match="at least 32"):
        edgefit.plan(user_net, "arduino-nano-33-ble", limits=LIMITS,
                     data=(train[0][:10], train[1][:10]))
    assert not (tmp_path / "o").exists()


def test_importing_edgefit_stays_light() -> None:
    code = ("import sys, edgefit; assert 'torch' not in sys.modules; "
            "assert callable(edgefit.plan) and 'torch' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    assert np.__name__ == "numpy"


class _ExpectsNormalised(torch.nn.Module):
    """The trained LeNet-5 behind an input that was normalised with mean 0.5, std 0.25 (the
    module undoes it first): right only when the data is normalised the same way."""

    def __init__(self, base: torch.nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x * 0.25 + 0.5)


def test_preprocess_is_recorded_and_applied_and_a_metric_replaces_top1(mnist, tmp_path) -> None:
    """Issue #21 item 2: the model's normalisation is an argument (recorded in the plan,
    applied by plan and apply), and so is the metric apply reports."""
    from workloads.train import pretrained

    train, test = mnist
    net = _ExpectsNormalised(pretrained("lenet5-mnist").model).eval()
    plan = edgefit.plan(net, "arduino-nano-33-ble", limits={"latency": "400ms"}, data=train,
                        preprocess=([0.5], [0.25]))
    assert plan.preprocess is not None and plan.preprocess.mean == [0.5]
    raw = edgefit.plan(net, "arduino-nano-33-ble", limits={"latency": "400ms"}, data=train)
    assert raw.calibration_sha256 != plan.calibration_sha256, "the costs saw normalised data"
    calls: list[int] = []

    def top1(labels: np.ndarray, outputs: np.ndarray) -> float:
        calls.append(len(labels))
        return float((outputs.argmax(1) == labels).mean())

    result = edgefit.apply(plan, net, data=train, test_data=test, out=tmp_path / "out",
                           metric=top1)
    acc = result.report["accuracy"]
    assert calls == [400, 400] and "metric top1" in acc["how"]
    assert acc["fp32"] >= 0.95, "normalised as the model expects: the trained accuracy"
    unnormalised = edgefit.apply(raw, net, data=train, test_data=test, out=tmp_path / "raw")
    assert unnormalised.report["accuracy"]["fp32"] < acc["fp32"] - 0.2

    def broken(labels: np.ndarray, outputs: np.ndarray) -> float:
        raise ValueError("shapes")

    with pytest.raises(DataError, match="metric broken failed: ValueError: shapes"):
        edgefit.apply(plan, net, data=train, test_data=test, out=tmp_path / "b", metric=broken)
    assert not (tmp_path / "b").exists()
