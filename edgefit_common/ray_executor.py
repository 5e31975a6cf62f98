"""The Ray implementation of edgefit_common.execution's seam (docs/scale-out.md).

Ray is imported when the first task is submitted, never on import of this module, and only
when a command chose Ray (``--workers``, ``--cluster``, ``EDGEFIT_CLUSTER``).

- **Local** (``workers=N``): ``ray.init(address="local")`` with N CPUs, the node's address
  127.0.0.1 and no dashboard. Ray replaces 127.0.0.1 by the machine's interface address unless
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set before ray is imported; with it, every server
  binds and dials 127.0.0.1 (its gRPC servers listen on 127.0.0.1 exactly when the node's
  address is 127.0.0.1). Started here, so :meth:`RayExecutor.close` stops it; a node that
  came up on another address is refused.
- **Existing cluster** (``address=auto|ray://HOST:PORT|HOST:PORT``): connected to, never
  stopped. Its workers must run the same edgefit code: a probe task on each node compares a
  fingerprint of edgefit's source and the pinned libraries' versions with the driver's.

A submission puts the shared values (the model, the calibration data) into the object store
once and runs every chunk as one task returning its records (a list). A task that raises is
run again ``retries`` times in its worker, one whose worker or node dies is resubmitted as many
times by Ray; then :class:`TaskFailedError` names the item it failed on (the first its chunk
had not finished) or, if the worker died, the chunk.

Timing work goes only to the nodes whose hardware fingerprint equals the target's
(:meth:`RayExecutor.matching_nodes`: a probe task pinned to each node) and runs there one task
at a time per node, each task pinned to its node (``NodeAffinitySchedulingStrategy``, not soft)
and holding all of the node's CPUs, so no other task of this or any job shares the node while
it times (:meth:`RayExecutor.map_on_nodes`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edgefit_common.errors import ClusterError, TaskFailedError
from edgefit_common.execution import CHUNK_ITEMS, Emit, Executor, Node, TaskFn
from edgefit_common.progress import task

T = TypeVar("T")
LOOPBACK = "127.0.0.1"
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep 127.0.0.1 as the node's IP
                "RAY_USAGE_STATS_ENABLED": "0"}  # nothing reported anywhere
RETRIES = 2
CONNECT_TIMEOUT_S = 120.0
PACKAGES = ("edgefit_common", "formats", "techniques", "device_specs", "workloads",
            "cost_models", "planner", "executors", "edgefit")
PINNED = ("torch", "numpy", "onnx", "onnxruntime", "torch-pruning", "tensorly", "ray")


class ChunkError(Exception):
    """Raised by a task: its chunk failed on item number ``done`` (the ones before it were
    measured), with the original exception's type and message."""

    def __init__(self, done: int, message: str) -> None:
        super().__init__(done, message)
        self.done, self.message = done, message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class TaskStat:
    """One finished task: what it did, its CPU seconds on the worker (``time.process_time``
    around the work, every attempt), the node it ran on."""

    title: str
    items: int
    cpu_s: float
    node: str


def run_chunk(fn: TaskFn, chunk: Sequence[Any], retries: int, *shared: Any
              ) -> tuple[list[Any], float, str]:
    """What a Ray task runs: ``fn(*shared, chunk, emit)``; its records as one list, its CPU
    seconds and its node. An exception is retried here, ``retries`` more times (Ray's own
    exception retries would print each failure's traceback on the driver's stdout, where
    ``plan --json`` writes)."""
    import ray

    start = time.process_time()
    for attempt in range(retries + 1):
        records: list[Any] = []
        try:
            fn(*shared, chunk, records.append)
            return records, time.process_time() - start, ray.util.get_node_ip_address()
        except Exception as exc:
            if attempt == retries:
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                raise ChunkError(len(records),
                                 f"{type(exc).__name__}: {first}".rstrip(": ")) from exc
    raise AssertionError("unreachable")


