"""The profile's runtime-memory fields in the liveness / peak-RAM model: each term on a tiny
graph whose answer is counted by hand, the default (no fields) unchanged for every catalog
device, and the host's terms against what onnxruntime's arena really holds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from cost_models.analytical import build_cost_table
from cost_models.graph import Layer, LayerGraph, Step, Tensor
from cost_models.ram_terms import blocked_entries, boundary_copies, option_workspace
from cost_models.runtime_memory import RuntimeMemory, int8_scratch_bytes, tflm_build
from device_specs.catalog import CATALOG_DIR, catalog_files, load_spec
from device_specs.schema import DeviceSpec
from edgefit.planning import build_problem
from planner.problem import INPUT_SUFFIX

MEASURED = {"measured": "test fixture"}
HOST_FIELDS: dict[str, Any] = {
    "activation_channel_block": {"value": 16, **MEASURED},
    "arena_round_bytes": {"value": "256B", **MEASURED},
    "outputs_outside_plan": {"value": True, **MEASURED},
    "qdq_fp32_boundaries": {"value": True, **MEASURED},
    "dequantized_weight_copies": {"value": True, **MEASURED},
    "conv_workspace_bytes": {"value": "65536B", **MEASURED},
}
INT8_PATHS: dict[str, Any] = {"int8_conv_paths": {
    "input_channel_multiple": {"value": 4, **MEASURED},
    "min_output_channels": {"value": 16, **MEASURED},
    "output_channel_multiple": {"value": 4, **MEASURED},
    "depthwise_channel_multiple": {"value": 16, **MEASURED},
    "pointer_bytes": {"value": "8B", **MEASURED},
}}


def tiny_graph(flatten: bool = False) -> LayerGraph:
    """x (1x8x8) -> conv (6 ch, 3x3, pad 1) -> relu (alias) [-> flatten (alias)] -> fc."""
    conv = Layer("conv", "Conv2d", "conv", 60, 54, 6, 6, 3456, 64, 384)
    fc = Layer("fc", "Linear", "linear", 3850, 3840, 10, 10, 3840, 384, 10)
    steps = [Step("conv", "layer", "Conv2d", ("x",), "c", "conv"),
             Step("relu", "alias", "ReLU", ("c",), "r", "conv")]
    if flatten:
        steps.append(Step("flat", "alias", "flatten", ("r",), "f", "conv"))
    steps.append(Step("fc", "layer", "Linear", (steps[-1].output,), "y", "fc"))
    tensors = {"x": Tensor("x", 64, "conv"), "c": Tensor("c", 384, "conv"),
               "r": Tensor("r", 384, "conv"), "f": Tensor("f", 384, "conv"),
               "y": Tensor("y", 10, "fc")}
    return LayerGraph("tiny", (1, 8, 8), [conv, fc], steps, tensors, ("y",))


def spec_with(fields: dict[str, Any], base: str = "raspberry-pi-4") -> DeviceSpec:
    """A catalog spec whose default profile has `fields` and host-like fp32/int8/int4 kernels."""
    data = yaml.safe_load((CATALOG_DIR / f"{base}.yaml").read_text())
    prof = data["profiles"][data["default_profile"]]
    rate = prof["kernels"]["fp32"]["macs_per_s"]
    prof["kernels"] = {"fp32": {"weights": "fp32", "activations": "fp32", "macs_per_s": rate},
                       "int8": {"weights": "int8", "activations": "int8", "macs_per_s": rate},
                       "int4": {"weights": "int4", "activations": "fp32", "macs_per_s": rate}}
    prof.pop("tflite", None)  # an onnxruntime host: its int4 runs on every layer
    prof.update(fields)
    return DeviceSpec.model_validate(data)


def peak(graph: LayerGraph, spec: DeviceSpec, picks: dict[str, str]) -> tuple[float, float]:
    """(planner RAM-step peak, + option workspace) of activations only."""
    table = build_cost_table(graph, spec)
    problem = build_problem(graph, table, {})
    chosen = {n: next(c for c in problem.choices[n] if c.option == o) for n, o in picks.items()}
    base = problem.fixed["ram_bytes"] + sum(c.flash_bytes for c in chosen.values()) * (
        problem.weights_in_ram)
    steps = [s - base for s in problem.step_ram(chosen, workspace=False)]
    full = [s + sum(b for (n, o), b in w.items() if picks[n] == o) + edge
            for s, w, edge in zip(steps, option_workspace(graph, table),
                                  boundary_copies(graph, table, picks), strict=True)]
    return max(steps), max(full)


def test_without_fields_the_model_is_plain_liveness() -> None:
    g = tiny_graph()
    # conv step: x + c; fc step: r (= c) + y
    assert peak(g, spec_with({}), {"conv": "fp32", "fc": "fp32"}) == (4 * (64 + 384),) * 2
    assert peak(g, spec_with({}), {"conv": "int8", "fc": "int8"})[0] == 64 + 384


def test_blocked_layout_pads_channels_beside_the_reordered_output() -> None:
    g = tiny_graph()
    spec = spec_with({"activation_channel_block": HOST_FIELDS["activation_channel_block"]})
    assert blocked_entries(g, build_cost_table(g, spec).memory) == {0: ("conv", 16 * 64)}
    planner, full = peak(g, spec, {"conv": "fp32", "fc": "fp32"})
    assert planner == full == 4 * (64 + 384 + 16 * 64)
    # an int4 conv runs outside NCHWc (its weight is not a constant): no padded buffer
    assert peak(g, spec, {"conv": "int4", "fc": "fp32"})[1] == 4 * (64 + 384)


def test_aligned_or_depthwise_convs_need_no_blocked_buffer() -> None:
    mem = RuntimeMemory(channel_block=16)
    aligned = Layer("c", "Conv2d", "conv", 0, 0, 0, 32, 0, 64, 32 * 64)
    depthwise = Layer("d", "Conv2d", "depthwise", 0, 0, 0, 6, 0, 384, 384)
    assert mem.padded_numel(aligned) == 0 and mem.padded_numel(depthwise) == 0
    assert RuntimeMemory(channel_block=8).padded_numel(tiny_graph().layer("conv")) == 8 * 64


def test_arena_grain_rounds_runtime_tensors_not_the_callers_input() -> None:
    g = tiny_graph()
    spec = spec_with({"arena_round_bytes": HOST_FIELDS["arena_round_bytes"]})
    problem = build_problem(g, build_cost_table(g, spec), {})
    # fc step: r (1536 B, a multiple of 256) and y (40 B -> 256 B = 64 fp32 elements)
    assert dict(problem.ram_steps[2]) == {"conv": 384, "fc": 64}
    assert dict(problem.ram_steps[0]) == {"conv" + INPUT_SUFFIX: 64, "conv": 384}


def test_outputs_outside_plan_are_live_from_the_first_step() -> None:
    g = tiny_graph()
    spec = spec_with({"outputs_outside_plan": HOST_FIELDS["outputs_outside_plan"]})
    problem = build_problem(g, build_cost_table(g, spec), {})
    assert all(("fc", 10) in step for step in problem.ram_steps)
    assert peak(g, spec, {"conv": "fp32", "fc": "fp32"})[0] == 4 * (64 + 384 + 10)


def test_qdq_boundaries_keep_the_model_input_fp32() -> None:
    g = tiny_graph()
    spec = spec_with({"qdq_fp32_boundaries": HOST_FIELDS["qdq_fp32_boundaries"]})
    # int8 conv: the input stays 4 B/element, its own output 1 B
    assert peak(g, spec, {"conv": "int8", "fc": "int8"})[0] == 4 * 64 + 384
    assert peak(g, spec_with({}), {"conv": "int8", "fc": "int8"})[0] == 64 + 384


def test_dequantized_conv_weights_are_live_from_the_start_to_their_layer() -> None:
    """A conv's int4 weight is dequantised to fp32 before the run's first node; a Linear is
    written as MatMul and fused into MatMulNBits, which reads the codes: no copy."""
    g = tiny_graph(flatten=True)
    spec = spec_with({k: HOST_FIELDS[k] for k in
                      ("dequantized_weight_copies", "conv_workspace_bytes")})
    ws = option_workspace(g, build_cost_table(g, spec))
    assert all(("fc", "int4") not in w for w in ws)
    late = option_workspace(tiny_graph(), build_cost_table(tiny_graph(), spec))
    assert all(("fc", "int4") not in w for w in late)
    assert ws[0][("conv", "int4")] == 4 * 54 + 65536  # copy + conv working buffer
    assert ("conv", "int4") not in ws[1]  # freed once the conv has run
    assert all(("fc", "fp32") not in w and ("fc", "int8") not in w for w in ws)
    # conv step: x + c + the conv's copy + working buffer
    assert peak(g, spec, {"conv": "int4", "fc": "int4"})[1] == (
        4 * (64 + 384) + 4 * 54 + 65536)


def test_token_linears_read_int4_directly() -> None:
    """A Linear over 32 rows exports as MatMul, fused into MatMulNBits: no fp32 copy."""
    fc = Layer("fc", "Linear", "linear", 0, 384 * 384, 0, 384, 0, 32 * 384, 32 * 384)
    g = LayerGraph("tok", (32,), [fc], [Step("fc", "layer", "Linear", ("x",), "y", "fc")],
                   {"x": Tensor("x", 32 * 384, "fc"), "y": Tensor("y", 32 * 384, "fc")}, ("y",))
    spec = spec_with({"dequantized_weight_copies": HOST_FIELDS["dequantized_weight_copies"]})
    assert build_cost_table(g, spec).cost("fc", "int4").dequantized_weight_numel == 0
    assert all(not w for w in option_workspace(g, build_cost_table(g, spec)))


@pytest.mark.parametrize("path", catalog_files(), ids=lambda p: p.stem)
def test_catalog_devices_predict_exactly_what_they_did_before(path: Path) -> None:
    """No catalog file sets the fields: the RAM steps are the plain liveness, owner by
    owner, the input at the first layer's width, and there is no workspace -- except on TFLM
    profiles (tflite.micro), whose RAM is TFLM's arena (tests/cost_models/test_tflm_ram.py)."""
    spec = load_spec(path.stem)
    g = tiny_graph()
    for name in spec.profiles:
        table = build_cost_table(g, spec, name)
        fmt = spec.profile(name).tflite
        if fmt is not None and fmt.micro:
            assert table.memory == RuntimeMemory(tflm_arena=True,
                                                 tflm_build=tflm_build(spec.profile(name),
                                                                       spec.core))
            assert table.memory.tflm_build is not None
            continue
        assert table.memory == RuntimeMemory()
        problem = build_problem(g, table, {})
        plain = tuple(tuple((("conv" + INPUT_SUFFIX) if t == "x" else g.tensors[t].owner,
                             g.tensors[t].numel) for t in live) for live in g.live_tensors())
        assert problem.ram_steps == plain
        assert all(not w for w in option_workspace(g, table))
        for opts in table.options.values():
            for c in opts:
                assert c.in_act_bytes == max(1, {"fp32": 4, "fp16": 2}.get(
                    spec.profile(name).kernels[c.option.split("-")[0]].activations, 1))


