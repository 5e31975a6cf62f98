"""`host`: this machine as a DeviceSpec, read by a small probe and cached.

The probe reads CPU model, cores, clock and RAM from the OS and times three things with the
same runtime edgefit measures with (onnxruntime, 1 thread): a large Gemm (fp32 MAC/s), a chain
of tiny nodes (per-node overhead) and a large copy (memory bandwidth). Everything else is
marked derived or unverified. The result is cached per CPU model + onnxruntime version.
"""

from __future__ import annotations

import ctypes as C
import hashlib
import os
import platform
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from device_specs.schema import DeviceSpec
from edgefit_common.fsutil import atomic_write_text
from edgefit_common.yamlio import validate
from edgefit_measure import session_options

# 2: activation-memory behaviour from onnxruntime's node record; 3: 6/3/2-bit kernels; 4: w8a16;
# 5: asymmetric weight-only uint4/uint3; memory probes with onnxruntime's memory pattern off
PROBE_VERSION = 11  # 11: the int8 kernel notes which integer kernels this CPU runs exactly


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_hz() -> float:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("cpu mhz"):
                return float(line.split(":", 1)[1]) * 1e6
    except (OSError, ValueError):
        pass
    return 1e9


def _ram_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def _session(model: Any) -> Any:
    import onnxruntime as ort

    # edgefit_measure's settings (threads, opt level all, memory pattern, session config)
    return ort.InferenceSession(model.SerializeToString(), session_options(1, "all"),
                                providers=["CPUExecutionProvider"])


def _steady_s(fn: Any, runs: int) -> float:
    """Steady time of one call: the lowest median of edgefit_measure.ROUNDS equal rounds of
    ``runs`` calls (as edgefit measures models: a stretch of a shared machine running slow
    must not land in the probed rates)."""
    from edgefit_measure import steady_s

    for _ in range(max(3, runs // 10)):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return steady_s(times)[0]


def _probe_gemm_macs_per_s(n: int = 384) -> float:
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"])], "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])], [w])
    sess = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = np.ones((n, n), np.float32)
    return n**3 / _steady_s(lambda: sess.run(None, {"x": x}), 30)


