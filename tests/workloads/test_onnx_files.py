"""Real-world ONNX files (workloads.onnx_convert via prepare_onnx and the plan CLI): a dynamic
batch, symbolic sample dims fixed from --input-shape, weights in Constant nodes, a Reshape that
needs constant folding and an old opset are converted and planned; several graph inputs and
what cannot be converted are refused with one line that says what to do. Every file is made
here (torch.onnx.export, dynamo=False, or onnx.helper)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from cost_models.capture_onnx import capture_onnx
from edgefit.cli import _plan_app, _run
from edgefit_common.errors import ModelLoadError
from techniques.onnx.inspect import inspect_onnx
from techniques.onnx.writer import quantize_onnx
from workloads.onnx_model import PREPARED_KEY, input_shape_of, prepare_onnx, prepared_notes

LAYERS = ["/conv/Conv", "/fc/Gemm"]


class Net(nn.Module):
    """Conv -> ReLU -> global average pool -> flatten by x.size(0) -> Linear: any image size."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv(x)))
        return self.fc(x.view(x.size(0), -1))


class Fold(nn.Module):
    """A Reshape whose shape is Shape/ReduceProd/Div arithmetic ONNX shape inference cannot
    fix without folding."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2)
        self.fc = nn.Linear(4 * 13 * 13, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.numel() // (x.shape[1] * x.shape[2] * x.shape[3])
        y = torch.relu(self.conv(x))
        return self.fc(y.reshape(n, torch.div(y.numel(), n, rounding_mode="floor")))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + state


def _export(model: nn.Module, args: tuple[torch.Tensor, ...], path: Path, **kw: object) -> Path:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), args, str(path), dynamo=False, **kw)  # type: ignore[arg-type]
    return path


def _constant_weights(src: Path, dst: Path) -> Path:
    """The same model with every initializer held in a Constant node instead."""
    model = onnx.load(str(src))
    g = model.graph
    consts = [helper.make_node("Constant", [], [i.name], value=i) for i in g.initializer]
    nodes = [*consts, *g.node]
    del g.initializer[:]
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(model, str(dst))
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx_files")
    torch.manual_seed(0)
    net = Net()
    x = (torch.rand(1, 1, 28, 28),)
    io = {"input_names": ["x"], "output_names": ["y"]}
    out = {
        "batch": _export(net, x, d / "batch.onnx", dynamic_axes={"x": {0: "batch"}}, **io),
        "hw": _export(net, x, d / "hw.onnx",
                      dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"}, "y": {0: "batch"}}, **io),
        "op11": _export(net, x, d / "op11.onnx", opset_version=11, **io),
        "fold": _export(Fold(), x, d / "fold.onnx", dynamic_axes={"x": {0: "batch"}},
                        do_constant_folding=False, opset_version=17, **io),
        "two": _export(TwoInputs(), (torch.rand(1, 8), torch.rand(1, 4)), d / "two.onnx",
                       input_names=["input", "state"], opset_version=17),
    }
    plain = _export(net, x, d / "plain.onnx", do_constant_folding=False, opset_version=17, **io)
    out["const"] = _constant_weights(plain, d / "const.onnx")
    return out


def _outputs(path: Path, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return [np.asarray(o) for o in sess.run(None, {name: x})]


def _prepare(src: Path, tmp_path: Path,
             input_shape: tuple[int, ...] | None = None) -> tuple[Path, list[str], list[str]]:
    dst = tmp_path / f"{src.stem}.prepared.onnx"
    layers = prepare_onnx(src, dst, input_shape)
    return dst, layers, prepared_notes(onnx.load(str(dst)))


def _same_outputs(src: Path, prepared: Path, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    for a, b in zip(_outputs(src, x), _outputs(prepared, x), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _int8_layers(prepared: Path, tmp_path: Path, shape: tuple[int, ...]) -> dict[str, str]:
    """Write every layer int8 (the int8 writer: per-channel Q/DQ) and load the result."""
    out = tmp_path / "int8.onnx"
    calib = np.random.default_rng(2).random((8, *shape), dtype=np.float32)
    quantize_onnx(prepared, out, dict.fromkeys(LAYERS, "int8"), calib)
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])  # onnxruntime loads it
    return {name: s.option for name, s in inspect_onnx(out).items()}


def test_a_symbolic_batch_is_planned_at_batch_one(files: dict[str, Path], tmp_path: Path) -> None:
    prepared, layers, notes = _prepare(files["batch"], tmp_path)
    assert layers == LAYERS and notes == []  # nothing to convert
    assert capture_onnx(prepared, "batch").input_shape == (1, 28, 28)


def test_symbolic_sample_dims_without_input_shape_name_the_flag(files: dict[str, Path],
                                                                tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        _prepare(files["hw"], tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "'h' (axis 2), 'w' (axis 3)" in message
    assert "--input-shape 1x<h>x<w>" in message


def test_input_shape_fixes_symbolic_sample_dims(files: dict[str, Path], tmp_path: Path) -> None:
    prepared, layers, notes = _prepare(files["hw"], tmp_path, (1, 20, 24))
    assert layers == LAYERS
    assert input_shape_of(prepared) == (1, 20, 24)
    assert notes == ["symbolic input dims fixed from --input-shape (h=20, w=24)"]
    graph = capture_onnx(prepared, "hw")
    assert graph.input_shape == (1, 20, 24)
    conv = graph.layers[0]
    assert conv.output_numel == 16 * 18 * 22  # the conv's output at the fixed size
    assert "prepared" in graph.meta  # what was converted reaches the plan's provenance
    _same_outputs(files["hw"], prepared, (1, 1, 20, 24))


@pytest.mark.parametrize("shape,needle", [
    ((20, 24), "has 2 dimensions; graph input 'x' (batchx1xhxw) has 3 per sample"),
    ((3, 20, 24), "axis 1 is fixed at 1"),
], ids=["rank", "fixed-dim"])
def test_an_input_shape_that_does_not_fit_is_refused(files: dict[str, Path], tmp_path: Path,
                                                     shape: tuple[int, ...], needle: str) -> None:
    with pytest.raises(ModelLoadError) as err:
        _prepare(files["hw"], tmp_path, shape)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_constant_node_weights_are_lifted_and_quantised(files: dict[str, Path],
                                                        tmp_path: Path) -> None:
    raw = onnx.load(str(files["const"]))
    assert not raw.graph.initializer  # every weight is a Constant node
    prepared, layers, notes = _prepare(files["const"], tmp_path)
    assert layers == LAYERS
    assert notes[0].startswith("4 layer weight/bias tensor(s) held in Constant nodes lifted")
    _same_outputs(files["const"], prepared, (1, 1, 28, 28))
    assert _int8_layers(prepared, tmp_path, (1, 28, 28)) == dict.fromkeys(LAYERS, "int8")


def test_a_reshape_that_needs_folding_is_folded(files: dict[str, Path], tmp_path: Path) -> None:
    raw = onnx.load(str(files["fold"]))
    assert {"Shape", "ReduceProd", "Div", "Where"} <= {n.op_type for n in raw.graph.node}
    prepared, layers, notes = _prepare(files["fold"], tmp_path)
    assert layers == LAYERS
    assert "'/Reshape_output_0' (from Reshape) needs constant folding" in notes[0]
    assert "outputs equal before/after" in notes[0]
    folded = onnx.load(str(prepared))
    assert not {"Shape", "ReduceProd", "Where"} & {n.op_type for n in folded.graph.node}
    assert folded.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1  # batch fixed
    assert capture_onnx(prepared, "fold").layers[1].input_numel == 4 * 13 * 13
    _same_outputs(files["fold"], prepared, (1, 1, 28, 28))


def test_an_old_opset_is_upgraded_for_the_int8_writer(files: dict[str, Path],
                                                      tmp_path: Path) -> None:
    prepared, layers, notes = _prepare(files["op11"], tmp_path)
    model = onnx.load(str(prepared))
    assert [o.version for o in model.opset_import if o.domain == ""] == [13]
    assert notes == ["opset upgraded from 11 to 13 (onnx.version_converter)"]
    assert json.loads(next(p.value for p in model.metadata_props if p.key == PREPARED_KEY))
    _same_outputs(files["op11"], prepared, (1, 1, 28, 28))
    # the opset-11 file failed here: "Unrecognized attribute: axis for operator DequantizeLinear"
    assert _int8_layers(prepared, tmp_path, (1, 28, 28)) == dict.fromkeys(LAYERS, "int8")


def test_an_opset_the_converter_cannot_upgrade_is_refused(files: dict[str, Path], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
        raise RuntimeError("No Adapter For Upsample\nmore detail")

    monkeypatch.setattr(onnx.version_converter, "convert_version", fails)
    with pytest.raises(ModelLoadError) as err:
        _prepare(files["op11"], tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "opset 11 could not be upgraded to 13" in message
    assert "No Adapter For Upsample" in message and "export the model with opset >= 13" in message


def test_several_inputs_are_refused_with_the_workaround(files: dict[str, Path],
                                                        tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as err:
        _prepare(files["two"], tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert "2 graph inputs ('input', 'state')" in message
    assert "one float32 input tensor" in message and "initializers of the same name" in message
    # the workaround the message names: the second input given a fixed value is a constant
    model = onnx.load(str(files["two"]))
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((1, 4), np.float32),
                                                           "state"))
    fixed = tmp_path / "two_fixed.onnx"
    onnx.save(model, str(fixed))
    _prepared, layers, _notes = _prepare(fixed, tmp_path)
    assert len(layers) == 1


def test_the_cli_refuses_symbolic_dims_in_one_line(files: dict[str, Path],
                                                   capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path) -> None:
    code = _run(_plan_app, ["--target", "arduino-nano-33-ble", "--max-latency", "500ms",
                            "--model", str(files["hw"]), "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and "Traceback" not in err
    assert len(errors) == 1 and "pass --input-shape 1x<h>x<w>" in errors[0]
    assert not (tmp_path / "p.json").exists()


def test_the_cli_passes_input_shape_to_an_onnx_model(files: dict[str, Path],
                                                     capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    out = tmp_path / "p.json"
    code = _run(_plan_app, ["--target", "arduino-nano-33-ble", "--max-latency", "500ms",
                            "--model", str(files["hw"]), "--input-shape", "1x32x32",
                            "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    plan = json.loads(out.read_text())
    assert plan["model"]["input_shape"] == [1, 32, 32]
    assert plan["provenance"]["model"] == ("symbolic input dims fixed from --input-shape "
                                           "(h=32, w=32)")


class FixedFeatures(nn.Module):
    """Conv -> flatten by x.size(0) -> Linear over 4 x 26 x 26 features: exported with
    symbolic h, w, but it only takes 28 x 28 images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 26 * 26, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        return self.fc(y.view(y.size(0), -1))