@pytest.mark.parametrize("picks", [
    {"conv": "fp32", "fc": "fp32"}, {"conv": "int4", "fc": "int4"},
    {"conv": "int8", "fc": "int8"}, {"conv": "int8", "fc": "fp32"}],
    ids=["fp32", "int4", "int8", "int8-fp32"])
def test_host_terms_match_onnxruntimes_arena(tmp_path: Path, picks: dict[str, str]) -> None:
    """A 6-channel conv + fc, exported and run by onnxruntime: the host probe's terms predict
    the arena's peak (plain liveness misses the padded buffer, grain, output, copies, the
    int8 kernel's scratch and the float ReLU between int8 codes). 28 x 28 input and a pool
    before the fc: the run's peak exceeds session creation's pre-packing transient, so the
    arena shows it (not an upper bound)."""
    import numpy as np
    import torch

    from cost_models.capture import capture
    from cost_models.export import export_fp32
    from cost_models.host_probe import (
        _probe_activation_memory,
        _probe_buffer_reuse,
        _probe_int8_conv_paths,
        _probe_matmul_scratch,
    )
    from cost_models.ort_memory import measure_arena
    from techniques.onnx.writer import quantize_onnx

    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("conv", torch.nn.Conv2d(1, 6, 5, padding=2))
    model.add_module("relu", torch.nn.ReLU())
    model.add_module("pool", torch.nn.MaxPool2d(4))
    model.add_module("flat", torch.nn.Flatten())
    model.add_module("fc", torch.nn.Linear(294, 10))
    model.eval()
    shape = (1, 28, 28)
    graph = capture(model, shape, "tiny")
    fp32 = tmp_path / "m.fp32.onnx"
    export_fp32(model, shape, fp32)
    path = tmp_path / "m.onnx"
    calib = np.random.default_rng(0).standard_normal((4, *shape)).astype(np.float32)
    quantize_onnx(fp32, path, picks, calib)
    arena = measure_arena(path)
    assert not arena.peak_hidden
    measured = arena.activation_bytes
    host = spec_with({**_probe_activation_memory(tmp_path), **_probe_int8_conv_paths(tmp_path),
                      **_probe_buffer_reuse(tmp_path), **_probe_matmul_scratch(tmp_path)})
    planner, full = peak(graph, host, picks)
    plain = peak(graph, spec_with({}), picks)[1]
    assert abs(full - measured) <= 0.15 * measured
    assert abs(full - measured) < abs(plain - measured)


