"""MiniLM (minilm-l6) with its embedding tables planned: what they cost and save.

For each of fp32 / int8 / int4, every planned layer (the 36 Linear layers and the 3 embedding
tables) is pinned to that option -- and, to show the tables' own effect, only the tables with
the Linear layers left fp32 -- planned for jetson-nano/onnxruntime-cpu (fp32, int8 = w8a8 for
a Linear / int8 codes for a table, int4 weight-only) and applied; the report gives the flash
image's bytes (the tables' share of them), the plan's prediction, the embedding cosine to the
fp32 model on the held-out sentences, two task metrics (apply's linear probe on the held-out
sentences' polarity labels, and the Spearman correlation of word-pair cosines with human
ratings on WordSim-353, the shipped model.onnx against the fp32 encoder) and
whether both artifacts were verified (the host check's timing is not run). A second part
times, on this host, one lookup of 32 rows of the int8 word table written two ways: edgefit's
Gather of the codes + per-row scales, and a DequantizeLinear of the whole table before the
Gather.

    .venv/bin/python benchmarks/minilm_embeddings.py [--out out/minilm-embeddings]
        [--doc docs/bench-minilm.md]

Needs the MiniLM weights and sentences (`make data`). Planning measures the accuracy cost of
each layer's pinned option only (the others cannot be chosen); each plan is then applied.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

TARGET, PROFILE = "jetson-nano", "onnxruntime-cpu"
PLANS = (("fp32", "fp32"), ("int8", "int8"), ("int4", "int4"), ("int8", "fp32"),
         ("int4", "fp32"))  # (tables, Linear layers)
TABLES = ("embeddings.word", "embeddings.position", "embeddings.token_type")


@contextlib.contextmanager
def pinned_estimates(pins: dict[str, str]) -> Iterator[None]:
    """Within the block, planning measures the accuracy cost of each layer's pinned option
    only: every layer is pinned, so the other options can never be chosen, and measuring all
    of MiniLM's (layer, option) pairs takes hours on a shared 2-core machine. Nothing this
    benchmark reports reads those estimates (apply measures the plan)."""
    from edgefit import planning

    full = planning._estimate_accuracy

    def pinned_only(loaded: Any, graph: Any, kernels: Any, options: dict[str, dict[str, Any]],
                    x: np.ndarray) -> Any:
        return full(loaded, graph, kernels, {layer: {n: c for n, c in opts.items()
                                                     if n == pins.get(layer)}
                                             for layer, opts in options.items()}, x)

    planning._estimate_accuracy = pinned_only  # type: ignore[assignment]
    try:
        yield
    finally:
        planning._estimate_accuracy = full  # type: ignore[assignment]


def plan_and_apply(tables: str, linear: str, out: Path) -> dict[str, Any]:
    from cost_models.capture import capture
    from device_specs.budget import Budget
    from edgefit.applying import apply_pending
    from edgefit.planning import make_plan
    from workloads import minilm

    names = capture(minilm.load_minilm(), (minilm.SEQ_LEN,), "minilm-l6").layer_names
    budget = Budget(target=TARGET, profile=PROFILE, model="minilm-l6")
    pins = {name: tables if name in TABLES else linear for name in names}
    with pinned_estimates(pins):
        plan, _ = make_plan(budget, "benchmarks/minilm_embeddings.py", pins=pins)
    # applied without the host check's timing (none of it is reported here): minutes less
    # per plan on a shared machine
    folder = out / f"tables-{tables}-linear-{linear}"
    apply_pending(plan, folder)
    report = json.loads((folder / "report.json").read_text())
    art, acc = report["artifacts"], report["accuracy"]
    return {
        "tables": tables, "linear": linear, "layers": len(names),
        "flash_image_bytes": art["flash_image_bytes"],
        "planned_flash_bytes": art["planned_flash_bytes"],
        "table_bytes": round(sum(plan.layers[t].cost.flash_bytes for t in TABLES)),
        "unplanned_weight_bytes": plan.fixed.get("unplanned_weight_bytes", 0.0),
        "onnx_bytes": art["onnx_bytes"],
        "cosine_torch": acc["simulated"],  # the fake-quant torch model's
        "cosine_onnx": acc["compressed"],  # the shipped model.onnx's, every held-out sentence
        "probe": acc["task"],  # the linear probe, fitted on fp32 embeddings (apply's report)
        "word_similarity": word_similarity(Path(art["onnx"])),
        "verified": report["verification"]["ok"],
        "summary": report["verification"]["summary"],
    }


WORD_SETS = ("wordsim353",)  # SimLex-999 (1028 words) too: ~7 min more per plan here


def word_similarity(onnx_path: Path | None) -> dict[str, float]:
    """Spearman of word-pair cosines vs the human ratings, per set: of the shipped ONNX file
    (each word alone as the input, padded to SEQ_LEN) or, for None, of the fp32 torch encoder.
    Nothing is fitted."""
    from executors.apply import onnx_outputs
    from workloads import minilm
    from workloads.data import load_word_pairs
    from workloads.text_tasks import pair_cosines, spearman, word_list

    out = {}
    for name in WORD_SETS:
        pairs = load_word_pairs(name)
        words = word_list(pairs)
        ids = minilm.SentenceTokenizer().encode(words)
        emb = (minilm.embed(minilm.load_minilm(), ids) if onnx_path is None
               else onnx_outputs(onnx_path, ids))
        out[name] = spearman(pair_cosines(words, emb, pairs), [r for _, _, r in pairs])
    return out


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
    parser.add_argument("--doc", type=Path, default=None,
                        help="also write this markdown document (docs/bench-minilm.md)")
    parser.add_argument("--skip-plans", action="store_true", help="only the lookup timing")
    parser.add_argument("--redoc", action="store_true",
                        help="no new run: write --doc from the results already in --out")
    args = parser.parse_args()
    if args.redoc:
        from edgefit_common.fsutil import atomic_write_text

        atomic_write_text(args.doc, document(rerendered(args.out), args.out, args.doc))
        print(f"wrote {args.doc} from {args.out}")
        return
    rows = [] if args.skip_plans else [plan_and_apply(t, lin, args.out) for t, lin in PLANS]
    lookups = lookup_ms()
    result: dict[str, Any] = {"target": f"{TARGET}/{PROFILE}", "plans": rows,
                              "lookup_ms": lookups,
              "word_similarity_fp32_torch": {} if args.skip_plans else word_similarity(None)}
    args.out.mkdir(parents=True, exist_ok=True)
    from edgefit_common.fsutil import atomic_write_text

    atomic_write_text(args.out / "result.json", json.dumps(result, indent=2) + "\n")
    print(f"target {result['target']}; every layer pinned")
    print(f"{'tables':<7}{'linear':<7}{'image B':>13}{'planned B':>13}{'tables B':>13}"
          f"{'ONNX B':>13}{'cos torch':>11}{'cos ONNX':>10}{'probe %':>9}{'agree %':>9}"
          f"{'WS353':>7}  verified")
    for r in rows:
        probe, ws = r["probe"], r["word_similarity"]
        print(f"{r['tables']:<7}{r['linear']:<7}{r['flash_image_bytes']:>13,}"
              f"{r['planned_flash_bytes']:>13,.0f}{r['table_bytes']:>13,}{r['onnx_bytes']:>13,}"
              f"{r['cosine_torch']:>11.5f}{r['cosine_onnx']:>10.5f}"
              f"{100 * probe['compressed']:>9.2f}{100 * probe['agreement']:>9.2f}"
              f"{ws['wordsim353']:>7.3f}  {r['verified']}")
    if rows:
        print(f"fp32 torch encoder: probe {100 * rows[0]['probe']['fp32']:.2f} %, word "
              "similarity " + ", ".join(f"{k} {v:.3f}" for k, v in
                                         result["word_similarity_fp32_torch"].items()))
    print("one 32-row lookup of the int8 word table (this host, onnxruntime, 1 thread, median):")
    for name, ms in lookups.items():
        print(f"  {name}: {ms:.4f} ms")
    print(f"wrote {args.out / 'result.json'}")
    if args.doc is not None and rows:
        atomic_write_text(args.doc, document(result, args.out, args.doc))
        print(f"wrote {args.doc}")


def rerendered(out: Path) -> dict[str, Any]:
    """A finished run's result.json with each row's two cosines read again from the
    report.json apply wrote for it in the same run (result.json files written before this
    function existed took both cosines from the ONNX model)."""
    result: dict[str, Any] = json.loads((out / "result.json").read_text())
    for row in result["plans"]:
        acc = json.loads((out / f"tables-{row['tables']}-linear-{row['linear']}"
                          / "report.json").read_text())["accuracy"]
        row["cosine_torch"], row["cosine_onnx"] = acc["simulated"], acc["compressed"]
    return result


def document(result: dict[str, Any], out: Path, doc: Path) -> str:
    """docs/bench-minilm.md from one run's result (every number from ``result``)."""
    import datetime

    rows = result["plans"]
    fp32 = rows[0]
    probe0 = fp32["probe"]
    table = [
        "| tables | Linear | flash image B | planned B | tables B | runnable ONNX B | "
        "cosine (torch fake-quant) | cosine (ONNX) | probe accuracy % (ONNX) | "
        "probe agreement % | WordSim-353 Spearman (ONNX) | verified |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ws = r["word_similarity"]
        table.append(
            f"| {r['tables']} | {r['linear']} | {r['flash_image_bytes']:,} | "
            f"{r['planned_flash_bytes']:,.0f} | {r['table_bytes']:,} | {r['onnx_bytes']:,} | "
            f"{r['cosine_torch']:.5f} | {r['cosine_onnx']:.5f} | "
            f"{100 * r['probe']['compressed']:.2f} | {100 * r['probe']['agreement']:.2f} | "
            f"{ws['wordsim353']:.3f} | {'yes' if r['verified'] else 'NO'} |")
    exact = all(r["flash_image_bytes"] == round(r["planned_flash_bytes"]) for r in rows)
    share = 100 * fp32["table_bytes"] / fp32["flash_image_bytes"]
    torch_ws = result["word_similarity_fp32_torch"]
    command = (f".venv/bin/python benchmarks/minilm_embeddings.py --out {out} "
               f"--doc {doc}")
    lookups = "\n".join(f"| {name} | {ms:.4f} |" for name, ms in result["lookup_ms"].items())
    return f"""# MiniLM (minilm-l6): embedding tables planned and stored for real

Produced by one run of

```
{command}
```

({datetime.date.today().isoformat()}, this machine; result in `{out}/result.json`, one
`report.json` per plan). Target: `{TARGET}` / `{PROFILE}` (kernels fp32, int8 = w8a8, int4
weight-only). Every planned layer -- the 3 embedding tables and the {fp32['layers'] - 3} Linear
layers -- is pinned (planning measures the accuracy cost of the pinned options only), then the
plan is applied (`apply_pending`: everything but the host check's timing) and verified from
the files. The
LayerNorms ({fp32['unplanned_weight_bytes']:,.0f} B) are the only weights left unplanned.

{chr(10).join(table)}

* "tables B": the plan's flash cost of the three tables (word 30522 x 384, position 512 x 384,
  token type 2 x 384), header entries included; they are {share:.0f} % of the fp32 image.
* The flash image {"equals the plan's prediction to the byte in every row" if exact else
                   "differs from the plan's prediction in some row (see the table)"}
  (per-layer costs + `image_overhead_bytes`).
* Cosine: mean cosine similarity of the embeddings to the fp32 model's on the
  {probe0['sentences']} held-out sentences (Pang & Lee movie-review sentences; the plans'
  calibration data are the Lee news sentences): of the fake-quant torch model (apply's
  `accuracy.simulated`) and of the shipped model.onnx (`accuracy.compressed`).
* Probe (a task metric, workloads/text_tasks.py, as apply reports it under
  `accuracy.task`): the {probe0['task']}. Fitted on: the **fp32** encoder's embeddings of one of
  {len(probe0['c'])} seeded folds of those sentences (a review's sentences in one fold); scored on:
  the other fold, with the **shipped model.onnx**'s embeddings; then the folds swap, so every
  sentence is scored once by a probe that never saw it. This is what a user who trained a
  classifier on the fp32 encoder gets from the compressed one. The fp32 row is the fp32
  embeddings scored by the same probes ({100 * probe0['fp32']:.2f} %; L2 strength C chosen
  per fold by cross-validation inside the fitting fold: {probe0['c']}). "agreement": the share
  of sentences on which the probe's prediction from the compressed embeddings equals its
  prediction from the fp32 ones. With {probe0['sentences']} sentences one sentence is
  {100 / probe0['sentences']:.2f} pp: differences of a few pp in accuracy are within sampling
  noise; agreement is the finer reading.
* Word similarity (a second task metric, nothing fitted): Spearman's rank correlation between
  the cosine of two words' embeddings (each word alone as the input) and the mean human rating
  of the pair, on WordSim-353 (353 pairs, relatedness; from the PyPI gensim 4.4.0 wheel,
  `make data`). The fp32 torch encoder scores {torch_ws['wordsim353']:.3f}; the table gives the
  shipped model.onnx's. (SimLex-999, fetched beside it, is not run here: its 1028 words through
  each plan's ONNX file would add minutes per plan on this shared machine.)
* Runnable ONNX: an int8 table is an int8 initializer read by `Gather`, its per-row scales by a
  second `Gather`, then `Cast` + `Mul`; an int4 table is stored as each row's codes bit-packed
  (uint8, 192 B a row), unpacked after the `Gather` for the 32 rows looked up only.

One lookup of 32 rows of the int8 word table on this host (onnxruntime CPU, 1 thread, median
of 300 runs; the same run):

| graph form | ms |
|---|---:|
{lookups}

The whole-table form decodes all 11.7 M codes on every inference; edgefit's form decodes the
rows it reads. (Timings on a shared 2-core machine are noisy; the ratio is what to read.)
"""


if __name__ == "__main__":
    main()