def _symbolic_hw(src: Path, dst: Path) -> Path:
    """The file with its input's h and w made symbolic (as a user's edit or exporter may)."""
    model = onnx.load(str(src))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for axis, symbol in ((2, "h"), (3, "w")):
        dims[axis].Clear()
        dims[axis].dim_param = symbol
    del model.graph.value_info[:]
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_an_input_shape_the_model_cannot_take_names_the_users_file(
        exporter: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Issue #21: sizes that fit the input's symbolic dims but not the graph (the Linear after
    the flatten wants 2704 features) were refused naming edgefit's prepared copy in its cache;
    now one line names the user's file and the flag, before anything is cached. The dynamo
    export's fixed Reshape is caught by shape inference, the legacy export's Shape arithmetic
    when it is folded."""
    x = (torch.rand(1, 1, 28, 28),)
    if exporter == "dynamo":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(FixedFeatures().eval(), x, str(tmp_path / "f.onnx"), dynamo=True,
                              external_data=False, verbose=False)
        src = _symbolic_hw(tmp_path / "f.onnx", tmp_path / "fixed.onnx")
    else:
        src = _export(FixedFeatures(), x, tmp_path / "fixed.onnx", input_names=["x"],
                      output_names=["y"],
                      dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"}, "y": {0: "batch"}})
    with pytest.raises(ModelLoadError) as err:
        _prepare(src, tmp_path, (1, 20, 20))
    assert str(err.value).startswith(f"{src}: ") and "--input-shape 1x20x20" in str(err.value)
    _prepare(src, tmp_path, (1, 28, 28))  # the sizes it was built for pass
    code = _run(_plan_app, ["--target", "host", "--max-latency", "1s", "--model", str(src),
                            "--input-shape", "1x20x20", "--out", str(tmp_path / "p.json")])
    err_text = capsys.readouterr().err
    errors = [line for line in err_text.splitlines() if line.startswith("error:")]
    assert code == 2 and "Traceback" not in err_text
    assert len(errors) == 1 and str(src) in errors[0], errors
    assert "--input-shape 1x20x20" in errors[0] and ".prepared" not in errors[0]
    assert "edgefit/onnx" not in errors[0] and str(tmp_path / "cache") not in errors[0]


@pytest.mark.parametrize("name", ["hw", "fold"])
def test_a_converted_onnx_plan_applies_from_its_plan_file(name: str, files: dict[str, Path],
                                                          tmp_path: Path) -> None:
    """apply reloads the model from what plan.json records (path, input shape) and converts it
    the same way: every layer is written as planned and the checks pass."""
    from edgefit.applying import apply_plan
    from edgefit.budgeting import Budget
    from edgefit.planning import make_plan

    budget = Budget(target="arduino-nano-33-ble", model=str(files[name]), data="mnist",
                    input_shape=[1, 28, 28] if name == "hw" else None,
                    limits={"latency": "500ms", "flash": "100900B" if name == "hw" else "110KB"})
    plan, _ = make_plan(budget, "test")
    assert plan.feasible and plan.model.input_shape == [1, 28, 28]
    assert "int8" in plan.options().values()  # the flash limit makes it quantise
    report = apply_plan(plan, tmp_path / "out")
    assert all(c["ok"] for c in report["checks"]), report["checks"]
    storage = inspect_onnx(tmp_path / "out" / "model.onnx")
    assert {n: storage[n].option for n in LAYERS} == plan.options()


@pytest.mark.parametrize("kind,needle", [
    ("float16", "(layer weights are float16; export the model in float32)"),
    ("quantised", "(DequantizeLinear: the model is already quantised; plan its float32 export)"),
])
def test_no_layer_to_plan_says_why(kind: str, needle: str, tmp_path: Path) -> None:
    from onnx import TensorProto

    if kind == "float16":
        w = numpy_helper.from_array(np.ones((4, 4), np.float16), "w")
        nodes = [helper.make_node("Cast", ["x"], ["xw"], to=TensorProto.FLOAT16),
                 helper.make_node("MatMul", ["xw", "w"], ["y"])]
        out_type = TensorProto.FLOAT16
        inits = [w]
    else:
        inits = [numpy_helper.from_array(np.ones((4, 4), np.int8), "wq"),
                 numpy_helper.from_array(np.array(0.1, np.float32), "scale")]
        nodes = [helper.make_node("DequantizeLinear", ["wq", "scale"], ["w"]),
                 helper.make_node("MatMul", ["x", "w"], ["y"])]
        out_type = TensorProto.FLOAT
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", out_type, [1, 4])], inits)
    path = tmp_path / f"{kind}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ModelLoadError) as err:
        _prepare(path, tmp_path)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_weight_computed_from_constants_is_folded(tmp_path: Path) -> None:
    """MatMul(x, Transpose(W)) (how some exporters write a Linear) becomes MatMul(x, W^T)."""
    from onnx import TensorProto

    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10  # (out, in): transposed at run time
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
         helper.make_node("MatMul", ["x", "wt"], ["y"], name="fc")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, "w")])
    path = tmp_path / "transposed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    prepared, layers, notes = _prepare(path, tmp_path)
    assert layers == ["fc"]
    assert notes[0].startswith("the weight of 'fc' is computed from constants: batch fixed to 1")
    folded = onnx.load(str(prepared))
    assert "Transpose" not in {n.op_type for n in folded.graph.node}
    _same_outputs(path, prepared, (1, 4))