def weighted_graph() -> LayerGraph:
    """tiny_graph with weight shapes (the int8 scratch needs the taps and input channels)."""
    g = tiny_graph(flatten=True)
    conv, fc = g.layers
    g.layers = [replace(conv, weight_shape=(6, 1, 3, 3)), replace(fc, weight_shape=(10, 384))]
    return g


def test_int8_scratch_follows_the_kernel_path() -> None:
    """Counted by hand from onnxruntime's qlinearconv.cc: 1 input channel / 6 outputs is not
    the symmetric kernel's shape (u8 im2col + int32 accumulator); 4 -> 16 is (one pointer per
    tap and pixel); a depthwise 16-channel conv too; a Linear accumulates in int32."""
    mem = RuntimeMemory.of_profile(spec_with({**HOST_FIELDS, **INT8_PATHS}).profile())
    int8 = spec_with({}).profile().kernels["int8"]
    conv = weighted_graph().layers[0]
    assert int8_scratch_bytes(conv, int8, mem) == 768 + 1536  # 9 x 64 -> 768; 4 x 384
    sym = replace(conv, out_channels=16, output_numel=16 * 64, weight_shape=(16, 4, 3, 3))
    assert int8_scratch_bytes(sym, int8, mem) == 8 * 9 * 64
    dw = replace(sym, op_class="depthwise", weight_shape=(16, 1, 3, 3))
    assert int8_scratch_bytes(dw, int8, mem) == 8 * 9 * 64
    pointwise = replace(sym, weight_shape=(16, 4, 1, 1))
    assert int8_scratch_bytes(pointwise, int8, mem) == 0
    fc = weighted_graph().layers[1]
    assert int8_scratch_bytes(fc, int8, mem) == 256  # 4 x 10 in the arena's grain
    fp32 = spec_with({}).profile().kernels["fp32"]
    assert int8_scratch_bytes(conv, fp32, mem) == 0
    assert int8_scratch_bytes(conv, int8, RuntimeMemory()) == 0  # no probe: not modelled


