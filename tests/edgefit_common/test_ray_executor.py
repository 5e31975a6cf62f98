"""The Ray side of edgefit_common.execution on a two-node cluster bound to 127.0.0.1 (the
``ray_cluster`` fixture of tests/conftest.py): records come back to the driver, a failing task
is retried and then reported with the item it failed on, a task whose worker dies runs again,
LeNet-5's sensitivity pass and its channel-pruning KL give the serial run's numbers exactly,
and every socket of the cluster is on loopback."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgefit_common.errors import TaskFailedError
from edgefit_common.execution import using
from edgefit_common.ray_executor import RayExecutor

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}


@pytest.fixture(scope="module")
def executor(ray_cluster: str) -> Iterator[RayExecutor]:
    ex = RayExecutor(address=ray_cluster)
    ex.start()
    yield ex
    ex.close()


def squares(offset: int, chunk: list[int], emit: Callable[[Any], None]) -> None:
    for item in chunk:
        emit((item, item * item + offset))


def flaky(folder: str, chunk: list[str], emit: Callable[[Any], None]) -> None:
    """Fails on "bad", leaving a line per attempt in folder/attempts."""
    for item in chunk:
        if item == "bad":
            with open(Path(folder) / "attempts", "a") as f:
                f.write("attempt\n")
            raise ValueError("boom")
        emit(item)


def dies_once(folder: str, chunk: list[int], emit: Callable[[Any], None]) -> None:
    """The first attempt of the chunk holding 0 kills its worker process."""
    marker = Path(folder) / "died"
    if 0 in chunk and not marker.exists():
        marker.write_text("once")
        os._exit(1)
    for item in chunk:
        emit(item)


def test_records_of_every_chunk_reach_the_driver(executor: RayExecutor) -> None:
    assert "2 nodes, 2 CPUs" in executor.describe()
    chunks = executor.chunks(list(range(23)), size=10)
    assert [len(c) for c in chunks] == [10, 10, 3]
    got: list[tuple[int, int]] = []
    executor.stats.clear()
    executor.map_tasks(squares, chunks, got.append, shared=(5,), title="squares")
    assert sorted(got) == [(i, i * i + 5) for i in range(23)]
    assert sorted(s.items for s in executor.stats) == [3, 10, 10]  # one stat a task
    assert {(s.title, s.node) for s in executor.stats} == {("squares", "127.0.0.1")}
    assert all(s.cpu_s >= 0.0 for s in executor.stats)


def test_a_failing_task_is_retried_then_reported_with_its_item(executor: RayExecutor,
                                                               tmp_path: Path) -> None:
    got: list[str] = []
    with pytest.raises(TaskFailedError, match=r"pairs: <bad> failed after 3 attempts "
                                              r"\(ValueError: boom\)"):
        executor.map_tasks(flaky, [["a", "b"], ["c", "bad", "d"]], got.append,
                           shared=(str(tmp_path),), label=lambda item: f"<{item}>",
                           title="pairs")
    assert (tmp_path / "attempts").read_text().count("attempt") == 3  # 1 + 2 retries


def test_a_task_whose_worker_dies_is_run_again(executor: RayExecutor, tmp_path: Path) -> None:
    got: list[int] = []
    executor.map_tasks(dies_once, [[0, 1], [2, 3]], got.append, shared=(str(tmp_path),))
    assert (tmp_path / "died").exists()
    assert sorted(got) == [0, 1, 2, 3]


def test_lenet5_sensitivity_on_two_workers_equals_the_serial_run(executor: RayExecutor,
                                                                 tmp_path: Path) -> None:
    from cost_models.cached_rows import cached_output_kl
    from cost_models.row_cache import RowCache
    from edgefit.planning import calibration_split
    from techniques.prune import UnstructuredPruneConfig
    from techniques.quantize import QuantizeConfig
    from workloads.models import load_model_ref

    module = load_model_ref("lenet5-mnist").torch_module()
    split = calibration_split("mnist")
    assert split is not None
    x = split[0][:128]
    int8 = QuantizeConfig(weights="int8", activations="int8")
    configs = {"int8": [int8], "int4": [QuantizeConfig(weights="int4", activations="fp32")],
               "s50": [UnstructuredPruneConfig(sparsity=0.5)],
               "s75+int8": [UnstructuredPruneConfig(sparsity=0.75), int8], "fp32": []}
    options = {layer: dict(configs) for layer in ("conv1", "conv2", "fc1", "fc3")}
    with RowCache(tmp_path / "serial.sqlite") as rows:
        serial = cached_output_kl(module, options, x, rows)
    with RowCache(tmp_path / "ray.sqlite") as rows, using(executor, close=False):
        fanned = cached_output_kl(module, options, x, rows)
        assert len(rows) == 16  # the driver wrote every measured pair (fp32 is not measured)
    assert fanned == serial
    assert min(v for (_, o), v in serial.loss.items() if o != "fp32") > 0.0


def test_lenet5_channel_pruning_kl_on_two_workers_equals_the_serial_run(
        executor: RayExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cost_models.cached_rows import cached_channel_pruning_kl
    from cost_models.channels import channel_group_specs
    from cost_models.row_cache import RowCache
    from edgefit.planning import calibration_split
    from techniques.prune import coupling
    from workloads.models import load_model_ref

    loaded = load_model_ref("lenet5-mnist")
    module = loaded.torch_module()
    split = calibration_split("mnist")
    assert split is not None
    x = split[0][:128]
    groups = channel_group_specs(coupling(module, loaded.input_shape), 2)
    cuts = sum(len(g.widths) - 1 for g in groups)
    assert cuts == 8  # conv1, conv2, fc1, fc2 at 1/3 and 2/3 of their channels
    with RowCache(tmp_path / "serial.sqlite") as rows:
        serial = cached_channel_pruning_kl(module, groups, loaded.input_shape, x, rows)
    monkeypatch.setattr(executor, "chunk_items", 3)  # 3 tasks, two of them spanning groups
    with RowCache(tmp_path / "ray.sqlite") as rows, using(executor, close=False):
        fanned = cached_channel_pruning_kl(module, groups, loaded.input_shape, x, rows)
        assert len(rows) == cuts
    assert fanned == serial and len(serial) == cuts


def test_a_failed_pass_keeps_the_rows_it_got_and_the_next_run_resumes(
        executor: RayExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pair that raises on every attempt ends the pass with its (layer, option) named; the
    rows of the tasks that finished are in the driver's cache, right, and a second run submits
    only the pairs still missing."""
    import numpy as np
    import torch
    from torch import nn

    from cost_models.cached_rows import cached_output_kl
    from cost_models.row_cache import RowCache
    from techniques.prune import UnstructuredPruneConfig
    from techniques.quantize import QuantizeConfig

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = np.random.default_rng(0).normal(size=(32, 1, 4, 4)).astype(np.float32)
    good = {layer: {f"int{bits}": [QuantizeConfig(weights=f"int{bits}", activations="fp32")]
                    for bits in (8, 6, 4, 3, 2)} for layer in ("1", "3")}
    bad = {**good, "2": {"s50": [UnstructuredPruneConfig(sparsity=0.5)]}}  # ReLU: no weight
    serial = cached_output_kl(model, good, x, RowCache(tmp_path / "serial.sqlite")).loss
    monkeypatch.setattr(executor, "chunk_items", 2)  # 6 tasks, the failing one last
    submitted: list[int] = []
    real = executor.map_tasks

    def counted(fn: Any, chunks: Any, *args: Any, **kwargs: Any) -> None:
        submitted.append(sum(len(c) for c in chunks))
        real(fn, chunks, *args, **kwargs)

    monkeypatch.setattr(executor, "map_tasks", counted)
    with RowCache(tmp_path / "ray.sqlite") as rows, using(executor, close=False):
        with pytest.raises(TaskFailedError, match=r"\(2, s50\) failed after 3 attempts "
                                                  r"\(PlanError: ReLU has no weight"):
            cached_output_kl(model, bad, x, rows)
        kept = len(rows)
        resumed = cached_output_kl(model, good, x, rows).loss
    assert 0 < kept < 11 and submitted == [11] + ([10 - kept] if kept < 10 else [])
    assert resumed == serial


