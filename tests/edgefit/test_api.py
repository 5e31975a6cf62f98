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
