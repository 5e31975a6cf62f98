"""Which model references run code, and when edgefit may run it (torch-free).

A ``package.module:factory`` reference is imported and called: it is the user's code. edgefit
runs it only when the user named it on the command line (``--model``), or in ``./edgefit.yaml``
with ``allow_factory: true`` -- never because a budget file or a plan.json says so. The
command line grants that for one reference and one block (:func:`factory_allowed`);
:func:`workloads.models.load_model_ref` refuses every other factory before importing anything.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path, PurePath

from edgefit_common.errors import ModelLoadError, PlanError, did_you_mean
from edgefit_common.fsutil import file_problem, shown

MODEL_FILE_SUFFIXES = (".pt2", ".onnx", ".pt", ".pth", ".pkl", ".ckpt", ".bin")
"""Suffixes that make a reference a file (a model or a refused pickle), never a factory."""

PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".ckpt", ".bin")

BUILT_IN_MODELS = ("fashion-cnn", "lenet300-mnist", "lenet5-mnist", "minilm-l6")
"""workloads.zoo's ZOO and PRETRAINED names, repeated here torch-free (a test keeps them equal)."""

_FACTORY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*",
                      re.ASCII)

_BUILT_IN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*", re.ASCII)

_ALLOWED: ContextVar[frozenset[str]] = ContextVar("edgefit_allowed_factories",
                                                  default=frozenset())

FROM_COMMAND_LINE = ("edgefit imports a module:factory model only when it is named on the "
                     "command line (--model) or in ./edgefit.yaml with allow_factory: true")


def is_factory_ref(ref: str) -> bool:
    """Whether `ref` would be imported and called: anything with a ':' that is not a model
    file name (a built-in name never has one)."""
    return ":" in ref and PurePath(ref).suffix not in MODEL_FILE_SUFFIXES


def is_well_formed_factory(ref: str) -> bool:
    """`package.module:factory` with ASCII identifiers only."""
    return _FACTORY.fullmatch(ref) is not None


def check_model_ref(ref: str, weights: str | None = None) -> None:
    """ModelLoadError for a model reference that cannot load, found without torch: an unknown
    built-in name (with the closest one), a pickled checkpoint, a .pt2 / .onnx file or a
    factory's weights file that is missing or not a regular file, or whose contents do not
    parse as what they should be (workloads.file_checks); all is checked again when they
    load (workloads.models)."""
    if ref in BUILT_IN_MODELS:
        return
    path = PurePath(ref)
    if path.suffix in PICKLE_SUFFIXES:
        raise ModelLoadError(
            f"{shown(ref, 80)}: a pickled checkpoint is not a model edgefit loads; give a "
            "torch.export '.pt2' file, or 'package.module:factory' with this file as weights (a "
            "state_dict, loaded with weights_only=True)")
    if path.suffix in (".pt2", ".onnx"):
        if (problem := file_problem(ref, "model file")) is not None:
            raise ModelLoadError(problem)
        from workloads.file_checks import check_onnx_file, check_pt2_file

        (check_onnx_file if path.suffix == ".onnx" else check_pt2_file)(Path(ref))
        return
    if is_factory_ref(ref):
        if weights is not None and (problem := file_problem(weights, "weights file")):
            raise ModelLoadError(problem)
        if weights is not None:
            from workloads.file_checks import check_state_dict_file

            check_state_dict_file(Path(weights))
        return
    raise ModelLoadError(f"{shown(ref, 80)}{did_you_mean(ref, BUILT_IN_MODELS)}: not a built-in "
                         f"model ({', '.join(BUILT_IN_MODELS)}), an existing .pt2 or .onnx file, "
                         "or 'module:factory'")


@contextlib.contextmanager
def factory_allowed(ref: str | None) -> Iterator[None]:
    """Within the block, `ref` (a factory the user named on the command line) may be imported
    and called; `None` allows nothing. Scoped: nothing stays allowed after the block."""
    if ref is None:
        yield
        return
    token = _ALLOWED.set(_ALLOWED.get() | {ref})
    try:
        yield
    finally:
        _ALLOWED.reset(token)


def check_factory_allowed(ref: str) -> None:
    """ModelLoadError unless the command line allowed `ref` (see :func:`factory_allowed`)."""
    if ref not in _ALLOWED.get():
        raise ModelLoadError(f"{shown(ref, 80)}: refused: a module:factory model is code; "
                             f"{FROM_COMMAND_LINE}, never from a budget or plan file")
    if not is_well_formed_factory(ref):
        raise ModelLoadError(f"{shown(ref, 80)}: write a factory as package.module:function "
                             "(ASCII identifiers)")


@dataclass(frozen=True)
class ModelSource:
    """The model `apply` loads: a reference, its weights file (factories), its input shape, and
    whether the command line allowed it to run code."""

    ref: str
    weights: str | None = None
    input_shape: tuple[int, ...] | None = None
    trusted_factory: bool = False

    @contextlib.contextmanager
    def allowed(self) -> Iterator[None]:
        with factory_allowed(self.ref if self.trusted_factory else None):
            yield


def source_for_apply(kind: str, name: str, path: str | None, input_shape: list[int],
                     model: str | None = None, weights: str | None = None,
                     recorded_weights: str | None = None) -> ModelSource:
    """The model to apply a plan to, checked before anything is imported: the plan's own model
    (a built-in name, a .pt2 or an .onnx file), or `model` / `weights` from the command line
    (`recorded_weights`, the plan's own state_dict file, when `model` is the plan's factory and
    no weights are given: data, loaded weights-only, its hash checked). A plan whose model is
    a factory is refused with the command that applies it."""
    shape = tuple(input_shape)
    if model is not None:
        if weights is None and kind == "factory" and model == path:
            weights = recorded_weights
        return ModelSource(model, weights, shape, trusted_factory=is_factory_ref(model))
    if weights is not None:
        raise PlanError("--weights needs --model (the module:factory the weights are for)")
    if kind == "module":
        raise PlanError("the plan was made from a torch module object in Python (edgefit.plan); "
                        "apply it from Python, edgefit.apply(plan, model=...), or save the "
                        "module with torch.export and plan the .pt2")
    ref = name if kind == "zoo" else path
    if kind == "factory" or (ref is not None and is_factory_ref(ref)):
        shown_ref = shown(path or name, 80)
        raise PlanError(f"the plan's model {shown_ref} is a module:factory (code), which is "
                        f"never run from a plan file; to apply it, name it yourself: edgefit "
                        f"apply PLAN --model {shown_ref} --weights STATE_DICT (the plan's weights "
                        "hash is checked)")
    if ref is None:
        raise PlanError("the plan does not say where its model file is (model.path)")
    if kind == "zoo" and not _BUILT_IN.fullmatch(ref):
        raise PlanError(f"the plan's built-in model {shown(ref, 80)} is not a built-in name")
    wanted = {"pt2": ".pt2", "onnx": ".onnx"}.get(kind)
    if wanted is not None and PurePath(ref).suffix != wanted:
        raise PlanError(f"the plan's {kind} model {shown(ref, 80)} is not a {wanted} file")
    return ModelSource(ref, None, shape)
