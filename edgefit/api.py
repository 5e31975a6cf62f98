"""The Python API: plan and apply from a notebook or a script, with your own module and data.

    import edgefit
    plan = edgefit.plan(net, "arduino-nano-33-ble", limits={"latency": "200ms", "ram": "64KB"},
                        data=(x_train, y_train))
    print(plan.status, plan.options())
    result = edgefit.apply(plan, net, data=(x_train, y_train), test_data=(x_test, y_test),
                           out="edgefit-out")
    result.ok, result.onnx, result.report["accuracy"]

`model` is an ``nn.Module`` (eval mode is used; BatchNorm is folded into its conv, as the CLI
does), or anything ``--model`` takes (a built-in name, a .pt2 or .onnx file, module:factory:
calling it from your own code is your decision). Data is ``(x, y)`` arrays (x float32 N x C x
H x W in the value range the model expects, y int class labels), a torch ``Dataset`` of
``(x, y)`` pairs, or a ``DataLoader``; or a built-in data set name. Without labels (a bare
array or tensor of inputs, a Dataset or DataLoader yielding inputs only) the model is judged by
its fidelity to the fp32 model's outputs (top-1 agreement for class outputs, 1 - relative
squared error for others), which needs no labels; an accuracy-drop limit is then the top-1
disagreement with the fp32 model (class outputs only). Calibration takes 512
samples (seeded) of ``data``; ``apply`` needs the same ``data`` again (the plan pins its hash)
and ``test_data`` held out for the accuracy it reports. Errors are edgefit's typed exceptions
(``edgefit_common.errors``), with the same one-line messages the CLI prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from device_specs.budget import Budget, Limits, Preprocess
from edgefit_common.errors import DataError, SpecError

if TYPE_CHECKING:
    from torch import nn

    from planner.plan import Plan
    from workloads.models import LoadedModel


@dataclass(frozen=True)
class ApplyResult:
    """What `apply` wrote and found: the report (as report.json), where the files are."""

    report: dict[str, Any]
    out: Path

    @property
    def ok(self) -> bool:
        """Every check passed (artifacts as planned, the limits that apply measured)."""
        return all(c["ok"] for c in self.report.get("checks", []))

    @property
    def onnx(self) -> Path:
        return self.out / "model.onnx"

    @property
    def flash_image(self) -> Path:
        return self.out / "model.flash.bin"


def plan(model: nn.Module | str | Path, target: str, *,
         limits: Limits | Mapping[str, str | float] | None = None,
         data: Any = None, input_shape: Iterable[int] | None = None,
         profile: str | None = None, margin: float = 0.0,
         pins: Mapping[str, str] | None = None, exclude: Iterable[str] = (),
         finetune_epochs: int = 0,
         preprocess: tuple[Iterable[float], Iterable[float]] | None = None,
         link: str | None = None, ab_slots: int = 1,
         metric: Callable[[np.ndarray, Any], float] | None = None,
         student: str | None = None) -> Plan:
    """A plan for `model` on `target` (a catalog name, "host" or a device YAML) under `limits`
    ({"latency": "30ms", "flash": "1MB", "ram": "256KB", "energy": "5mJ",
    "accuracy_drop": "1pp"}). Without `data` no accuracy cost is measured (every option looks
    free to the solver; the plan's provenance says so). `preprocess`: (mean, std) per channel,
    the normalisation the model was trained with, applied to `data` ([0, 1] inputs) before
    every measurement; the plan records it and `apply` applies it too. `link`: the link
    updates travel over (device_specs/links.yaml; an "update_time" limit needs it), `ab_slots`:
    model images the flash holds (docs/delivery.md). `metric(labels, outputs) -> float`,
    higher is better: what apply reports instead of top-1 accuracy (tried here on the fp32
    model: a metric that fails is a DataError now, not after the costs are measured; `apply`
    uses it unless given another; plan.json records its module:name). `student`: plan a
    smaller student distilled from `model` ("width=0.5", as `plan --student`; trained on
    `data`, `finetune_epochs` epochs, default 3)."""
    from edgefit.planning import calibration_sample, make_plan
    from techniques.student import parse_student
    from workloads.data import training_data

    _check_delivery(link, ab_slots, _limits(limits))
    budget = Budget(target=target, limits=_limits(limits), profile=profile, margin=margin,
                    data=data if isinstance(data, str) else None,
                    preprocess=None if preprocess is None else Preprocess(
                        mean=[float(v) for v in preprocess[0]],
                        std=[float(v) for v in preprocess[1]]),
                    model=str(model) if isinstance(model, str | Path) else None,
                    link=link, ab_slots=ab_slots)
    from edgefit.metric import metric_ref

    loaded = _loaded(model, input_shape, data)
    calibration, labelled = None, None
    if data is not None and not isinstance(data, str):
        x, y = _arrays(data, "data")
        calibration, labelled = calibration_sample(x, y), y is not None
    train = None if data is None or isinstance(data, str) else _dataset(data, "data")
    with training_data(train):  # a student is distilled on the caller's data
        result, _ = make_plan(budget, "python", pins=dict(pins or {}), exclude=tuple(exclude),
                              finetune_epochs=finetune_epochs, loaded=loaded,
                              calibration=calibration, labelled=labelled,
                              metric=None if metric is None else (metric_ref(metric), metric),
                              student=None if student is None else parse_student(student))
    result._metric_fn = metric  # apply's, unless it is given another
    return result


def apply(plan: Plan, model: nn.Module | str | Path | None = None, *, data: Any = None,
          test_data: Any = None, out: str | Path = "edgefit-out",
          metric: Callable[[np.ndarray, np.ndarray], float] | None = None) -> ApplyResult:
    """Apply `plan` to `model` (the one it was planned for: its weights hash is checked) into
    the folder `out` (replaced as a whole): the runnable ONNX, the packed flash image, every
    check read back from them, accuracy on `test_data` and the host measurements.
    `metric(labels, outputs) -> float`, higher is better, replaces top-1 accuracy (the fp32
    and the runnable ONNX both scored by it; default: the one `plan` was given); the plan's
    normalisation is applied to the data. Data without labels: fidelity to the fp32 model."""
    from edgefit.applying import apply_plan
    from edgefit.planning import calibration_sample

    loaded = None if model is None else _loaded(model, plan.model.input_shape, data)
    arrays = None
    if data is not None and not isinstance(data, str):
        if test_data is None:
            raise DataError("apply with in-memory data needs test_data too: accuracy is "
                            "reported on held-out samples, never on the calibration data")
        calib = calibration_sample(*_arrays(data, "data"))
        arrays = (calib, _dataset(test_data))
    from workloads.data import training_data

    # fine-tuning (the plan's finetune) trains on the caller's data, not on a named data set
    train = None if data is None or isinstance(data, str) else _dataset(data, "data")
    with training_data(train):
        report = apply_plan(plan, Path(out), loaded=loaded, data=arrays, metric=metric)
    return ApplyResult(report, Path(out))


def _limits(limits: Limits | Mapping[str, str | float] | None) -> Limits:
    if limits is None:
        raise SpecError("give at least one limit, e.g. limits={'latency': '30ms'}")
    return limits if isinstance(limits, Limits) else Limits.model_validate(dict(limits))


def _check_delivery(link: str | None, ab_slots: int, limits: Limits) -> None:
    """The delivery arguments as SpecErrors (one line each), before any work."""
    from device_specs.budget import MAX_AB_SLOTS
    from device_specs.links import load_link

    if link is not None:
        load_link(link)
    if not (isinstance(ab_slots, int) and 1 <= ab_slots <= MAX_AB_SLOTS):
        raise SpecError(f"ab_slots={ab_slots!r}: give 1 to {MAX_AB_SLOTS} model images")
    if limits.update_time is not None and link is None:
        raise SpecError("an update_time limit needs link= (device_specs/links.yaml)")


def _loaded(model: Any, input_shape: Iterable[int] | None, data: Any) -> LoadedModel | None:
    """A module object as a LoadedModel (eval, BatchNorm folded); None for a reference (the
    budget names it, and make_plan loads it as the CLI would)."""
    if isinstance(model, str | Path):
        return _load_ref(str(model), input_shape)
    from torch import nn

    from workloads.models import as_loaded, planning_form

    if not isinstance(model, nn.Module):
        raise SpecError(f"model: an nn.Module or a model reference, not {type(model).__name__}")
    shape = tuple(input_shape) if input_shape is not None else _shape_from(data)
    planned = planning_form(model)
    return as_loaded(planned, shape, type(model).__name__, type(model).__name__, "module")


def _load_ref(ref: str, input_shape: Iterable[int] | None) -> LoadedModel:
    from workloads.models import load_model_ref
    from workloads.refs import factory_allowed, is_factory_ref

    shape = tuple(input_shape) if input_shape is not None else None
    with factory_allowed(ref if is_factory_ref(ref) else None):  # your code calls it
        return load_model_ref(ref, None, shape)


def _shape_from(data: Any) -> tuple[int, ...]:
    if data is None or isinstance(data, str):
        raise SpecError("input_shape is needed for a module without in-memory data "
                        "(one sample's shape, e.g. (1, 28, 28))")
    x, _ = _arrays(data, "data")
    return tuple(int(d) for d in x.shape[1:])


def _arrays(data: Any, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(x float32, y int64 or None) from arrays, a torch Dataset of (x, y) pairs or a
    DataLoader; y None: inputs only (a bare array or tensor, or items that are inputs)."""
    if isinstance(data, tuple) and len(data) == 2:
        x, y = (np.asarray(_numpy(a)) for a in data)
    elif hasattr(data, "shape") and hasattr(data, "__array__") or hasattr(data, "detach"):
        x, y = np.asarray(_numpy(data)), None  # a bare array or tensor of inputs
    else:
        x, y = _from_items(data, what)
    if x.ndim < 2 or (y is not None and len(x) != len(y)):
        raise DataError(f"{what}: {len(x)} inputs of shape {tuple(x.shape[1:])} and "
                        f"{'no' if y is None else len(y)} labels; want N samples (and N "
                        "labels, or none)")
    return (np.ascontiguousarray(x, dtype=np.float32),
            None if y is None else np.asarray(y, dtype=np.int64).reshape(-1))


def _from_items(data: Any, what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """A Dataset's or DataLoader's items: all (x, y) pairs, or all inputs (an array, a tensor
    or a 1-tuple); a DataLoader's items are batches."""
    xs, ys = [], []
    try:
        items = iter(data)
    except TypeError:
        raise DataError(f"{what}: (x, y) arrays, inputs alone, a Dataset or a DataLoader, not "
                        f"{type(data).__name__}") from None
    for item in items:
        if isinstance(item, tuple | list) and len(item) == 2:
            xs.append(np.asarray(_numpy(item[0])))
            ys.append(np.asarray(_numpy(item[1])))
        elif isinstance(item, tuple | list) and len(item) == 1 or hasattr(item, "shape"):
            xs.append(np.asarray(_numpy(item[0] if isinstance(item, tuple | list) else item)))
        else:
            raise DataError(f"{what}: every item must be an (x, y) pair or an input alone")
    if not xs:
        raise DataError(f"{what}: no samples")
    if ys and len(ys) != len(xs):
        raise DataError(f"{what}: some items are (x, y) pairs and some inputs alone")
    if ys:
        batched = xs[0].ndim > 0 and ys[0].ndim == 1
        return ((np.concatenate(xs), np.concatenate(ys)) if batched else
                (np.stack(xs), np.asarray(ys)))
    batched = getattr(data, "batch_size", None) is not None  # a DataLoader yields batches
    return np.concatenate(xs) if batched else np.stack(xs), None


def _numpy(a: Any) -> Any:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else a


def _dataset(data: Any, what: str = "test_data") -> Any:
    from workloads.data import Dataset

    x, y = _arrays(data, what)
    if y is None:  # inputs only: judged by fidelity to the fp32 model
        return Dataset(what, x, np.zeros(len(x), np.int64), 1,
                       "given to edgefit.apply (inputs only, no labels)", labelled=False)
    return Dataset(what, x, y, int(y.max()) + 1 if len(y) else 0, "given to edgefit.apply")
