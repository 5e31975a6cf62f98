"""Building and distilling a plan's student (techniques.student): the same steps for ``plan``
(which costs the distilled student) and ``apply`` (which builds it again and compresses it).

The distillation is :func:`executors.distill.distill` (the loop every fine-tuning uses) from
the fp32 teacher on the training split. Its result is cached in edgefit's cache directory as an
``.npz`` of the state_dict (numpy arrays, read with ``allow_pickle=False``), keyed by the
teacher's and the student's weights, the distillation config and the training data, so apply
reuses the weights plan measured instead of training twice; a miss trains again (same seed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgefit_common.errors import EdgefitError, ModelLoadError
from techniques.distill import DistillConfig
from techniques.student import StudentSpec, derive_student

if TYPE_CHECKING:
    from pathlib import Path

    from torch import nn

    from planner.plan import Plan
    from workloads.data import Dataset


@dataclass(frozen=True)
class TrainedStudent:
    module: Any  # nn.Module, distilled, eval mode
    built_sha256: str  # before distillation
    distilled_sha256: str
    report: dict[str, Any]  # the DistillReport as a dict (+ teacher's validation accuracy)
    cached: bool  # the distilled weights came from the cache


def build_student(teacher: nn.Module, spec: StudentSpec, input_shape: tuple[int, ...]
                  ) -> nn.Module:
    """The student ``spec`` names, untrained, checked to give the teacher's output shape
    (ModelLoadError otherwise). A factory is imported only when the caller allowed it
    (workloads.refs.factory_allowed) and called under its seed."""
    import torch

    if spec.kind != "factory":  # derived: narrower, shallower or both
        student = derive_student(teacher, spec, input_shape)
    else:
        from workloads.models import load_model_ref

        assert spec.factory is not None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            try:  # loading runs the network once on the input shape
                student = load_model_ref(spec.factory, None, input_shape).torch_module()
            except EdgefitError:
                raise
            except Exception as exc:  # the user's network on the teacher's input: their error
                raise _not_running(spec.label, input_shape, exc) from None
    check_output_shape(teacher, student, input_shape, spec.label)
    return student


def check_output_shape(teacher: nn.Module, student: nn.Module, input_shape: tuple[int, ...],
                       label: str) -> None:
    """The student answers the teacher's question: same output shape on one sample."""
    import torch

    x = torch.zeros((2, *input_shape))
    try:
        with torch.no_grad():
            got = student.eval()(x)
    except Exception as exc:  # the user's network on the teacher's input: their error
        raise _not_running(label, input_shape, exc) from None
    with torch.no_grad():
        want = teacher.eval()(x)
    shapes = [tuple(getattr(o, "shape", ())) for o in (got, want)]
    if not all(isinstance(o, torch.Tensor) for o in (got, want)) or shapes[0] != shapes[1]:
        raise ModelLoadError(f"student {label}: its output shape {shapes[0][1:]} differs "
                             f"from the teacher's {shapes[1][1:]}")


def _not_running(label: str, input_shape: tuple[int, ...], exc: Exception) -> ModelLoadError:
    first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
    return ModelLoadError(f"student {label}: does not run on the teacher's input "
                          f"{tuple(input_shape)}: {type(exc).__name__}: {first}")


def distilled_student(teacher: nn.Module, student: nn.Module, train: Dataset,
                      config: DistillConfig, seed: int = 0) -> TrainedStudent:
    """``student`` distilled from ``teacher`` on ``train`` (the cache first)."""
    from executors.distill import distill
    from workloads.models import weights_hash
    from workloads.train import evaluate

    built = weights_hash(student)
    key = _cache_key(weights_hash(teacher), built, config, train, seed)
    cached = _load_cached(key, student)
    if cached is not None:
        report = cached
    else:
        student, rep = distill(student, teacher, train, config, seed=seed)
        report = dataclasses.asdict(rep)
        if getattr(train, "labelled", True):
            from workloads.data import split

            _, val = split(train, config.validation_fraction, seed)  # the loop's own split
            report["teacher_val_accuracy"] = evaluate(teacher, val)
        _store(key, student, report)
    student.eval()
    return TrainedStudent(student, built, weights_hash(student), report, cached is not None)


def student_for_plan(plan: Plan, teacher: nn.Module, input_shape: tuple[int, ...],
                     train: Dataset) -> tuple[nn.Module, dict[str, Any]]:
    """Apply's student: built as the plan says (PlanError unless it is the one the plan was
    costed on), distilled from ``teacher`` on ``train`` (or its cached weights); with the
    distillation's report and whether it reproduced the weights the plan measured."""
    from edgefit_common.errors import PlanError

    record = plan.student
    assert record is not None
    from workloads.models import weights_hash

    student = build_student(teacher, record.spec, input_shape)
    built = weights_hash(student)
    if built != record.weights_sha256:
        raise PlanError(f"the student {record.spec.label} built here is not the one the plan "
                        f"was costed on (sha256 {record.weights_sha256[:12]}..., this one's "
                        f"{built[:12]}...); re-plan")
    trained = distilled_student(teacher, student, train, record.distill)
    report = {**trained.report, "spec": record.spec.label, "params": record.params,
              "teacher_params": record.teacher_params, "from_cache": trained.cached,
              "as_planned": trained.distilled_sha256 == record.distilled_sha256}
    return trained.module, report


def _cache_key(teacher: str, student: str, config: DistillConfig, train: Dataset,
               seed: int) -> str:
    from workloads.data import data_hash

    labels = train.y if getattr(train, "labelled", True) else None
    parts = [teacher, student, config.model_dump_json(), data_hash(train.x, labels), str(seed),
             "student-v1"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _folder() -> Path:
    from edgefit_common.paths import cache_dir

    return cache_dir() / "students"


def _load_cached(key: str, student: nn.Module) -> dict[str, Any] | None:
    """The cached distilled weights loaded into ``student`` and their report; None: a miss
    (or an unreadable entry, which is trained again)."""
    import torch

    weights, meta = _folder() / f"{key}.npz", _folder() / f"{key}.json"
    if not (weights.is_file() and meta.is_file()):
        return None
    try:
        with np.load(weights, allow_pickle=False) as arrays:
            state = {name: torch.from_numpy(arrays[name].copy()) for name in arrays.files}
        student.load_state_dict(state)
        report: dict[str, Any] = json.loads(meta.read_text())
    except (OSError, ValueError, RuntimeError, KeyError):
        return None
    return report


def _store(key: str, student: nn.Module, report: dict[str, Any]) -> None:
    """Written to temporary names and renamed into place (a reader never sees half a file)."""
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {name: t.detach().cpu().numpy() for name, t in student.state_dict().items()}
    tmp = folder / f".{key}.{os.getpid()}.npz"
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    os.replace(tmp, folder / f"{key}.npz")
    meta = folder / f".{key}.{os.getpid()}.json"
    meta.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(meta, folder / f"{key}.json")


__all__ = ["TrainedStudent", "build_student", "check_output_shape", "distilled_student",
           "student_for_plan"]