def fingerprint() -> str:
    """sha256 (16 hex) of edgefit's source files and the pinned libraries' versions: two
    processes with the same fingerprint compute the same numbers."""
    from importlib import metadata

    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    for name in PINNED:
        try:
            h.update(f"{name}=={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{name} missing".encode())
    return h.hexdigest()[:16]


def node_fingerprint() -> tuple[str, str]:
    """(node address, fingerprint) of the worker that runs this."""
    import ray

    return ray.util.get_node_ip_address(), fingerprint()


class RayExecutor(Executor):
    """Tasks on Ray: a local instance of ``workers`` CPUs on 127.0.0.1, or the cluster at
    ``address``."""

    name = "ray"

    def __init__(self, *, workers: int | None = None, address: str | None = None,
                 retries: int = RETRIES, chunk_items: int = CHUNK_ITEMS) -> None:
        if (workers is None) == (address is None):
            raise ValueError("RayExecutor: give workers (local) or address (a cluster)")
        self.workers, self.address, self.retries = workers, address, retries
        self.chunk_items = chunk_items
        self.stats: list[TaskStat] = []  # every finished task, in the order they finished
        self._ray: Any = None
        self._remote: Any = None

    # ------------------------------------------------------------------ the cluster

    def describe(self) -> str:
        if self._ray is None:
            where = f"local, {self.workers} workers" if self.address is None else self.address
            return f"ray ({where}; not started)"
        nodes = [n for n in self._ray.nodes() if n.get("Alive")]
        cpus = self._ray.cluster_resources().get("CPU", 0)
        where = f"local {LOOPBACK}" if self.address is None else self.address
        return (f"ray ({where}): {len(nodes)} node{'s' * (len(nodes) != 1)}, "
                f"{cpus:g} CPUs")

    def start(self) -> Any:
        """The ray module, connected (started on first use)."""
        if self._ray is None:
            step = (f"start a local Ray instance of {self.workers} workers on {LOOPBACK}"
                    if self.address is None else f"connect to the Ray cluster at {self.address}")
            with task(step):
                self._ray = self._connect()
                try:
                    self._check_nodes()
                except BaseException:
                    self.close()
                    raise
        return self._ray

    def _connect(self) -> Any:
        if self.address is not None:
            _check_reachable(self.address)  # ray.init retries an absent head for minutes
        if self.address is None or _loopback(self.address):
            os.environ.update(LOOPBACK_ENV)  # read when ray is imported: before that
        import ray

        if ray.is_initialized():
            raise ClusterError("a Ray connection is already open in this process")
        ray_messages_to_stderr()
        quiet = logging.ERROR  # Ray's start-up lines are not edgefit's output
        try:
            if self.address is None:
                ray.init(address="local", _node_ip_address=LOOPBACK, num_cpus=self.workers,
                         include_dashboard=False, log_to_driver=False, logging_level=quiet)
            else:
                ray.init(address=self.address, log_to_driver=False, logging_level=quiet)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            where = "a local Ray instance" if self.address is None else self.address
            raise ClusterError(f"could not start or reach {where}: {_first_line(exc)}") from exc
        return ray

    def _check_nodes(self) -> None:
        """A local instance only on 127.0.0.1; every node of a cluster on this code."""
        ray = self._ray
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if self.address is None:
            elsewhere = sorted({n["NodeManagerAddress"] for n in nodes} - {LOOPBACK})
            if elsewhere:
                raise ClusterError(f"the local Ray instance came up on {', '.join(elsewhere)},"
                                   f" not {LOOPBACK} (ray was imported before edgefit set "
                                   f"{', '.join(LOOPBACK_ENV)})")
            return
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        probe = ray.remote(node_fingerprint)
        refs = [probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote() for n in nodes]
        try:
            answers = ray.get(refs, timeout=CONNECT_TIMEOUT_S)
        except ray.exceptions.RayError as exc:
            raise ClusterError(f"{self.address}: a node could not run edgefit "
                               f"({_first_line(exc)}); install the same edgefit on every "
                               "node (docs/scale-out.md)") from exc
        mine = fingerprint()
        other = sorted(ip for ip, fp in answers if fp != mine)
        if other:
            raise ClusterError(f"{self.address}: node(s) {', '.join(other)} run other edgefit "
                               "code or library versions than this machine; install the same "
                               "edgefit and pins on every node (docs/scale-out.md)")

    def close(self) -> None:
        """Disconnect; a local instance started here is stopped with it."""
        if self._ray is not None:
            ray, self._ray, self._remote = self._ray, None, None
            ray.shutdown()

    # ------------------------------------------------------------------ tasks

    def chunks(self, items: Sequence[T], size: int | None = None) -> list[list[T]]:
        """Chunks of ``size`` items (default: ``chunk_items``), in order."""
        step = size or self.chunk_items
        return [list(items[i:i + step]) for i in range(0, len(items), step)]

    def map_tasks(self, fn: TaskFn, chunks: Sequence[Sequence[Any]],
                  on_record: Emit, *, shared: Sequence[Any] = (),
                  label: Callable[[Any], str] = str, title: str = "tasks") -> None:
        """Every chunk as a task (each retried up to ``retries`` times); records handed to
        ``on_record`` as each task finishes, in the order tasks finish."""
        if not chunks:
            return
        ray = self.start()
        if self._remote is None:  # Ray retries a task whose worker or node died
            self._remote = ray.remote(num_cpus=1, max_retries=self.retries)(run_chunk)
        refs = [ray.put(value) for value in shared]  # shipped once, read by every task
        pending = {self._remote.remote(fn, list(chunk), self.retries, *refs): chunk
                   for chunk in chunks}
        try:
            tasks = f"{len(chunks)} task{'s' * (len(chunks) != 1)}"
            with task(f"{title}: {tasks} on {self.describe()}", len(chunks)) as bar:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    for ref in ready:
                        chunk = pending.pop(ref)
                        records, cpu_s, node = self._records(ref, chunk, label, title)
                        self.stats.append(TaskStat(title, len(chunk), cpu_s, node))
                        for record in records:
                            on_record(record)
                        bar.advance()
        finally:
            for ref in pending:  # an error or Ctrl-C: the rest is not wanted
                ray.cancel(ref)

    # ------------------------------------------------------------------ timing work

    def matching_nodes(self, probe: Callable[..., str], args: Sequence[Any], want: str
                       ) -> list[Node]:
        """The live nodes (with a CPU) where ``probe(*args)``, run on the node itself, returns
        ``want``."""
        ray = self.start()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [n for n in ray.nodes()
                 if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
        remote = ray.remote(probe)
        refs = [remote.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(*args) for n in nodes]
        try:
            keys = ray.get(refs, timeout=CONNECT_TIMEOUT_S)
        except ray.exceptions.RayError as exc:
            raise ClusterError(f"a node could not report its hardware fingerprint "
                               f"({_first_line(exc)})") from exc
        return [Node(n["NodeID"], n["NodeManagerAddress"], float(n["Resources"]["CPU"]))
                for n, key in zip(nodes, keys, strict=True) if key == want]

    def map_on_nodes(self, fn: TaskFn, chunks: Sequence[Sequence[Any]],
                     on_record: Callable[[Node, Any], None], nodes: Sequence[Node], *,
                     shared: Sequence[Any] = (), label: Callable[[Any], str] = str,
                     title: str = "probes") -> None:
        """Each chunk as one task on the next free node of ``nodes``: a node runs one task at
        a time (the driver submits the next when it is free, and the task reserves every CPU
        of the node); ``on_record(node, record)`` as each task finishes."""
        if not chunks:
            return
        if not nodes:
            raise ValueError("map_on_nodes: no node to run on")
        ray = self.start()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote = ray.remote(run_chunk)
        refs = [ray.put(value) for value in shared]
        queue, free = [list(c) for c in chunks], list(nodes)
        pending: dict[Any, tuple[Node, list[Any]]] = {}
        try:
            where = ", ".join(n.label for n in nodes)
            with task(f"{title}: {len(chunks)} task{'s' * (len(chunks) != 1)}, one at a time "
                      f"on each of {where}", len(chunks)) as bar:
                while queue or pending:
                    while queue and free:
                        node, chunk = free.pop(0), queue.pop(0)
                        ref = remote.options(
                            num_cpus=node.cpus, max_retries=self.retries,
                            scheduling_strategy=NodeAffinitySchedulingStrategy(
                                node.node_id, soft=False),
                        ).remote(fn, chunk, self.retries, *refs)
                        pending[ref] = (node, chunk)
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    for ref in ready:
                        node, chunk = pending.pop(ref)
                        records, cpu_s, _ = self._records(ref, chunk, label, title)
                        self.stats.append(TaskStat(title, len(chunk), cpu_s, node.label))
                        for record in records:
                            on_record(node, record)
                        free.append(node)
                        bar.advance()
        finally:
            for ref in pending:
                ray.cancel(ref)

    def _records(self, ref: Any, chunk: Sequence[Any], label: Callable[[Any], str],
                 title: str) -> tuple[list[Any], float, str]:
        ray = self._ray
        try:
            done: tuple[list[Any], float, str] = ray.get(ref)
            return done
        except ray.exceptions.RayError as exc:
            cause = getattr(exc, "cause", None)
            attempts = f"{1 + self.retries} attempt{'s' * (self.retries > 0)}"
            if isinstance(cause, ChunkError) and cause.done < len(chunk):
                raise TaskFailedError(f"{title}: {label(chunk[cause.done])} failed after "
                                      f"{attempts} ({cause.message})") from exc
            items = ", ".join(label(item) for item in chunk)
            raise TaskFailedError(f"{title}: the task for {items} failed after {attempts} "
                                  f"({type(exc).__name__}: {_first_line(exc)})") from exc


def ray_messages_to_stderr() -> None:
    """Ray's driver prints the errors the cluster reports to it ("A worker died or was killed
    while executing a task ...") on **stdout**: its error listener thread calls
    ``ray._private.worker.print_to_stdstream`` with ``is_err`` False, whatever ``log_to_driver``
    says, and Ray has no setting for it. edgefit's stdout is the result alone (``plan --json``
    writes its summary there), so they go to stderr, with the progress: the listener looks the
    function up in its module on every message, and this replaces it there (once; Ray is
    pinned, and tests/edgefit_common/test_ray_output.py kills a worker under ``plan --json``)."""
    from ray._private import worker

    printer = worker.print_to_stdstream
    if getattr(printer, "edgefit_to_stderr", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        printer({**data, "is_err": True}, ignore_prefix)

    to_stderr.edgefit_to_stderr = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


def _resolved(address: str) -> str | None:
    """The address itself, or for ``auto`` the one Ray would use: RAY_ADDRESS, else its
    record of the last ``ray start`` on this machine (None: neither)."""
    if address != "auto":
        return address
    tmp = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"  # as Ray looks
    try:
        recorded = (Path(tmp) / "ray" / "ray_current_cluster").read_text().strip()
    except OSError:
        recorded = ""
    return os.environ.get("RAY_ADDRESS") or recorded or None


def _loopback(address: str) -> bool:
    """Whether a cluster address (``auto``: as :func:`_resolved`) is on the loopback range."""
    resolved = _resolved(address)
    host = (resolved or "").removeprefix("ray://").rpartition(":")[0]
    return host == "localhost" or host.startswith("127.")


def _check_reachable(address: str) -> None:
    """One clear error at once for a cluster that is not there (a TCP connection to its
    address, 5 s at most)."""
    import socket

    resolved = _resolved(address)
    if resolved is None:
        raise ClusterError("--cluster auto: no Ray cluster is recorded on this machine "
                           "(RAY_ADDRESS, or a head started here with `ray start --head`)")
    host, _, port = resolved.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5.0).close()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ClusterError(f"cannot reach the Ray cluster at {resolved}: {reason}") from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


__all__ = ["LOOPBACK", "ChunkError", "RayExecutor", "TaskStat", "fingerprint",
           "ray_messages_to_stderr", "run_chunk"]
