"""Capture an nn.Module as a LayerGraph: torch.fx for structure and shapes, fvcore for MACs."""

from __future__ import annotations

import dataclasses
import logging
import math
import operator
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from cost_models.graph import Layer, LayerGraph, Step, Tensor
from edgefit_common.errors import ModelLoadError

# an nn.Embedding is a planned layer too: its table is stored at the chosen precision and
# read by a gather (rows looked up, no MACs)
PLANNABLE = (nn.Conv2d, nn.Linear, nn.Embedding)
_ALIAS_FUNCS: set[Any] = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_ALIAS_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "contiguous"}
_PASS_MODULES = (nn.Flatten, nn.Identity, nn.Dropout)
# Activations that every runtime we target fuses into the producing kernel (TFLM, ORT, TensorRT):
# they cost no extra buffer and no extra pass.
_FUSED_MODULES = (nn.ReLU, nn.ReLU6)
_FUSED_FUNCS: set[Any] = {torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6,
                torch.ops.aten.relu.default, torch.ops.aten.relu_.default}
_ALIAS_FUNCS |= {torch.ops.aten.flatten.using_ints, torch.ops.aten.view.default,
                 torch.ops.aten.reshape.default, torch.ops.aten.squeeze.dim,
                 torch.ops.aten.unsqueeze.default}


def op_class(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Embedding):
        return "gather"
    assert isinstance(module, nn.Conv2d)
    if module.groups > 1 and module.groups == module.in_channels:
        return "depthwise"
    if module.kernel_size == (1, 1):
        return "pointwise"
    return "conv"


