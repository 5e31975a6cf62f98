"""TFLM's arena predicted (cost_models.tflm_arena): the greedy planner against hand-worked and
brute-force cases, the converted graph of LeNet-5, and -- with the tool virtualenv -- the
prediction against the arena tflite-micro measures and the .tflite size against the file."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from cost_models import tflm_arena
from cost_models.tflite_size import predict_tflite_bytes
from cost_models.tflm_arena import Buffer, Op, greedy_plan, lifetimes
from executors import tflite

needs_tool = pytest.mark.skipif(
    tflite.tool_python() is None, reason=f"the TFLite tool virtualenv is absent "
    f"({tflite.TOOL_VENV}: `make tflite-venv` builds it; `make test` does)")


def _valid(buffers: list[Buffer], offsets: list[int]) -> bool:
    """No two buffers alive at once share a byte."""
    for (a, oa), (b, ob) in itertools.combinations(zip(buffers, offsets, strict=True), 2):
        if a.overlaps(b) and oa < ob + b.size and ob < oa + a.size:
            return False
    return True


def test_greedy_plan_by_hand() -> None:
    # A (100 B, scopes 0-1) is placed first at 0; D (60 B, 0-3) overlaps A in time, so after
    # it at 100; B and C (50 B each, 1-2 and 2-3): equal sizes, so the higher id (C) goes first
    # (ids are stored reversed before the stable sort). C at 0 (A is dead by scope 2, D starts
    # at 100: a gap of 100); B overlaps A (scope 1), D and C: it goes after D at 160.
    buffers = [Buffer(100, 0, 1), Buffer(50, 1, 2), Buffer(50, 2, 3), Buffer(60, 0, 3)]
    assert greedy_plan(buffers) == [0, 160, 0, 100]
    assert tflm_arena.arena_head_bytes(buffers) == 210
    assert tflm_arena.liveness_peak_bytes(buffers) == 210  # scope 1 or 2: A+B+D / B+C+D


def test_greedy_plan_is_valid_and_not_below_the_liveness_bound() -> None:
    rng = np.random.default_rng(0)
    fragmented = 0
    for _ in range(200):
        n = int(rng.integers(2, 9))
        buffers = []
        for _ in range(n):
            a, b = sorted(int(v) for v in rng.integers(0, 6, 2))
            buffers.append(Buffer(int(rng.integers(1, 9)) * 16, a, b))
        offsets = greedy_plan(buffers)
        assert _valid(buffers, offsets)
        head = tflm_arena.arena_head_bytes(buffers)
        assert head >= tflm_arena.liveness_peak_bytes(buffers)
        fragmented += head > tflm_arena.liveness_peak_bytes(buffers)
    assert fragmented > 0  # the greedy plan is not always the liveness peak


def test_best_offsets_by_brute_force_never_beat_the_liveness_bound() -> None:
    """On a small case the greedy head equals the best of every placement order's first-fit
    (brute force over orders), and the liveness peak bounds both."""
    buffers = [Buffer(48, 0, 1), Buffer(32, 1, 2), Buffer(48, 2, 3), Buffer(16, 0, 3),
               Buffer(32, 3, 4)]

    def first_fit(order: tuple[int, ...]) -> int:
        placed: list[tuple[int, Buffer]] = []
        for i in order:
            want, offset = buffers[i], 0
            for o, b in sorted(placed, key=lambda p: p[0]):
                if b.overlaps(want) and o < offset + want.size and offset < o + b.size:
                    offset = o + b.size
            placed.append((offset, want))
        return max(o + b.size for o, b in placed)

    best = min(first_fit(p) for p in itertools.permutations(range(len(buffers))))
    assert tflm_arena.liveness_peak_bytes(buffers) <= best <= \
        tflm_arena.arena_head_bytes(buffers)
    assert tflm_arena.arena_head_bytes(buffers) == 96 == best


def test_lifetimes_follow_tflm_scopes() -> None:
    # input 0 -> op0 -> 1 -> op1 -> 2 (output); 3 is a constant; op1 asks for 40 B scratch
    ops = [Op((0,), (1,)), Op((1, 3), (2,), scratch=(40,))]
    buffers = lifetimes([10, 20, 30, 99], [0, 1, 2], ops, [0], [2])
    # the output is marked created at scope 0, then again (UpdateFirstCreated) by its producer
    assert buffers == [Buffer(16, 0, 1), Buffer(32, 1, 2), Buffer(32, 2, 2), Buffer(48, 2, 2)]


@pytest.fixture(scope="module")
def lenet5_graph():
    import torch

    from cost_models.capture import capture
    from workloads.zoo import LeNet5

    torch.manual_seed(0)
    model = LeNet5().eval()
    return model, capture(model, (1, 28, 28), "lenet5")


def test_lenet5_converts_to_the_operators_litert_torch_writes(lenet5_graph) -> None:
    """The operators and tensor count of the all-int8 LeNet-5 .tflite (litert-torch 0.10.0 +
    ai-edge-quantizer 0.10.0, read back with ai-edge-litert's schema)."""
    _, graph = lenet5_graph
    conv = tflm_arena.converted_graph(graph)
    assert [o.code for o in conv.ops] == [
        "QUANTIZE", "RESHAPE", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "CONV_2D", "MAX_POOL_2D",
        "TRANSPOSE", "RESHAPE", "FULLY_CONNECTED", "FULLY_CONNECTED", "FULLY_CONNECTED"]
    assert conv.tensor_count == 25
    pred = tflm_arena.predict_arena(graph, dict.fromkeys(graph.layer_names, 1.0))
    # the max pool after conv1: its 4,704 B input and 1,176 B output, 16-byte aligned
    assert pred.plan_bytes == pred.head_bytes == pred.liveness_bytes == 5888


@needs_tool
def test_arena_and_size_against_tflite_micro(lenet5_graph, tmp_path: Path) -> None:
    from device_specs.catalog import load_spec

    model, graph = lenet5_graph
    profile = load_spec("arduino-nano-33-ble").profile("tflm-cmsis-nn")
    layers = {n: {"weights": 8, "activations": 8} for n in graph.layer_names}
    x = np.random.default_rng(0).random((8, 1, 28, 28), dtype=np.float32)
    path = tmp_path / "model.tflite"
    tflite.convert(layers, model, x, path, profile, tmp_path)
    facts = tflite.inspect(path, list(layers), x[:2], True, tmp_path)
    measured = facts["tflm"]
    assert measured["ran"], measured
    pred = tflm_arena.predict_arena(graph, dict.fromkeys(graph.layer_names, 1.0))
    # the head (planned tensors) is TFLM's greedy plan exactly; the tail within 2 %
    assert pred.plan_bytes == measured["allocations"]["head"]
    assert abs(pred.tail_bytes / measured["allocations"]["tail"] - 1) < 0.02
    assert abs(pred.total_bytes / measured["arena_bytes"] - 1) < 0.10
    # every constant is inside the flatbuffer (TFLM reads no Buffer.offset)
    assert all(t["const"] for t in facts["tflm_graph"]["tensors"]
               if t["type"] == "INT8" and len(t["shape"]) >= 2 and t["scales"] > 1)
    size = predict_tflite_bytes(graph, dict.fromkeys(graph.layer_names, 8))
    written = path.stat().st_size
    assert abs(size.total_bytes / written - 1) < 0.03, (size, written)
