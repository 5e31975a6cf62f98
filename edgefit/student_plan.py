"""`plan --student SPEC`: the student stands in for the model while the plan is costed.

The teacher (the model the user named) is loaded as always; the student is built from it
(techniques.student), distilled from it on the training split (executors.student, the same
distillation apply runs, cached so apply reuses its weights) and then planned like a model of
its own: its layer graph, options, flash, latency, RAM and accuracy costs (the accuracy costs
are measured on the distilled student against its own fp32 outputs). plan.json's ``model``
stays the teacher (apply loads it and checks its weights); ``student`` records the spec, the
distillation and the weights costed on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgefit_common.progress import task
from planner.plan import Plan
from techniques.distill import DistillConfig
from techniques.student import StudentRecord, StudentSpec

if TYPE_CHECKING:
    from device_specs.budget import Budget
    from workloads.models import LoadedModel

DEFAULT_STUDENT_EPOCHS = 3


def student_distill_config(finetune_epochs: int) -> DistillConfig:
    """The student's distillation: ``--finetune N`` epochs when given, else the default."""
    return DistillConfig(epochs=finetune_epochs or DEFAULT_STUDENT_EPOCHS)


def planned_student(teacher: LoadedModel, spec: StudentSpec, budget: Budget,
                    finetune_epochs: int) -> tuple[LoadedModel, StudentRecord]:
    """The distilled student as the model to plan, and its plan.json record."""
    from executors.student import build_student, distilled_student
    from workloads.data import normalized, training_set
    from workloads.models import LoadedModel

    module = teacher.torch_module()
    data = budget.data or teacher.dataset  # or the caller's (workloads.data.training_data)
    with task(f"build the student {spec.label}"):
        student = build_student(module, spec, teacher.input_shape)
    config = student_distill_config(finetune_epochs)
    with task(f"load data {data or 'given'} (training split)"):
        train = normalized(training_set(data), budget.preprocess)
    with task(f"distil the student ({config.epochs} epoch(s), or its cached weights)"):
        trained = distilled_student(module, student, train, config)
    record = StudentRecord(
        spec=spec, distill=config, weights_sha256=trained.built_sha256,
        distilled_sha256=trained.distilled_sha256,
        teacher_params=sum(p.numel() for p in module.parameters()),
        params=sum(p.numel() for p in trained.module.parameters()),
        val_accuracy=trained.report.get("val_accuracy_after")
        if getattr(train, "labelled", True) else None,
        teacher_val_accuracy=trained.report.get("teacher_val_accuracy"))
    loaded = LoadedModel(f"{teacher.name} student {spec.label}", "module", trained.module,
                         teacher.input_shape, teacher.dataset)
    return loaded, record


def with_student(base: Plan, teacher: LoadedModel, record: StudentRecord) -> Plan:
    """The base plan with its model the teacher (what apply loads) and the student recorded."""
    from workloads.models import weights_sha256

    model = base.model.model_copy(update={
        "name": teacher.name, "kind": teacher.given_kind, "path": teacher.path,
        "weights_sha256": weights_sha256(teacher)})
    note = (f"a student ({record.spec.label}: {record.params:,} parameters, the teacher "
            f"{record.teacher_params:,}) distilled {record.distill.epochs} epoch(s) from the fp32 "
            f"model on the training split"
            + (f" (validation top-1 {100 * record.val_accuracy:.2f} %, the teacher "
               f"{100 * record.teacher_val_accuracy:.2f} %)"
               if record.val_accuracy is not None and record.teacher_val_accuracy is not None
               else "")
            + "; every cost is the student's, its accuracy costs measured on the distilled "
            "student against its own fp32 outputs; apply measures accuracy against the teacher")
    return base.model_copy(update={"model": model, "student": record,
                                   "provenance": {**base.provenance, "student": note}})


__all__ = ["DEFAULT_STUDENT_EPOCHS", "planned_student", "student_distill_config",
           "with_student"]
