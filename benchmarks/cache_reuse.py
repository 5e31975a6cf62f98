"""How much work planning repeats: accuracy measurements and CPU seconds per stage (issue #19).

Two runs, each in a fresh EDGEFIT_CACHE (a temporary folder; the trained models and data sets
are linked in from the user's cache so nothing is retrained or downloaded):

(a) ``lenet5-mnist`` planned for every profile of every catalog board, cold: how many (layer,
    technique config) accuracy measurements ran against how many distinct ones exist (the
    repeat-work ratio; 1.0 means nothing was measured twice);
(b) a model planned twice on one target: the second, warm, plan's CPU seconds split by stage
    (accuracy sensitivity, sparse/shared flash bytes, channel-pruning KL, solve), whether it
    is the same plan, then a third plan under another budget (what it measured, its CPU s).

    .venv/bin/python benchmarks/cache_reuse.py [--model fashion-cnn] [--target jetson-nano]

CPU seconds are ``time.process_time`` (every thread of this process) on a shared 2-core machine;
counts are exact. The stages are timed by wrapping edgefit.planning's functions in this process.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SHARED = ("models", "data", "onnx")  # what the user's cache holds that no plan measures
OTHER_BUDGET = {"latency": "2ms", "flash": "200KB"}  # (b)'s third plan: a new budget


class Meter:
    """Counters and CPU seconds of planning's stages, by wrapping the functions that do them."""

    def __init__(self) -> None:
        self.cpu_s: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self.pairs: list[tuple[str, str]] = []  # (layer, configs) accuracy measurements run
        self.cuts = 0  # (channel group, width) pruning KLs run
        self.stored = 0  # sparse/shared stored-bytes computations run

    def timed(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)  # the row cache keys on the wrapped function's source
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu_s[stage] += time.process_time() - start
                self.calls[stage] += 1
        return wrapper

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


@contextlib.contextmanager
def metered() -> Iterator[Meter]:
    from cost_models import accuracy
    from edgefit import planning

    meter = Meter()
    saved_planning = {n: getattr(planning, n) for n in (
        "_estimate_accuracy", "channel_groups", "sparse_flash_bytes",
        "shared_channel_flash_bytes", "solve", "_stored_bytes")}
    saved_accuracy = {n: getattr(accuracy, n) for n in ("measured_output_kl",
                                                        "channel_pruning_kl")}
    kl, prune_kl = saved_accuracy["measured_output_kl"], saved_accuracy["channel_pruning_kl"]
    stored = saved_planning["_stored_bytes"]

    def counted_kl(model: Any, options: Any, x: Any, **kwargs: Any) -> Any:
        meter.pairs += [(layer, _config_text(configs)) for layer, row in options.items()
                        for configs in row.values() if configs]
        return kl(model, options, x, **kwargs)

    def counted_prune_kl(model: Any, groups: Any, example: Any, x: Any, **kwargs: Any) -> Any:
        meter.cuts += sum(len(g.widths) - 1 for g in groups)
        return prune_kl(model, groups, example, x, **kwargs)

    @functools.wraps(stored)
    def counted_stored(*args: Any, **kwargs: Any) -> Any:
        meter.stored += 1
        return stored(*args, **kwargs)

    accuracy.measured_output_kl = counted_kl  # type: ignore[assignment]
    accuracy.channel_pruning_kl = counted_prune_kl  # type: ignore[assignment]
    planning._stored_bytes = counted_stored  # type: ignore[assignment]
    for name, stage in (("_estimate_accuracy", "sensitivity"),
                        ("channel_groups", "channel-pruning KL"),
                        ("sparse_flash_bytes", "sparse/shared flash bytes"),
                        ("shared_channel_flash_bytes", "sparse/shared flash bytes"),
                        ("solve", "solve")):
        setattr(planning, name, meter.timed(stage, saved_planning[name]))
    try:
        yield meter
    finally:
        for name, fn in saved_planning.items():
            setattr(planning, name, fn)
        for name, fn in saved_accuracy.items():
            setattr(accuracy, name, fn)


def _config_text(configs: Any) -> str:
    return json.dumps([c.model_dump(mode="json") if hasattr(c, "model_dump") else repr(c)
                       for c in configs], sort_keys=True)


