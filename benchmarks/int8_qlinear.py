"""All-int8 models on this host: edgefit's QLinear forms vs onnxruntime's own QDQ fusion vs fp32.

For each architecture, three ONNX files of the same model:
  fp32      the export as it is;
  ort-qdq   techniques.onnx's static int8 QDQ model with the QLinear rewrite switched off:
            what onnxruntime makes of quantize_static's output by itself (it fuses
            DQ -> op -> Q only where the input's QuantizeLinear has a single reader);
  edgefit   the same codes and scales with every complete int8 MatMul / Conv group written as
            QLinearMatMul / QLinearConv on uint8 input codes (techniques.onnx.int8.qlinear_form).
Reported per file: median latency (1 thread, opt level all, edgefit's session options), the
ratio to fp32 measured in the same run, how many weighted nodes the optimised graph still runs
as a float op on a dequantised weight, and the output difference of edgefit vs ort-qdq (the same
integer arithmetic up to requantisation rounding: max |diff| / max |ort-qdq output|). The three
variants run round-robin (`--rounds` rounds of `--iters` calls each), medians over rounds.

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

VARIANTS = ("fp32", "ort-qdq", "edgefit")
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
    return paths, calib[:1]


def _session(path: Path, threads: int, optimized: Path | None = None) -> ort.InferenceSession:
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
            "output vs ort-qdq |", "|---|---|---|---|---|---|"]
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
            ref = sessions["ort-qdq"].run(None, feed["ort-qdq"])[0]
            got = sessions["edgefit"].run(None, feed["edgefit"])[0]
            diff = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))
            for v in VARIANTS:
                floats = _float_on_dequantised(paths[v], tmp) if v != "fp32" else 0
                rows.append(f"| {arch.name} | {v} | {us[v]:.1f} | {us[v] / us['fp32']:.2f} | "
                            f"{floats if v != 'fp32' else '-'} | "
                            f"{f'{100 * diff:.3f} %' if v == 'edgefit' else '-'} |")
                print(rows[-1], flush=True)
    text = "\n".join([
        "# int8 on this host: edgefit's QLinear forms vs onnxruntime's own QDQ fusion", "",
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
