"""Capture against hand-computed references; cost table against the formats and the spec."""

from __future__ import annotations

import pytest

from cost_models.analytical import build_cost_table, image_entry_bytes
from cost_models.capture import capture
from cost_models.graph import LayerGraph
from cost_models.options import runnable_kernels, tflite_op
from device_specs.catalog import load_spec
from formats.quant_math import stored_bias_bytes, stored_weight_bytes
from workloads.zoo import ZOO


@pytest.fixture(scope="module")
def lenet5() -> LayerGraph:
    return capture(ZOO["lenet5-mnist"].factory(), (1, 28, 28), "lenet5")


def test_lenet5_layers_params_and_macs(lenet5: LayerGraph) -> None:
    # reference: MACs = out_h * out_w * out_c * in_c * k * k for convs, in * out for linears
    expected = {
        "conv1": (156, 28 * 28 * 6 * 1 * 25),
        "conv2": (2416, 10 * 10 * 16 * 6 * 25),
        "fc1": (48120, 400 * 120),
        "fc2": (10164, 120 * 84),
        "fc3": (850, 84 * 10),
    }
    assert lenet5.layer_names == list(expected)
    for layer in lenet5.layers:
        assert (layer.params, layer.macs) == expected[layer.name]
    assert lenet5.layer("conv1").output_numel == 6 * 28 * 28
    assert lenet5.layer("fc1").input_numel == 400


def test_liveness_and_owners(lenet5: LayerGraph) -> None:
    live = lenet5.live_tensors()
    assert len(live) == len(lenet5.steps)
    # conv1 runs with its input and its output live; relu is fused (an alias of conv1's output)
    assert set(live[0]) == {"x", "conv1"}
    assert all(lenet5.tensors[t].owner in lenet5.layer_names for step in live for t in step)
    # the pooled conv1 output is stored in conv1's element type
    assert lenet5.tensors["pool"].owner == "conv1"


def test_graph_json_round_trip(lenet5: LayerGraph) -> None:
    again = LayerGraph.from_json(lenet5.to_json())
    assert again == lenet5
    assert again.to_networkx().number_of_nodes() == len(lenet5.steps)


@pytest.mark.parametrize("device", ["arduino-nano-33-ble", "jetson-nano", "coral-dev-board"])
def test_cost_table_follows_spec_and_formats(lenet5: LayerGraph, device: str) -> None:
    spec = load_spec(device)
    table = build_cost_table(lenet5, spec)
    kernels = spec.profile().kernels
    tflite = spec.profile().tflite
    for layer in lenet5.layers:
        options = {c.option for c in table.options[layer.name]}
        assert options == set(runnable_kernels(kernels, layer, tflite)), (
            "options are exactly the device's kernels its runtime runs on this layer")
        if tflite is None or "int4" not in kernels:
            assert options == set(kernels)
        else:  # a TFLite runtime: int4 weights only on its int4 operators
            int4_ops = tflite.int4_weight_ops.value if tflite.int4_weight_ops else []
            assert ("int4" in options) == (tflite_op(layer) in int4_ops), layer.name
        for c in table.options[layer.name]:
            k = kernels[c.option]
            # the blobs, plus the layer's entry in the image header
            assert c.flash_bytes == stored_weight_bytes(
                k.weights, layer.weight_numel, layer.out_channels
            ) + stored_bias_bytes(k.weights, layer.bias_numel) + image_entry_bytes(layer, k)
            assert 60 < image_entry_bytes(layer, k) < 160
            assert c.latency_ms >= spec.profile().layer_overhead.value
            power = (spec.profile().power_active or spec.power_active).value
            assert c.energy_mj == pytest.approx(power * c.latency_ms)


def test_faster_kernel_means_lower_latency(lenet5: LayerGraph) -> None:
    table = build_cost_table(lenet5, load_spec("arduino-nano-33-ble"))
    for layer in lenet5.layer_names:
        by = {c.option: c for c in table.options[layer]}
        assert by["int8"].latency_ms < by["fp32"].latency_ms
        assert by["int8"].flash_bytes < by["fp32"].flash_bytes
        if "int4" in by:  # TFLM runs int4 weights on CONV_2D only
            assert by["int4"].flash_bytes < by["int8"].flash_bytes


def test_no_int8_on_jetson_nano_gpu(lenet5: LayerGraph) -> None:
    table = build_cost_table(lenet5, load_spec("jetson-nano"))
    assert {c.option for c in table.options["conv1"]} == {"fp32", "fp16"}


def test_duty_cycle_energy(lenet5: LayerGraph) -> None:
    from edgefit.planning import build_problem

    spec = load_spec("arduino-nano-33-ble")
    busy = build_cost_table(lenet5, spec)
    cycled = build_cost_table(lenet5, spec, period_ms=1000.0)
    p_active, p_idle = spec.power_active.value, spec.power_idle.value
    for layer in lenet5.layer_names:
        for a, b in zip(busy.options[layer], cycled.options[layer], strict=True):
            assert a.latency_ms == b.latency_ms
            assert b.energy_mj == pytest.approx((p_active - p_idle) * b.latency_ms)
    assert cycled.idle_energy_mj == pytest.approx(p_idle * 1000.0)
    # E = P_idle x period + (P_active - P_idle) x latency, over a whole plan
    problem = build_problem(lenet5, cycled, {})
    picks = {layer: 0 for layer in lenet5.layer_names}
    totals = problem.totals(picks)
    assert totals["energy_mj"] == pytest.approx(
        p_idle * 1000.0 + (p_active - p_idle) * totals["latency_ms"])


def test_shape_arithmetic_in_forward_is_not_a_tensor(user_net) -> None:
    """``x.reshape(x.shape[0], -1)``: the size nodes hold no buffer and are skipped."""
    graph = capture(user_net, (1, 28, 28), "usernet")
    assert graph.layer_names == ["conv0", "conv1", "fc"]
    assert all(t.numel > 0 for t in graph.tensors.values())