def _probe_conv_macs_per_s(c: int = 32, hw: int = 14) -> float:
    """A small 3x3 conv, the shape class of edge CNN layers (far below large-Gemm efficiency)."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((c, c, 3, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, hw, hw])], [w])
    sess = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = np.ones((1, c, hw, hw), np.float32)
    return c * c * 9 * hw * hw / _steady_s(lambda: sess.run(None, {"x": x}), 100)


def _probe_run_overhead_s() -> float:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["y"])], "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    sess = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = np.ones(1, np.float32)
    return _steady_s(lambda: sess.run(None, {"x": x}), 300)


def _probe_node_overhead_s(nodes: int = 64) -> float:
    from onnx import TensorProto, helper

    names = ["x"] + [f"t{i}" for i in range(nodes)]
    graph = helper.make_graph(
        [helper.make_node("Neg", [names[i]], [names[i + 1]]) for i in range(nodes)], "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info(names[-1], TensorProto.FLOAT, [1])])
    sess = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = np.ones(1, np.float32)
    return _steady_s(lambda: sess.run(None, {"x": x}), 200) / nodes


def _probe_bandwidth_bytes_per_s(mb: int = 64) -> float:
    src = np.ones(mb * 2**20 // 4, np.float32)
    dst = np.empty_like(src)
    return 2 * src.nbytes / _steady_s(lambda: np.copyto(dst, src), 10)  # read + write


def _save_onnx(nodes: list[Any], shape: list[int], out_shape: list[int], inits: list[Any],
               path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, shape)], [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, out_shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _probe_activation_memory(tmp: Path) -> dict[str, Any]:
    """onnxruntime's memory behaviour read from its own node record and arena counters
    (cost_models.ort_memory) on tiny graphs whose plain liveness answer is known."""
    from onnx import helper, numpy_helper

    from cost_models.ort_memory import measure_arena, node_memory_stats

    how = "onnxruntime node memory record, opt level all, 1 thread, host probe"
    # one float: its buffer is one arena grain
    grain = max(r.output_bytes for r in node_memory_stats(_save_onnx(
        [helper.make_node("Neg", ["x"], ["y"])], [1], [1], [], tmp / "neg.onnx")))
    # 1 -> 1 channel 3x3 conv on 8x8 (256 B per channel): the blocked output's channel count
    w = numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")
    conv = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    block = max(r.output_bytes for r in node_memory_stats(_save_onnx(
        conv, [1, 1, 8, 8], [1, 1, 8, 8], [w], tmp / "conv.onnx"))) // 256
    # the same conv with an int8 weight dequantised in the graph: no blocked layout, scratch
    q = numpy_helper.from_array(np.ones((4, 4, 3, 3), np.int8), "q")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    dq = [helper.make_node("DequantizeLinear", ["q", "s"], ["w"]),
          helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="conv")]
    rows = node_memory_stats(_save_onnx(dq, [1, 4, 8, 8], [1, 4, 8, 8], [q, scale],
                                        tmp / "dq.onnx"))
    workspace = next(r.temp_bytes for r in rows if r.node == "conv")
    copy = next(r.output_bytes for r in rows if r.node != "conv")
    # A = -x, B = -A, y = sum(B): the plan peaks at A + B; y beside it shows outputs outside
    n = 1024
    chain = [helper.make_node("Neg", ["x"], ["a"]), helper.make_node("Neg", ["a"], ["b"]),
             helper.make_node("ReduceSum", ["b"], ["y"], keepdims=1)]
    arena = measure_arena(_save_onnx(chain, [1, n], [1, 1], [], tmp / "chain.onnx"))
    outside = arena.peak_bytes > 8 * n
    return {
        "activation_channel_block": {"value": max(1, block), "measured": f"output bytes of a "
                                     f"1-channel 3x3 conv on 8x8 / 256, {how}"},
        "arena_round_bytes": {"value": f"{grain}B", "measured": f"output bytes of a 1-float "
                              f"Neg, {how}"},
        "outputs_outside_plan": {"value": outside, "measured": f"arena MaxInUse of -x, -(-x), "
                                 f"sum: {arena.peak_bytes} B vs {8 * n} B for the two planned "
                                 "tensors (onnxruntime C API AllocatorGetStats)"},
        "qdq_fp32_boundaries": {"value": True, "derived": "edgefit's QDQ export takes an fp32 "
                                "input and quantises it inside the graph (QuantizeLinear)"},
        "dequantized_weight_copies": {"value": copy >= 4 * 4 * 4 * 9, "measured":
                                      f"DequantizeLinear of a 144-weight int8 conv weight "
                                      f"writes {copy} B per run, {how}"},
        "conv_workspace_bytes": {"value": f"{workspace}B", "measured": "temp bytes of a 3x3 "
                                 f"conv with a dequantised weight, {how}"},
    }


def _int8_conv_scratch(tmp: Path, cin: int, cout: int, group: int = 1) -> int:
    """Temp bytes of one 3x3 QLinearConv (u8 input, symmetric per-channel s8 weights) on a 4x4
    output, from onnxruntime's node record (the NHWC transformer renames the node)."""
    from onnx import TensorProto, helper, numpy_helper

    from cost_models.ort_memory import node_memory_stats

    def const(name: str, a: np.ndarray) -> Any:
        return numpy_helper.from_array(a, name)

    inits = [const("xs", np.array(0.1, np.float32)), const("xz", np.array(128, np.uint8)),
             const("w", np.ones((cout, cin // group, 3, 3), np.int8)),
             const("ws", np.full(cout, 0.1, np.float32)), const("wz", np.zeros(cout, np.int8)),
             const("ys", np.array(0.2, np.float32)), const("yz", np.array(128, np.uint8))]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"],
                              ["yq"], pads=[1, 1, 1, 1], group=group, name="probeconv"),
             helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "qconv", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, cin, 4, 4])], [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, [1, cout, 4, 4])], inits)
    path = tmp / f"qconv-{cin}-{cout}-{group}.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return max(r.temp_bytes for r in node_memory_stats(path) if r.node.startswith("probeconv"))


