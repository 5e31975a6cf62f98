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
from cost_models.reuse import Op, assign

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
    ops = [Op(n.name, tuple(n.inputs), tuple(n.outputs), view=n.op in ALIAS_OPS,
              inplace=n.op in INPLACE_OPS) for n in nodes]
    a = assign(ops, graph_outputs, _rounded)
    outputs_at = [sum(_rounded(b) for t, b, _ in n.outputs if t in graph_outputs) for n in nodes]
    scratch = [_rounded(n.temp_bytes) if n.temp_bytes else 0 for n in nodes]
    live = _live_tensors(nodes, a.last, graph_outputs)
    outputs = 0
    peak, peak_node, live_peak = 0, "", 0
    for i, n in enumerate(nodes):
        outputs += outputs_at[i]
        held = sum(a.size[b] for b in a.held(i)) + outputs + scratch[i]
        if held > peak:
            peak, peak_node = held, n.name
        live_peak = max(live_peak, live[i] + outputs + scratch[i])
    return PlanReplay(peak_bytes=peak, live_tensor_bytes=live_peak, peak_node=peak_node,
                      buffers=len(a.size))


def _live_tensors(nodes: list[_Node], last: dict[str, int], graph_outputs: set[str]
                  ) -> list[int]:
    """Per node, the bytes of the tensors live there with no buffer reuse: every tensor from
    its node to its last read; a view is its base tensor's buffer (it extends the base's life,
    it holds no bytes of its own)."""
    produced = {t for n in nodes for t, _, _ in n.outputs}
    base: dict[str, str] = {}
    nbytes: dict[str, int] = {}
    born: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for t, b, _ in n.outputs:
            if n.op in ALIAS_OPS and n.inputs:
                if n.inputs[0] in produced:
                    base[t] = base.get(n.inputs[0], n.inputs[0])
                continue  # a view: of a planned tensor, or of the caller's input / a weight
            if t not in graph_outputs:
                base[t], nbytes[t], born[t] = t, _rounded(b), i
    end = dict(born)
    for t, i in last.items():
        if base.get(t) in end:
            end[base[t]] = max(end[base[t]], i)
    return [sum(nbytes[t] for t in nbytes if born[t] <= i <= end[t]) for i in range(len(nodes))]


__all__ = ["ALIAS_OPS", "INPLACE_OPS", "PlanReplay", "replay"]
