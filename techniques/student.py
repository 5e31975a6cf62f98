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
* ``depth=N`` (derived, shallower; with or without a width): the last ``N`` residual blocks
  whose branch keeps its input's shape (``y = x + f(x)``) become identities (``y = x``), found
  and removed in the model's torch.fx graph; the rest keeps the teacher's weights;
* ``package.module:factory`` (user-given): the user's own network, built by calling the factory
  (the same rules as ``--model module:factory``: imported only when a command line names it,
  no pickle), its output shape the teacher's.

The spec is data (:class:`StudentSpec`, stored in plan.json's ``student`` with what it was
costed on, :class:`StudentRecord`). Nothing here imports torch at import time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

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
             "to start from fresh weights instead of the teacher's kept ones), depth=N (the last "
             "N identity-shaped residual blocks dropped; also with a width) or "
             "package.module:factory (your own network)")


class StudentSpec(BaseModel):
    """What student to build: a derived narrower copy of the teacher, or the user's factory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["width", "depth", "factory"]
    width: float | None = Field(default=None, ge=MIN_WIDTH, lt=1.0, description="width: the "
                                "fraction of every coupled channel group's channels kept")
    init: Literal["teacher", "fresh"] = Field(
        default="teacher", description="width: start from the teacher's kept channels' weights, "
        "or from a fresh (seeded) initialisation; factory: always the factory's own weights")
    depth: int | None = Field(default=None, ge=1, le=1000, description="residual blocks "
                              "(identity-shaped, the last ones) made identities")
    factory: str | None = Field(default=None, description="factory: package.module:factory "
                                "(imported only when a command line names it again)")
    seed: int = Field(default=0, ge=0, description="seed of a fresh initialisation or factory")

    @model_validator(mode="after")
    def _consistent(self) -> StudentSpec:
        if self.kind == "width" and (self.width is None or self.factory is not None):
            raise ValueError("a width student needs width and no factory")
        if self.kind == "depth" and (self.depth is None or self.width is not None
                                     or self.factory is not None):
            raise ValueError("a depth student needs depth and no width or factory (a narrower "
                             "and shallower one is kind width with a depth)")
        if self.kind == "factory" and (self.factory is None or self.width is not None
                                       or self.depth is not None):
            raise ValueError("a factory student needs factory and no width or depth")
        if self.factory is not None and not _FACTORY.fullmatch(self.factory):
            raise ValueError("factory must be package.module:function (ASCII identifiers)")
        return self

    @property
    def label(self) -> str:
        """As the user writes it (the inverse of :func:`parse_student`)."""
        if self.kind == "factory":
            return str(self.factory)
        parts = ([f"width={self.width:g}"] if self.width is not None else []) + (
            [f"depth={self.depth}"] if self.depth is not None else [])
        return ",".join(parts) + (",init=fresh" if self.init == "fresh" else "") + (
            f",seed={self.seed}" if self.seed else "")


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
    if not text.startswith(("width=", "depth=")):
        raise SpecError(f"--student {text[:60]!r}: not a student spec; give {SPEC_HELP}")
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in ("width", "depth", "init", "seed") \
                or key.strip() in fields:
            raise SpecError(f"--student {text[:60]!r}: {part.strip()[:30]!r} is not width=F, "
                            "depth=N, init=teacher|fresh or seed=N")
        fields[key.strip()] = value.strip()
    width = _width(fields["width"]) if "width" in fields else None
    depth = fields.get("depth")
    if depth is not None and not (depth.isdigit() and 1 <= int(depth) <= 1000):
        raise SpecError(f"--student depth={depth[:20]}: the number of residual blocks to drop, "
                        "a whole number from 1")
    init = fields.get("init", "teacher")
    if init not in ("teacher", "fresh"):
        raise SpecError(f"--student init={init[:20]!r}: teacher or fresh")
    seed = fields.get("seed", "0")
    if not seed.isdigit():
        raise SpecError(f"--student seed={seed[:20]!r}: a whole number >= 0")
    return StudentSpec(kind="width" if width is not None else "depth", width=width,
                       depth=None if depth is None else int(depth),
                       init=init, seed=int(seed))  # type: ignore[arg-type]


def _width(text: str) -> float:
    try:
        width = float(text)
    except ValueError:
        raise SpecError(f"--student width={text[:20]!r}: not a number") from None
    if not MIN_WIDTH <= width < 1.0:  # also rejects nan
        raise SpecError(f"--student width={text[:20]}: out of range; the kept fraction of "
                        f"channels is {MIN_WIDTH} <= F < 1")
    return width


def derive_student(teacher: nn.Module, spec: StudentSpec,
                   input_shape: tuple[int, ...]) -> nn.Module:
    """A narrower copy of ``teacher``: every coupled channel group keeps ``spec.width`` of its
    channels (:func:`techniques.prune.kept_channels`, at least one), the rest removed in every
    coupled module at once (Torch-Pruning). ``init=fresh`` then re-initialises every layer
    (PyTorch's default initialisation, seeded); ``teacher`` is left as it was."""
    import copy

    import torch

    from techniques.prune import ChannelPruneConfig, coupling, prune_channels

    if spec.kind == "factory":
        raise SpecError(f"student {spec.label}: not a derived (width= or depth=) student")
    student = copy.deepcopy(teacher)
    if spec.depth is not None:
        student = drop_residual_blocks(student, spec.depth, input_shape, spec.label)
    if spec.width is not None:
        ratio = round(1.0 - spec.width, 6)
        configs = {layer: ChannelPruneConfig(ratio=ratio)
                   for group in coupling(student, input_shape) for layer in group.layers}
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


def drop_residual_blocks(model: nn.Module, count: int, input_shape: tuple[int, ...],
                         label: str = "") -> nn.Module:
    """``model`` as a torch.fx GraphModule with its last ``count`` identity-shaped residual
    adds (``x + f(x)``, ``f(x)`` of ``x``'s shape and computed from ``x``) replaced by ``x``;
    the branch's now unused layers are removed. SpecError when it has fewer such blocks."""
    import torch
    from torch import fx
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types; the user needs one line
        raise SpecError(f"student {label}: torch.fx cannot trace the model to find its "
                        f"residual blocks: {type(exc).__name__}") from None
    ShapeProp(gm).propagate(torch.zeros((1, *input_shape)))
    blocks = [(node, skip) for node in gm.graph.nodes
              if (skip := _residual_skip(node)) is not None]
    if len(blocks) < count:
        raise SpecError(f"student {label}: depth={count} drops {count} residual block(s), the "
                        f"model has {len(blocks)} whose branch keeps its input's shape")
    for node, skip in blocks[len(blocks) - count:]:
        node.replace_all_uses_with(skip)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


def _residual_skip(node: Any) -> Any:
    """The skip input of an identity-shaped residual add (``x`` of ``x + f(x)``), or None."""
    import operator

    import torch
    from torch import fx

    is_add = (node.op == "call_function" and node.target in (operator.add, torch.add)) or (
        node.op == "call_method" and node.target == "add")
    if not is_add or len(node.args) < 2:
        return None
    a, b = node.args[:2]
    if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)):
        return None
    for skip, branch in ((a, b), (b, a)):
        if _shape(skip) is not None and _shape(skip) == _shape(branch) == _shape(node) \
                and _through_a_layer(branch, skip):
            return skip
    return None


def _shape(node: Any) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _through_a_layer(node: Any, ancestor: Any) -> bool:
    """Whether ``node`` is computed from ``ancestor`` through at least one module call (a
    layer: the branch of a residual block, not the skip itself)."""
    stack = [(node, node.op == "call_module")]
    seen = set()
    while stack:
        current, via = stack.pop()
        for parent in current.all_input_nodes:
            if parent is ancestor:
                if via:
                    return True
                continue
            if (parent, via) not in seen:
                seen.add((parent, via))
                stack.append((parent, via or parent.op == "call_module"))
    return False


__all__ = ["MIN_WIDTH", "SPEC_HELP", "StudentRecord", "StudentSpec", "derive_student",
           "drop_residual_blocks", "parse_student"]
