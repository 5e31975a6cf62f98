"""Timing work on Ray (issue #19 items 2-3): the host profile and the closed loop's candidates,
in-process and on a local Ray instance of N workers, on this machine.

    .venv/bin/python benchmarks/scale_out_timing.py [--workers 2] [--skip-loop]

1. **Host profile**: LeNet-5 (trained, built in) at every ONNX form the writer knows, measured
   by ``cost_models.profiler.profile_host`` into an empty profile cache (a temporary file)
   twice: in-process, then on the local Ray instance (the options go to the nodes whose
   hardware fingerprint is this host's, one at a time per node). Printed: wall seconds, rows
   written, whether the two caches hold the same (fingerprint, layer signature, option) keys,
   and who measured each option. Timings differ run to run; keys and counts do not.
2. **Loop step**: LeNet-5 planned for the Arduino Nano 33 BLE as a packed-image target (its
   device file without the ``tflite`` fields, as the tests' ``image_target``), 1 epoch of
   fine-tuning, accuracy limit 0.5 pp, latency 60 ms; a closed loop of 2 rounds as one step
   of 2 candidates (objective flash), applied one by one in-process and with
   ``edgefit.loop.apply_batch_evaluator`` on the Ray instance (training on the driver, the
   host checks' timing on the nodes). Printed: wall and driver CPU seconds, each round's
   measured drop and flash, the chosen plan, who timed each candidate, and whether the two
   runs chose the same plan with the same measured drops.

The machine has 2 cores shared with other jobs: the 1-minute load average is printed before
and after. Ray's start is inside the Ray runs' wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def _load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def _cpu_s() -> float:
    return time.process_time()


def profile_runs(workers: int, tmp: Path) -> list[str]:
    """The host profile in-process and on Ray: the lines to print."""
    import numpy as np

    from cost_models.capture import capture
    from cost_models.profile_cache import ProfileCache
    from cost_models.profiler import MEASURED_BY, measured_by_text, profile_host
    from edgefit.planning import calibration_split
    from edgefit_common.execution import IN_PROCESS, using
    from edgefit_common.ray_executor import RayExecutor
    from techniques.onnx.writer import ONNX_OPTIONS
    from workloads.models import load_model_ref

    loaded = load_model_ref("lenet5-mnist")
    module = loaded.torch_module()
    graph = capture(module, loaded.input_shape, loaded.name)
    split = calibration_split("mnist")
    assert split is not None
    x = np.asarray(split[0][:128])
    options = list(ONNX_OPTIONS)
    lines = [f"host profile: LeNet-5, {len(graph.layer_names)} layers x {len(options)} options "
             f"({', '.join(options)})", "",
             "| run | wall s | driver CPU s | rows | who measured |", "|---|---|---|---|---|"]
    keys: dict[str, set[tuple[str, str, str]]] = {}
    for tag, executor in (("in-process", IN_PROCESS), (f"Ray, {workers} workers",
                                                       RayExecutor(workers=workers))):
        path = tmp / f"profiles-{len(keys)}.sqlite"
        with ProfileCache(path) as cache, using(executor):
            if isinstance(executor, RayExecutor):
                executor.start()  # Ray's start timed apart
            t0, c0 = time.perf_counter(), _cpu_s()
            measured = profile_host(module, loaded.input_shape, graph, options, cache, x,
                                    progress=False)
            wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
            rows = len(cache)
        import sqlite3

        db = sqlite3.connect(path)
        keys[tag] = set(db.execute("SELECT fingerprint_key, signature_key, option "
                                   "FROM measurements").fetchall())
        db.close()
        who = measured_by_text(measured) or "this process (in-process: rows say nothing)"
        lines.append(f"| {tag} | {wall:.1f} | {cpu:.1f} | {rows} | {who} |")
    first, second = keys.values()
    lines += ["", f"same (fingerprint, signature, option) keys: {first == second} "
              f"({len(first)} and {len(second)}); provenance entry: '{MEASURED_BY}'"]
    return lines


def loop_runs(workers: int, tmp: Path) -> list[str]:
    """One step of two candidates, in-process one by one and on Ray: the lines to print."""
    import yaml

    from device_specs.budget import Budget
    from device_specs.catalog import CATALOG_DIR
    from edgefit.loop import LoopSettings, apply_batch_evaluator, apply_evaluator, closed_loop
    from edgefit.planning import make_plan
    from edgefit_common.execution import using
    from edgefit_common.ray_executor import RayExecutor

    data = yaml.safe_load((CATALOG_DIR / "arduino-nano-33-ble.yaml").read_text())
    data["name"] = "arduino-nano-33-ble-image"
    for profile in data["profiles"].values():
        profile.pop("tflite", None)
    target = tmp / "arduino-nano-33-ble-image.yaml"
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    limits: Any = {"latency": "60ms", "accuracy_drop": "0.5pp"}  # parsed by the model
    budget = Budget(target=str(target), limits=limits, model="lenet5-mnist")
    plan, _ = make_plan(budget, "benchmarks/scale_out_timing.py", finetune_epochs=1)
    settings = LoopSettings(rounds=2, candidates=2, objective="flash")
    lines = ["loop: LeNet-5, Arduino Nano 33 BLE as a packed image, 1 epoch of fine-tuning, "
             "2 rounds as one step of 2 candidates", ""]
    results: dict[str, Any] = {}
    for tag in ("in-process, one by one", f"Ray, {workers} workers"):
        out = tmp / f"loop-{len(results)}"
        t0, c0 = time.perf_counter(), _cpu_s()
        if tag.startswith("Ray"):
            executor = RayExecutor(workers=workers)
            with using(executor):
                result = closed_loop(plan, apply_evaluator(out), settings,
                                     apply_batch_evaluator(out))
        else:
            result = closed_loop(plan, apply_evaluator(out), settings)
        wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
        results[tag] = result
        assert result.best_plan is not None
        lines.append(f"{tag}: wall {wall:.1f} s, driver CPU {cpu:.1f} s, {result.status}, "
                     f"best round {result.best_round}: {result.best_plan.options()}")
        for r in result.rounds:
            assert r.measured is not None
            report = json.loads((out / f"round-{r.number}" / "report.json").read_text())
            tuned = report["accuracy"]["finetune"]
            lines.append(
                f"  round {r.number} (step {r.batch}): drop {r.measured.drop_pp:.4f} pp, flash "
                f"{r.measured.costs.get('flash_bytes'):.0f} B, "
                f"fine-tuned {tuned['epochs_run'] if tuned else 0} epoch(s) on the driver, "
                f"host check timed by {report['host_check'].get('measured_by') or 'this process'}")
    a, b = results.values()
    drops = [[r.measured.drop_pp if r.measured else None for r in x.rounds] for x in (a, b)]
    same = (a.best_plan is not None and b.best_plan is not None
            and a.best_plan.options() == b.best_plan.options() and drops[0] == drops[1])
    lines.append(f"same chosen plan and measured drops: {same}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip-loop", action="store_true")
    args = parser.parse_args()
    print(f"load average (1 min) before: {_load()}")
    with tempfile.TemporaryDirectory(prefix="edgefit-scale-timing-") as tmp:
        for line in profile_runs(args.workers, Path(tmp)):
            print(line)
        print()
        if not args.skip_loop:
            for line in loop_runs(args.workers, Path(tmp)):
                print(line)
    print(f"load average (1 min) after: {_load()}")


if __name__ == "__main__":
    main()
