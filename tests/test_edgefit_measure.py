"""edgefit_measure.py: runs as a lone copied script, writes one JSON file, maps nodes to layers.

Structure and invariants only: no assertion here is about how fast anything is.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

SCRIPT = Path(__file__).resolve().parents[1] / "edgefit_measure.py"
FAST = ["--runs", "20", "--warmup", "2", "--profile-runs", "10"]

# Imports the copied script must never need (they are not on a Raspberry Pi / Jetson).
_GUARD = """
import importlib.abc, runpy, sys
BLOCKED = {"torch", "onnx", "onnxscript", "edgefit", "executors", "cost_models",
           "device_specs", "planner", "workloads", "rich", "typer", "yaml", "pydantic",
           "psutil", "platformdirs", "networkx", "fvcore", "ortools", "pulp"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"edgefit_measure must not import {name}")
        return None
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("edgefit_measure_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


em = _load_module()


def conv_relu_gemm(layers: Sequence[str] | None = ("conv1", "fc")) -> onnx.ModelProto:
    """Conv(conv1) -> Relu -> Flatten -> Gemm(fc), symbolic batch, optional edgefit.layers."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "conv1.w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "conv1.b"),
        numpy_helper.from_array(rng.standard_normal((10, 4 * 8 * 8)).astype(np.float32), "fc.w"),
        numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fc.b"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv1.w", "conv1.b"], ["c"], name="conv1",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "crg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if layers is not None:
        helper.set_model_props(model, {"edgefit.layers": json.dumps(list(layers))})
    onnx.checker.check_model(model)
    return model


@pytest.fixture()
def lone_script(tmp_path: Path) -> Path:
    """A temp dir holding only a copy of the script (and, later, the model)."""
    shutil.copy(SCRIPT, tmp_path / "edgefit_measure.py")
    return tmp_path


def _run(cwd: Path, *args: str, guard: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if guard:
        (cwd / "guard.py").write_text(_GUARD)
        cmd = [sys.executable, "-I", "guard.py", "edgefit_measure.py", *args]
    else:
        cmd = [sys.executable, "edgefit_measure.py", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_isolated_script_writes_valid_json(lone_script: Path) -> None:
    onnx.save(conv_relu_gemm(), lone_script / "model.onnx")
    out = _run(lone_script, "model.onnx", *FAST, "--out", "result.json", guard=True)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in lone_script.iterdir()) == [
        "edgefit_measure.py", "guard.py", "model.onnx", "result.json"]  # no temp/profile litter
    d = json.loads((lone_script / "result.json").read_text())

    assert d["format"] == "edgefit-measure" and d["format_version"] == em.FORMAT_VERSION
    dt.datetime.fromisoformat(d["timestamp"])
    lat = d["latency_ms"]
    assert lat["runs"] == 20 and lat["warmup"] == 2
    assert 0 < lat["min"] <= lat["p10"] <= lat["median"] <= lat["p90"] <= lat["max"]
    # the lowest of equal rounds' medians (10 rounds of 2 runs here)
    assert lat["min"] <= lat["steady"] <= lat["p90"] and lat["rounds"] == em.ROUNDS
    assert lat["min"] <= lat["mean"] <= lat["max"]
    assert d["model"]["inputs"] == [{"name": "x", "shape": [1, 1, 8, 8],
                                     "declared_shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    assert d["settings"]["threads"] == 1 and d["settings"]["opt_level"] == "all"
    assert d["profile"]["runs"] == 10
    host = d["host"]
    assert host["onnxruntime"] == ort.__version__
    assert host["cpu_model"] and host["cores"] >= 1 and host["platform"]
    assert "CPUExecutionProvider" in host["session_providers"]
    mem = d["memory"]
    assert mem["how"]
    if Path("/proc/self/status").exists():
        assert mem["peak_rss_bytes"] >= mem["rss_before_sessions_bytes"] > 0
    # every executed node is timed, mapped and in exactly one layer
    assert d["nodes"] and all(n["runs"] == 10 and n["median_us"] >= 0 for n in d["nodes"])
    assert all(n["provider"] == "CPUExecutionProvider" and n["op_type"] for n in d["nodes"])
    assert d["unmapped"]["nodes"] == []
    assert set(d["layers"]) == {"conv1", "fc"}
    members = [m for lay in d["layers"].values() for m in lay["nodes"]]
    assert sorted(members) == sorted(n["name"] for n in d["nodes"])
    assert all(lay["calibrated_us"] > 0 for lay in d["layers"].values())
    assert d["calibration"]["offset_us"] >= 0 and d["closure"]["ratio"] > 0
    # the closed layer times add up to the unprofiled run less the session.run overhead
    closed = sum(lay["closed_ms"] for lay in d["layers"].values())
    assert closed == pytest.approx(lat["steady"] - d["calibration"]["run_overhead_us"] / 1e3)


def test_closure_scale() -> None:
    assert em.closure_scale(10.0, 2.0, 4.0) == 2.0  # nodes read half their share of the run
    assert em.closure_scale(10.0, 2.0, 16.0) == 0.5
    assert em.closure_scale(1.0, 2.0, 4.0) == 1.0 and em.closure_scale(10.0, 2.0, 0.0) == 1.0


def test_nodes_cover_the_graph_and_map_to_layers(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(conv_relu_gemm(), path)
    d = em.measure(path, runs=10, warmup=1, threads=1, opt_level="basic", profile_runs=5)
    assert [n["name"] for n in d["nodes"]] == ["conv1", "relu", "flatten", "fc"]
    assert [n["op_type"] for n in d["nodes"]] == ["Conv", "Relu", "Flatten", "Gemm"]
    assert {n["name"]: n["layer"] for n in d["nodes"]} == {
        "conv1": "conv1", "relu": "conv1", "flatten": "conv1", "fc": "fc"}
    assert d["layers"]["conv1"]["nodes"] == ["conv1", "relu", "flatten"]
    assert d["model"]["layers_source"] == "'edgefit.layers' metadata"
    # fused at 'all' (Conv+Relu -> FusedConv / NCHWc Conv): still every node mapped
    d_all = em.measure(path, runs=10, warmup=1, threads=1, opt_level="all", profile_runs=5)
    assert d_all["unmapped"]["nodes"] == []
    assert all(d_all["layers"][lay]["nodes"] for lay in ("conv1", "fc"))


def test_layers_inferred_without_metadata(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(conv_relu_gemm(layers=None), path)
    d = em.measure(path, runs=5, warmup=1, threads=1, opt_level="basic", profile_runs=3)
    assert d["model"]["layers"] == ["conv1", "fc"]
    assert d["model"]["layers_source"].startswith("inferred")


def test_missing_model_exits_2_with_one_line(lone_script: Path) -> None:
    out = _run(lone_script, "nope.onnx")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "nope.onnx" in lines[0]
    assert not (lone_script / "nope.measure.json").exists()


@pytest.mark.parametrize("content", [b"this is not protobuf", b""])
def test_invalid_model_exits_2_with_one_line(tmp_path: Path, content: bytes,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    assert em.main([str(bad), "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert not (tmp_path / "r.json").exists()


def test_reader_matches_onnx() -> None:
    model = conv_relu_gemm()
    scope = model.graph.node[0].metadata_props.add()
    scope.key, scope.value = em.SCOPES_KEY, "['', 'conv1', 'conv2d']"
    g = em.parse_model(model.SerializeToString())
    assert [(n.name, n.op_type, n.inputs, n.outputs) for n in g.nodes] == [
        (n.name, n.op_type, list(n.input), list(n.output)) for n in model.graph.node]
    assert g.initializers == {i.name for i in model.graph.initializer}
    assert g.inputs == ["x"] and g.outputs == ["y"]
    assert g.metadata == {"edgefit.layers": '["conv1", "fc"]'}
    assert g.nodes[0].scopes == ["", "conv1", "conv2d"] and g.nodes[1].scopes is None
    with pytest.raises(ValueError):
        em.parse_model(b"\xff\xff\xff")


def test_calibration_model_is_valid_onnx() -> None:
    raw = em.neg_chain_model(3)
    model = onnx.load_from_string(raw)
    onnx.checker.check_model(model)
    assert [n.op_type for n in model.graph.node] == ["Neg"] * 3
    sess = ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
    assert sess.run(None, {"x": np.ones(1, np.float32)})[0].tolist() == [-1.0]


def _graph(nodes: list[tuple[str, str, list[str], list[str]]], inits: set[str],
           inputs: list[str]) -> Any:
    return em.Graph([em.Node(n, op, "", i, o) for n, op, i, o in nodes], inits, inputs, [])


def test_owners_qdq_weights_and_pooling() -> None:
    """The rules on a QDQ int8 chain: input Q/DQ pairs go to the layer they feed."""
    g = _graph([
        ("in_q", "QuantizeLinear", ["x", "s0"], ["xq"]),
        ("in_dq", "DequantizeLinear", ["xq", "s0"], ["xd"]),
        ("w1_dq", "DequantizeLinear", ["w1q", "sw1"], ["w1"]),
        ("conv1", "Conv", ["xd", "w1"], ["c1"]),
        ("c1_q", "QuantizeLinear", ["c1", "s1"], ["c1q"]),
        ("c1_dq", "DequantizeLinear", ["c1q", "s1"], ["c1d"]),
        ("relu", "Relu", ["c1d"], ["r"]),
        ("pool", "MaxPool", ["r"], ["p"]),
        ("p_q", "QuantizeLinear", ["p", "s2"], ["pq"]),
        ("p_dq", "DequantizeLinear", ["pq", "s2"], ["pd"]),
        ("w2_dq", "DequantizeLinear", ["w2q", "sw2"], ["w2"]),
        ("conv2", "Conv", ["pd", "w2"], ["y"]),
    ], {"s0", "s1", "s2", "w1q", "sw1", "w2q", "sw2"}, ["x"])
    owners = dict(zip([n.name for n in g.nodes], em.layer_owners(g, ["conv1", "conv2"]),
                      strict=True))
    assert owners == {"in_q": "conv1", "in_dq": "conv1", "w1_dq": "conv1", "conv1": "conv1",
                      "c1_q": "conv1", "c1_dq": "conv1", "relu": "conv1", "pool": "conv1",
                      "p_q": "conv2", "p_dq": "conv2", "w2_dq": "conv2", "conv2": "conv2"}
    forced = em.layer_owners(g, ["conv1", "conv2"], overrides={"pool": "conv2"})
    assert forced[[n.name for n in g.nodes].index("pool")] == "conv2"


def test_fused_and_inserted_nodes_map_back() -> None:
    original = _graph([
        ("conv1", "Conv", ["x", "w1", "b1"], ["c1"]),
        ("node_relu", "Relu", ["c1"], ["relu"]),
        ("node_pool", "MaxPool", ["relu"], ["pool"]),
        ("fc", "Gemm", ["pool", "w2", "b2"], ["y"]),
    ], {"w1", "b1", "w2", "b2"}, ["x"])
    owners = em.layer_owners(original, ["conv1", "fc"])
    executed = _graph([
        ("relu_nchwc", "Conv", ["x", "reorder", "reorder_token_0"], ["r1"]),
        ("ReorderOutput_token_5", "ReorderOutput", ["r1"], ["relu"]),
        ("node_pool_token_3", "MaxPool", ["relu"], ["t"]),
        ("Transpose", "Transpose", ["t"], ["t2"]),
        ("fused fc", "FusedGemm", ["t2", "w2", "b2"], ["y"]),
        ("mystery", "Identity", ["zz"], ["qq"]),
    ], {"reorder", "reorder_token_0", "w2", "b2"}, ["x"])
    got = em.map_executed_nodes(executed, original, owners)
    assert got == {
        "relu_nchwc": ("conv1", "tensor name"),
        "ReorderOutput_token_5": ("conv1", "output tensor"),
        "node_pool_token_3": ("conv1", "fused name"),
        "Transpose": ("fc", "data flow"),  # inserted in front of fc's own (fused) op
        "fused fc": ("fc", "fused name"),
        "mystery": (None, "unmapped"),
    }


def test_slash_named_fusions_and_their_reshapes_map_to_the_layer() -> None:
    """onnxruntime names a MatMul+Add fusion ``<MatMul>/MatMulAddFusion`` and wraps a 3-D input
    in Reshapes; all three are the layer's, not the residual stream's before it."""
    original = _graph([
        ("ln", "LayerNormalization", ["x", "g", "b"], ["h"]),
        ("q", "MatMul", ["h", "wq"], ["m"]),
        ("node_add", "Add", ["m", "bq"], ["y"]),
        ("node_mm", "MatMul", ["y", "y"], ["z"]),
    ], {"g", "b", "wq", "bq"}, ["x"])
    owners = em.layer_owners(original, ["emb", "q"], overrides={"ln": "emb"})
    executed = _graph([
        ("ln", "LayerNormalization", ["x", "g", "b"], ["h"]),
        ("gemm_input_reshape_token_3", "Reshape", ["h", "shape"], ["h2"]),
        ("q/MatMulAddFusion", "Gemm", ["h2", "wq_folded", "bq"], ["m2"]),
        ("gemm_output_reshape_token_4", "Reshape", ["m2", "shape2"], ["y"]),
        ("node_mm/MatMulScaleFusion/", "FusedMatMul", ["y", "y"], ["z"]),
    ], {"g", "b", "wq_folded", "bq", "shape", "shape2"}, ["x"])
    got = em.map_executed_nodes(executed, original, owners)
    assert got["q/MatMulAddFusion"] == ("q", "fused name")
    assert got["gemm_input_reshape_token_3"] == ("q", "data flow")
    assert got["gemm_output_reshape_token_4"][0] == "q"
    assert got["node_mm/MatMulScaleFusion/"] == ("q", "fused name")
    assert got["ln"] == ("emb", "name")


def test_steady_is_the_lowest_round_median(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs 1..100 ms in order, 10 rounds of 10: the first round's median (5.5 ms) is steady,
    whatever the slow rounds after it; the median of all runs is kept beside it (50.5 ms)."""
    onnx.save(conv_relu_gemm(), tmp_path / "m.onnx")
    clock = iter([t for i in range(1, 101) for t in (0.0, i / 1e3)])
    monkeypatch.setattr(em, "_run", lambda sess, feed: None)
    monkeypatch.setattr(em, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    lat = em.time_runs(tmp_path / "m.onnx", runs=100, warmup=0)
    assert lat["steady"] == pytest.approx(5.5) and lat["median"] == pytest.approx(50.5)


def test_u8s8_probe_is_the_model_it_says() -> None:
    """The embedded probe is MatMulInteger(uint8 a [1, 8], int8 w = 127 [8, 1]) and nothing
    else; its exact answer is 8 x 255 x 127."""
    import base64

    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "u8s8",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1])],
        [numpy_helper.from_array(np.full((8, 1), 127, np.int8), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)],
                              producer_name="edgefit")
    model.ir_version = 5
    assert base64.b64decode(em._U8S8_PROBE) == model.SerializeToString()
    assert em.U8S8_PROBE_EXACT == 259080


def test_session_config_keeps_int8_kernels_where_u8s8_saturates() -> None:
    config = em.session_config()
    assert (em.QDQ_INT8_ALLOWED in config) == (not em.u8s8_exact())
    assert {k: v for k, v in config.items() if k != em.QDQ_INT8_ALLOWED} == em.SESSION_CONFIG


def test_cpu_core_names_an_arm_core_from_cpuinfo() -> None:
    """A 32-bit Raspberry Pi OS names no core in 'model name'; the part number does (0xd08:
    Cortex-A72, arch/arm64/include/asm/cputype.h)."""
    import edgefit_measure

    pi4 = ("processor\t: 0\nmodel name\t: ARMv7 Processor rev 3 (v7l)\n"
           "CPU implementer\t: 0x41\nCPU architecture: 7\nCPU part\t: 0xd08\n")
    assert edgefit_measure.cpu_core(pi4) == "cortex-a72"
    assert edgefit_measure.cpu_core(pi4.replace("0xd08", "0xd0b")) == "cortex-a76"
    assert edgefit_measure.cpu_core(pi4.replace("0x41", "0x51")) is None  # not Arm's own
    assert edgefit_measure.cpu_core("model name\t: AMD EPYC 7B13\n") is None
