"""plan.json's `student` is data: written, read back equal, checked like the rest of the plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgefit_common.errors import SpecError
from planner.plan import Plan
from techniques.distill import DistillConfig
from techniques.student import StudentRecord, parse_student

DATA = Path(__file__).parents[1] / "review" / "data" / "plan.json"


def _record(spec: str) -> StudentRecord:
    return StudentRecord(spec=parse_student(spec), distill=DistillConfig(epochs=2),
                         weights_sha256="a" * 64, distilled_sha256="b" * 64,
                         teacher_params=61706, params=15738, val_accuracy=0.97,
                         teacher_val_accuracy=0.99)


@pytest.mark.parametrize("spec", ["width=0.5", "width=0.3,init=fresh,seed=2", "pkg.nets:small"])
def test_a_plan_with_a_student_round_trips(spec: str, tmp_path: Path) -> None:
    plan = Plan.load(DATA).model_copy(update={"student": _record(spec)})
    path = tmp_path / "plan.json"
    plan.save(path)
    back = Plan.load(path)
    assert back.student == plan.student and back == plan
    assert json.loads(path.read_text())["student"]["spec"]["kind"] in ("width", "factory")


def test_a_plan_without_a_student_stays_as_it_was() -> None:
    plan = Plan.load(DATA)
    assert plan.student is None
    assert Plan.model_validate_json(plan.to_json()) == plan


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda s: s["spec"].update(width=1.5), "width"),
    (lambda s: s["spec"].update(kind="depth"), "kind"),
    (lambda s: s.update(weights_sha256="nothex"), "weights_sha256"),
    (lambda s: s["spec"].update(factory="m:f"), "student"),  # a width student with a factory
    (lambda s: s.update(surprise=1), "surprise"),
])
def test_a_hand_edited_student_is_one_line(edit, needle: str, tmp_path: Path) -> None:
    d = json.loads(Plan.load(DATA).model_copy(
        update={"student": _record("width=0.5")}).to_json())
    edit(d["student"])
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(d))
    with pytest.raises(SpecError, match=needle) as info:
        Plan.load(path)
    assert "\n" not in str(info.value)