def _probe_buffer_reuse(tmp: Path) -> dict[str, Any]:
    """Whether a buffer reused for a later tensor of the same shape stays allocated in
    between. a = -x, b = a W (a dies), c = concat(b x4) (b dies), d = c[:32] takes b's buffer,
    e = d W takes a's: held from a to e, a's buffer sits beside b and c (6 tensors of 4 KB)
    instead of b + c alone (5)."""
    from onnx import helper, numpy_helper

    from cost_models.ort_memory import measure_arena

    def ints(name: str, v: int) -> Any:
        return numpy_helper.from_array(np.array([v], np.int64), name)

    w = numpy_helper.from_array(np.eye(32, dtype=np.float32), "w")
    nodes = [helper.make_node("Neg", ["x"], ["a"]), helper.make_node("MatMul", ["a", "w"], ["b"]),
             helper.make_node("Concat", ["b", "b", "b", "b"], ["c"], axis=0),
             helper.make_node("Slice", ["c", "zero", "n", "zero"], ["d"]),
             helper.make_node("MatMul", ["d", "w"], ["e"]),
             helper.make_node("ReduceSum", ["e"], ["y"], keepdims=1)]
    arena = measure_arena(_save_onnx(nodes, [32, 32], [1, 1], [w, ints("zero", 0),
                                                                  ints("n", 32)],
                                     tmp / "reuse.onnx"))
    tensor = 32 * 32 * 4
    return {"exact_shape_buffer_reuse": {
        "value": arena.peak_bytes >= 6 * tensor, "measured":
        f"arena MaxInUse of a 6-node graph whose reused buffer is free between its tensors: "
        f"{arena.peak_bytes} B; {6 * tensor} B if it stays allocated, {5 * tensor} B if not "
        "(onnxruntime C API AllocatorGetStats, memory pattern off)"}}


# (rows, input features) of the weight-only MatMul probes: K off and on the block boundaries
# (many rows pin block_bytes and the block: below the alignment a few bytes are hidden)
MATMUL_SCRATCH_SHAPES = ((1, 16), (1, 32), (1, 64), (2, 64), (4, 64), (1, 100), (3, 300),
                         (8, 128), (1, 784), (32, 1536), (64, 512), (16, 8), (16, 24),
                         (16, 40))


