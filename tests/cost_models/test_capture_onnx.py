"""cost_models.capture_onnx: an ONNX-only model -> prepared copy -> LayerGraph, against torch."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from cost_models.capture import capture
from cost_models.capture_onnx import LAYERS_KEY, capture_onnx, prepare_onnx
from cost_models.graph import LayerGraph
from edgefit_common.errors import ModelLoadError
from techniques.onnx.inspect import inspect_onnx
from workloads.zoo import LeNet5

_FIELDS = ("op_class", "params", "weight_numel", "bias_numel", "out_channels", "macs",
           "input_numel", "output_numel")  # fmt: skip


@pytest.fixture(scope="module")
def lenet() -> torch.nn.Module:
    torch.manual_seed(0)
    return LeNet5().eval()


@pytest.fixture(scope="module")
def torch_graph(lenet: torch.nn.Module) -> LayerGraph:
    return capture(lenet, (1, 28, 28), "lenet5")


def _export(model: torch.nn.Module, path: Path, dynamo: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        example = (torch.zeros(1, 1, 28, 28),)
        if dynamo:
            torch.onnx.export(model, example, str(path), dynamo=True, external_data=False,
                              verbose=False)  # fmt: skip
        else:
            torch.onnx.export(model, example, str(path), dynamo=False, verbose=False)


@pytest.fixture(scope="module", params=[True, False], ids=["dynamo", "legacy"])
def prepared_lenet(request, lenet, tmp_path_factory) -> tuple[Path, list[str]]:
    d = tmp_path_factory.mktemp("onnx")
    raw, prepared = d / "raw.onnx", d / "prepared.onnx"
    _export(lenet, raw, request.param)
    return prepared, prepare_onnx(raw, prepared)


def _live_numels(g: LayerGraph) -> list[int]:
    return [sum(g.tensors[t].numel for t in live) for live in g.live_tensors()]


def test_lenet_layers_match_torch_capture(prepared_lenet, torch_graph: LayerGraph) -> None:
    prepared, names = prepared_lenet
    g = capture_onnx(prepared, "lenet5")
    assert g.layer_names == names and len(names) == len(torch_graph.layers) == 5
    assert [ly.op_type for ly in g.layers] == ["Conv", "Conv", "Gemm", "Gemm", "Gemm"]
    for ours, ref in zip(g.layers, torch_graph.layers, strict=True):
        assert [getattr(ours, f) for f in _FIELDS] == [getattr(ref, f) for f in _FIELDS], ref.name
    assert g.input_shape == (1, 28, 28)
    assert g.meta == {"capture": "onnx shape inference"}
    meta = {p.key: p.value for p in onnx.load(str(prepared)).metadata_props}
    assert json.loads(meta[LAYERS_KEY]) == names


def test_lenet_liveness_and_owners(prepared_lenet, torch_graph: LayerGraph) -> None:
    prepared, names = prepared_lenet
    g = capture_onnx(prepared, "lenet5")
    live = g.live_tensors()
    assert len(live) == len(g.steps)
    assert all(t.owner in names for t in g.tensors.values())
    assert all(s.owner in names for s in g.steps)
    # same memory profile as the torch capture: ReLU/flatten alias, pools are new buffers
    assert _live_numels(g) == _live_numels(torch_graph)
    assert [s.kind for s in g.steps] == [s.kind for s in torch_graph.steps]
    assert set(g.outputs) <= set(g.tensors)
    assert LayerGraph.from_json(g.to_json()) == g


def test_prepare_is_idempotent_and_fits_the_quantiser(prepared_lenet, tmp_path: Path) -> None:
    prepared, names = prepared_lenet
    again = tmp_path / "again.onnx"
    assert prepare_onnx(prepared, again) == names
    assert list(inspect_onnx(again)) == names  # techniques.onnx reads the naming contract


# --------------------------------------------------------------------------------------------
# a hand-built graph: nameless and duplicated names, depthwise / pointwise, MatMul + Add bias


def _init(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> onnx.TensorProto:
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def _hand_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], name="", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="dw"),  # collides with a layer's name
        helper.make_node("Conv", ["r0", "w1"], ["c1"], name="dw", group=4, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "w2", "b2"], ["c2"], name="dw"),  # duplicate name
        helper.make_node("GlobalAveragePool", ["c2"], ["gap"], name=""),
        helper.make_node("Flatten", ["gap"], ["flat"], name=""),
        helper.make_node("MatMul", ["flat", "w3"], ["mm"], name=""),
        helper.make_node("Add", ["mm", "b3"], ["fc"], name=""),
        helper.make_node("Constant", [], ["two"], name="",
                         value=numpy_helper.from_array(np.array(2.0, np.float32))),
        helper.make_node("Mul", ["fc", "two"], ["y"], name=""),
    ]  # fmt: skip
    inits = [
        _init("w0", (4, 3, 3, 3), rng), _init("b0", (4,), rng),
        _init("w1", (4, 1, 3, 3), rng),
        _init("w2", (6, 4, 1, 1), rng), _init("b2", (6,), rng),
        _init("w3", (6, 5), rng), _init("b3", (5,), rng),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "hand",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_hand_built_naming_classes_and_matmul(tmp_path: Path) -> None:
    src, dst = tmp_path / "hand.onnx", tmp_path / "hand.prepared.onnx"
    onnx.save(_hand_model(), str(src))
    names = prepare_onnx(src, dst)
    assert names == ["Conv_0", "dw", "Conv_3", "MatMul_6"]
    node_names = [n.name for n in onnx.load(str(dst)).graph.node]
    assert node_names[1] != "dw" and node_names[1]  # the Relu was moved out of the way
    assert len(set(filter(None, node_names))) == len(list(filter(None, node_names)))

    g = capture_onnx(dst, "hand")
    assert g.input_shape == (3, 8, 8)
    by = {ly.name: ly for ly in g.layers}
    assert [by[n].op_class for n in names] == ["conv", "depthwise", "pointwise", "linear"]
    assert by["Conv_0"].macs == 4 * 8 * 8 * 3 * 9 and by["Conv_0"].params == 4 * 27 + 4
    assert by["dw"].macs == 4 * 8 * 8 * 1 * 9 and by["dw"].bias_numel == 0
    assert by["Conv_3"].macs == 6 * 8 * 8 * 4 and by["Conv_3"].out_channels == 6
    mm = by["MatMul_6"]
    assert (mm.op_type, mm.weight_numel, mm.bias_numel, mm.params) == ("MatMul", 30, 5, 35)
    assert (mm.out_channels, mm.macs, mm.input_numel, mm.output_numel) == (5, 30, 6, 5)

    kinds = {s.name: (s.kind, s.op) for s in g.steps}
    assert len(kinds) == len(g.steps) == 9  # the Constant is folded, not a step
    add = next(s for s in g.steps if s.op == "Add")
    assert add.kind == "alias" and add.owner == "MatMul_6"  # the bias Add is part of the layer
    assert next(s for s in g.steps if s.op == "Mul").kind == "op"
    assert next(s for s in g.steps if s.op == "GlobalAveragePool").owner == "Conv_3"
    assert g.tensors["x"].owner == "Conv_0" and g.outputs == ("y",)
    assert all(g.tensors[t].owner in names for live in g.live_tensors() for t in live)
    assert list(inspect_onnx(dst)) == names


# --------------------------------------------------------------------------------------------
# bad inputs


def _with_input(dtype: int, dims: list, extra_input: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    inputs = [helper.make_tensor_value_info("x", dtype, dims)]
    nodes = [helper.make_node("MatMul", ["xf", "w"], ["y"], name="fc")]
    if dtype != TensorProto.FLOAT:
        nodes.insert(0, helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT))
    elif extra_input:
        inputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4]))
        nodes.insert(0, helper.make_node("Add", ["x", "z"], ["xf"]))
    else:
        nodes.insert(0, helper.make_node("Identity", ["x"], ["xf"]))
    graph = helper.make_graph(nodes, "bad", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              [_init("w", (4, 3), rng)])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _write(path: Path, model: onnx.ModelProto) -> Path:
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("case", ["missing", "garbage", "int64", "two_inputs", "unknown_dim",
                                  "checker", "external_outside"])  # fmt: skip
def test_bad_models_raise_model_load_error(case: str, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    path = models / f"{case}.onnx"
    if case == "garbage":
        path.write_bytes(b"\x08\x96\x01 definitely not an onnx protobuf \xff\xfe" * 8)
    elif case == "int64":
        _write(path, _with_input(TensorProto.INT64, ["N", 4]))
    elif case == "two_inputs":
        _write(path, _with_input(TensorProto.FLOAT, ["N", 4], extra_input=True))
    elif case == "unknown_dim":
        _write(path, _with_input(TensorProto.FLOAT, ["N", "features"]))
    elif case == "checker":
        model = _with_input(TensorProto.FLOAT, ["N", 4])
        model.graph.node[1].input[0] = "no_such_tensor"
        path.write_bytes(model.SerializeToString())
    elif case == "external_outside":
        model = _with_input(TensorProto.FLOAT, ["N", 4])
        w = model.graph.initializer[0]
        w.ClearField("raw_data")
        w.ClearField("float_data")
        w.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "48")):
            entry = w.external_data.add()
            entry.key, entry.value = key, value
        (tmp_path / "secret.bin").write_bytes(bytes(48))  # exists, but outside models/
        path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelLoadError) as err:
        prepare_onnx(path, tmp_path / "out.onnx")
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert not (tmp_path / "out.onnx").exists()
    if case == "external_outside":
        assert "external data" in message
    if case == "int64":
        assert "float32" in message
    if case == "two_inputs":
        assert "2 graph inputs" in message


@pytest.mark.parametrize("batch,dynamic", [(3, False), (1, True)], ids=["fixed3", "dynamic"])
def test_sizes_are_per_sample_whatever_the_batch(
    lenet, torch_graph: LayerGraph, batch: int, dynamic: bool, tmp_path: Path
) -> None:
    raw, prepared = tmp_path / "raw.onnx", tmp_path / "prepared.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(lenet, (torch.zeros(batch, 1, 28, 28),), str(raw), dynamo=False,
                          input_names=["input"],
                          dynamic_axes={"input": {0: "batch"}} if dynamic else None)  # fmt: skip
    prepare_onnx(raw, prepared)
    g = capture_onnx(prepared, "lenet5")
    assert g.input_shape == (1, 28, 28)
    for ours, ref in zip(g.layers, torch_graph.layers, strict=True):
        assert [getattr(ours, f) for f in _FIELDS] == [getattr(ref, f) for f in _FIELDS], ref.name
    assert _live_numels(g) == _live_numels(torch_graph)
