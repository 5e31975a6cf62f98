"""Naming: which nodes of an exported model are layers, and naming them after their torch
modules (:func:`name_nodes_by_module`, the writer's input contract)."""

from __future__ import annotations

import ast
import json
import re

import onnx
from onnx import TensorProto

from edgefit_common.errors import PlanError
from formats.onnx_io import LAYERS_KEY, WEIGHTED_OPS, set_meta
from techniques.onnx.graph import unique_name

_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
_LEGACY_NAME = re.compile(r"^/(?P<path>.+)/(?:Conv|Gemm|MatMul)(?:_\d+)?$")


def _scopes(node: onnx.NodeProto) -> list[str] | None:
    for prop in node.metadata_props:
        if prop.key == _SCOPES_KEY:
            try:
                value = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
    return None


def _module_of(node: onnx.NodeProto) -> str | None:
    """Fully-qualified torch module that emitted ``node`` (dynamo metadata or legacy name)."""
    scopes = _scopes(node)
    if scopes is not None:
        # ['', 'features', 'features.0', 'conv2d']: last entry is the aten op, the one before
        # it is the innermost module's fully-qualified name ('' for the root module).
        return scopes[-2] if len(scopes) >= 2 and scopes[-2] else None
    m = _LEGACY_NAME.match(node.name or "")
    return m.group("path").replace("/", ".") if m else None


def name_nodes_by_module(model: onnx.ModelProto) -> dict[str, str]:
    """Name each weighted Conv/Gemm/MatMul node, and each Gather of a 2-D float32 table (an
    nn.Embedding), after its torch module; returns {layer: op_type}.

    A node counts as a layer when its second input (the weight) is an initializer, so
    activation-by-activation MatMuls (attention) are skipped. The module comes from the dynamo
    exporter's ``pkg.torch.onnx.name_scopes`` node metadata (``['', 'conv1', 'conv2d']`` ->
    ``conv1``), or from a legacy exporter name (``/block1/conv1/Conv`` -> ``block1.conv1``).
    Nodes of the root module itself are skipped. A module that emits two weighted nodes (a
    module called twice) raises ``PlanError``: a plan gives one option per layer node. Other
    nodes that already carry a layer's name are renamed out of the way. Also sets the
    ``edgefit.layers`` metadata entry (layers in graph order). Modifies ``model`` in place.
    """
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    tables = {i.name: i for i in graph.initializer}
    found: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        # an nn.Embedding's lookup is a layer too (not a Gather indexing some buffer)
        table = is_table_gather(node, tables) and _from_embedding(node)
        if not table and (node.op_type not in WEIGHTED_OPS or node.domain not in ("", "ai.onnx")):
            continue
        if not table and (len(node.input) < 2 or node.input[1] not in inits):
            continue
        module = _module_of(node)
        if module:
            found.setdefault(module, []).append(node)
    reused = sorted(m for m, nodes in found.items() if len(nodes) > 1)
    if reused:
        raise PlanError(
            f"module(s) {', '.join(reused)} emit more than one weighted node (called twice?); "
            "edgefit needs one Conv/Gemm/MatMul per layer"
        )
    layer_nodes = {id(nodes[0]): m for m, nodes in found.items()}
    taken = {n.name for n in graph.node}
    for node in graph.node:
        if id(node) not in layer_nodes and node.name in found:
            node.name = unique_name(f"{node.name}_", taken)
    result: dict[str, str] = {}
    for node in graph.node:
        if id(node) in layer_nodes:
            node.name = layer_nodes[id(node)]
            result[node.name] = node.op_type
    set_meta(model, LAYERS_KEY, json.dumps(list(result)))
    return result


def is_table_gather(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> bool:
    """A Gather on axis 0 of a 2-D float32 initializer: an embedding table's lookup."""
    if node.op_type != "Gather" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return False
    table = inits.get(node.input[0])
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return (table is not None and table.data_type == TensorProto.FLOAT
            and len(table.dims) == 2 and axis == 0)


def _from_embedding(node: onnx.NodeProto) -> bool:
    """Whether the exporter emitted ``node`` for aten.embedding (its name scope's last entry:
    ``['', 'embeddings', 'embeddings.word', 'embedding']``)."""
    scopes = _scopes(node)
    return scopes is not None and bool(scopes) and scopes[-1].split("_")[0] == "embedding"
