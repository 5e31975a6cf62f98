"""The planner's RAM for TFLM profiles (cost_models.tflm_ram): linear terms that reproduce the
TFLM arena model (cost_models.tflm_arena) where TFLM's greedy plan has no fragmentation."""

from __future__ import annotations

import pytest
import torch

from cost_models.analytical import build_cost_table
from cost_models.capture import capture
from cost_models.tflm_arena import per_channel_bytes, predict_arena
from cost_models.tflm_structs import TflmBuild
from device_specs.catalog import load_spec
from edgefit.planning import build_problem
from workloads.zoo import LeNet5


@pytest.fixture(scope="module")
def lenet5():
    torch.manual_seed(0)
    graph = capture(LeNet5().eval(), (1, 28, 28), "lenet5")
    spec = load_spec("arduino-nano-33-ble")
    table = build_cost_table(graph, spec, "tflm-cmsis-nn")
    return graph, table, build_problem(graph, table, {})


def _uniform(problem, option: str) -> dict:
    return {ly: next(c for c in problem.choices[ly] if c.option == option)
            for ly in problem.layers}


def test_all_int8_peak_is_the_arena_model(lenet5) -> None:
    """All int8: the planner's peak beyond the profile's runtime_ram is the arena model's in
    the board's build (32-bit Cortex-M4, CMSIS-NN with the DSP extension; head = liveness peak
    on LeNet-5, + the tail), 9,840 B; the same model in this machine's 64-bit reference build
    is 10,544 B (tflite-micro measured 10,592 B): the board's structs are smaller."""
    graph, table, problem = lenet5
    assert table.memory.tflm_arena
    assert table.memory.tflm_build == TflmBuild(4, False, "cmsis-nn", "dsp")
    ram = problem.peak_ram(_uniform(problem, "int8")) - table.runtime_ram_bytes
    board = predict_arena(graph, dict.fromkeys(graph.layer_names, 1.0),
                          build=table.memory.tflm_build)
    host = predict_arena(graph, dict.fromkeys(graph.layer_names, 1.0))
    assert ram == board.total_bytes == 9840
    assert host.total_bytes == 10544
    assert board.tail_bytes < host.tail_bytes


def test_per_channel_arrays_are_per_option(lenet5) -> None:
    """An integer option carries its per-channel multiplier and shift arrays at every step; a
    float fully connected layer none, a float conv still does (TFLM's conv Prepare allocates
    them whatever the type: measured, 15 allocations in the mixed LeNet-5's tail)."""
    graph, table, problem = lenet5
    conv2, fc1 = graph.layer("conv2"), graph.layer("fc1")
    for step in problem.step_extra:
        assert step[("conv2", "int8")] >= per_channel_bytes(conv2.out_channels)
        assert step[("conv2", "fp32")] >= per_channel_bytes(conv2.out_channels)
        assert step[("fc1", "int8")] >= per_channel_bytes(fc1.out_channels)
        assert ("fc1", "fp32") not in step
    assert problem.fixed["tflm_tail_bytes"] > 0
    assert problem.fixed["ram_bytes"] == table.runtime_ram_bytes + problem.fixed["tflm_tail_bytes"]


def test_fragmentation_is_outside_the_linear_model() -> None:
    """ResNet-8 (MLPerf Tiny ic): TFLM's greedy plan is larger than the liveness peak, which
    the solver's steps cannot see: the planner's figure is the lower bound."""
    from workloads.mlperf_tiny import tiny_model

    graph = capture(tiny_model("ic"), (3, 32, 32), "ic")
    table = build_cost_table(graph, load_spec("arduino-nano-33-ble"), "tflm-cmsis-nn")
    problem = build_problem(graph, table, {})
    ram = problem.peak_ram(_uniform(problem, "int8")) - table.runtime_ram_bytes
    pred = predict_arena(graph, dict.fromkeys(graph.layer_names, 1.0),
                         build=table.memory.tflm_build)
    assert pred.plan_bytes > pred.liveness_bytes
    assert ram == pred.liveness_bytes + pred.tail_bytes < pred.total_bytes


def test_a_float_layer_after_an_int8_one_reads_a_dequantized_copy(lenet5) -> None:
    """make demo's plan (conv1 int8, the rest fp32): conv2 reads DEQUANTIZE's fp32 copy of
    conv1's pooled codes, a pair term in the solver; the arena model converts the same graph
    with the DEQUANTIZE (its plan: 11,104 B, as tflite-micro laid out the file apply wrote)."""
    graph, table, problem = lenet5
    pick = {ly: ("int8" if ly == "conv1" else "fp32") for ly in problem.layers}
    chosen = {ly: next(c for c in problem.choices[ly] if c.option == o) for ly, o in pick.items()}
    terms = [t for step in problem.step_pairs for t in step]
    assert any(t.a == "conv1" and t.b == "conv2" and "int8" in t.a_options
               and "fp32" in t.b_options for t in terms)
    pred = predict_arena(graph, {ly: 1.0 if o == "int8" else 4.0 for ly, o in pick.items()},
                         build=table.memory.tflm_build)
    assert pred.plan_bytes == 11104  # 4,704 B fp32 copy + 6,400 B conv2 output
    ram = problem.peak_ram(chosen) - table.runtime_ram_bytes
    assert abs(ram / pred.total_bytes - 1) < 0.02
    # without the pair the step would miss the copy
    all_int8 = problem.peak_ram(_uniform(problem, "int8")) - table.runtime_ram_bytes
    assert ram > all_int8
