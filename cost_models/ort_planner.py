"""onnxruntime's own allocation plan for an ONNX model, replayed: why its arena holds more than
the tensors that are live.

onnxruntime (allocation_planner.cc, sequential CPU execution) gives every node output a buffer
before the run: a view (Reshape, Squeeze, ...) shares its input's buffer; an element-wise node
may write in place over an input it reads last (Relu, Clip, Add, ...); otherwise the output takes
the most recently freed buffer of exactly its byte size and shape, or a new one. A buffer is
released only after the last read of the last tensor placed in it, so a buffer reused from layer
to layer stays allocated across the layers in between: on a transformer the attention and MLP
buffers of one block are all held while the next block runs. The arena's peak is the largest
sum of buffers allocated at one node, plus that node's kernel scratch (the node record), plus
the graph outputs allocated so far (memory pattern off, as edgefit runs onnxruntime). The arena
itself (a BFC allocator) may hand a request a free chunk of up to twice its size without splitting
it and counts the whole chunk, so its MaxInUse can exceed the replay by such slack.

``replay(path)`` runs the model once with onnxruntime's profiler (output shapes and dtypes, in
execution order) and its node memory record (scratch), takes the optimised graph onnxruntime
saves, and replays the plan. It is a diagnostic of the runtime's allocator: the planner's
liveness model (edgefit.planning) counts live tensors, and the difference between the two is
this reuse (docs/cost-model-accuracy.md compares the three with the arena).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cost_models.ort_memory import ARENA_GRAIN_BYTES, OrtMemoryError, _inputs, node_memory_stats

# nodes whose output is a view of their first input (kernel Alias)
ALIAS_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})
# element-wise CPU kernels registered MayInplace(0, 0): the output may take an input's buffer
# when that input is read here for the last time and has the output's size and shape
INPLACE_OPS = frozenset({"Relu", "Clip", "Add", "Sub", "Mul", "Div", "Sigmoid", "Tanh",
                         "LeakyRelu", "Neg", "Abs", "Sqrt", "Exp"})
_ELEM_BYTES = {"float": 4, "float16": 2, "double": 8, "int64": 8, "int32": 4, "int16": 2,
               "uint16": 2, "int8": 1, "uint8": 1, "bool": 1}


@dataclass(frozen=True)
class PlanReplay:
    peak_bytes: int  # arena peak replayed: buffers + scratch + outputs at the worst node
    live_tensor_bytes: int  # the same with every tensor freed after its last read (no reuse)
    peak_node: str
    buffers: int


@dataclass
class _Node:
    name: str
    op: str
    inputs: list[str]
    outputs: list[tuple[str, int, tuple[int, ...]]]  # (tensor, bytes, shape)
    temp_bytes: int = 0


def _rounded(nbytes: int) -> int:
    return -(-nbytes // ARENA_GRAIN_BYTES) * ARENA_GRAIN_BYTES


def replay(path: Path | str) -> PlanReplay:
    """Replay onnxruntime's allocation plan for ``path`` (opt level all, 1 thread)."""
    nodes, graph_outputs = _trace(Path(path))
    return _replay(nodes, graph_outputs)


def _trace(path: Path) -> tuple[list[_Node], set[str]]:
    import onnx
    import onnxruntime as ort

    from edgefit_measure import session_options

    if not path.is_file():
        raise OrtMemoryError(f"{path}: no such ONNX file")
    temp = {r.node: r.temp_bytes for r in node_memory_stats(path)}
    with tempfile.TemporaryDirectory(prefix="edgefit-plan-") as tmp:
        so = session_options(1, "all", profile_prefix=str(Path(tmp) / "prof"),
                             optimized_path=str(Path(tmp) / "opt.onnx"))
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        sess.run(None, dict(_inputs(path)))
        events = json.loads(Path(sess.end_profiling()).read_text())
        graph = onnx.load(str(Path(tmp) / "opt.onnx")).graph
    by_name = {n.name: n for n in graph.node}
    nodes = []
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        node = by_name[e["name"].removesuffix("_kernel_time")]
        shapes = e["args"].get("output_type_shape", [])
        outs = []
        for tensor, typed in zip(node.output, shapes, strict=False):
            ((dtype, dims),) = typed.items()
            numel = 1
            for d in dims:
                numel *= int(d)
            outs.append((tensor, numel * _ELEM_BYTES.get(dtype, 4), tuple(dims)))
        nodes.append(_Node(node.name, node.op_type, [t for t in node.input if t], outs,
                           temp.get(node.name, 0)))
    return nodes, {o.name for o in graph.output}


