"""Distillation into a smaller student: the student is a plan option (issue #20 item 4).

``plan --student SPEC`` plans a *student* network instead of the model itself: the planner
costs the student's layers (flash, latency, RAM are the student's), and apply builds the
student, distils it from the fp32 teacher (the model the plan names) on the training split, then
applies the planned per-layer options to it. Accuracy is measured against the teacher.

A student is one of
* ``width=F`` (derived): every coupled channel group of the teacher keeps ``F`` of its
  channels (at least one), removed with Torch-Pruning's dependency graph
  (:func:`techniques.prune.prune_channels`), so residual adds, BatchNorm and a Linear after a
  flatten stay consistent. ``init=teacher`` (the default) keeps the teacher's channels of
  largest group L1 norm with their weights; ``init=fresh`` re-initialises every layer of that
  shape (seeded: the same student every time);
* ``package.module:factory`` (user-given): the user's own network, built by calling the factory
  (the same rules as ``--model module:factory``: imported only when a command line names it,
  no pickle), its output shape the teacher's.

The spec is data (:class:`StudentSpec`, stored in plan.json's ``student`` with what it was
costed on, :class:`StudentRecord`). Nothing here imports torch at import time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgefit_common.errors import SpecError
from techniques.distill import DistillConfig

if TYPE_CHECKING:
    from torch import nn

MIN_WIDTH = 0.1
"""The narrowest derived student: channel pruning removes at most 90 % of a group's channels."""

_FACTORY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*",
                      re.ASCII)

SPEC_HELP = ("width=F (every channel group keeps F of its channels, 0.1 <= F < 1; add ,init=fresh "
             "to start from fresh weights instead of the teacher's kept ones) or "
             "package.module:factory (your own network)")


class StudentSpec(BaseModel):
    """What student to build: a derived narrower copy of the teacher, or the user's factory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["width", "factory"]
    width: float | None = Field(default=None, ge=MIN_WIDTH, lt=1.0, description="width: the "
                                "fraction of every coupled channel group's channels kept")
    init: Literal["teacher", "fresh"] = Field(
        default="teacher", description="width: start from the teacher's kept channels' weights, "
        "or from a fresh (seeded) initialisation; factory: always the factory's own weights")
    factory: str | None = Field(default=None, description="factory: package.module:factory "
                                "(imported only when a command line names it again)")
    seed: int = Field(default=0, ge=0, description="seed of a fresh initialisation or factory")

    @model_validator(mode="after")
    def _consistent(self) -> StudentSpec:
        if self.kind == "width" and (self.width is None or self.factory is not None):
            raise ValueError("a width student needs width and no factory")
        if self.kind == "factory" and (self.factory is None or self.width is not None):
            raise ValueError("a factory student needs factory and no width")
        if self.factory is not None and not _FACTORY.fullmatch(self.factory):
            raise ValueError("factory must be package.module:function (ASCII identifiers)")
        return self

    @property
    def label(self) -> str:
        """As the user writes it (the inverse of :func:`parse_student`)."""
        if self.kind == "factory":
            return str(self.factory)
        return (f"width={self.width:g}" + (",init=fresh" if self.init == "fresh" else "")
                + (f",seed={self.seed}" if self.seed else ""))


class StudentRecord(BaseModel):
    """plan.json's ``student``: the spec, how it was distilled, and what was costed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec: StudentSpec
    distill: DistillConfig = Field(description="the distillation from the fp32 teacher into "
                                   "the student, on the training split, before the plan's "
                                   "per-layer options are applied")
    weights_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the student as built, "
                                "before distillation (apply refuses another)")
    distilled_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the distilled "
                                  "student the plan's costs were measured on (apply reports "
                                  "whether its distillation reproduced it)")
    teacher_params: int = Field(ge=0)
    params: int = Field(ge=0, description="the student's parameters (BatchNorm folded)")
    val_accuracy: float | None = Field(default=None, description="the distilled student's "
                                       "top-1 on the distillation's validation split (of the "
                                       "training data; null: no labels)")
    teacher_val_accuracy: float | None = Field(default=None, description="the teacher's, same "
                                               "split")


def parse_student(text: str) -> StudentSpec:
    """``--student`` as a spec; SpecError (one line) for anything else."""
    text = text.strip()
    if _FACTORY.fullmatch(text):
        return StudentSpec(kind="factory", factory=text)
    if not text.startswith("width="):
        raise SpecError(f"--student {text[:60]!r}: not a student spec; give {SPEC_HELP}")
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in ("width", "init", "seed") or key.strip() in fields:
            raise SpecError(f"--student {text[:60]!r}: {part.strip()[:30]!r} is not width=F, "
                            "init=teacher|fresh or seed=N")
        fields[key.strip()] = value.strip()
    try:
        width = float(fields["width"])
    except ValueError:
        raise SpecError(f"--student width={fields['width'][:20]!r}: not a number") from None
    if not MIN_WIDTH <= width < 1.0:  # also rejects nan
        raise SpecError(f"--student width={fields['width'][:20]}: out of range; the kept "
                        f"fraction of channels is {MIN_WIDTH} <= F < 1")
    init = fields.get("init", "teacher")
    if init not in ("teacher", "fresh"):
        raise SpecError(f"--student init={init[:20]!r}: teacher or fresh")
    seed = fields.get("seed", "0")
    if not seed.isdigit():
        raise SpecError(f"--student seed={seed[:20]!r}: a whole number >= 0")
    return StudentSpec(kind="width", width=width, init=init,  # type: ignore[arg-type]
                       seed=int(seed))


def derive_student(teacher: nn.Module, spec: StudentSpec,
                   input_shape: tuple[int, ...]) -> nn.Module:
    """A narrower copy of ``teacher``: every coupled channel group keeps ``spec.width`` of its
    channels (:func:`techniques.prune.kept_channels`, at least one), the rest removed in every
    coupled module at once (Torch-Pruning). ``init=fresh`` then re-initialises every layer
    (PyTorch's default initialisation, seeded); ``teacher`` is left as it was."""
    import copy

    import torch

    from techniques.prune import ChannelPruneConfig, coupling, prune_channels

    if spec.kind != "width" or spec.width is None:
        raise SpecError(f"student {spec.label}: not a derived (width=) student")
    student = copy.deepcopy(teacher)
    ratio = round(1.0 - spec.width, 6)
    configs = {layer: ChannelPruneConfig(ratio=ratio) for group in coupling(student, input_shape)
               for layer in group.layers}
    if not configs:
        raise SpecError(f"student {spec.label}: the model has no channel group to narrow "
                        "(Torch-Pruning found none)")
    prune_channels(student, configs, input_shape)
    if spec.init == "fresh":
        with torch.random.fork_rng(devices=[]):  # seeded, without moving the caller's RNG
            torch.manual_seed(spec.seed)
            for module in student.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
    return student.eval()


__all__ = ["MIN_WIDTH", "SPEC_HELP", "StudentRecord", "StudentSpec", "derive_student",
           "parse_student"]
