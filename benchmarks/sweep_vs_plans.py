"""`edgefit sweep` against one `plan` command per cell (issue #19 item 5).

    .venv/bin/python benchmarks/sweep_vs_plans.py [--sweep examples/sweep.yaml]

The sweep file's cells (models x targets x budgets, every `apply` turned off: this measures
planning) are planned two ways, each twice in a row from the same starting cache:

1. `edgefit sweep FILE`: one process, one full plan per (model, target), a re-solve per
   further budget;
2. one `plan --model M --target T --max-... ` process per cell, as a user without `sweep`
   would script it.

Each way starts from its own copy of the edgefit cache holding the trained models, the data
sets and the device evidence but no measurement rows (`rows.sqlite`, `profiles.sqlite`,
`sensitivity/`): the first run is cold (every accuracy row measured once, then reused
through the row cache by later plans of the same process or of later processes), the second
warm (every row cached). Printed: wall seconds (`time.perf_counter`), CPU seconds of the
child processes (user + system, `resource.getrusage(RUSAGE_CHILDREN)`), processes started,
and whether each cell's chosen options and status are the same both ways. The machine has 2
cores shared with other jobs (the load average is printed): wall times vary, counts do not.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEEP = ("models", "data", "onnx", "device-evidence")
"""What a fresh cache copy keeps: no measurement rows."""


def fresh_cache(source: Path, into: Path) -> Path:
    into.mkdir(parents=True)
    for name in KEEP:
        if (source / name).exists():
            shutil.copytree(source / name, into / name)
    for host in source.glob("host-*.yaml"):
        shutil.copy2(host, into / host.name)
    return into


def timed(commands: list[list[str]], cache: Path, cwd: Path) -> dict[str, float]:
    """Run each command (one process each) with EDGEFIT_CACHE=cache: wall and child CPU s."""
    env = {**os.environ, "EDGEFIT_CACHE": str(cache), "EDGEFIT_TFLITE": "off"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    for command in commands:
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
        if done.returncode not in (0, 1):  # 1: an infeasible plan, an answer
            raise SystemExit(f"{command}: exit {done.returncode}: {done.stderr.strip()}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "processes": len(commands)}


def plan_commands(spec: dict[str, Any], out: Path) -> list[tuple[tuple[str, str, str],
                                                                 list[str]]]:
    """One `plan` command per cell (only bare model / target names are supported here)."""
    cells = []
    for model in spec["models"]:
        for target in spec["targets"]:
            for budget in spec["budgets"]:
                flags = []
                for key, value in budget.items():
                    if key.startswith("max_"):
                        flags += [f"--{key.replace('_', '-')}", value]
                name = (model, target, budget["name"])
                cells.append((name, [str(BIN / "plan"), "--model", model, "--target", target,
                                     *flags, "-q", "--out",
                                     str(out / f"{model}-{target}-{budget['name']}.json")]))
    return cells


def choices(path: Path) -> tuple[str, dict[str, str | None]]:
    plan = json.loads(path.read_text())
    return plan["status"], {n: lp["option"] for n, lp in plan["layers"].items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, default=ROOT / "examples" / "sweep.yaml")
    args = parser.parse_args()
    from edgefit_common.paths import cache_dir

    spec = yaml.safe_load(args.sweep.read_text())
    spec["apply"] = False
    for budget in spec["budgets"]:
        budget.pop("apply", None)
    spec.pop("out", None)
    print(f"load average before: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sweep_file = work / "sweep.yaml"
        sweep_file.write_text(yaml.safe_dump(spec, sort_keys=False))
        results = {}
        cache = fresh_cache(cache_dir(), work / "cache-sweep")
        for run in ("cold", "warm"):
            out = work / f"sweep-{run}"
            results["sweep", run] = timed([[str(BIN / "edgefit"), "sweep", str(sweep_file),
                                             "--out", str(out), "-q"]], cache, work)
        cells = plan_commands(spec, work / "plans")
        (work / "plans").mkdir()
        cache = fresh_cache(cache_dir(), work / "cache-plans")
        for run in ("cold", "warm"):
            results["plan", run] = timed([c for _, c in cells], cache, work)
        doc = json.loads((work / "sweep-warm" / "sweep.json").read_text())
        same = sum(choices(work / "sweep-warm" / row["plan_json"])
                   == choices(work / "plans" / f"{row['model']}-{row['target']}-"
                                               f"{row['budget']}.json")
                   for row in doc["rows"])
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"\n{len(cells)} cells; the sweep: {doc['full_plans']} full plans, "
          f"{doc['re_solves']} re-solves\n")
    print("| way | cache | processes | wall s | CPU s (children) |")
    print("|---|---|---|---|---|")
    for (way, run), r in results.items():
        label = "edgefit sweep" if way == "sweep" else "one `plan` per cell"
        print(f"| {label} | {run} | {r['processes']:.0f} | {r['wall_s']:.1f} | "
              f"{r['cpu_s']:.1f} |")
    print(f"\ncells with the same status and options both ways: {same} of {len(doc['rows'])}")


if __name__ == "__main__":
    main()
