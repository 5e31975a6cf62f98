"""ort_memory reads onnxruntime's own arena statistics; checked on models whose answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from cost_models.ort_memory import OrtMemoryError, measure_arena, node_memory_stats


def _save(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
          outputs: list[onnx.ValueInfoProto], path: Path,
          initializers: list[onnx.TensorProto] | None = None) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def concat_model(n: int, path: Path) -> Path:
    """A = -X and B = |X| are both live while Y = concat(A, B) is written: 4n + 4n + 8n bytes."""
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, n])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2 * n])
    return _save([helper.make_node("Neg", ["X"], ["A"], name="neg"),
                  helper.make_node("Abs", ["X"], ["B"], name="abs"),
                  helper.make_node("Concat", ["A", "B"], ["Y"], axis=1, name="cat")],
                 [x], [y], path)


@pytest.mark.parametrize("n", [1024, 4096])
@pytest.mark.parametrize("opt_level", ["basic", "all"])
def test_peak_is_the_known_live_set(tmp_path: Path, n: int, opt_level: str) -> None:
    m = measure_arena(concat_model(n, tmp_path / "cat.onnx"), opt_level)
    assert m.peak_bytes == 16 * n  # A + B + Y, all multiples of the 256-byte arena grain
    assert m.first_run_peak_bytes == 16 * n  # the memory pattern plans the same peak
    assert m.input_bytes == 4 * n and m.output_bytes == 8 * n
    assert m.activation_bytes == 20 * n
    assert m.resident_bytes == 0 and not m.peak_hidden
    assert m.stats["NumAllocs"] > 0 and m.ort_version


def test_weights_are_resident_not_activation(tmp_path: Path) -> None:
    """A 64 KB initializer sits in the arena from session creation; the run adds only Y."""
    w = np.arange(128 * 128, dtype=np.float32).reshape(128, 128) / 1e4
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 128])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 128])
    init = onnx.numpy_helper.from_array(w, "W")
    path = _save([helper.make_node("MatMul", ["X", "W"], ["Y"], name="mm")], [x], [y],
                 tmp_path / "mm.onnx", [init])
    m = measure_arena(path, "basic")
    assert m.resident_bytes >= w.nbytes  # the weight (pre-packed or not) is resident
    assert m.output_bytes == 512
    assert 512 <= m.peak_bytes < w.nbytes  # the run never holds a second copy of W


def test_node_record_names_the_nodes(tmp_path: Path) -> None:
    rows = {r.node: r for r in node_memory_stats(concat_model(1024, tmp_path / "c.onnx"),
                                                 "basic")}
    assert set(rows) == {"neg", "abs", "cat"}
    assert rows["cat"].output_bytes == 8192 and rows["neg"].output_bytes == 4096
    assert all(r.temp_bytes == 0 for r in rows.values())  # elementwise ops need no scratch


def test_bad_input_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OrtMemoryError, match="no such ONNX file"):
        measure_arena(tmp_path / "missing.onnx")
    path = concat_model(256, tmp_path / "c.onnx")
    with pytest.raises(OrtMemoryError, match="opt_level must be one of"):
        measure_arena(path, "max")
    with pytest.raises(OrtMemoryError, match="runs must be >= 2"):
        measure_arena(path, runs=1)
    with pytest.raises(OrtMemoryError, match="threads must be >= 1"):
        measure_arena(path, threads=0)
