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
``(x, y)`` pairs, or a ``DataLoader``; or a built-in data set name. Calibration takes 512
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
         link: str | None = None, ab_slots: int = 1) -> Plan:
    """A plan for `model` on `target` (a catalog name, "host" or a device YAML) under `limits`
    ({"latency": "30ms", "flash": "1MB", "ram": "256KB", "energy": "5mJ",
    "accuracy_drop": "1pp"}). Without `data` no accuracy cost is measured (every option looks
    free to the solver; the plan's provenance says so). `preprocess`: (mean, std) per channel,
    the normalisation the model was trained with, applied to `data` ([0, 1] inputs) before
    every measurement; the plan records it and `apply` applies it too. `link`: the link
    updates travel over (device_specs/links.yaml; an "update_time" limit needs it), `ab_slots`:
    model images the flash holds (docs/delivery.md)."""
    from edgefit.planning import calibration_sample, make_plan

    _check_delivery(link, ab_slots, _limits(limits))
    budget = Budget(target=target, limits=_limits(limits), profile=profile, margin=margin,
                    data=data if isinstance(data, str) else None,
                    preprocess=None if preprocess is None else Preprocess(
                        mean=[float(v) for v in preprocess[0]],
                        std=[float(v) for v in preprocess[1]]),
                    model=str(model) if isinstance(model, str | Path) else None,
                    link=link, ab_slots=ab_slots)
    loaded = _loaded(model, input_shape, data)
    calibration = None
    if data is not None and not isinstance(data, str):
        calibration = calibration_sample(*_arrays(data, "data"))
    result, _ = make_plan(budget, "python", pins=dict(pins or {}), exclude=tuple(exclude),
                          finetune_epochs=finetune_epochs, loaded=loaded,
                          calibration=calibration)
    return result


def apply(plan: Plan, model: nn.Module | str | Path | None = None, *, data: Any = None,
          test_data: Any = None, out: str | Path = "edgefit-out",
          metric: Callable[[np.ndarray, np.ndarray], float] | None = None) -> ApplyResult:
    """Apply `plan` to `model` (the one it was planned for: its weights hash is checked) into
    the folder `out` (replaced as a whole): the runnable ONNX, the packed flash image, every
    check read back from them, accuracy on `test_data` and the host measurements.
    `metric(labels, outputs) -> score in [0, 1]` replaces top-1 accuracy (the fp32 and the
    runnable ONNX both scored by it); the plan's normalisation is applied to the data."""
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


def _arrays(data: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(x float32, y int64) from arrays, a torch Dataset of (x, y) pairs or a DataLoader."""
    if isinstance(data, tuple) and len(data) == 2:
        x, y = (np.asarray(_numpy(a)) for a in data)
    else:
        xs, ys = [], []
        try:
            batches = iter(data)
        except TypeError:
            raise DataError(f"{what}: (x, y) arrays, a Dataset of (x, y) or a DataLoader, not "
                            f"{type(data).__name__}") from None
        for item in batches:
            if not (isinstance(item, tuple | list) and len(item) == 2):
                raise DataError(f"{what}: every item must be an (x, y) pair")
            xs.append(np.asarray(_numpy(item[0])))
            ys.append(np.asarray(_numpy(item[1])))
        batched = bool(xs) and xs[0].ndim > 0 and ys[0].ndim == 1
        x = np.concatenate(xs) if batched else np.stack(xs)
        y = np.concatenate(ys) if batched else np.asarray(ys)
    if x.ndim < 2 or len(x) != len(y):
        raise DataError(f"{what}: {len(x)} inputs of shape {tuple(x.shape[1:])} and {len(y)} "
                        "labels; want N samples and N labels")
    return np.ascontiguousarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64).reshape(-1)


def _numpy(a: Any) -> Any:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else a


def _dataset(data: Any) -> Any:
    from workloads.data import Dataset

    x, y = _arrays(data, "test_data")
    return Dataset("test_data", x, y, int(y.max()) + 1 if len(y) else 0, "given to edgefit.apply")