def _matmul_scratch(tmp: Path, rows: int, k: int, n: int = 64) -> int:
    """Temp bytes of a 4-bit weight-only MatMul (DequantizeLinear -> MatMul, which onnxruntime
    fuses into MatMulNBits) in the node record."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cost_models.ort_memory import node_memory_stats

    q = helper.make_tensor("q", TensorProto.INT4, [k, n], [1] * (k * n))
    s = numpy_helper.from_array(np.full((n,), 0.1, np.float32), "s")
    nodes = [helper.make_node("DequantizeLinear", ["q", "s"], ["w"], axis=1),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "mm", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [rows, k])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [rows, n])], [q, s])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    path = tmp / f"mm-{rows}-{k}.onnx"
    onnx.save(model, str(path))
    return max((r.temp_bytes for r in node_memory_stats(path)), default=0)


def fit_matmul_scratch(points: dict[tuple[int, int], int]) -> tuple[int, int, int, int] | None:
    """(k_block, block_bytes, align, extra) with align(rows x ceil(K / k_block) x block_bytes)
    + extra equal to every measured scratch, smallest block first; None if none does."""
    for k_block in (8, 16, 32, 64, 128, 256):
        for align in (1, 8, 16, 32, 64, 128):
            for block_bytes in range(1, 4 * k_block + 65):
                extras = {temp - -(-(rows * -(-k // k_block) * block_bytes) // align) * align
                          for (rows, k), temp in points.items()}
                if len(extras) == 1 and (extra := extras.pop()) >= 0:
                    return k_block, block_bytes, align, extra
    return None


def _probe_matmul_scratch(tmp: Path) -> dict[str, Any]:
    points = {(m, k): _matmul_scratch(tmp, m, k) for m, k in MATMUL_SCRATCH_SHAPES}
    if not any(points.values()):
        return {}
    fit = fit_matmul_scratch(points)
    if fit is None:
        return {}
    how = ("fitted exactly to the temp bytes of 4-bit weight-only MatMul probes "
           f"(rows x K: {', '.join(f'{m}x{k}' for m, k in MATMUL_SCRATCH_SHAPES)}) in "
           "onnxruntime's node record (MatMulNBits, default accuracy level)")
    names = ("k_block", "block_bytes", "align_bytes", "extra_bytes")
    return {"weight_only_matmul_scratch": {
        name: {"value": v if name == "k_block" else f"{v}B", "measured": how}
        for name, v in zip(names, fit, strict=True)}}


def _probe_int8_conv_paths(tmp: Path) -> dict[str, Any]:
    """The channel counts that take onnxruntime's symmetric int8 conv kernel: its only
    scratch is the indirection buffer (one pointer per tap and output pixel); the other path
    adds an int32 accumulator. Read from the node record of 3x3 convs on a 4x4 output."""
    ptr = C.sizeof(C.c_void_p)
    taps_pixels = 9 * 16

    def symmetric(cin: int, cout: int, group: int = 1) -> bool:
        return _int8_conv_scratch(tmp, cin, cout, group) == ptr * taps_pixels

    sizes = (1, 2, 4, 8, 16, 32)
    cin = next((c for c in sizes if symmetric(c, 64)), None)
    if cin is None:
        return {}
    min_out = next((c for c in sizes[1:] if symmetric(cin, c)), None)
    if min_out is None:
        return {}
    out_mult = next(d for d in (1, 2, 4, 8, 16, min_out) if symmetric(cin, min_out + d))
    dw = next((c for c in (8, 16, 32, 64) if symmetric(c, c, c)), 64)
    how = ("temp bytes of 3x3 QLinearConv probes (u8 input, symmetric s8 weights, 4x4 output) "
           f"in onnxruntime's node record: {ptr} B x taps x pixels = the symmetric kernel")
    return {"int8_conv_paths": {
        "input_channel_multiple": {"value": cin, "measured": f"smallest input channel count "
                                   f"in {sizes} with 64 outputs; {how}"},
        "min_output_channels": {"value": min_out, "measured": f"smallest output count with "
                                f"{cin} inputs; {how}"},
        "output_channel_multiple": {"value": out_mult, "measured": f"smallest step above "
                                    f"{min_out} outputs that stays symmetric; {how}"},
        "depthwise_channel_multiple": {"value": dw, "measured": f"smallest depthwise channel "
                                       f"count in (8, 16, 32, 64); {how}"},
        "pointer_bytes": {"value": f"{ptr}B", "measured": "ctypes.sizeof(c_void_p)"},
    }}


def _activation_memory_fields() -> dict[str, Any]:
    """The probed fields, or none (plain liveness) where onnxruntime cannot report them."""
    from cost_models.ort_memory import OrtMemoryError

    with tempfile.TemporaryDirectory(prefix="edgefit-probe-") as tmp:
        try:
            return {**_probe_activation_memory(Path(tmp)), **_probe_int8_conv_paths(Path(tmp)),
                    **_probe_buffer_reuse(Path(tmp)), **_probe_matmul_scratch(Path(tmp))}
        except OrtMemoryError:
            return {}


def _host_kernels(fp32: float, kernel_common: dict[str, Any], same_rate: str
                  ) -> dict[str, Any]:
    """The host profile's kernels: every precision edgefit writes, at the probed fp32 rate
    until profiled (weight-only forms dequantise to fp32)."""
    int8_form = ("u8 x s8 integer kernels on uint8 activations and 7-bit weight codes "
                 "(exact on every CPU, also where 8-bit codes saturate: x86 without VNNI)")
    return {
        "fp32": {"weights": "fp32", "activations": "fp32", **kernel_common},
        "fp16": {"weights": "fp16", "activations": "fp32", **kernel_common,
                 "note": f"host {same_rate}"},
        "int8": {"weights": "int8", "activations": "int8", "note": f"host: {int8_form}",
                 "macs_per_s": {"value": f"{fp32:.6g}MAC/s",
                                "unverified": "int8 QLinearConv/QGemm assumed as "
                                "fast as fp32 Gemm until profiled"},
                 "op_efficiency": kernel_common["op_efficiency"]},
        "int8a16": {"weights": "int8", "activations": "int16",
                    "macs_per_s": {"value": f"{fp32:.6g}MAC/s",
                                   "unverified": "w8a16 QDQ (onnxruntime has no "
                                   "int16 conv/gemm kernels: dequantise + float "
                                   "op) assumed as fast as fp32 until profiled"},
                    "op_efficiency": kernel_common["op_efficiency"]},
        "int4": {"weights": "int4", "activations": "fp32", **kernel_common,
                 "note": f"host {same_rate}"},
        **{f"int{b}": {"weights": f"int{b}", "activations": "fp32", **kernel_common,
                       "note": f"host {same_rate} (ONNX: "
                       + ("packed INT2" if b == 2 else "int8 container")
                       + "; the flash image packs them)"} for b in (6, 3, 2)},
        # asymmetric weight-only: codes 0..2**b-1 + a zero point per channel
        # (DequantizeLinear / MatMulNBits take uint zero points)
        **{f"uint{b}": {"weights": f"int{b}", "activations": "fp32",
                        "symmetric": False, **kernel_common,
                        "note": f"host {same_rate} (asymmetric: uint{b} codes + "
                        "zero points)"} for b in (4, 3)},
    }


def probe() -> dict[str, Any]:
    import onnxruntime as ort

    stamp = time.strftime("%Y-%m-%d")
    how = f"by edgefit's host probe on {stamp}, onnxruntime {ort.__version__}, 1 thread"
    fp32 = _probe_gemm_macs_per_s()
    overhead_ms = 1e3 * _probe_node_overhead_s()
    run_ms = 1e3 * _probe_run_overhead_s()
    conv_eff = min(1.0, _probe_conv_macs_per_s() / fp32)
    bandwidth = _probe_bandwidth_bytes_per_s()
    memory = _activation_memory_fields()
    kernel_common = {
        "macs_per_s": {"value": f"{fp32:.6g}MAC/s", "measured": f"Gemm 384^3 {how}"},
        "op_efficiency": {"conv": {"value": round(conv_eff, 4),
                                   "measured": f"3x3 Conv 32->32 on 14x14 vs the Gemm, {how}"}},
    }
    same_rate = "computes in fp32 after dequantising the stored weights (Cast / DequantizeLinear)"
    return {
        "schema_version": 1,
        "name": "host",
        "board": f"this machine ({platform.node() or 'host'})",
        "kind": "host",
        "cpu": _cpu_model(),
        "cores": {"value": os.cpu_count() or 1, "measured": "os.cpu_count()"},
        "clock": {"value": f"{_cpu_hz():.6g}Hz", "measured": "/proc/cpuinfo cpu MHz"},
        "ram": {"value": f"{_ram_bytes()}B", "measured": "psutil.virtual_memory().total"},
        "flash": {"value": "1GB", "unverified": "disk is not a constraint on the host"},
        "power_idle": {"value": "10W", "unverified": "host power is not measured"},
        "power_active": {"value": "30W", "unverified": "host power is not measured"},
        "default_profile": "onnxruntime-cpu-1t",
        "profiles": {
            "onnxruntime-cpu-1t": {
                "description": "onnxruntime CPU execution provider, 1 thread (how `apply` "
                               "measures)",
                "processor": "cpu",
                "runtime": f"onnxruntime {ort.__version__}",
                "threads": 1,
                "runtime_flash": {"value": "0B", "unverified": "library size not counted"},
                "runtime_ram": {"value": "0B", "unverified": "runtime RAM not counted; the "
                                "report compares activation memory only"},
                "weights_in_ram": True,
                "layer_overhead": {"value": f"{overhead_ms:.6g}ms",
                                   "measured": f"64-node Neg chain {how}"},
                "run_overhead": {"value": f"{run_ms:.6g}ms",
                                 "measured": f"session.run of a 1-node graph {how}"},
                "memory_bandwidth": {"value": f"{bandwidth:.6g}B/s",
                                     "measured": f"numpy copy of 64 MiB on {stamp}"},
                "preferred_channel_multiple": 8,
                **memory,
                "kernels": _host_kernels(fp32, kernel_common, same_rate),
            }
        },
        "notes": "probed, not from a catalog file",
    }


def _cache_path() -> Path:
    import onnxruntime as ort

    from edgefit_common.paths import cache_dir

    key = hashlib.sha256(f"{_cpu_model()}|{ort.__version__}|{PROBE_VERSION}".encode()
                         ).hexdigest()[:12]
    return cache_dir() / f"host-{key}.yaml"


@cache
def host_spec() -> DeviceSpec:
    path = _cache_path()
    if path.exists():
        data = yaml.safe_load(path.read_text())
    else:
        data = probe()
        atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
    return validate(data, DeviceSpec, path=path)


def target_spec(target: str) -> DeviceSpec:
    """The device a budget names: ``host`` (this machine, probed), else a catalog name or a
    spec file (``device_specs.catalog.load_spec``)."""
    from device_specs.catalog import load_spec

    return host_spec() if target == "host" else load_spec(target)

