"""The sensitivity pass serial and on Ray with 1 and 2 local workers (issue #19 item 7).

    .venv/bin/python benchmarks/scale_out.py [--model lenet5-mnist] [--target arduino-nano-33-ble]

1. The pass's inputs are taken from a real plan: ``edgefit.planning._cached_output_kl`` is
   replaced by a function that records (module, options, calibration images) and stops the
   plan, so the pairs are exactly those ``plan`` measures for this model and target.
2. ``cost_models.cached_rows.cached_output_kl`` measures them three times, each into an empty
   row cache (a temporary file): in-process (edgefit's default), on a local Ray instance of
   1 worker and of 2 workers (``plan --workers N``'s executor, bound to 127.0.0.1).

Printed per run: tasks and pairs; wall seconds of the pass (``time.perf_counter``; Ray's
start-up timed apart); CPU seconds of this process (``time.process_time``) and of Ray's
processes (user + system of every descendant process, read with psutil after the pass: the
workers, raylet and GCS); the largest difference from the serial numbers. The machine has 2
cores shared with other jobs (the 1-minute load average is printed before and after): wall
times vary from run to run, counts and numbers do not. Last, a projection of the wall time on
N one-worker nodes from the 1-worker run's per-task CPU seconds (measured in each task on its
worker) and its serial part (see ``projection``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any


class _Captured(Exception):
    """Raised to stop the plan once the sensitivity pass's inputs are recorded."""


def pass_inputs(model: str, target: str) -> tuple[Any, dict[str, dict[str, list[Any]]], Any]:
    """(module, options, images) that planning ``model`` for ``target`` hands the pass."""
    from device_specs.budget import Budget
    from edgefit import planning

    got: list[Any] = []

    def capture(module: Any, options: Any, x: Any) -> Any:
        got.extend((module, options, x))
        raise _Captured

    real = planning._cached_output_kl
    planning._cached_output_kl = capture  # type: ignore[assignment]
    try:
        budget = Budget.model_validate({"target": target, "limits": {"latency": "1s"},
                                        "model": model})
        planning.make_plan(budget, "benchmark")
    except _Captured:
        pass
    finally:
        planning._cached_output_kl = real  # type: ignore[assignment]
    return got[0], got[1], got[2]


pass_inputs_cache: dict[str, Any] = {}


def spread(options: dict[str, Any], k: int) -> dict[str, Any]:
    """``k`` of the pass's layers, evenly spread in the model's order (first and last kept)."""
    pass_inputs_cache.clear()
    pass_inputs_cache.update(options)
    names = list(options)
    k = min(k, len(names))
    picked = sorted({round(i * (len(names) - 1) / max(1, k - 1)) for i in range(k)})
    return {names[i]: options[names[i]] for i in picked}


def descendants_cpu_s() -> float:
    """User + system CPU seconds of every live descendant of this process."""
    import psutil

    total = 0.0
    for p in psutil.Process().children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def run(name: str, executor: Any, module: Any, options: Any, x: Any) -> dict[str, Any]:
    from cost_models.cached_rows import cached_output_kl
    from cost_models.row_cache import RowCache
    from edgefit_common.execution import using

    start_s = 0.0
    if hasattr(executor, "start"):
        t0 = time.perf_counter()
        executor.start()
        start_s = time.perf_counter() - t0
    pairs = sum(1 for row in options.values() for configs in row.values() if configs)
    tasks = len(executor.chunks(list(range(pairs))))
    with tempfile.TemporaryDirectory() as tmp, RowCache(Path(tmp) / "rows.sqlite") as rows, \
            using(executor):
        others0, cpu0, wall0 = descendants_cpu_s(), time.process_time(), time.perf_counter()
        est = cached_output_kl(module, options, x, rows)
        wall = time.perf_counter() - wall0
        cpu, others = time.process_time() - cpu0, descendants_cpu_s() - others0
    task_cpu = [s.cpu_s for s in getattr(executor, "stats", [])]  # Ray: each task's own CPU s
    return {"name": name, "tasks": tasks, "pairs": pairs, "start_s": start_s, "wall_s": wall,
            "driver_cpu_s": cpu, "ray_cpu_s": others, "task_cpu_s": task_cpu,
            "loss": est.loss}


def longest_first(costs: list[float], nodes: int) -> float:
    """The makespan of these task costs greedily placed, largest first, on ``nodes`` workers."""
    loads = [0.0] * nodes
    for cost in sorted(costs, reverse=True):
        loads[loads.index(min(loads))] += cost
    return max(loads)


def projection(one: dict[str, Any]) -> None:
    """Wall time on N one-worker nodes from the 1-worker run's measured per-task CPU seconds:
    the serial part (Ray's start + the rest of the pass: shipping the model, each worker's
    first imports, the driver's bookkeeping, and waiting on a loaded machine) stays, the
    tasks spread (Amdahl with whole tasks)."""
    costs = one["task_cpu_s"]
    serial_s = one["start_s"] + max(0.0, one["wall_s"] - sum(costs))
    print(f"per-task CPU s (1 worker): {len(costs)} tasks, total {sum(costs):.1f}, "
          f"mean {sum(costs) / len(costs):.2f}, max {max(costs):.2f}; serial part "
          f"{serial_s:.1f} s (Ray start {one['start_s']:.1f} + the pass's wall time beyond "
          f"its tasks' CPU {max(0.0, one['wall_s'] - sum(costs)):.1f})")
    print("| one-worker nodes | projected wall s |")
    print("|---|---|")
    for n in (1, 2, 4, 8, 16):
        print(f"| {n} | {serial_s + longest_first(costs, n):.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lenet5-mnist")
    ap.add_argument("--target", default="arduino-nano-33-ble")
    ap.add_argument("--layers", type=int, default=0,
                    help="measure only this many of the pass's layers, evenly spread over the "
                         "model (0: all); the projection then scales to the whole pass")
    args = ap.parse_args()
    from edgefit_common.execution import IN_PROCESS
    from edgefit_common.ray_executor import RayExecutor

    print(f"load average before: {os.getloadavg()[0]:.2f}")
    module, options, x = pass_inputs(args.model, args.target)
    every = len(options)
    if args.layers:
        options = spread(options, args.layers)
    results = [run("serial (in-process)", IN_PROCESS, module, options, x),
               run("ray, 1 worker", RayExecutor(workers=1), module, options, x),
               run("ray, 2 workers", RayExecutor(workers=2), module, options, x)]
    serial = results[0]
    print(f"{args.model} on {args.target}: {len(options)} layers, {serial['pairs']} "
          f"(layer, option) pairs measured, {len(x)} calibration inputs")
    print("| run | tasks | Ray start s | pass wall s | driver CPU s | Ray processes CPU s "
          "| wall vs serial | max abs diff vs serial |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        diff = max(abs(r["loss"][k] - serial["loss"][k]) for k in serial["loss"])
        print(f"| {r['name']} | {r['tasks']} | {r['start_s']:.1f} | {r['wall_s']:.1f} | "
              f"{r['driver_cpu_s']:.1f} | {r['ray_cpu_s']:.1f} | "
              f"{serial['wall_s'] / r['wall_s']:.2f}x | {diff:g} |")
    projection(results[1])
    if len(options) < every:
        whole_pairs = sum(1 for row in pass_inputs_cache.values() for c in row.values() if c)
        print(f"sampled {len(options)} of {every} layers ({serial['pairs']} of {whole_pairs} "
              f"pairs); the whole pass's serial wall, scaled by pairs: "
              f"{serial['wall_s'] * whole_pairs / serial['pairs']:.0f} s")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
