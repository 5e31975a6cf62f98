"""MiniLM (minilm-l6) with its embedding tables planned: what they cost and save.

For each of fp32 / int8 / int4, every planned layer (the 36 Linear layers and the 3 embedding
tables) is pinned to that option -- and, to show the tables' own effect, only the tables with
the Linear layers left fp32 -- planned for jetson-nano/onnxruntime-cpu (fp32, int8 = w8a8 for
a Linear / int8 codes for a table, int4 weight-only) and applied; the report gives the flash
image's bytes (the tables' share of them), the plan's prediction, the embedding cosine to the
fp32 model on the held-out sentences and whether both artifacts were verified. A second part
times, on this host, one lookup of 32 rows of the int8 word table written two ways: edgefit's
Gather of the codes + per-row scales, and a DequantizeLinear of the whole table before the
Gather.

    .venv/bin/python benchmarks/minilm_embeddings.py [--out out/minilm-embeddings]

Needs the MiniLM weights and sentences (`make data`). Takes minutes: planning measures the
accuracy cost of every (layer, option) unless an identical run cached it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

TARGET, PROFILE = "jetson-nano", "onnxruntime-cpu"
PLANS = (("fp32", "fp32"), ("int8", "int8"), ("int4", "int4"), ("int8", "fp32"),
         ("int4", "fp32"))  # (tables, Linear layers)
TABLES = ("embeddings.word", "embeddings.position", "embeddings.token_type")


def plan_and_apply(tables: str, linear: str, out: Path) -> dict[str, Any]:
    from cost_models.capture import capture
    from device_specs.budget import Budget
    from edgefit.applying import apply_plan
    from edgefit.planning import make_plan
    from workloads import minilm

    names = capture(minilm.load_minilm(), (minilm.SEQ_LEN,), "minilm-l6").layer_names
    budget = Budget(target=TARGET, profile=PROFILE, model="minilm-l6")
    pins = {name: tables if name in TABLES else linear for name in names}
    plan, _ = make_plan(budget, "benchmarks/minilm_embeddings.py", pins=pins)
    report = apply_plan(plan, out / f"tables-{tables}-linear-{linear}")
    art, acc = report["artifacts"], report["accuracy"]
    return {
        "tables": tables, "linear": linear, "layers": len(names),
        "flash_image_bytes": art["flash_image_bytes"],
        "planned_flash_bytes": art["planned_flash_bytes"],
        "table_bytes": round(sum(plan.layers[t].cost.flash_bytes for t in TABLES)),
        "unplanned_weight_bytes": plan.fixed.get("unplanned_weight_bytes", 0.0),
        "onnx_bytes": art["onnx_bytes"],
        "cosine_torch": acc["compressed"],
        "cosine_onnx": acc["onnx_vs_torch"]["cosine_to_fp32"],
        "verified": report["verification"]["ok"],
        "summary": report["verification"]["summary"],
    }


def lookup_ms(runs: int = 300) -> dict[str, float]:
    """Median ms of one 32-row lookup of the int8 word table, both graph forms (1 thread)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from formats import quant_math as qm
    from workloads import minilm

    table = minilm.load_minilm(layers=1).embeddings.word.weight.detach().numpy()
    codes = qm.quantize_option(table, "int8")
    inits = [numpy_helper.from_array(codes.q, "q"),
             numpy_helper.from_array(codes.scales, "s"),
             numpy_helper.from_array(codes.scales.reshape(-1, 1), "s2")]
    forms = {
        "gather codes + row scales (edgefit)": [
            helper.make_node("Gather", ["q", "ids"], ["r"]),
            helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
            helper.make_node("Gather", ["s2", "ids"], ["rs"]),
            helper.make_node("Mul", ["rf", "rs"], ["y"])],
        "DequantizeLinear of the whole table, then Gather": [
            helper.make_node("DequantizeLinear", ["q", "s"], ["w"], axis=0),
            helper.make_node("Gather", ["w", "ids"], ["y"])],
    }
    ids = np.random.default_rng(0).integers(0, table.shape[0], (1, 32)).astype(np.int64)
    out = {}
    for name, nodes in forms.items():
        graph = helper.make_graph(
            nodes, "lookup", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 32])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, table.shape[1]])],
            inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(model.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
        ref = table[ids[0]]
        got = sess.run(None, {"ids": ids})[0][0]
        assert np.abs(got - ref).max() <= float(codes.scales.max()), name
        for _ in range(20):
            sess.run(None, {"ids": ids})
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            sess.run(None, {"ids": ids})
            times.append(time.perf_counter() - t)
        out[name] = 1e3 * float(np.median(times))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/minilm-embeddings"))
    parser.add_argument("--skip-plans", action="store_true", help="only the lookup timing")
    args = parser.parse_args()
    rows = [] if args.skip_plans else [plan_and_apply(t, lin, args.out) for t, lin in PLANS]
    lookups = lookup_ms()
    result = {"target": f"{TARGET}/{PROFILE}", "plans": rows, "lookup_ms": lookups}
    args.out.mkdir(parents=True, exist_ok=True)
    from edgefit_common.fsutil import atomic_write_text

    atomic_write_text(args.out / "result.json", json.dumps(result, indent=2) + "\n")
    print(f"target {result['target']}; every layer pinned")
    print(f"{'tables':<7}{'linear':<7}{'image B':>13}{'planned B':>13}{'tables B':>13}"
          f"{'ONNX B':>13}{'cos torch':>11}{'cos ONNX':>10}  verified")
    for r in rows:
        print(f"{r['tables']:<7}{r['linear']:<7}{r['flash_image_bytes']:>13,}"
              f"{r['planned_flash_bytes']:>13,.0f}{r['table_bytes']:>13,}{r['onnx_bytes']:>13,}"
              f"{r['cosine_torch']:>11.5f}{r['cosine_onnx']:>10.5f}  {r['verified']}")
    print("one 32-row lookup of the int8 word table (this host, onnxruntime, 1 thread, median):")
    for name, ms in lookups.items():
        print(f"  {name}: {ms:.4f} ms")
    print(f"wrote {args.out / 'result.json'}")


if __name__ == "__main__":
    main()
