"""One whole `plan` three ways, each from an empty cache (issue #19, "Done when"): in this
process, on a local Ray instance (`--workers 2`) and on a Ray head started here on 127.0.0.1
(`--cluster 127.0.0.1:PORT`); the three plan.json files compared.

    nice .venv/bin/python benchmarks/scale_out_plan.py [--model minilm-l6]
        [--target raspberry-pi-4] [--limit --max-flash=40MB --limit --max-latency=200ms]
        [--only serial,workers,cluster] [--commit HEAD]
    .venv/bin/python benchmarks/scale_out_plan.py --count-options default   # or 50

- **Code.** Every run executes the committed tree at ``--commit`` (``git archive`` into a
  temporary folder, first on PYTHONPATH, which Ray's workers inherit): other sessions editing
  the working tree during the runs cannot make them run different code.
- **Cache.** Each run gets its own empty ``EDGEFIT_CACHE`` (no rows, no profiles), so each
  measures everything its plan needs.
- **Runs.** ``edgefit plan ... --json -v`` as a child process under ``nice -n 10``; its JSON
  summary (stdout) must parse. The head for the cluster run is ``ray start --head
  --node-ip-address 127.0.0.1 --port PORT --num-cpus 2 --include-dashboard false`` with
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (docs/scale-out.md: every address on loopback) and
  ``RAY_AUTH_MODE=token`` (for the head and that run's plan: the driver must send the token),
  started before the run and stopped after it by the ids of its own processes (never ``ray
  stop``: other jobs may run Ray on this machine).
- **Printed.** Per run: wall seconds, CPU seconds of the plan process and the processes it
  started and reaped (a local Ray instance's daemons and workers included), for the cluster
  run the head's processes' CPU seconds during the run (a lower bound: live processes and
  what they reaped), the tasks the progress lines report;
  then, against the serial plan, the layers whose option differs, the largest relative
  difference of any predicted per-layer cost and total, and the plan.json fields that differ
  at all (the model's cache path and the solver's wall time are expected to).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
TOKEN_ENV = {"RAY_AUTH_MODE": "token"}
"""`ray start` turns Ray's token authentication on; a driver sends the token (Ray's
~/.ray/auth_token) only with this set, else the GCS refuses it ("InvalidAuthToken")."""
EXPECTED_DIFFERENT = ("model.path", "solver.wall_time_s")


def snapshot(commit: str, into: Path) -> str:
    """The tree of ``commit`` unpacked into ``into``; its full hash."""
    full = subprocess.run(["git", "rev-parse", commit], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    archive = into / "src.tar"
    subprocess.run(["git", "archive", "--output", str(archive), full], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "src", filter="data")
    archive.unlink()
    return full


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_plan(name: str, plan_args: list[str], extra: list[str], env: dict[str, str],
             folder: Path) -> dict[str, Any]:
    """One `plan` into ``folder`` (its own empty cache); wall and CPU seconds, the parsed
    JSON summary, the task lines of its progress."""
    folder.mkdir(parents=True)
    run_env = {**env, "EDGEFIT_CACHE": str(folder / "cache")}
    run_env.pop("EDGEFIT_CLUSTER", None)
    command = ["nice", "-n", "10", str(VENV_BIN / "edgefit"), "plan", *plan_args, *extra,
               "--out", str(folder / "plan.json"), "--json", "-v"]
    cpu0, wall0 = children_cpu_s(), time.perf_counter()
    with open(folder / "stderr.txt", "w") as err:
        done = subprocess.run(command, env=run_env, stdout=subprocess.PIPE, stderr=err,
                              text=True, check=False)
    wall_s, cpu_s = time.perf_counter() - wall0, children_cpu_s() - cpu0
    (folder / "stdout.txt").write_text(done.stdout)
    log = (folder / "stderr.txt").read_text()
    if done.returncode != 0:
        raise SystemExit(f"{name}: plan exited {done.returncode}; see {folder}/stderr.txt:\n"
                         + "\n".join(log.strip().splitlines()[-5:]))
    summary = json.loads(done.stdout)  # --json: stdout is the summary alone
    tasks = [line.strip() for line in log.splitlines()
             if re.search(r"tasks? on ray|/\d+ done in", line)]
    return {"name": name, "wall_s": wall_s, "cpu_s": cpu_s, "summary": summary,
            "plan": json.loads((folder / "plan.json").read_text()), "tasks": tasks}


class Head:
    """A one-node Ray head on 127.0.0.1 started with `ray start`, stopped by its process ids."""

    def __init__(self, port: int, cpus: int, env: dict[str, str]) -> None:
        self.port, self.cpus, self.env = port, cpus, {**env, **LOOPBACK_ENV, **TOKEN_ENV}
        self.pids: set[int] = set()

    def start(self) -> None:
        subprocess.run(["nice", "-n", "10", str(VENV_BIN / "ray"), "start", "--head",
                        "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                        "--num-cpus", str(self.cpus), "--include-dashboard", "false",
                        "--disable-usage-stats"],
                       env=self.env, check=True, capture_output=True, text=True)
        self.pids = {p.pid for p in self.processes()}

    def processes(self) -> list[Any]:
        """This head's processes: those naming its GCS address or port, and their
        descendants (the workers, the agents)."""
        import psutil

        marks = (f"--gcs_server_port={self.port}", f"--gcs-address=127.0.0.1:{self.port}",
                 f"--gcs-address 127.0.0.1:{self.port}")  # not the driver's --cluster flag
        found: dict[int, Any] = {}
        for p in psutil.process_iter(["cmdline"]):
            command = " ".join(p.info["cmdline"] or [])
            if p.pid in self.pids or any(m in command for m in marks):
                found[p.pid] = p
                with contextlib.suppress(psutil.Error):
                    found.update({c.pid: c for c in p.children(recursive=True)})
        return list(found.values())

    def cpu_s(self) -> float:
        """CPU seconds of the head's live processes, with the children they reaped (a lower
        bound: a worker that exited without being reaped by one of them is not counted)."""
        import psutil

        total = 0.0
        for p in self.processes():
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass
        return total

    def stop(self) -> list[str]:
        """SIGTERM to each of its processes, SIGKILL after 30 s; the names still alive."""
        import psutil

        procs = self.processes()
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=30)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        _, alive = psutil.wait_procs(alive, timeout=10)
        return [p.name() for p in alive]


def flat(value: Any, prefix: str = "") -> dict[str, Any]:
    """A JSON value as {dotted.path: leaf}."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flat(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out.update(flat(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def compare(serial: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Options per layer, the largest relative difference of a predicted cost, the differing
    plan.json fields."""
    a, b = serial["layers"], other["layers"]
    options_differ = sorted(ly for ly in a if a[ly]["option"] != b.get(ly, {}).get("option"))
    worst = 0.0
    pairs = [(a[ly]["predicted"], b[ly]["predicted"]) for ly in a if ly in b]
    pairs.append((serial["totals"], other["totals"]))
    for x, y in pairs:
        for key, u in x.items():
            v = y.get(key)
            if isinstance(u, int | float) and isinstance(v, int | float):
                worst = max(worst, abs(u - v) / max(abs(u), abs(v), 1e-300))
    fa, fb = flat(serial), flat(other)
    fields = sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))
    return {"same_layers": sorted(a) == sorted(b), "options_differ": options_differ,
            "max_rel_cost_diff": worst, "fields_differ": fields}


def count_options(model: str, target: str, levels: list[float] | None) -> None:
    """Print the options ``plan`` offers per layer for ``model`` on ``target``'s default
    profile (what its sensitivity pass measures: all but fp32), without measuring anything."""
    from collections import Counter

    from edgefit.planning import _capture, layer_options, target_spec
    from workloads.models import load_model_ref

    loaded = load_model_ref(model)
    graph = _capture(loaded)
    spec = target_spec(target)
    profile = spec.profile(spec.default_profile)
    offered = layer_options(graph, profile.kernels, loaded.module, {}, profile.nm_sparsity,
                            weights=True, tflite=profile.tflite, sparsity_levels=levels)
    names = Counter(name for row in offered.values() for name in row)
    total = sum(names.values())
    print(f"{model} on {target}/{spec.default_profile}, sparsity levels {levels or 'default'}: "
          f"{len(offered)} layers, {total} options, {total - names['fp32']} measured; "
          + ", ".join(f"{name} x {n}" for name, n in names.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--target", default="raspberry-pi-4")
    parser.add_argument("--limit", action="append", default=None,
                        help="a plan flag as --flag=value (default: --max-flash=40MB "
                             "--max-latency=200ms)")
    parser.add_argument("--only", default="serial,workers,cluster")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--commit", default="HEAD")
    parser.add_argument("--count-options", default=None, metavar="LEVELS",
                        help="only print the options offered per layer (LEVELS: default, or "
                             "sparsity levels as --sparsity-levels takes them) and stop")
    args = parser.parse_args()
    if args.count_options is not None:
        levels = (None if args.count_options == "default"
                  else [float(v) for v in args.count_options.split(",")])
        count_options(args.model, args.target, levels)
        return
    limits = args.limit or ["--max-flash=40MB", "--max-latency=200ms"]
    plan_args = ["--model", args.model, "--target", args.target, *limits]
    runs = args.only.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="scale-out-plan-"))  # kept: each run's files
    commit = snapshot(args.commit, tmp)
    env = {**os.environ, "PYTHONPATH": str(tmp / "src")}
    print(f"runs in {tmp}; commit {commit[:7]}; plan {' '.join(plan_args)}; "
          f"load average {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores",
          flush=True)
    results = []
    for name in runs:
        extra: list[str] = []
        head = None
        if name == "workers":
            extra = ["--workers", str(args.workers)]
        elif name == "cluster":
            head = Head(free_port(), args.workers, env)
            head.start()
            extra = ["--cluster", f"127.0.0.1:{head.port}"]
        try:
            head_cpu0 = head.cpu_s() if head else 0.0
            result = run_plan(name, plan_args, extra, head.env if head else env, tmp / name)
            result["head_cpu_s"] = head.cpu_s() - head_cpu0 if head else None
        finally:
            if head is not None:
                left = head.stop()
                print(f"  head on 127.0.0.1:{head.port} stopped"
                      + (f"; still alive: {left}" if left else ""), flush=True)
        results.append(result)
        print(f"{name}: {result['wall_s']:.1f} s wall, {result['cpu_s']:.1f} CPU s; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        for line in result["tasks"]:
            print(f"  {line}", flush=True)
    report(results, " ".join(["plan", *plan_args]))


def report(results: list[dict[str, Any]], command: str) -> None:
    base = results[0]
    print(f"\n{command}; {len(base['plan']['layers'])} layers, "
          f"status {base['plan']['status']}\n")
    print("| run | wall s | CPU s (plan process + reaped children) | head CPU s (at least) | "
          "options differing from the first run | max rel. cost diff | other fields differing |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        c = compare(base["plan"], r["plan"])
        other = [f for f in c["fields_differ"] if not f.startswith("layers.")
                 and f not in EXPECTED_DIFFERENT]
        head = "-" if r["head_cpu_s"] is None else f"{r['head_cpu_s']:.1f}"
        print(f"| {r['name']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {head} | "
              f"{len(c['options_differ'])} of {len(base['plan']['layers'])} | "
              f"{c['max_rel_cost_diff']:.3g} | {', '.join(other) or 'none'} |")
    totals = base["plan"]["totals"]
    options: dict[str, int] = {}
    for layer in base["plan"]["layers"].values():
        options[layer["option"]] = options.get(layer["option"], 0) + 1
    print(f"\nfirst run's plan: {', '.join(f'{n} x {o}' for o, n in sorted(options.items()))}; "
          f"predicted latency {totals['latency_ms']:.1f} ms, flash "
          f"{totals['flash_bytes'] / 1e6:.2f} MB")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
