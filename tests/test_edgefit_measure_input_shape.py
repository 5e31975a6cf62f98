"""edgefit_measure --input-shape: a model with symbolic sample dimensions is timed at the sizes
given, not at 1; without the flag it is refused in one line naming the dims and the flag."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgefit_measure as em

FAST = ["--runs", "3", "--warmup", "1", "--profile-runs", "2"]


def _symbolic_conv(path: Path) -> Path:
    """Conv over an N x 1 x h x w input (symbolic batch, height and width)."""
    import numpy as np

    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_symbolic_dims_are_timed_at_the_given_shape(tmp_path: Path) -> None:
    model = _symbolic_conv(tmp_path / "m.onnx")
    out = tmp_path / "r.json"
    assert em.main([str(model), *FAST, "--input-shape", "1x20x24", "--out", str(out)]) == 0
    import json

    inputs = json.loads(out.read_text())["model"]["inputs"]
    assert inputs[0]["shape"] == [1, 1, 20, 24]
    assert em.DIM_SIZES.get() == {}  # the override ends with the command


@pytest.mark.parametrize("argv,needle", [
    ([], "symbolic dimensions 'h' (axis 2), 'w' (axis 3); pass --input-shape"),
    (["--input-shape", "20x24"], "needs 3 positive sizes"),
    (["--input-shape", "3x20x24"], "axis 1 of input 'x' is fixed at 1"),
], ids=["missing", "rank", "fixed"])
def test_symbolic_dims_without_a_fitting_shape_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    model = _symbolic_conv(tmp_path / "m.onnx")
    assert em.main([str(model), *FAST, *argv, "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err
    assert not (tmp_path / "r.json").exists()
