"""``--cluster ray://HOST:PORT`` (Ray's client, the ``ray[client]`` extra) against a one-node
Ray head started here on 127.0.0.1 with a client server: the client server listens on
loopback only, edgefit's code check passes through it, the sensitivity pass gives the serial
numbers and the host-profile node probe finds the node. The head is stopped when the module
ends, with no process of it left.

The client's grpcio is pinned in pyproject.toml (grpcio==1.74.0): with grpcio 1.85.4 the
client's per-connection server crashed (a segfault in grpcio's event engine) in 2 of 6
connections here; with 1.74.0 none did in 18 (docs/scale-out.md)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from edgefit_common.execution import from_settings, using
from edgefit_common.ray_executor import LOOPBACK, LOOPBACK_ENV, RayExecutor


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def client_port() -> Iterator[int]:
    """A Ray head on 127.0.0.1 (one CPU, no dashboard) running a Ray client server."""
    import psutil

    os.environ.update(LOOPBACK_ENV)  # before ray is imported (as tests/conftest.py's cluster)
    from ray.cluster_utils import Cluster

    port = _free_port()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": LOOPBACK, "include_dashboard": False,
        "ray_client_server_port": port})
    try:
        cluster.wait_for_nodes(timeout=120)
        yield port
    finally:
        started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
        cluster.shutdown()
        _, alive = psutil.wait_procs(started, timeout=30)
        assert not alive, f"processes left running: {[p.name() for p in alive]}"


def _listeners(port: int, timeout_s: float = 120.0) -> set[str]:
    """The addresses this process tree listens on at ``port``, once the client server is up
    (the head's nodes are registered before its client server listens: poll, not sleep)."""
    import time

    import psutil

    deadline = time.monotonic() + timeout_s
    while True:
        found = {c.laddr.ip for p in [psutil.Process(), *psutil.Process().children(True)]
                 for c in _tcp(p) if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_ray_client_address_on_loopback(client_port: int, tmp_path: Any) -> None:
    import numpy as np
    import torch
    from torch import nn

    from cost_models.cached_rows import cached_output_kl
    from cost_models.profiler import host_fingerprint, host_key
    from cost_models.row_cache import RowCache
    from techniques.quantize import QuantizeConfig

    listeners = _listeners(client_port)
    assert listeners and listeners <= {"127.0.0.1", "::ffff:127.0.0.1"}, listeners
    executor = from_settings(cluster=f"ray://127.0.0.1:{client_port}", environ={})
    assert isinstance(executor, RayExecutor)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = np.random.default_rng(0).normal(size=(32, 1, 4, 4)).astype(np.float32)
    options = {layer: {f"int{bits}": [QuantizeConfig(weights=f"int{bits}",  # type: ignore[arg-type]
                                                     activations="fp32")]
                       for bits in (8, 4, 2)} for layer in ("1", "3")}
    serial = cached_output_kl(model, options, x, RowCache(tmp_path / "serial.sqlite")).loss
    with using(executor):  # closed at the end: the client disconnects, the head stays
        executor.start()  # the code check ran on the node through the client server
        assert executor.describe() == f"ray (ray://127.0.0.1:{client_port}): 1 node, 1 CPUs"
        with RowCache(tmp_path / "ray.sqlite") as rows:
            fanned = cached_output_kl(model, options, x, rows).loss
            assert len(rows) == 6
        nodes = executor.matching_nodes(host_key, (1, "all"), host_fingerprint().key())
        assert [n.address for n in nodes] == [LOOPBACK]
    assert fanned == serial
    assert {s.node for s in executor.stats} == {LOOPBACK}


def _tcp(p: Any) -> list[Any]:
    import psutil

    try:
        return list(p.net_connections(kind="tcp"))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
