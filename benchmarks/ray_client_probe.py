"""Ray Client (``ray://``) on 127.0.0.1: does this environment's grpcio survive N connections?

    .venv/bin/python benchmarks/ray_client_probe.py [--connections 6]

Run with the Python of the environment under test (ray==2.60.0 and the grpcio to try; the
probe needs only ray, grpcio, numpy and psutil), e.g. for another grpcio version:

    python3 -m venv /tmp/gvenv && /tmp/gvenv/bin/pip install ray==2.60.0 grpcio==X numpy psutil
    /tmp/gvenv/bin/python benchmarks/ray_client_probe.py --connections 6

1. Starts a one-node head with ``ray start --head --node-ip-address 127.0.0.1
   --ray-client-server-port PORT`` (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: every address on
   loopback, docs/scale-out.md) and prints the addresses its processes listen on.
2. Connects N times, each from a fresh process (as N ``plan --cluster ray://...`` runs
   would): ``ray.init("ray://127.0.0.1:PORT")``, one ``ray.put`` of an array, 8 small tasks
   reading it, ``ray.shutdown()``; prints each connection's outcome and time.
3. Counts the kernel log's new ``segfault ... cygrpc`` lines (``dmesg``, where readable): the
   client server's per-connection process crashing in grpcio, which the client sees only as
   "Starting Ray client server failed".
4. Stops the head by the ids of its own processes (never ``ray stop``: other jobs may run Ray
   on this machine).

The head and the clients run with ``RAY_AUTH_MODE=token``: Ray 2.60 turns token
authentication on for a cluster ``ray start`` makes, and a client without the variable sends
no token (every connection then times out: "ray client connection timeout", the server
logging "Authentication required but no authorization header provided").
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
from typing import Any

import psutil

BIN = os.path.dirname(sys.executable)
ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
       "RAY_AUTH_MODE": "token"}
CLIENT = """
import sys, numpy as np, ray
ray.init(sys.argv[1], logging_level="ERROR")
x = ray.put(np.arange(100000, dtype=np.float32))
f = ray.remote(lambda a, k: float(a.sum()) + k)
print(sum(ray.get([f.remote(x, k) for k in range(8)])))
ray.shutdown()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def head_processes(gcs_port: int) -> list[Any]:
    """The head's processes (naming its GCS port) and their descendants."""
    marks = (f"--gcs_server_port={gcs_port}", f"--gcs-address=127.0.0.1:{gcs_port}",
             f"--gcs-address 127.0.0.1:{gcs_port}", f"--address=127.0.0.1:{gcs_port}")
    found: dict[int, Any] = {}
    for p in psutil.process_iter(["cmdline"]):
        if any(m in " ".join(p.info["cmdline"] or []) for m in marks):
            found[p.pid] = p
            with contextlib.suppress(psutil.Error):
                found.update({c.pid: c for c in p.children(recursive=True)})
    return list(found.values())


def kernel_lines() -> list[str]:
    try:
        return subprocess.run(["dmesg"], capture_output=True, text=True,
                              check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return []


def stop(procs: list[Any]) -> list[str]:
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=30)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    _, alive = psutil.wait_procs(alive, timeout=10)
    return [p.name() for p in alive]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=6)
    args = parser.parse_args()
    import grpc
    import ray

    print(f"ray {ray.__version__}, grpcio {grpc.__version__}", flush=True)
    gcs, client = free_port(), free_port()
    kernel_before = len(kernel_lines())
    subprocess.run([f"{BIN}/ray", "start", "--head", "--node-ip-address", "127.0.0.1",
                    "--port", str(gcs), "--ray-client-server-port", str(client),
                    "--num-cpus", "1", "--include-dashboard", "false",
                    "--disable-usage-stats"], env=ENV, check=True, capture_output=True)
    ok = 0
    try:
        listening = sorted({c.laddr.ip for p in head_processes(gcs)
                            for c in p.net_connections("tcp") if c.status == "LISTEN"})
        print(f"the head's processes listen on: {', '.join(listening)}", flush=True)
        for i in range(args.connections):
            start = time.perf_counter()
            run = subprocess.run([sys.executable, "-c", CLIENT, f"ray://127.0.0.1:{client}"],
                                 env=ENV, capture_output=True, text=True, timeout=300,
                                 check=False)
            ok += run.returncode == 0
            why = (run.stderr.strip().splitlines() or [""])[-1][:160]
            print(f"connection {i + 1}: "
                  + ("ok" if run.returncode == 0 else f"FAILED ({why})")
                  + f" in {time.perf_counter() - start:.1f} s", flush=True)
    finally:
        left = stop(head_processes(gcs))
    crashes = [line for line in kernel_lines()[kernel_before:]
               if "segfault" in line and "cygrpc" in line]
    print(f"{ok}/{args.connections} connections ok; kernel log: {len(crashes)} segfault(s) "
          f"in cygrpc; head stopped" + (f" (still alive: {left})" if left else ""))
    for line in crashes:
        print(f"  {line[:160]}")


if __name__ == "__main__":
    main()
