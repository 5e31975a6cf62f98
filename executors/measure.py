"""Measure an ONNX model with onnxruntime: latency and peak memory. numpy + onnxruntime only.

Peak memory is measured in a fresh child process, so what earlier sessions freed (and the
allocator kept) does not hide the growth: the child records its resident set after importing
onnxruntime, then its high-water mark (VmHWM) after creating the session and running once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgefit_measure import MEM_PATTERN, session_config, session_options

_CHILD = r"""
import json, sys
import numpy as np
import onnxruntime as ort

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0

path, shape = sys.argv[1], json.loads(sys.argv[2])
base = status("VmRSS:")
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
settings = json.loads(sys.argv[3])  # edgefit_measure.MEM_PATTERN and session_config()
opts.enable_mem_pattern = settings["mem_pattern"]
for key, value in settings["config"].items():
    opts.add_session_config_entry(key, value)
sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
after_load = status("VmHWM:")
sess.run(None, {sess.get_inputs()[0].name: np.zeros(shape, np.float32)})
print(json.dumps({"baseline_rss": base, "hwm_after_load": after_load,
                  "hwm_after_run": status("VmHWM:")}))
"""


def session(path: Path, threads: int = 1) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options(threads, "all"),
                                providers=["CPUExecutionProvider"])


def latency_ms(path: Path, x: np.ndarray, warmup: int = 20, runs: int = 200) -> dict[str, float]:
    """Steady latency (the lowest median of edgefit_measure.ROUNDS equal rounds, as the
    host's profiles are closed to), median and p90 of one inference (batch of x's first
    sample), 1 thread."""
    from edgefit_measure import steady_s

    sess = session(path)
    feed = {sess.get_inputs()[0].name: x[:1]}
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    steady, rounds = steady_s(times)
    return {"steady_ms": 1e3 * steady, "median_ms": 1e3 * float(np.median(times)),
            "p90_ms": 1e3 * float(np.percentile(times, 90)), "runs": runs, "warmup": warmup,
            "rounds": rounds}


def layer_latency_ms(path: Path, runs: int = 100, profile_runs: int = 60) -> dict[str, float]:
    """Each planned layer's time in one run of ``path`` (ms): onnxruntime's node profile
    attributed to the file's ``edgefit.layers`` by edgefit_measure's rules, its profiling
    offset calibrated out (what the host profiles are made of, so a layer's measured time is
    comparable with its prediction)."""
    import edgefit_measure as em

    m = em.measure(path, runs=runs, warmup=10, profile_runs=profile_runs)
    return {name: float(entry["calibrated_ms"]) for name, entry in m["layers"].items()}


def peak_memory(path: Path, input_shape: tuple[int, ...]) -> dict[str, int] | None:
    """Peak RSS growth of a fresh process: session creation, and session creation + one run.

    None where /proc is not available (not Linux)."""
    if not Path("/proc/self/status").exists():
        return None
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), json.dumps([1, *input_shape]),
         json.dumps({"mem_pattern": MEM_PATTERN, "config": session_config()})],
        capture_output=True, text=True, check=True, timeout=120,
    )
    d = json.loads(out.stdout.strip().splitlines()[-1])
    return {"load_bytes": max(0, d["hwm_after_load"] - d["baseline_rss"]),
            "load_and_run_bytes": max(0, d["hwm_after_run"] - d["baseline_rss"]),
            "run_bytes": max(0, d["hwm_after_run"] - d["hwm_after_load"])}
