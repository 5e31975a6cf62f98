"""All-int8 models on this host: edgefit's int8 vs onnxruntime's own quantiser vs fp32.

For each architecture, four ONNX files of the same model:
  fp32      the export as it is;
  ort-own   what a user of onnxruntime gets without edgefit: quantize_static with its
            defaults (QDQ, int8 activations asymmetric, int8 weights per tensor, MinMax on the
            same calibration inputs), run with default session options (1 thread);
  ort-qdq   techniques.onnx's static int8 QDQ model with the QLinear rewrite switched off:
            what onnxruntime makes of edgefit's quantize_static output by itself (it fuses
            DQ -> op -> Q only where the input's QuantizeLinear has a single reader);
  edgefit   the same codes and scales with every complete int8 MatMul / Conv group written as
            QLinearMatMul / QLinearConv on uint8 input codes (techniques.onnx.int8.qlinear_form).
edgefit's int8 (issue #22): asymmetric uint8 activations, ReLU / ReLU6 folded into the ranges,
max-pooling / reshapes / residual adds quantised with the layers, 7-bit weight codes per
channel so u8 x s8 kernels are exact on every CPU.
Reported per file: median latency (1 thread, opt level all; edgefit's session options except
for ort-own), the ratio to fp32 measured in the same run, how many weighted nodes the optimised
graph still runs as a float op on a dequantised weight, float islands between quantised tensors
(techniques.onnx.inspect.float_islands: DQ -> float op -> Q and DQ -> Q round trips), the
output difference of edgefit vs ort-qdq (the same integer arithmetic up to requantisation
rounding: max |diff| / max |ort-qdq output|) and every int8 file's output vs fp32 (max |diff| /
max |fp32 output| on one calibration input). The variants run round-robin (`--rounds` rounds of
`--iters` calls each), medians over rounds.

Run: .venv/bin/python benchmarks/int8_qlinear.py  (writes docs/bench-int8-qlinear.md)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cost_model_accuracy as cma  # noqa: E402 (benchmarks/ is the script's directory)

from cost_models.export import export_fp32  # noqa: E402
from edgefit_common.fsutil import atomic_write_text  # noqa: E402
from techniques.onnx import writer  # noqa: E402
from techniques.onnx.inspect import float_islands  # noqa: E402

VARIANTS = ("fp32", "ort-own", "ort-qdq", "edgefit")
FLOAT_WEIGHTED = ("Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm")


def _build(arch: cma.Architecture, tmp: Path) -> tuple[dict[str, Path], np.ndarray]:
    from cost_models.capture import capture

    model, calib = arch.build(), arch.calibration()
    graph = capture(model, arch.input_shape, arch.name)
    paths = {v: tmp / f"{v}.onnx" for v in VARIANTS}
    export_fp32(model, arch.input_shape, paths["fp32"])
    options = dict.fromkeys(graph.layer_names, "int8")
    writer.quantize_onnx(paths["fp32"], paths["edgefit"], options, calib)
    rewrite = writer.qlinear_form
    writer.qlinear_form = lambda model, full: None  # type: ignore[assignment]
    try:
        writer.quantize_onnx(paths["fp32"], paths["ort-qdq"], options, calib)
    finally:
        writer.qlinear_form = rewrite  # type: ignore[assignment]
    _ort_own(paths["fp32"], paths["ort-own"], calib)
    return paths, calib[:1]


def _ort_own(fp32: Path, out: Path, calib: np.ndarray) -> None:
    """onnxruntime's quantize_static with its defaults, on the same calibration inputs."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    model = onnx.load(str(fp32))
    inp = model.graph.input[0]
    fixed = inp.type.tensor_type.shape.dim[0].HasField("dim_value")
    batch = 1 if fixed else 16
    dtype = np.int64 if inp.type.tensor_type.elem_type == onnx.TensorProto.INT64 else np.float32
    batches = [calib[i:i + batch].astype(dtype) for i in range(0, len(calib) - batch + 1, batch)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {inp.name: x}

        def rewind(self) -> None:
            self.it = iter(batches)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ)


