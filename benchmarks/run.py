"""`make bench`: train the built-in models (floors checked), plan + apply on several targets,
and print what was measured. Results also go to docs/bench-walking-skeleton.md.

Timing numbers are from this run on this machine; compare ratios within the run, not across.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from device_specs.budget import Budget
from edgefit.applying import apply_plan
from edgefit.planning import make_plan
from edgefit_common.units import fmt_bytes, fmt_ms
from planner.plan import atomic_write_text
from workloads.train import pretrained
from workloads.zoo import ZOO

JOBS = [  # model, target, limits
    ("lenet5-mnist", "arduino-nano-33-ble", {"latency": "60ms", "ram": "256KB"}),
    ("lenet5-mnist", "arduino-nano-33-ble", {"latency": "45ms", "flash": "200KB"}),
    ("lenet5-mnist", "jetson-nano", {"latency": "30ms"}),
    ("lenet300-mnist", "stm32f746-disco", {"flash": "600KB", "latency": "30ms"}),
    ("lenet300-mnist", "esp32-s3", {"latency": "5ms"}),
    ("fashion-cnn", "raspberry-pi-4", {"latency": "2.5ms"}),
    ("fashion-cnn", "coral-dev-board", {"latency": "1ms"}),
]


def train_all() -> tuple[list[str], bool]:
    lines = ["| model | data | test accuracy | floor | met | trained now | time |",
             "|---|---|---|---|---|---|---|"]
    ok = True
    for name, entry in ZOO.items():
        start = time.perf_counter()
        trained = pretrained(name)
        took = time.perf_counter() - start
        met = trained.accuracy >= entry.accuracy_floor
        ok &= met
        lines.append(f"| {name} | {entry.dataset} | {100 * trained.accuracy:.2f} % | "
                     f"{100 * entry.accuracy_floor:g} % | {'yes' if met else 'NO'} | "
                     f"{'yes' if trained.trained_now else 'no (cached)'} | {took:.1f} s |")
    return lines, ok


def run_jobs(out_root: Path) -> list[str]:
    lines = ["| model | target | limits | status | options | target latency / flash / RAM "
             "(predicted) | accuracy fp32 -> compressed | host latency pred / meas (ratio) | "
             "fp32 host latency meas | flash image vs plan |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for i, (model, target, limits) in enumerate(JOBS):
        budget = Budget(target=target, limits=limits, model=model)
        plan, _ = make_plan(budget, "benchmark")
        limit_text = ", ".join(f"{k} {v}" for k, v in limits.items())
        if not plan.feasible:
            lines.append(f"| {model} | {target} | {limit_text} | {plan.status} | - | - | - | - "
                         "| - | - |")
            continue
        report = apply_plan(plan, out_root / f"job{i}")
        counts: dict[str, int] = {}
        for option in plan.options().values():
            counts[option] = counts.get(option, 0) + 1
        t = plan.totals
        assert t is not None and t.ram_bytes is not None
        acc = report["accuracy"]
        rows = {r["quantity"]: r for r in report["host_check"]["rows"]}
        lat = rows["latency (compressed)"]
        art = report["artifacts"]
        lines.append(
            f"| {model} | {target} | {limit_text} | {plan.status} | "
            f"{', '.join(f'{k}x{v}' for k, v in counts.items())} | {fmt_ms(t.latency_ms)} / "
            f"{fmt_bytes(t.flash_bytes)} / {fmt_bytes(t.ram_bytes)} | "
            f"{100 * acc['fp32']:.2f} -> {100 * acc['compressed']:.2f} % | "
            f"{fmt_ms(lat['predicted'])} / {fmt_ms(lat['measured'])} "
            f"({lat['measured'] / lat['predicted']:.2f}) | "
            f"{fmt_ms(rows['latency (fp32 baseline)']['measured'])} | "
            f"{art['flash_image_bytes']} B vs {art['planned_flash_bytes']:.0f} B |")
    return lines


def main() -> int:
    start = time.perf_counter()
    train_lines, floors_ok = train_all()
    with tempfile.TemporaryDirectory() as tmp:
        job_lines = run_jobs(Path(tmp))
    text = "\n".join([
        "# Walking-skeleton benchmark",
        "",
        "Made by `make bench` (`python benchmarks/run.py`); every number below is from that run.",
        "Target costs are *predicted* by the analytical model (see each plan's provenance);",
        "host latencies are measured with onnxruntime (1 thread, median of 200) in the same run.",
        "",
        "## Built-in models (trained by edgefit, floors checked)",
        "", *train_lines, "",
        "## Plans applied",
        "", *job_lines, "",
        f"Total wall time: {time.perf_counter() - start:.0f} s.",
        "",
    ])
    print(text)
    atomic_write_text(Path(__file__).parents[1] / "docs" / "bench-walking-skeleton.md", text)
    return 0 if floors_ok else 1


if __name__ == "__main__":
    sys.exit(main())
