"""Where independent units of work run, as one seam: in this process (the default) or on Ray.

A loop with many small, independent measurements (the sensitivity pass's (layer, option)
pairs) does not call its worker function itself; it splits its items into chunks
(:meth:`Executor.chunks`) and submits them with :meth:`Executor.map_tasks` to the executor of
the current context (:func:`current`, a ``ContextVar`` as edgefit_common.progress has). A task
is ``fn(*shared, chunk, emit)``: it calls ``emit(record)`` for every small result it makes and
returns nothing. The caller gets each record through ``on_record`` and alone decides what to
do with it (the driver writes the caches: a worker never does).

- :class:`Executor` (this module): in this process, one chunk holding every item, so a loop
  behaves exactly as if it called ``fn`` directly (its own progress bar, each record handed
  over as it is made, an interruption keeps what was emitted). Imports nothing but the
  standard library: no Ray unless a Ray executor is chosen.
- ``edgefit_common.ray_executor.RayExecutor``: a local Ray instance of N workers bound to
  127.0.0.1 (``--workers N``) or an existing cluster (``--cluster auto|ray://HOST:PORT|
  HOST:PORT``, or ``EDGEFIT_CLUSTER``); ``shared`` values go into the object store once per
  call, chunks of ~10 items run as tasks, failed tasks are retried (bounded) and then reported
  with the items they held (``TaskFailedError``). docs/scale-out.md.

The command line installs one with :func:`using` (which also closes it: a local Ray instance
is stopped); library calls without one run in-process.

Timing work (host latency profiles) is not spread like that: its numbers belong to the CPU they
were measured on. :meth:`Executor.matching_nodes` names the nodes whose hardware fingerprint
(``probe(*args)`` run on each) equals the target's, and :meth:`Executor.map_on_nodes` runs
chunks only there, one task at a time per node holding all of the node's CPUs. In-process there
are no nodes: the caller measures on the driver, as it always did.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from edgefit_common.errors import ClusterError

T = TypeVar("T")
Emit = Callable[[Any], None]
"""A task hands each record it makes to this."""
TaskFn = Callable[..., None]
"""``fn(*shared, chunk, emit)``: a module-level function (a Ray worker imports it by name)."""

CLUSTER_ENV = "EDGEFIT_CLUSTER"
"""The environment's choice when no flag is given: auto, ray://HOST:PORT, HOST:PORT, local:N
(a local Ray instance of N workers) or in-process."""
CHUNK_ITEMS = 10
"""Items per task: big enough that a task's start (the model deserialised on the worker) is
small beside its work, small enough that no one task straggles at the end of a pass."""


@dataclass(frozen=True)
class Node:
    """One machine of a cluster that timing work may run on: its Ray node id, address and CPU
    count (a probe task reserves them all, so nothing else runs beside it)."""

    node_id: str
    address: str
    cpus: float

    @property
    def label(self) -> str:
        """How reports name it: ``node 127.0.0.1/5f3a9c1e`` (two nodes may share an address on
        one machine; the id's first 8 hex tell them apart)."""
        return f"node {self.address}/{self.node_id[:8]}"


DRIVER = "the driver"
"""Who measured a record made in this process."""


class Executor:
    """In this process: ``fn`` called once per chunk, records handed over as they are made."""

    name = "in-process"

    def describe(self) -> str:
        """Where tasks run, for progress and reports (``in-process``, ``ray: 2 nodes, 2
        CPUs``)."""
        return self.name

    def chunks(self, items: Sequence[T], size: int | None = None) -> list[list[T]]:
        """``items`` as the chunks to submit. In-process: one chunk of everything (nothing
        to balance; the task's own progress bar and per-item records stay as they were)."""
        return [list(items)] if items else []

    def map_tasks(self, fn: TaskFn, chunks: Sequence[Sequence[Any]],
                  on_record: Emit, *, shared: Sequence[Any] = (),
                  label: Callable[[Any], str] = str, title: str = "tasks") -> None:
        """Run ``fn(*shared, chunk, emit)`` for every chunk; ``on_record(record)`` for every
        record a task emits. ``label(item)`` names an item in an error (e.g. ``(conv1,
        int4)``); ``title`` names the work in progress lines. In-process an exception
        propagates as raised (the same inputs in the same process fail the same way: nothing
        to retry)."""
        for chunk in chunks:
            fn(*shared, chunk, on_record)

    def matching_nodes(self, probe: Callable[..., str], args: Sequence[Any], want: str
                       ) -> list[Node]:
        """The nodes where ``probe(*args)`` returns ``want`` (a hardware fingerprint's key).
        In-process: none, so timing work stays on the driver."""
        return []

    def map_on_nodes(self, fn: TaskFn, chunks: Sequence[Sequence[Any]],
                     on_record: Callable[[Node, Any], None], nodes: Sequence[Node], *,
                     shared: Sequence[Any] = (), label: Callable[[Any], str] = str,
                     title: str = "probes") -> None:
        """Run each chunk as ``fn(*shared, chunk, emit)`` on one of ``nodes`` (never
        elsewhere), one task at a time per node; ``on_record(node, record)`` for every record.
        In-process there are no nodes to run on."""
        if chunks:
            raise ValueError("in-process: no node to run on (matching_nodes is empty)")

    def close(self) -> None:
        """Release what the executor started (nothing, in-process)."""


IN_PROCESS = Executor()
_CURRENT: ContextVar[Executor | None] = ContextVar("edgefit_executor", default=None)


def current() -> Executor:
    """The executor of the current context (in-process unless a caller installed one)."""
    return _CURRENT.get() or IN_PROCESS


@contextlib.contextmanager
def using(executor: Executor, close: bool = True) -> Iterator[Executor]:
    """Within the block, work is submitted to ``executor``; unless ``close`` is False it is
    closed on the way out (a local Ray instance it started is stopped, also on an error or
    Ctrl-C)."""
    token = _CURRENT.set(executor)
    try:
        yield executor
    finally:
        _CURRENT.reset(token)
        if close:
            executor.close()


def from_settings(cluster: str | None = None, workers: int | None = None,
                  environ: Mapping[str, str] | None = None) -> Executor:
    """The executor ``--cluster`` / ``--workers`` ask for, else ``EDGEFIT_CLUSTER``, else
    in-process. Checks the settings only (nothing is started or imported here)."""
    if cluster is not None and workers is not None:
        raise ClusterError("--cluster and --workers: give one (--workers N starts a local Ray "
                           "instance; --cluster connects to a running one)")
    if workers is not None:
        return _local(workers, "--workers")
    if cluster is not None:
        return _parse(cluster, "--cluster")
    env = (os.environ if environ is None else environ).get(CLUSTER_ENV, "").strip()
    return _parse(env, CLUSTER_ENV) if env else IN_PROCESS


def _local(workers: int, where: str) -> Executor:
    if workers < 1:
        raise ClusterError(f"{where} {workers}: the number of local workers is at least 1")
    from edgefit_common.ray_executor import RayExecutor

    return RayExecutor(workers=workers)


def _parse(value: str, where: str) -> Executor:
    """auto | ray://HOST:PORT | HOST:PORT | local:N | in-process."""
    text = value.strip()
    if text == "in-process":
        return IN_PROCESS
    if text.startswith("local:"):
        count = text.removeprefix("local:")
        if not count.isascii() or not count.isdigit():
            raise ClusterError(f"{where} {value!r}: local:N takes a number of workers")
        return _local(int(count), where)
    if text != "auto":
        host, sep, port = text.removeprefix("ray://").rpartition(":")
        if not sep or not host or not port.isascii() or not port.isdigit():
            raise ClusterError(f"{where} {value!r}: expected auto, ray://HOST:PORT (a Ray "
                               "client server), HOST:PORT (a Ray head's GCS), local:N or "
                               "in-process")
    from edgefit_common.ray_executor import RayExecutor

    return RayExecutor(address=text)


__all__ = ["CHUNK_ITEMS", "CLUSTER_ENV", "DRIVER", "IN_PROCESS", "Emit", "Executor", "Node",
           "TaskFn", "current", "from_settings", "using"]