def test_int8_layers_charge_scratch_and_the_float_relu_copy() -> None:
    graph = weighted_graph()
    table = build_cost_table(graph, spec_with({**HOST_FIELDS, **INT8_PATHS}))
    steps = option_workspace(graph, table)
    without = option_workspace(graph, build_cost_table(graph, spec_with(HOST_FIELDS)))
    # beside the (negative) blocked-layout term both share: the scratch while the conv runs
    assert steps[0][("conv", "int8")] - without[0][("conv", "int8")] == 768 + 1536
    assert steps[1][("conv", "int8")] == 1536  # the ReLU's fp32 copy of 384 outputs
    assert ("conv", "fp32") not in steps[1] and not without[1]


@pytest.mark.parametrize(("picks", "fc_step_bytes"), [
    ({"conv": "int8", "fc": "fp32"}, 1536),  # fc reads DequantizeLinear's fp32 copy
    ({"conv": "fp32", "fc": "int8"}, 512),  # fc reads QuantizeLinear's int8 copy
    ({"conv": "int8", "fc": "int8"}, 0), ({"conv": "fp32", "fc": "fp32"}, 0)])
def test_boundary_copies_sit_at_the_consumer(picks: dict[str, str], fc_step_bytes: int) -> None:
    graph = weighted_graph()
    table = build_cost_table(graph, spec_with({**HOST_FIELDS, **INT8_PATHS}))
    extra = boundary_copies(graph, table, picks)
    assert extra[-1] == fc_step_bytes
    # a blocked (NCHWc) fp32 conv read by an int8 layer: ReorderOutput's plain copy of its
    # 384 outputs beside the blocked buffer, at the ReLU step after the conv
    reordered = 1536 if picks == {"conv": "fp32", "fc": "int8"} else 0
    assert extra[1] == reordered and not extra[0] and not any(extra[2:-1])
    unblocked = {**HOST_FIELDS, **INT8_PATHS,
                 "activation_channel_block": {"value": 1, **MEASURED}}
    assert boundary_copies(graph, build_cost_table(graph, spec_with(unblocked)), picks)[1] == 0