def _session(path: Path, threads: int, optimized: Path | None = None) -> ort.InferenceSession:
    if path.stem == "ort-own":  # a plain onnxruntime user's session
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
    else:
        so = writer.ort_session_options(ort.GraphOptimizationLevel.ORT_ENABLE_ALL, threads)
    so.log_severity_level = 3
    if optimized is not None:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _float_on_dequantised(path: Path, tmp: Path) -> int:
    """Weighted nodes of the optimised graph that read a DequantizeLinear output (a weight
    dequantised on every run) -- 0 when every int8 layer runs an integer kernel."""
    opt = tmp / f"{path.stem}.opt.onnx"
    _session(path, 1, opt)
    g = onnx.load(str(opt)).graph
    producer = {o: n.op_type for n in g.node for o in n.output}
    return sum(1 for n in g.node if n.op_type in FLOAT_WEIGHTED and len(n.input) > 1
               and producer.get(n.input[1]) == "DequantizeLinear")


def _time(sessions: dict[str, ort.InferenceSession], feed: dict[str, dict[str, np.ndarray]],
          rounds: int, iters: int) -> dict[str, float]:
    import time

    per: dict[str, list[float]] = {v: [] for v in sessions}
    for s in sessions:
        for _ in range(20):
            sessions[s].run(None, feed[s])
    for _ in range(rounds):
        for v, sess in sessions.items():
            t = time.perf_counter()
            for _ in range(iters):
                sess.run(None, feed[v])
            per[v].append((time.perf_counter() - t) / iters)
    return {v: 1e6 * float(np.median(ts)) for v, ts in per.items()}


def _feed(sess: ort.InferenceSession, x: np.ndarray) -> dict[str, np.ndarray]:
    inp = sess.get_inputs()[0]
    return {inp.name: x.astype(np.int64 if "int64" in inp.type else np.float32)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--out", default="docs/bench-int8-qlinear.md")
    ap.add_argument("--models", default="", help="comma list of name prefixes (default: all)")
    args = ap.parse_args(argv)
    load_start = os.getloadavg()[0]
    rows = ["| model | variant | latency (us) | vs fp32 | float ops on dequantised weights | "
            "float islands | output vs ort-qdq | output vs fp32 |",
            "|---|---|---|---|---|---|---|---|"]
    wanted = [m for m in args.models.split(",") if m]
    for arch in cma.ARCHITECTURES:
        if wanted and not any(arch.name.startswith(m) for m in wanted):
            continue
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            paths, x = _build(arch, tmp)
            sessions = {v: _session(p, args.threads) for v, p in paths.items()}
            feed = {v: _feed(s, x) for v, s in sessions.items()}
            us = _time(sessions, feed, args.rounds, args.iters)
            outs = {v: sessions[v].run(None, feed[v])[0] for v in VARIANTS}
            ref = outs["ort-qdq"]
            diff = float(np.abs(outs["edgefit"] - ref).max() / max(np.abs(ref).max(), 1e-12))
            fp32 = outs["fp32"]
            for v in VARIANTS:
                floats = _float_on_dequantised(paths[v], tmp) if v != "fp32" else 0
                islands = len(float_islands(paths[v], tmp)) if v != "fp32" else 0
                vs_fp32 = float(np.abs(outs[v] - fp32).max() / max(np.abs(fp32).max(), 1e-12))
                rows.append(f"| {arch.name} | {v} | {us[v]:.1f} | {us[v] / us['fp32']:.2f} | "
                            f"{floats if v != 'fp32' else '-'} | "
                            f"{islands if v != 'fp32' else '-'} | "
                            f"{f'{100 * diff:.3f} %' if v == 'edgefit' else '-'} | "
                            f"{f'{100 * vs_fp32:.1f} %' if v != 'fp32' else '-'} |")
                print(rows[-1], flush=True)
    text = "\n".join([
        "# int8 on this host: edgefit's int8 vs onnxruntime's own quantiser and QDQ fusion", "",
        f"Made by `.venv/bin/python benchmarks/int8_qlinear.py --threads {args.threads} "
        f"--rounds {args.rounds} --iters {args.iters}"
        + (f" --models {args.models}" if args.models else "") + "`; every number is from that run "
        f"(onnxruntime {ort.__version__}, 1-minute load average {load_start:.2f} at the start "
        f"and {os.getloadavg()[0]:.2f} at the end on {os.cpu_count()} cores: above about 1, "
        "another job shared them). Ratios are measured in the same run, variants round-robin.",
        "", __doc__.split("\n\n")[1].strip(), "", *rows, ""])
    print(text)
    atomic_write_text(Path(__file__).parents[1] / args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
