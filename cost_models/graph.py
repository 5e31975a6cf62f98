"""The layer graph the planner reasons about. Plain data (no torch), JSON round-trips.

`layers` are the plannable (weighted) modules in execution order. `steps` are every operation in
execution order with the tensors it reads and writes; tensors know their element count and their
*owner*: the layer whose chosen option decides the tensor's element type (a ReLU after an int8
conv produces int8). That is what makes peak RAM a function of the plan.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import networkx as nx

# ops a runtime may compute in place over an input read there for the last time (onnxruntime's
# element-wise CPU kernels registered MayInplace), by torch function / module / ONNX op name
INPLACE_OPS = frozenset({"add", "sub", "mul", "div", "truediv", "relu", "relu6", "clip",
                         "hardtanh", "sigmoid", "tanh", "neg", "abs", "sqrt", "exp",
                         "leakyrelu", "leaky_relu"})


@dataclass(frozen=True)
class Layer:
    name: str  # fully-qualified module name in the torch model (or ONNX node name)
    op_type: str  # Conv2d, Linear, ...
    op_class: str  # conv, pointwise, depthwise, linear (device kernels are rated per class)
    params: int
    weight_numel: int
    bias_numel: int
    out_channels: int
    macs: int  # per sample, from fvcore
    input_numel: int  # per sample
    output_numel: int  # per sample
    # torch-layout weight shape (out channels first), as the flash image records it; empty
    # for graphs without weights (synthetic / published layer lists: no image is predicted)
    weight_shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class Tensor:
    name: str
    numel: int  # per sample
    owner: str | None  # layer whose option sets the dtype; None = graph input in fp32
    # per sample (torch capture) or as inferred at batch 1 (ONNX); () = unknown: buffer reuse
    # (held_tensors) then matches sizes only
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class Step:
    name: str
    kind: str  # "layer" (a planned layer), "op" (elementwise/pool/...), "alias" (view/flatten)
    op: str
    inputs: tuple[str, ...]
    output: str
    owner: str | None  # the layer this step's cost is charged to


@dataclass
class LayerGraph:
    model: str
    input_shape: tuple[int, ...]  # one sample, e.g. (1, 28, 28)
    layers: list[Layer]
    steps: list[Step]
    tensors: dict[str, Tensor]
    outputs: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def to_networkx(self) -> nx.DiGraph:
        """Producer -> consumer graph over steps (edges carry the tensor name)."""
        g = nx.DiGraph()
        producer = {s.output: s.name for s in self.steps}
        for s in self.steps:
            g.add_node(s.name, kind=s.kind, op=s.op, owner=s.owner)
            for t in s.inputs:
                if t in producer:
                    g.add_edge(producer[t], s.name, tensor=t)
        return g

    def live_tensors(self, outputs_from_start: bool = False) -> list[list[str]]:
        """For each step, the tensors that occupy memory while it runs (real buffers only).

        A tensor is live from the step that writes it to the last step that reads it; the graph
        input is live from the start, graph outputs to the end (outputs_from_start: from the
        first step, for runtimes that allocate them beside the planned block). Aliases (views)
        share the buffer of the tensor they view, so they are resolved to it.
        """
        base = self._alias_base()
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for i, s in enumerate(self.steps):
            out = base[s.output]
            first.setdefault(out, i)
            last[out] = max(last.get(out, i), i)
            for t in s.inputs:
                b = base.get(t, t)
                first.setdefault(b, 0)
                last[b] = max(last.get(b, i), i)
        for t in self.outputs:
            last[base.get(t, t)] = len(self.steps) - 1
            if outputs_from_start:
                first[base.get(t, t)] = 0
        return [
            sorted(t for t in first if first[t] <= i <= last[t]) for i in range(len(self.steps))
        ]

    def held_tensors(self, outputs_from_start: bool = False,
                     rounded: Callable[[int], int] = lambda n: n) -> list[list[str]]:
        """For each step, the tensors whose buffers are held while it runs, for a runtime that
        reuses buffers as onnxruntime's allocation planner does (cost_models.reuse): an output
        takes a freed buffer of exactly its shape and size (``rounded`` bytes at 4 bytes per
        element, the widest activation), and that buffer stays allocated until the last read
        of the last tensor placed in it. A held buffer is named by the tensor in it at that
        step (the latest placed there), which is charged at its own size and owner, so a
        buffer kept between two of its tensors still counts. Model inputs (the caller's
        buffers) and outputs are held as in :meth:`live_tensors`."""
        from cost_models.reuse import Op, assign

        views = {s.output for s in self.steps if s.kind == "alias"}
        ops = [Op(s.name, s.inputs, ((s.output, 4 * self.tensors[s.output].numel,
                                      self.tensors[s.output].shape),),
                  view=s.kind == "alias", inplace=s.op.lower() in INPLACE_OPS)
               for s in self.steps]
        a = assign(ops, self.outputs, rounded)
        base = self._alias_base()
        live = self.live_tensors(outputs_from_start)
        outside = {base.get(t, t) for t in self.tensors if base.get(t, t) not in a.buffer_of}
        out = []
        for i, names in enumerate(live):
            held = [t for t in names if t in outside]
            for b in a.held(i):
                placed = [m for m in a.members[b] if m not in views and a.born[m] <= i]
                held.append(placed[-1])
            out.append(sorted(held))
        return out

    def _alias_base(self) -> dict[str, str]:
        base: dict[str, str] = {t: t for t in self.tensors}
        for s in self.steps:
            if s.kind == "alias" and s.inputs:
                base[s.output] = base.get(s.inputs[0], s.inputs[0])
        return base

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LayerGraph:
        d = json.loads(text)
        return cls(
            model=d["model"],
            input_shape=tuple(d["input_shape"]),
            layers=[Layer(**{**x, "weight_shape": tuple(x.get("weight_shape", ()))})
                    for x in d["layers"]],
            steps=[Step(**{**x, "inputs": tuple(x["inputs"])}) for x in d["steps"]],
            tensors={k: Tensor(**{**v, "shape": tuple(v.get("shape", ()))})
                     for k, v in d["tensors"].items()},
            outputs=tuple(d["outputs"]),
            meta=d.get("meta", {}),
        )
