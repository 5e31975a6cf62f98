"""Latency of one int4 Linear layer in onnxruntime: MatMulNBits vs DequantizeLinear + Gemm vs fp32.

Three single-layer models per shape, the same int4 codes and per-channel scales
(formats.quant_math):
  fp32        Gemm(x, W (N, K), b, transB=1)                  -- torch's export of a Linear
  dq_gemm     DequantizeLinear(int4 (N, K), axis 0) -> Gemm   -- edgefit's int4 form before
  matmulnbits DequantizeLinear(int4 (K, N), axis 1) -> MatMul -> Add, which onnxruntime fuses
              into MatMulNBits (checked on the optimized graph; accuracy_level 0)
Shapes: LeNet-300-100's fc1 (K=784, N=300) at batch 1 and 32, and a MiniLM-sized FFN layer
(K=384, N=1536) on 32 tokens. Sessions use techniques.onnx.writer.ort_session_options with a
fixed thread count (default 1). The variants run round-robin (each round times `--iters` calls of
every variant) so machine load drifts hit all three alike; the table shows medians over rounds.

Run: .venv/bin/python benchmarks/int4_matmulnbits.py [--threads 1] [--rounds 30] [--iters 200]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from formats import quant_math as qm
from techniques.onnx.writer import ort_session_options

SHAPES = (("lenet300 fc1", 1, 784, 300), ("lenet300 fc1", 32, 784, 300),
          ("minilm ffn1", 32, 384, 1536))  # (name, M rows, K in, N out)
VARIANTS = ("fp32", "dq_gemm", "matmulnbits")


def _model(variant: str, w: np.ndarray, b: np.ndarray, m: int) -> onnx.ModelProto:
    n, k = w.shape
    q, s = qm.quantize_per_channel(w, 4, axis=0)
    inits = [numpy_helper.from_array(b, "b")]
    if variant == "fp32":
        inits.append(numpy_helper.from_array(w, "w"))
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
    elif variant == "dq_gemm":
        inits += [helper.make_tensor("wq", TensorProto.INT4, [n, k], qm.pack_int4(q), raw=True),
                  numpy_helper.from_array(s, "ws")]
        nodes = [helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], axis=0),
                 helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
    else:
        qt = np.ascontiguousarray(q.T)
        inits += [helper.make_tensor("wq", TensorProto.INT4, [k, n], qm.pack_int4(qt), raw=True),
                  numpy_helper.from_array(s, "ws")]
        nodes = [helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], axis=1),
                 helper.make_node("MatMul", ["x", "w"], ["mm"]),
                 helper.make_node("Add", ["mm", "b"], ["y"])]
    graph = helper.make_graph(nodes, variant, [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [m, k])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [m, n])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])


def _session(model: onnx.ModelProto, tmp: Path, tag: str, threads: int
             ) -> tuple[ort.InferenceSession, list[str]]:
    path, opt = tmp / f"{tag}.onnx", tmp / f"{tag}.opt.onnx"
    onnx.save(model, str(path))
    so = ort_session_options(threads=threads)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.optimized_model_filepath = str(opt)
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess, [n.op_type for n in onnx.load(str(opt)).graph.node]


def _time_us(sess: ort.InferenceSession, x: np.ndarray, iters: int) -> float:
    feed = {"x": x}
    start = time.perf_counter()
    for _ in range(iters):
        sess.run(None, feed)
    return (time.perf_counter() - start) / iters * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--iters", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"onnxruntime {ort.__version__}, intra_op threads {args.threads}, "
          f"{args.rounds} rounds x {args.iters} calls, median per call")
    print(f"{'layer':14} {'M':>3} {'K':>4} {'N':>5} | {'fp32 us':>8} {'dq_gemm us':>10} "
          f"{'nbits us':>9} | {'dq_gemm/fp32':>12} {'nbits/fp32':>10} {'nbits/dq_gemm':>13} "
          f"| max|nbits-dq_gemm|/max|y|")
    with tempfile.TemporaryDirectory(prefix="edgefit-nbits-") as tmp_dir:
        tmp = Path(tmp_dir)
        for name, m, k, n in SHAPES:
            w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
            b = rng.standard_normal(n).astype(np.float32) * 0.1
            x = rng.standard_normal((m, k)).astype(np.float32)
            sessions = {}
            for v in VARIANTS:
                sess, ops = _session(_model(v, w, b, m), tmp, f"{v}_{m}_{k}_{n}", args.threads)
                if v == "matmulnbits" and ops != ["MatMulNBits"]:
                    raise SystemExit(f"expected MatMulNBits, onnxruntime made {ops}")
                if v == "dq_gemm" and "MatMulNBits" in ops:
                    raise SystemExit(f"dq_gemm was fused: {ops}")
                sessions[v] = sess
            outs = {v: s.run(None, {"x": x})[0] for v, s in sessions.items()}
            diff = np.abs(outs["matmulnbits"] - outs["dq_gemm"]).max()
            err = diff / np.abs(outs["dq_gemm"]).max()
            for s in sessions.values():
                _time_us(s, x, args.iters)  # warm-up
            times: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for _ in range(args.rounds):
                for v in VARIANTS:
                    times[v].append(_time_us(sessions[v], x, args.iters))
            med = {v: float(np.median(t)) for v, t in times.items()}
            print(f"{name:14} {m:>3} {k:>4} {n:>5} | {med['fp32']:8.1f} {med['dq_gemm']:10.1f} "
                  f"{med['matmulnbits']:9.1f} | {med['dq_gemm'] / med['fp32']:12.2f} "
                  f"{med['matmulnbits'] / med['fp32']:10.2f} "
                  f"{med['matmulnbits'] / med['dq_gemm']:13.2f} | {err:.1e}")


if __name__ == "__main__":
    main()