@contextlib.contextmanager
def fresh_cache() -> Iterator[Path]:
    """A cold EDGEFIT_CACHE with the user's trained models and data sets linked in."""
    from edgefit_common.paths import cache_dir

    user = cache_dir()
    old = os.environ.get("EDGEFIT_CACHE")
    with tempfile.TemporaryDirectory(prefix="edgefit-cache-") as tmp:
        for name in SHARED:
            if (user / name).is_dir():
                (Path(tmp) / name).symlink_to(user / name)
        os.environ["EDGEFIT_CACHE"] = tmp
        try:
            yield Path(tmp)
        finally:
            if old is None:
                os.environ.pop("EDGEFIT_CACHE", None)
            else:
                os.environ["EDGEFIT_CACHE"] = old


def _plan(model: str, target: str, profile: str | None,
          limits: dict[str, str] | None = None) -> Any:
    from device_specs.budget import Budget, Limits
    from edgefit.planning import make_plan

    plan, _ = make_plan(Budget(target=target, profile=profile, model=model,
                               limits=Limits.model_validate(limits or {})), "benchmark")
    return plan


def all_profiles() -> list[tuple[str, str]]:
    from device_specs.catalog import catalog_names, load_spec

    return [(board, profile) for board in catalog_names() if board != "host"
            for profile in load_spec(board).profiles]


def lenet_all_profiles(model: str) -> dict[str, Any]:
    """(a): every catalog profile, one cold cache shared by all of them."""
    profiles = all_profiles()
    with fresh_cache(), metered() as meter:
        start = time.process_time()
        for board, profile in profiles:
            _plan(model, board, profile)
        total = time.process_time() - start
    distinct = len(set(meter.pairs))
    return {"model": model, "profiles": len(profiles), "accuracy_pairs_measured":
            len(meter.pairs), "distinct_pairs": distinct,
            "repeat_ratio": round(len(meter.pairs) / max(1, distinct), 2),
            "pruning_kl_cuts_measured": meter.cuts, "stored_bytes_computed": meter.stored,
            "cpu_s_total": round(total, 1),
            "cpu_s_by_stage": {k: round(v, 1) for k, v in meter.cpu_s.items()}}


def warm_replan(model: str, target: str) -> dict[str, Any]:
    """(b): plan once (cold), then again (warm); the second plan's stages."""
    with fresh_cache(), metered() as meter:
        start = time.process_time()
        first = _plan(model, target, None)
        cold = time.process_time() - start
        cold_stages = dict(meter.cpu_s)
        meter.reset()
        start = time.process_time()
        second = _plan(model, target, None)
        warm = time.process_time() - start
        warm_stages, warm_work = dict(meter.cpu_s), (len(meter.pairs), meter.cuts, meter.stored)
        meter.reset()
        start = time.process_time()  # another budget: the same rows, another solve
        _plan(model, target, None, OTHER_BUDGET)
        other = time.process_time() - start
    same = first.model_dump(exclude={"solver"}) == second.model_dump(exclude={"solver"})
    return {"model": model, "target": target, "cpu_s_cold": round(cold, 1),
            "cpu_s_cold_by_stage": {k: round(v, 1) for k, v in cold_stages.items()},
            "cpu_s_warm": round(warm, 1),
            "cpu_s_warm_by_stage": {k: round(v, 1) for k, v in warm_stages.items()},
            "warm_accuracy_pairs_measured": warm_work[0],
            "warm_pruning_kl_cuts_measured": warm_work[1],
            "warm_stored_bytes_computed": warm_work[2], "same_plan": same,
            "other_budget": OTHER_BUDGET, "cpu_s_other_budget": round(other, 1),
            "other_budget_measurements": len(meter.pairs) + meter.cuts + meter.stored}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all-profiles-model", default="lenet5-mnist")
    ap.add_argument("--model", default="fashion-cnn", help="the model re-planned warm")
    ap.add_argument("--target", default="jetson-nano", help="the warm re-plan's target")
    ap.add_argument("--skip", choices=("a", "b"), action="append", default=[])
    args = ap.parse_args(argv)
    out = {}
    if "a" not in args.skip:
        out["all_profiles"] = lenet_all_profiles(args.all_profiles_model)
        print(json.dumps(out["all_profiles"], indent=1), flush=True)
    if "b" not in args.skip:
        out["warm_replan"] = warm_replan(args.model, args.target)
        print(json.dumps(out["warm_replan"], indent=1), flush=True)


if __name__ == "__main__":
    main()
