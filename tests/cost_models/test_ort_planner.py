"""onnxruntime's allocation plan replayed: the reuse rules on hand-made traces (views, in-place
writes, exact-shape reuse that keeps a buffer allocated in between), and the replay against the
arena onnxruntime really holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cost_models.ort_planner import _Node, _replay

KB = 1024  # a multiple of the arena grain: sizes stay as written


def node(name: str, op: str, inputs: list[str], out: str, nbytes: int,
         shape: tuple[int, ...], temp: int = 0) -> _Node:
    return _Node(name, op, inputs, [(out, nbytes, shape)], temp)


def test_a_reused_buffer_stays_allocated_between_its_tensors() -> None:
    """a (4 KB) dies at b; c has a's shape and takes a's freed buffer, so that buffer is held
    from a's node to c's last read, across b's node and the 8 KB tensor d lives beside it."""
    trace = [node("A", "Conv", ["x"], "a", 4 * KB, (1, 4, 32, 8)),
             node("B", "Conv", ["a"], "b", 8 * KB, (1, 8, 32, 8)),
             node("C", "Conv", ["b"], "c", 4 * KB, (1, 4, 32, 8)),
             node("D", "Conv", ["c"], "d", 8 * KB, (1, 8, 32, 8)),
             node("E", "Conv", ["d"], "y", 1 * KB, (1, 256))]
    r = _replay(trace, {"y"})
    assert r.buffers == 2  # a and c share one; b and d share one (d takes b's freed buffer)
    assert r.live_tensor_bytes == 12 * KB  # at most 4 + 8 KB of tensors at once
    assert r.peak_bytes == 12 * KB  # c reuses a, d reuses b: no extra buffer is ever needed
    # without a reusable buffer for c (another shape), a's buffer is freed at B
    other = [*trace[:2], node("C", "Conv", ["b"], "c", 4 * KB, (1, 4, 8, 32)), *trace[3:]]
    assert _replay(other, {"y"}).buffers == 3


def test_reuse_across_a_gap_holds_the_buffer_through_it() -> None:
    """t1 dies early; t3 (same shape) takes its buffer much later: in between, while the
    16 KB tensor u is live, t1's buffer is still allocated, so the peak exceeds the live set."""
    trace = [node("A", "MatMul", ["x"], "t1", 4 * KB, (32, 32)),
             node("B", "MatMul", ["t1"], "u", 16 * KB, (64, 64)),
             node("C", "Softmax", ["u"], "v", 16 * KB, (64, 64)),
             node("D", "MatMul", ["v"], "t3", 4 * KB, (32, 32)),
             node("E", "MatMul", ["t3"], "y", 1 * KB, (1, 256))]
    r = _replay(trace, {"y"})
    assert r.live_tensor_bytes == 32 * KB  # u + v
    assert r.peak_bytes == 36 * KB  # + the 4 KB buffer t1 left for t3


def test_views_and_in_place_writes_take_no_new_buffer() -> None:
    trace = [node("A", "Conv", ["x"], "a", 4 * KB, (1, 1024)),
             node("R", "Reshape", ["a", "shape"], "r", 4 * KB, (1, 32, 32)),
             node("U", "Relu", ["r"], "u", 4 * KB, (1, 32, 32)),
             node("E", "Gemm", ["u"], "y", 1 * KB, (1, 256)),
             node("V", "Flatten", ["x"], "xv", 4 * KB, (1, 1024))]
    r = _replay(trace, {"y"})
    assert r.buffers == 1
    assert r.peak_bytes == 4 * KB + 1 * KB  # the one buffer + the graph output


def test_scratch_and_outputs_add_at_their_node() -> None:
    trace = [node("A", "Conv", ["x"], "a", 4 * KB, (1, 1024), temp=1000),
             node("E", "Gemm", ["a"], "y", 1 * KB, (1, 256))]
    assert _replay(trace, {"y"}).peak_bytes == 4 * KB + 1024  # scratch in the 256-byte grain


@pytest.mark.parametrize("option", ["fp32", "int8", "int4"])
def test_the_replay_is_the_arena_peak(tmp_path: Path, option: str) -> None:
    import torch

    from cost_models.export import export_fp32
    from cost_models.ort_memory import measure_arena
    from cost_models.ort_planner import replay
    from techniques.onnx.writer import quantize_onnx

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(),
                                torch.nn.MaxPool2d(2), torch.nn.Conv2d(6, 16, 3, padding=1),
                                torch.nn.ReLU(), torch.nn.MaxPool2d(7), torch.nn.Flatten(),
                                torch.nn.Linear(64, 10)).eval()
    fp32 = tmp_path / "m.fp32.onnx"
    export_fp32(model, (1, 28, 28), fp32)
    path = tmp_path / "m.onnx"
    calib = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    names = ["0", "3", "7"]
    quantize_onnx(fp32, path, dict.fromkeys(names, option), calib)
    arena = measure_arena(path)
    assert not arena.peak_hidden
    replayed = replay(path)
    # the arena may count a free chunk up to twice a request unsplit: within that slack
    assert replayed.peak_bytes <= arena.peak_bytes <= 1.1 * replayed.peak_bytes


def test_a_view_is_not_a_live_tensor_of_its_own() -> None:
    """r views a's buffer: the no-reuse count holds a once, alive until r's last read."""
    trace = [node("A", "Conv", ["x"], "a", 4 * KB, (1, 4, 32, 8)),
             node("R", "Reshape", ["a"], "r", 4 * KB, (1, 1024)),
             node("B", "Gemm", ["r"], "b", 8 * KB, (1, 2048)),
             node("E", "Gemm", ["b"], "y", 1 * KB, (1, 256))]
    r = _replay(trace, {"y"})
    assert r.live_tensor_bytes == 12 * KB  # a (alive through r) + b at B; not a + r + b
    assert r.peak_bytes == 12 * KB
