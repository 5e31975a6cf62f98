"""Building a plan's student (derived or the user's factory, its output shape checked) and
distilling it from the teacher, with the distilled weights cached for apply."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgefit_common.errors import ModelLoadError
from executors.student import build_student, distilled_student
from techniques.distill import DistillConfig
from techniques.student import parse_student
from workloads.data import Dataset
from workloads.models import weights_hash
from workloads.refs import factory_allowed

SHAPE = (1, 8, 8)


def tiny_teacher(trained: bool = False) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 4))
    if trained:  # a teacher with something to teach: 100 steps on the tiny data
        data = tiny_data()
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
        for _ in range(100):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    return net.eval()


def tiny_data(n: int = 400) -> Dataset:
    rng = np.random.default_rng(0)
    x = rng.random((n, *SHAPE), dtype=np.float32)
    y = (x[:, 0, :4].mean(axis=(1, 2)) * 4).astype(np.int64).clip(0, 3)  # learnable labels
    return Dataset("tiny", x, y, 4, "random, in the test")


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "student_nets.py").write_text(
        "from torch import nn\n"
        "def small():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.ReLU(), nn.Linear(6, 4))\n"
        "def wrong():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 5))\n"
        "def broken():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(63, 4))\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_derived_student_is_narrower_with_the_teachers_output() -> None:
    teacher = tiny_teacher()
    student = build_student(teacher, parse_student("width=0.5"), SHAPE)
    assert student[0].out_channels == 4 and student[3].out_features == 8
    assert student(torch.zeros(1, *SHAPE)).shape == (1, 4)


def test_a_factory_student_is_built_under_its_seed(factories: Path) -> None:
    spec = parse_student("student_nets:small")
    with factory_allowed(spec.factory):
        a = build_student(tiny_teacher(), spec, SHAPE)
        b = build_student(tiny_teacher(), spec, SHAPE)
    assert weights_hash(a) == weights_hash(b)  # the plan pins it; apply builds the same


@pytest.mark.parametrize(("ref", "needle"), [
    ("student_nets:wrong", r"output shape \(5,\) differs from the teacher's \(4,\)"),
    ("student_nets:broken", "does not run on the teacher's input"),
])
def test_a_student_that_does_not_fit_is_one_line(factories: Path, ref: str, needle: str) -> None:
    with factory_allowed(ref), pytest.raises(ModelLoadError, match=needle) as info:
        build_student(tiny_teacher(), parse_student(ref), SHAPE)
    assert "\n" not in str(info.value)


def test_a_factory_student_is_refused_unless_the_command_line_named_it(factories: Path) -> None:
    with pytest.raises(ModelLoadError, match="refused"):
        build_student(tiny_teacher(), parse_student("student_nets:small"), SHAPE)


def test_distillation_is_cached_for_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    monkeypatch.setenv("EDGEFIT_CACHE", str(tmp_path / "cache"))
    teacher, data = tiny_teacher(trained=True), tiny_data()
    config = DistillConfig(epochs=1, batch_size=64, lr=3e-3)
    spec = parse_student("width=0.5")
    first = distilled_student(teacher, build_student(teacher, spec, SHAPE), data, config)
    assert not first.cached and first.distilled_sha256 != first.built_sha256  # it trained
    assert first.report["epochs_run"] == 1 and "teacher_val_accuracy" in first.report
    again = distilled_student(teacher, build_student(teacher, spec, SHAPE), data, config)
    assert again.cached and again.distilled_sha256 == first.distilled_sha256
    assert again.report == first.report
    other = distilled_student(teacher, build_student(teacher, spec, SHAPE), data,
                              DistillConfig(epochs=1, batch_size=32, lr=3e-3))
    assert not other.cached  # another distillation is another entry
