"""A user metric: ``metric(labels, outputs) -> float``, higher is better (issue #21 item 2).

It replaces top-1 accuracy wherever `plan` (with --apply / --loop) and `apply` report accuracy:
the fp32 model and the runnable ONNX are both scored by it, and the drop is
100 x (fp32 score - compressed score) "points". ``outputs`` is the model's output array, or a
list of arrays (one per output, in the model's order) when it has several. On the command line
it is ``--metric module:function``, imported from the current directory first (like a
``module:factory`` model). plan.json records the reference, but a plan file never makes
edgefit import code: ``edgefit apply`` needs ``--metric`` again (the command that made the plan,
``plan --apply`` / ``--loop``, named it already). Torch-free.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from edgefit_common.errors import DataError, PlanError, SpecError
from edgefit_common.fsutil import shown

Metric = Callable[[np.ndarray, Any], float]

_ALLOWED: ContextVar[tuple[tuple[str, Metric], ...]] = ContextVar("edgefit_allowed_metrics",
                                                                  default=())

NO_LABELS = ("a metric scores outputs against labels, and the data holds none (inputs only): "
             "drop the metric (the model is then judged by its fidelity to the fp32 model's "
             "outputs) or give data with labels ('y' in the .npz)")


def check_metric_ref(ref: str) -> None:
    """SpecError unless ``ref`` is ``package.module:function`` (ASCII identifiers)."""
    from workloads.refs import is_well_formed_factory

    if not is_well_formed_factory(ref):
        raise SpecError(f"--metric {shown(ref, 80)}: write it as module:function (ASCII "
                        "identifiers), e.g. mymetrics:top2")


def load_metric(ref: str) -> Metric:
    """The function ``ref`` names, imported from the current directory first, then the
    installed packages. SpecError (one line) when it cannot be found or is not callable."""
    check_metric_ref(ref)
    module_name, function = ref.split(":")
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        fn = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"--metric {ref}: cannot import it: {exc} (looked in the current "
                        f"directory {cwd} and the installed packages)") from None
    except Exception as exc:  # the user's module failed while importing: its error, one line
        raise SpecError(f"--metric {ref}: importing {module_name} failed: "
                        f"{type(exc).__name__}: {str(exc)[:200]}") from None
    finally:
        if added:
            sys.path.remove(cwd)
    if not callable(fn):
        raise SpecError(f"--metric {ref}: {type(fn).__name__} is not a function")
    return fn  # type: ignore[no-any-return]


def metric_name(metric: Metric) -> str:
    return getattr(metric, "__name__", type(metric).__name__)


def metric_ref(metric: Metric) -> str:
    """What plan.json records for a callable the Python API was given: module:qualname."""
    module = getattr(metric, "__module__", None) or "?"
    return f"{module}:{getattr(metric, '__qualname__', metric_name(metric))}"


def as_outputs(outputs: Sequence[np.ndarray]) -> Any:
    """What a metric receives: the array of a one-output model, else the list of arrays."""
    return outputs[0] if len(outputs) == 1 else list(outputs)


def score(metric: Metric, labels: np.ndarray, outputs: Sequence[np.ndarray]) -> float:
    """metric(labels, outputs) as a finite float; DataError (one line) when it raises or
    returns anything else."""
    name = metric_name(metric)
    try:
        value = metric(labels, as_outputs(outputs))
        result = float(value)
    except Exception as exc:  # the caller's code: its failure is bad input, said in a line
        raise DataError(f"metric {name} failed: {type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
                        ) from None
    if not math.isfinite(result):
        raise DataError(f"metric {name} returned {result}: it must be a finite number "
                        "(higher is better)")
    return result


@contextlib.contextmanager
def metric_allowed(ref: str | None, metric: Metric | None) -> Iterator[None]:
    """Within the block, a plan recording ``ref`` is scored by ``metric`` (the command line
    named it); None allows nothing."""
    if ref is None or metric is None:
        yield
        return
    token = _ALLOWED.set((*_ALLOWED.get(), (ref, metric)))
    try:
        yield
    finally:
        _ALLOWED.reset(token)


def plan_metric(recorded: str | None, given: Metric | None, api_fn: Metric | None) -> Metric | None:
    """The metric apply scores with: the one given now, else the plan's callable (the Python
    API made it), else the one the command line allowed for the plan's reference. A plan that
    records a metric nobody named again is refused: a plan file never imports code."""
    if given is not None or recorded is None:
        return given
    if api_fn is not None:
        return api_fn
    allowed = dict(_ALLOWED.get()).get(recorded)
    if allowed is None:
        raise PlanError(f"the plan was judged with the metric {recorded}: name it again "
                        f"(`edgefit apply ... --metric {recorded}`, or metric= in Python); a "
                        "plan file never makes edgefit import code")
    return allowed