def test_a_bad_channel_block_is_one_clear_error() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="activation_channel_block must be a whole number"):
        spec_with({"activation_channel_block": {"value": 2.5, **MEASURED}})
    with pytest.raises(ValidationError, match="needs exactly one of"):
        spec_with({"qdq_fp32_boundaries": {"value": True}})


MATMUL: dict[str, Any] = {"weight_only_matmul_scratch": {
    "k_block": {"value": 32, **MEASURED}, "block_bytes": {"value": "40B", **MEASURED},
    "align_bytes": {"value": "64B", **MEASURED}, "extra_bytes": {"value": "63B", **MEASURED}}}


def test_weight_only_linears_charge_their_fused_kernels_scratch() -> None:
    """32 token rows x 384 inputs: 32 x 12 blocks x 40 B = 15360 (64-aligned) + 63 B, in the
    256 B grain -> 15616 B, for every weight-only integer kernel; none for fp32 or w8a8."""
    fc = Layer("fc", "Linear", "linear", 0, 384 * 384, 0, 384, 0, 32 * 384, 32 * 384,
               (384, 384))
    g = LayerGraph("tok", (32,), [fc], [Step("fc", "layer", "Linear", ("x",), "y", "fc")],
                   {"x": Tensor("x", 32 * 384, "fc"), "y": Tensor("y", 32 * 384, "fc")}, ("y",))
    table = build_cost_table(g, spec_with({**MATMUL, "arena_round_bytes":
                                           HOST_FIELDS["arena_round_bytes"]}))
    assert table.cost("fc", "int4").kernel_scratch_bytes == 15616
    assert table.cost("fc", "fp32").kernel_scratch_bytes == 0
    assert build_cost_table(g, spec_with({})).cost("fc", "int4").kernel_scratch_bytes == 0