def count_macs(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Per-module MACs for one sample (fvcore counts one fused multiply-add as one flop)."""
    from fvcore.nn import FlopCountAnalysis

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    analysis = FlopCountAnalysis(model, example)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return {k: int(v) for k, v in analysis.by_module().items()}


def capture(model: nn.Module, input_shape: tuple[int, ...], name: str = "model") -> LayerGraph:
    if not isinstance(model, fx.GraphModule):  # exported programs' modules refuse .eval()
        model = model.eval()
    example = torch.zeros((1, *input_shape))
    try:
        gm = flat_modules(model)
        if not isinstance(gm, fx.GraphModule):
            gm = fx.symbolic_trace(gm)
    except Exception as exc:  # fx raises many types; the user needs one line
        raise ModelLoadError(f"{name}: torch.fx cannot trace this model: {exc}") from None
    ShapeProp(gm).propagate(example)
    macs = count_macs(model, example)
    modules = dict(model.named_modules())

    tensors: dict[str, Tensor] = {}
    steps: list[Step] = []
    layers: list[Layer] = []
    owner_of: dict[str, str | None] = {}
    outputs: tuple[str, ...] = ()

    def shape(node: fx.Node) -> tuple[int, ...]:
        """Per sample (the batch dimension dropped)."""
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise ModelLoadError(f"{name}: node {node.name} does not produce a single tensor")
        return tuple(int(d) for d in meta.shape[1:])

    def numel(node: fx.Node) -> int:
        return math.prod(shape(node))

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            tensors[node.name] = Tensor(node.name, numel(node), None, shape(node))
            owner_of[node.name] = None
            continue
        if node.op == "output":
            outputs = tuple(a.name for a in _flat_nodes(node.args))
            continue
        if not node.users:  # dead code, e.g. torch.export's guard function
            continue
        if "tensor_meta" not in node.meta and node.op != "get_attr":
            continue  # no tensor at all: x.shape, x.shape[0], x.size(1) (sizes, not buffers)
        if node.op == "get_attr":
            # a parameter read by an op, not a module (a .pt2's LayerNorm / GroupNorm weights,
            # a layer scale, an embedding table): a weight, not an activation -- stored as it
            # is (in the unplanned weight bytes), never planned
            continue
        inputs = tuple(a.name for a in _flat_nodes(node.args) if a.name in tensors)
        in_owner = owner_of.get(inputs[0]) if inputs else None
        kind, op, owner = _classify(node, modules, in_owner)
        if kind == "layer":
            mod = modules[node.target]
            assert isinstance(mod, PLANNABLE)
            layers.append(Layer(
                name=str(node.target),
                op_type=type(mod).__name__,
                op_class=op_class(mod),
                params=sum(p.numel() for p in mod.parameters()),
                weight_numel=mod.weight.numel(),
                bias_numel=_bias_numel(mod),
                out_channels=mod.weight.shape[0],  # an Embedding's rows: per-row scales
                macs=0 if isinstance(mod, nn.Embedding) else macs.get(str(node.target), 0),
                input_numel=tensors[inputs[0]].numel,
                output_numel=numel(node),
                weight_shape=tuple(int(d) for d in mod.weight.shape),
            ))
        tensors[node.name] = Tensor(node.name, numel(node), owner, shape(node))
        owner_of[node.name] = owner
        steps.append(Step(node.name, kind, op, inputs, node.name, owner))

    if not layers:
        raise ModelLoadError(f"{name}: no Conv2d or Linear layers to plan")
    _own_graph_input(tensors, steps, layers[0].name)
    return LayerGraph(name, tuple(input_shape), layers, steps, tensors, outputs,
                      meta={"capture": "torch.fx + fvcore",
                            "unplanned_weight_bytes": _unplanned_weight_bytes(model, layers)})


def _traced_enough(model: fx.GraphModule) -> bool:
    """An fx graph (an exported program's module) is used as it is, unless it calls a container
    module (a layer swapped for its low-rank factors, an nn.Sequential): then it is traced again,
    which calls the factors as layers of their own."""
    tracer = fx.Tracer()
    return all(tracer.is_leaf_module(model.get_submodule(str(n.target)), str(n.target))
               for n in model.graph.nodes if n.op == "call_module")


def flat_modules(model: nn.Module) -> nn.Module:
    """``model``, or for an fx graph calling a container module (low-rank factors swapped into
    an exported program), that graph traced again so every factor is a call of its own: the
    ONNX exporter then names each factor's node after it (``fc1.0``, ``fc1.1``)."""
    if isinstance(model, fx.GraphModule) and not _traced_enough(model):
        return fx.symbolic_trace(model)
    return model


def _bias_numel(mod: nn.Module) -> int:
    bias = getattr(mod, "bias", None)  # an Embedding has none
    return bias.numel() if isinstance(bias, torch.Tensor) else 0


def _unplanned_weight_bytes(model: nn.Module, layers: list[Layer]) -> int:
    """Bytes of the parameters outside the planned layers (LayerNorm, ...):
    stored as they are, but stored all the same, so flash must count them."""
    planned = {f"{layer.name}.{p}" for layer in layers for p in ("weight", "bias")}
    return sum(p.numel() * p.element_size() for n, p in model.named_parameters()
               if n not in planned)


def _classify(node: fx.Node, modules: dict[str, nn.Module],
              in_owner: str | None) -> tuple[str, str, str | None]:
    if node.op == "call_module":
        mod = modules[str(node.target)]
        if isinstance(mod, PLANNABLE):
            return "layer", type(mod).__name__, str(node.target)
        if isinstance(mod, _PASS_MODULES + _FUSED_MODULES):
            return "alias", type(mod).__name__, in_owner
        return "op", type(mod).__name__, in_owner
    if node.op == "call_function":
        if node.target in _ALIAS_FUNCS or node.target in _FUSED_FUNCS:
            return "alias", getattr(node.target, "__name__", str(node.target)), in_owner
        if node.target is operator.getitem:
            return "alias", "getitem", in_owner
        return "op", getattr(node.target, "__name__", str(node.target)), in_owner
    if node.op == "call_method":
        kind = "alias" if node.target in _ALIAS_METHODS else "op"
        return kind, str(node.target), in_owner
    raise ModelLoadError(f"unsupported fx node {node.op} {node.target}")


def _own_graph_input(tensors: dict[str, Tensor], steps: list[Step], first_layer: str) -> None:
    """The model input is stored in the element type of the first layer's kernel (an int8
    network quantises its input once); ops before that layer inherit it too."""
    for tname, t in list(tensors.items()):
        if t.owner is None:
            tensors[tname] = dataclasses.replace(t, owner=first_layer)
    for i, s in enumerate(steps):
        if s.owner is None:
            steps[i] = Step(s.name, s.kind, s.op, s.inputs, s.output, first_layer)


def _flat_nodes(args: Any) -> list[fx.Node]:
    out: list[fx.Node] = []
    for a in args if isinstance(args, tuple | list) else (args,):
        if isinstance(a, fx.Node):
            out.append(a)
        elif isinstance(a, tuple | list):
            out.extend(_flat_nodes(a))
        elif isinstance(a, dict):
            out.extend(_flat_nodes(tuple(a.values())))
    return out