def _replay(nodes: list[_Node], graph_outputs: set[str]) -> PlanReplay:
    produced = {t for n in nodes for t, _, _ in n.outputs}
    last: dict[str, int] = {}
    reads: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for t in n.inputs:
            if t in produced:
                last[t] = i
                reads[t] = reads.get(t, 0) + 1
    size: dict[int, int] = {}
    shape: dict[int, tuple[int, ...]] = {}
    first: dict[int, int] = {}
    members: dict[int, list[str]] = {}
    buffer_of: dict[str, int] = {}
    freelist: list[int] = []  # most recently freed first
    outputs_at: list[int] = []  # graph-output bytes allocated by node i (live to the end)
    tensor_shape = {t: dims for n in nodes for t, _, dims in n.outputs}
    for i, n in enumerate(nodes):
        out_bytes = 0
        for tensor, nbytes, dims in n.outputs:
            if tensor in graph_outputs:
                out_bytes += _rounded(nbytes)
                continue
            if n.op in ALIAS_OPS and n.inputs and n.inputs[0] not in produced:
                continue  # a view of the caller's input or of a weight: no arena buffer
            b = _reuse(n, tensor, nbytes, dims, i, buffer_of, size, shape, last, reads, freelist,
                       tensor_shape)
            if b is None:
                b = len(size)
                size[b], shape[b], first[b], members[b] = _rounded(nbytes), dims, i, []
            buffer_of[tensor] = b
            members[b].append(tensor)
        outputs_at.append(out_bytes)
        for t in dict.fromkeys(n.inputs):
            b = buffer_of.get(t)
            if b is not None and b not in freelist and all(
                    last.get(m, first[b]) <= i for m in members[b]):
                freelist.insert(0, b)
    end = {b: max(last.get(m, first[b]) for m in members[b]) for b in size}
    return _peaks(nodes, size, first, end, outputs_at, last, produced, graph_outputs)


def _reuse(n: _Node, tensor: str, nbytes: int, dims: tuple[int, ...], i: int,
           buffer_of: dict[str, int], size: dict[int, int], shape: dict[int, tuple[int, ...]],
           last: dict[str, int], reads: dict[str, int], freelist: list[int],
           tensor_shape: dict[str, tuple[int, ...]]) -> int | None:
    src = n.inputs[0] if n.inputs else None
    if n.op in ALIAS_OPS and src in buffer_of:
        return buffer_of[src]
    if n.op in INPLACE_OPS:
        for t in n.inputs:
            b = buffer_of.get(t)
            if b is not None and reads.get(t) == 1 and last.get(t) == i and \
                    size[b] == _rounded(nbytes) and tensor_shape.get(t) == dims:
                return b
    for b in freelist:
        if size[b] == _rounded(nbytes) and shape[b] == dims:
            freelist.remove(b)
            return b
    return None


def _peaks(nodes: list[_Node], size: dict[int, int], first: dict[int, int],
           end: dict[int, int], outputs_at: list[int], last: dict[str, int],
           produced: set[str], graph_outputs: set[str]) -> PlanReplay:
    outputs = 0
    peak, peak_node, live_peak = 0, "", 0
    tensor_bytes = {t: _rounded(b) for n in nodes for t, b, _ in n.outputs
                    if not (n.op in ALIAS_OPS and n.inputs and n.inputs[0] not in produced)}
    born = {t: i for i, n in enumerate(nodes) for t, _, _ in n.outputs}
    scratch = [_rounded(n.temp_bytes) if n.temp_bytes else 0 for n in nodes]
    for i, n in enumerate(nodes):
        outputs += outputs_at[i]
        held = sum(size[b] for b in size if first[b] <= i <= end[b]) + outputs + scratch[i]
        if held > peak:
            peak, peak_node = held, n.name
        live = sum(tensor_bytes[t] for t in tensor_bytes if t not in graph_outputs
                   and born[t] <= i <= last.get(t, born[t]))
        live_peak = max(live_peak, live + outputs + scratch[i])
    return PlanReplay(peak_bytes=peak, live_tensor_bytes=live_peak, peak_node=peak_node,
                      buffers=len(size))


__all__ = ["ALIAS_OPS", "INPLACE_OPS", "PlanReplay", "replay"]
