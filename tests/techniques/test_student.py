"""The student spec (`plan --student`) and the derived, narrower student's shapes."""

from __future__ import annotations

import pytest

from edgefit_common.errors import SpecError
from techniques.student import StudentSpec, derive_student, parse_student


@pytest.mark.parametrize(("text", "want"), [
    ("width=0.5", StudentSpec(kind="width", width=0.5)),
    ("width=0.25,init=fresh", StudentSpec(kind="width", width=0.25, init="fresh")),
    ("width=0.1, init=teacher, seed=3", StudentSpec(kind="width", width=0.1, seed=3)),
    ("mypkg.nets:small", StudentSpec(kind="factory", factory="mypkg.nets:small")),
    ("depth=2", StudentSpec(kind="depth", depth=2)),
    ("depth=1,init=fresh", StudentSpec(kind="depth", depth=1, init="fresh")),
])
def test_a_spec_parses_and_prints_back(text: str, want: StudentSpec) -> None:
    spec = parse_student(text)
    assert spec == want
    assert parse_student(spec.label) == spec  # the label is what the user would write


@pytest.mark.parametrize(("text", "needle"), [
    ("half", "not a student spec"),
    ("deep=2", "not a student spec"),
    ("depth=0", "a whole number from 1"),
    ("depth=two", "a whole number from 1"),
    ("width=1", "out of range"),
    ("width=0.05", "out of range"),
    ("width=nan", "out of range"),
    ("width=-0.5", "out of range"),
    ("width=wide", "not a number"),
    ("width=0.5,init=random", "teacher or fresh"),
    ("width=0.5,width=0.4", "is not width=F"),
    ("width=0.5,stride=2", "is not width=F"),
    ("width=0.5,seed=-1", "whole number"),
    ("pkg.mod:fn:extra", "not a student spec"),
])
def test_bad_specs_are_one_line(text: str, needle: str) -> None:
    with pytest.raises(SpecError, match=needle) as info:
        parse_student(text)
    assert "\n" not in str(info.value)


def test_an_inconsistent_spec_is_refused_as_data() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        StudentSpec(kind="width")  # no width
    with pytest.raises(ValidationError):
        StudentSpec(kind="factory", factory="m:f", width=0.5)
    with pytest.raises(ValidationError):
        StudentSpec(kind="width", width=1.0)


def _residual_net():  # conv -> BN, a residual conv -> BN added back, flatten, Linear
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv0 = nn.Conv2d(1, 8, 3, padding=1)
            self.bn0 = nn.BatchNorm2d(8)
            self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(8)
            self.fc1 = nn.Linear(8 * 7 * 7, 20)
            self.fc2 = nn.Linear(20, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn0(self.conv0(x)))
            y = nn.functional.max_pool2d(y + torch.relu(self.bn1(self.conv1(y))), 2)
            return self.fc2(torch.relu(self.fc1(y.flatten(1))))

    torch.manual_seed(0)
    return Net().eval()


def test_a_width_student_halves_every_group_and_keeps_the_output() -> None:
    import torch

    teacher = _residual_net()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = derive_student(teacher, parse_student("width=0.5"), (1, 14, 14))
    # the residual add couples conv0 and conv1 (one group of 8 -> 4), BatchNorm follows,
    # fc1's inputs follow the flatten, fc1's outputs 20 -> 10, the classifier keeps 10
    assert (student.conv0.out_channels, student.conv1.in_channels,
            student.conv1.out_channels) == (4, 4, 4)
    assert student.bn0.num_features == student.bn1.num_features == 4
    assert student.fc1.in_features == 4 * 7 * 7 and student.fc1.out_features == 10
    assert student.fc2.out_features == 10
    x = torch.rand(3, 1, 14, 14)
    assert student(x).shape == teacher(x).shape == (3, 10)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())  # untouched


def test_init_teacher_keeps_teacher_weights_and_fresh_is_seeded() -> None:
    import torch

    teacher = _residual_net()
    kept = derive_student(teacher, parse_student("width=0.5"), (1, 14, 14))
    rows = {tuple(r.flatten().tolist()) for r in teacher.fc2.weight.detach().T}
    # fc2's input columns are a subset of the teacher's (the kept fc1 channels)
    assert all(tuple(c.flatten().tolist()) in rows for c in kept.fc2.weight.detach().T)
    fresh = derive_student(teacher, parse_student("width=0.5,init=fresh"), (1, 14, 14))
    again = derive_student(teacher, parse_student("width=0.5,init=fresh"), (1, 14, 14))
    other = derive_student(teacher, parse_student("width=0.5,init=fresh,seed=1"), (1, 14, 14))
    assert fresh.fc1.weight.shape == kept.fc1.weight.shape
    assert not torch.equal(fresh.fc1.weight, kept.fc1.weight)
    assert torch.equal(fresh.fc1.weight, again.fc1.weight)  # the same student every time
    assert not torch.equal(fresh.fc1.weight, other.fc1.weight)


def test_a_factory_spec_is_not_derived() -> None:
    with pytest.raises(SpecError, match="not a derived"):
        derive_student(_residual_net(), parse_student("m.n:f"), (1, 14, 14))


def test_a_depth_student_drops_the_residual_branch() -> None:
    import torch

    from cost_models.capture import capture

    teacher = _residual_net()
    student = derive_student(teacher, parse_student("depth=1"), (1, 14, 14))
    names = {n for n, _ in student.named_modules()}
    assert "conv1" not in names and "bn1" not in names  # the branch is gone
    assert {"conv0", "fc1", "fc2"} <= names
    x = torch.rand(3, 1, 14, 14)
    with torch.no_grad():  # y = x + f(x) became y = x: what the teacher computes without f
        y = torch.relu(teacher.bn0(teacher.conv0(x)))
        want = teacher.fc2(torch.relu(teacher.fc1(torch.nn.functional.max_pool2d(y, 2)
                                                  .flatten(1))))
        assert torch.allclose(student(x), want, atol=1e-6)
    graph = capture(student, (1, 14, 14), "student")  # the planner can read it
    assert "conv1" not in graph.layer_names and "conv0" in graph.layer_names


def test_a_narrower_and_shallower_student() -> None:
    import torch

    spec = parse_student("width=0.5,depth=1")
    assert spec.kind == "width" and spec.depth == 1 and spec.label == "width=0.5,depth=1"
    student = derive_student(_residual_net(), spec, (1, 14, 14))
    modules = dict(student.named_modules())
    assert modules["conv0"].out_channels == 4 and modules["fc1"].out_features == 10
    assert student(torch.rand(2, 1, 14, 14)).shape == (2, 10)


@pytest.mark.parametrize("spec", ["depth=2", "width=0.5,depth=3"])
def test_more_blocks_than_the_model_has_is_one_line(spec: str) -> None:
    with pytest.raises(SpecError, match="the model has 1 whose branch keeps") as info:
        derive_student(_residual_net(), parse_student(spec), (1, 14, 14))
    assert "\n" not in str(info.value)