def test_every_socket_of_the_cluster_is_on_loopback(executor: RayExecutor) -> None:
    import psutil

    me = psutil.Process()
    sockets = [(p.name(), c) for p in [me, *me.children(recursive=True)]
               for c in _tcp(p)]
    listening = [(name, c.laddr.ip) for name, c in sockets if c.status == psutil.CONN_LISTEN]
    assert {"gcs_server", "raylet"} <= {name for name, _ in listening}
    assert all(ip in LOOPBACK for _, ip in listening), listening
    dialled = [(name, c.raddr.ip) for name, c in sockets if c.raddr]
    assert dialled and all(ip in LOOPBACK for _, ip in dialled), dialled


def _tcp(p: Any) -> list[Any]:
    import psutil

    try:
        return list(p.net_connections(kind="tcp"))
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def stamped(folder: str, chunk: list[int], emit: Callable[[Any], None]) -> None:
    """Appends 'start NODE' and 'end NODE' around its work (one line a write: O_APPEND), so the
    order of the lines says whether two tasks ever ran at once on one node."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    log = Path(folder) / "log"
    with open(log, "a") as f:
        f.write(f"start {node}\n")
    for item in chunk:
        sum(range(20000))
        emit(item)
    with open(log, "a") as f:
        f.write(f"end {node}\n")


def node_name(suffix: str) -> str:
    """A probe: this node's id, plus ``suffix`` (a fingerprint only the head's id matches)."""
    import ray

    return ray.get_runtime_context().get_node_id() + suffix


def test_timing_tasks_run_on_matching_nodes_one_at_a_time(executor: RayExecutor,
                                                          tmp_path: Path) -> None:
    import ray

    ids = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    assert len(ids) == 2
    only = executor.matching_nodes(node_name, ("",), ids[0])  # a key one node reports
    assert [n.node_id for n in only] == [ids[0]] and only[0].address == "127.0.0.1"
    assert only[0].label == f"node 127.0.0.1/{ids[0][:8]}" and only[0].cpus == 1
    assert executor.matching_nodes(node_name, ("-other",), ids[0]) == []
    both = [*only, *executor.matching_nodes(node_name, ("",), ids[1])]
    got: list[tuple[str, int]] = []
    executor.map_on_nodes(stamped, [[i, i + 10] for i in range(6)],
                          lambda node, rec: got.append((node.node_id, rec)), both,
                          shared=(str(tmp_path),), title="stamped")
    assert sorted(r for _, r in got) == sorted([*range(6), *range(10, 16)])
    lines = (tmp_path / "log").read_text().split()
    events = list(zip(lines[::2], lines[1::2], strict=True))
    assert {node for _, node in events} <= set(ids)
    for node in ids:  # per node: start, end, start, end ... never two starts in a row
        mine = [what for what, n in events if n == node]
        assert mine == ["start", "end"] * (len(mine) // 2)
    assert {n for n, _ in got} == {n for _, n in events}  # records name the node that ran them
