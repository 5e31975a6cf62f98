"""`plan --student` and `apply --student`: bad input is one line and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefit.cli import _plan_app, _run, app
from planner.plan import Plan
from techniques.distill import DistillConfig
from techniques.student import StudentRecord, parse_student

FIXTURE = Path(__file__).parents[1] / "review" / "data" / "plan.json"
LIMIT = ["--target", "jetson-nano", "--max-latency", "30ms"]


def one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(("spec", "needles"), [
    ("half", ["--student 'half'", "not a student spec"]),
    ("width=2", ["width=2", "out of range"]),
    ("width=0", ["out of range"]),
    ("width=0.5,init=random", ["teacher or fresh"]),
])
def test_a_bad_student_spec_is_one_line(spec: str, needles: list[str], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code = _run(_plan_app, [*LIMIT, "--model", "lenet5-mnist", "--student", spec,
                            "--out", str(tmp_path / "plan.json")])
    one_line(code, capsys.readouterr().err, *needles)
    assert not (tmp_path / "plan.json").exists()


def test_a_student_with_another_output_is_one_line(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "nets.py").write_text("from torch import nn\n"
                                      "def five():\n"
                                      "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 5))\n")
    monkeypatch.chdir(tmp_path)
    code = _run(_plan_app, [*LIMIT, "-q", "--model", "lenet5-mnist", "--student", "nets:five"])
    one_line(code, capsys.readouterr().err, "student nets:five", "output shape (5,)",
             "teacher's (10,)")


def _with_student(tmp_path: Path, spec: str) -> Path:
    plan = Plan.load(FIXTURE).model_copy(update={"student": StudentRecord(
        spec=parse_student(spec), distill=DistillConfig(epochs=1), weights_sha256="a" * 64,
        distilled_sha256="b" * 64, teacher_params=2, params=1)})
    path = tmp_path / "plan.json"
    plan.save(path)
    return path


@pytest.mark.parametrize(("plan_student", "flag", "needle"), [
    (None, ["--student", "nets:small"], "the plan's student is none"),
    ("width=0.5", ["--student", "nets:small"], "derived (nothing to name)"),
    ("nets:small", ["--student", "nets:other"], "the plan's student is 'nets:small'"),
    ("nets:small", [], "give --student nets:small"),
])
def test_apply_names_the_plans_factory_student_again(
        plan_student: str | None, flag: list[str], needle: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = FIXTURE if plan_student is None else _with_student(tmp_path, plan_student)
    code = _run(app, ["apply", str(path), "--out", str(tmp_path / "out"), *flag])
    one_line(code, capsys.readouterr().err, needle)
    assert not (tmp_path / "out").exists()
