"""Buffer reuse as onnxruntime's allocation planner does it (allocation_planner.cc, sequential
CPU execution), on any list of ops in execution order. Plain Python: the planner's memory model
(LayerGraph.held_tensors) and the replay of onnxruntime's own graph (cost_models.ort_planner)
share it.

Every op output gets a buffer before the run: a view shares its input's buffer; an in-place op
may write over an input it reads for the last time when that input has the output's size and
shape; otherwise the output takes the most recently freed buffer of exactly its (rounded) byte
size and shape, or a new one. A buffer is released only after the last read of the last tensor
placed in it, so it stays allocated across the ops between two of its tensors. Graph outputs
and the caller's inputs get no planned buffer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Op:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[tuple[str, int, tuple[int, ...]], ...]  # (tensor, bytes, shape)
    view: bool = False  # the output is a view of inputs[0] (Reshape, Flatten, ...)
    inplace: bool = False  # may write over an input read here for the last time


@dataclass(frozen=True)
class Assignment:
    """Which buffer each planned tensor sits in, and how long each buffer is held."""

    buffer_of: dict[str, int]  # tensor (views included) -> buffer
    size: dict[int, int]  # buffer -> rounded bytes
    shape: dict[int, tuple[int, ...]]  # buffer -> the shape it was allocated for
    first: dict[int, int]  # buffer -> index of the op that allocates it
    end: dict[int, int]  # buffer -> index of the last read of its last tensor
    members: dict[int, list[str]]  # buffer -> its tensors in the order they were placed
    born: dict[str, int]  # tensor -> index of the op that writes it
    last: dict[str, int]  # tensor -> index of its last read (tensors read at all)

    def held(self, i: int) -> list[int]:
        """Buffers allocated while op i runs."""
        return [b for b in self.size if self.first[b] <= i <= self.end[b]]


def assign(ops: Sequence[Op], graph_outputs: Iterable[str],
           rounded: Callable[[int], int] = lambda n: n) -> Assignment:
    outputs = set(graph_outputs)
    produced = {t for op in ops for t, _, _ in op.outputs}
    last: dict[str, int] = {}
    reads: dict[str, int] = {}
    for i, op in enumerate(ops):
        for t in op.inputs:
            if t in produced:
                last[t] = i
                reads[t] = reads.get(t, 0) + 1
    tensor_shape = {t: dims for op in ops for t, _, dims in op.outputs}
    born = {t: i for i, op in enumerate(ops) for t, _, _ in op.outputs}
    a = Assignment({}, {}, {}, {}, {}, {}, born, last)
    freelist: list[int] = []  # most recently freed first
    for i, op in enumerate(ops):
        for tensor, nbytes, dims in op.outputs:
            if tensor in outputs:
                continue
            if op.view and op.inputs and op.inputs[0] not in produced:
                continue  # a view of the caller's input or of a weight: no planned buffer
            b = _reuse(op, rounded(nbytes), dims, i, a, reads, freelist, tensor_shape)
            if b is None:
                b = len(a.size)
                a.size[b], a.shape[b], a.first[b], a.members[b] = rounded(nbytes), dims, i, []
            a.buffer_of[tensor] = b
            a.members[b].append(tensor)
        for t in dict.fromkeys(op.inputs):
            b = a.buffer_of.get(t)
            if b is not None and b not in freelist and all(
                    last.get(m, a.first[b]) <= i for m in a.members[b]):
                freelist.insert(0, b)
    a.end.update({b: max(last.get(m, a.first[b]) for m in a.members[b]) for b in a.size})
    return a


def _reuse(op: Op, nbytes: int, dims: tuple[int, ...], i: int, a: Assignment,
           reads: dict[str, int], freelist: list[int],
           tensor_shape: dict[str, tuple[int, ...]]) -> int | None:
    src = op.inputs[0] if op.inputs else None
    if op.view and src in a.buffer_of:
        return a.buffer_of[src]
    if op.inplace:
        for t in op.inputs:
            b = a.buffer_of.get(t)
            if b is not None and reads.get(t) == 1 and a.last.get(t) == i and \
                    a.size[b] == nbytes and tensor_shape.get(t) == dims:
                return b
    for b in freelist:
        if a.size[b] == nbytes and a.shape[b] == dims:
            freelist.remove(b)
            return b
    return None


__all__ = ["Assignment", "Op", "assign"]