def test_matmul_scratch_fit_predicts_shapes_it_was_not_fitted_on(tmp_path: Path) -> None:
    """The host probe's fit against onnxruntime's node record on new (rows, K) shapes."""
    from cost_models.host_probe import MATMUL_SCRATCH_SHAPES, _matmul_scratch, fit_matmul_scratch

    fit = fit_matmul_scratch({(m, k): _matmul_scratch(tmp_path, m, k)
                              for m, k in MATMUL_SCRATCH_SHAPES})
    assert fit is not None
    k_block, block_bytes, align, extra = fit
    for rows, k in ((5, 200), (16, 384), (2, 1000), (48, 96)):
        assert (rows, k) not in MATMUL_SCRATCH_SHAPES
        predicted = -(-(rows * -(-k // k_block) * block_bytes) // align) * align + extra
        assert _matmul_scratch(tmp_path, rows, k) == predicted, (rows, k)


def test_matmul_scratch_fit_recovers_known_parameters() -> None:
    from cost_models.host_probe import MATMUL_SCRATCH_SHAPES, fit_matmul_scratch

    def temp(rows: int, k: int) -> int:
        return -(-(rows * -(-k // 16) * 18) // 32) * 32 + 31

    assert fit_matmul_scratch({s: temp(*s) for s in MATMUL_SCRATCH_SHAPES}) == (16, 18, 32, 31)
    assert fit_matmul_scratch({(1, 16): 5, (1, 32): 3}) is None  # shrinking: no such kernel


def reuse_graph() -> LayerGraph:
    """x -> a (4 KB) -> u (16 KB) -> v (16 KB) -> t (a's shape) -> y: t takes a's freed buffer,
    which stays allocated across u and v (cost_models.reuse)."""
    fc = Layer("fc", "Linear", "linear", 0, 0, 0, 1, 0, 1024, 1024)
    steps = [Step("a", "op", "matmul", ("x",), "a", "fc"),
             Step("u", "op", "matmul", ("a",), "u", "fc"),
             Step("v", "op", "softmax", ("u",), "v", "fc"),
             Step("t", "op", "matmul", ("v",), "t", "fc"),
             Step("fc", "layer", "Linear", ("t",), "y", "fc")]
    tensors = {"x": Tensor("x", 1024, "fc", (32, 32)), "a": Tensor("a", 1024, "fc", (32, 32)),
               "u": Tensor("u", 4096, "fc", (64, 64)), "v": Tensor("v", 4096, "fc", (64, 64)),
               "t": Tensor("t", 1024, "fc", (32, 32)), "y": Tensor("y", 1024, "fc", (1, 1024))}
    return LayerGraph("reuse", (32, 32), [fc], steps, tensors, ("y",))


def test_a_buffer_reused_later_is_held_across_the_gap() -> None:
    g = reuse_graph()
    assert g.live_tensors()[2] == ["u", "v"]
    assert g.held_tensors()[2] == ["a", "u", "v"]  # a's buffer waits for t
    assert g.held_tensors()[3] == ["t", "v"]  # t sits in it now (u's buffer was freed at v)
    other = replace(g, tensors={**g.tensors, "t": Tensor("t", 1024, "fc", (1024,))})
    assert other.held_tensors()[2] == ["u", "v"]  # another shape: a's buffer is released
    reuse = {"exact_shape_buffer_reuse": {"value": True, **MEASURED}}
    assert peak(g, spec_with(reuse), {"fc": "fp32"})[0] == 4 * (1024 + 2 * 4096)
    assert peak(g, spec_with({}), {"fc": "fp32"})[0] == 4 * 2 * 4096


def test_layer_graph_shapes_round_trip_through_json() -> None:
    g = reuse_graph()
    again = LayerGraph.from_json(g.to_json())
    assert again.tensors == g.tensors and again.held_tensors() == g.held_tensors()


def token_linears(rows: int) -> LayerGraph:
    """x (rows x 16) -> fc1 (16 -> 16) -> fc2 (16 -> 16) -> y."""
    n = rows * 16
    fc1 = Layer("fc1", "Linear", "linear", 272, 256, 16, 16, 256 * rows, n, n, (16, 16))
    fc2 = replace(fc1, name="fc2")
    steps = [Step("fc1", "layer", "Linear", ("x",), "h", "fc1"),
             Step("fc2", "layer", "Linear", ("h",), "y", "fc2")]
    tensors = {"x": Tensor("x", n, "fc1"), "h": Tensor("h", n, "fc1"), "y": Tensor("y", n, "fc2")}
    return LayerGraph("tok", (rows, 16), [fc1, fc2], steps, tensors, ("y",))


def test_int8_token_linears_hand_their_consumers_fp32() -> None:
    """An int8 Linear over 32 rows is QLinearMatMul + DequantizeLinear + a float bias add: its
    consumers read fp32 (4 B per element), its codes are scratch beside the int32 accumulator,
    and an int8 reader quantises the fp32 tensor again. On one row it is QGemm: codes."""
    spec = spec_with({**HOST_FIELDS, **INT8_PATHS})
    g = token_linears(32)
    table = build_cost_table(g, spec)
    fc1 = table.cost("fc1", "int8")
    assert fc1.float_output and fc1.act_bytes == 4
    assert fc1.kernel_scratch_bytes == 4 * 512 + 512  # accumulator + codes, 256 B grain
    assert boundary_copies(g, table, {"fc1": "int8", "fc2": "int8"})[1] == 512  # Q copy
    assert boundary_copies(g, table, {"fc1": "int8", "fc2": "fp32"})[1] == 0  # already fp32
    one = build_cost_table(token_linears(1), spec).cost("fc1", "int8")
    assert not one.float_output and one.act_bytes == 1
    assert not build_cost_table(g, spec_with(HOST_FIELDS)).cost("fc1", "int8").float_output


def pooled_graph() -> LayerGraph:
    """x (1x8x8) -> conv1 (16 ch) -> relu (view) -> pool (op, 4x4) -> conv2 (16 ch) -> y."""
    conv1 = Layer("conv1", "Conv2d", "conv", 160, 144, 16, 16, 9216, 64, 1024, (16, 1, 3, 3))
    conv2 = Layer("conv2", "Conv2d", "conv", 2320, 2304, 16, 16, 36864, 256, 256,
                  (16, 16, 3, 3))
    steps = [Step("conv1", "layer", "Conv2d", ("x",), "c1", "conv1"),
             Step("relu", "alias", "ReLU", ("c1",), "r1", "conv1"),
             Step("pool", "op", "max_pool2d", ("r1",), "p", "conv1"),
             Step("conv2", "layer", "Conv2d", ("p",), "y", "conv2")]
    tensors = {"x": Tensor("x", 64, "conv1"), "c1": Tensor("c1", 1024, "conv1"),
               "r1": Tensor("r1", 1024, "conv1"), "p": Tensor("p", 256, "conv1"),
               "y": Tensor("y", 256, "conv2")}
    return LayerGraph("pooled", (1, 8, 8), [conv1, conv2], steps, tensors, ("y",))


@pytest.mark.parametrize(("picks", "relu_step_bytes"), [
    ({"conv1": "int8", "conv2": "fp32"}, 4 * 1024),  # ReorderInput's blocked copy, full size
    ({"conv1": "int8", "conv2": "int8"}, 0), ({"conv1": "fp32", "conv2": "fp32"}, 0)])
def test_a_float_conv_after_a_pool_reorders_the_int8_convs_whole_output(
        picks: dict[str, str], relu_step_bytes: int) -> None:
    g = pooled_graph()
    spec = {**HOST_FIELDS, **INT8_PATHS}
    assert boundary_copies(g, build_cost_table(g, spec_with(spec)), picks)[1] == relu_step_bytes
    flat = {**spec, "activation_channel_block": {"value": 1, **MEASURED}}
    assert boundary_copies(g, build_cost_table(g, spec_with(flat)), picks)[1] == 0
