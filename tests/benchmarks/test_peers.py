"""The peers benchmark's own logic (its table and parser, verdicts, budgets, the peers' pruning and
the measuring of files) on tiny cases; the benchmark itself is run by hand (minutes)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

BENCH = Path(__file__).parents[2] / "benchmarks" / "peers.py"


@pytest.fixture(scope="module")
def peers() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_peers", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _row(peers: ModuleType, tool: str, delta: float, size: float, lat: float,
         image: float | None = None, recipe: str = "r") -> object:
    return peers.Row("lenet5-mnist", tool, recipe, 0.98 + delta / 100, delta, int(1e5 * size),
                     size, round(size * 0.8, 3), round(20.0 * lat, 1), lat, image,
                     12.0 if image else None, "a note" if image else "")


def test_the_table_reads_back_as_written(peers: ModuleType) -> None:
    rows = [_row(peers, "fp32", 0.0, 1.0, 1.0),
            _row(peers, "ORT int8", -0.25, 0.258, 0.71),
            _row(peers, "edgefit", -0.05, 0.066, 0.48, image=0.048, recipe="E1: --max-flash 8KB")]
    text = "\n".join(["# title", "", *peers.table(rows), "", "after"])
    assert peers.parse_table(text) == rows


def test_a_row_dominates_only_when_no_worse_everywhere(peers: ModuleType) -> None:
    ort = _row(peers, "ORT int8", -0.10, 0.25, 0.70)
    better = _row(peers, "edgefit", -0.05, 0.06, 0.60, image=0.05)
    slower = _row(peers, "edgefit", -0.05, 0.06, 0.75, image=0.05)
    assert peers.dominates(better, ort)
    assert not peers.dominates(slower, ort)
    assert not peers.dominates(ort, ort)  # equal is not better
    lines = peers.verdicts([_row(peers, "fp32", 0, 1, 1), ort, slower])
    assert "not dominated: ORT int8" in lines[0]


def test_item4_verdict_names_the_miss(peers: ModuleType) -> None:
    """LeNet-5's target: <= 0.5 pp, ONNX <= 0.07x, latency <= 1.0x."""
    fast = _row(peers, "edgefit", -0.3, 0.06, 0.9, image=0.05, recipe="E2: x")
    slow = _row(peers, "edgefit", -0.3, 0.06, 1.2, image=0.05, recipe="E3: y")
    assert "**met** by `E2: x`" in peers.verdicts([slow, fast])[0]
    missed = peers.verdicts([slow])[0]
    assert "**missed**" in missed and "latency ratio 1.2 > 1" in missed


def test_the_ladder_halves_nothing_it_was_not_asked_to(peers: ModuleType) -> None:
    settings = peers.Settings()
    rungs = peers.ladder("lenet300-mnist", 60_000, 0.042, settings)
    assert rungs == [  # 1/4 of the fp32 image, then item 4's 40x at its 0.1 pp
        {"flash": "15.0KB", "accuracy_drop": "0.1pp"},
        {"flash": "15.0KB", "latency": "42.0us", "accuracy_drop": "0.1pp"},
        {"flash": "1.5KB", "accuracy_drop": "0.1pp"},
        {"flash": "1.5KB", "latency": "42.0us", "accuracy_drop": "0.1pp"}]
    assert peers.flags(rungs[1], 2) == ("--max-flash 15.0KB --max-latency 42.0us "
                                        "--max-accuracy-drop 0.1pp --finetune 2")
    settings.rungs = (0, 3)
    assert peers.ladder("fashion-cnn", 60_000, 0.042, settings)[1]["flash"] == "3.0KB"


def _tiny() -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 16),
                         nn.ReLU(), nn.Linear(16, 3)).eval()


def test_peers_prune_as_they_say(peers: ModuleType) -> None:
    """Torch-Pruning halves every layer's channels but the classifier's outputs; the global
    magnitude pruning leaves 90 % zeros over the conv/linear weights once fixed."""
    from torch import nn

    model = _tiny()
    pruned = peers.tp_prune(model, (1, 8, 8))
    shapes = [tuple(m.weight.shape) for m in pruned.modules()
              if isinstance(m, nn.Conv2d | nn.Linear)]
    assert shapes == [(4, 1, 3, 3), (8, 4 * 6 * 6), (3, 8)]
    assert model[0].out_channels == 8  # the trained model is untouched
    sparse = peers.fixed(peers.magnitude_prune(model, 0.9))
    weights = [m.weight.detach().numpy() for m in sparse.modules()
               if isinstance(m, nn.Conv2d | nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights)
    assert zeros == pytest.approx(0.9, abs=0.002)
    assert not any(n.endswith("weight_orig") for n, _ in sparse.named_parameters())


def _tiny_onnx(path: Path) -> None:
    """input (N, 16) -> MatMul 16x32 -> Relu -> MatMul 32x3 -> logits, built by hand (an
    exporter would take most of the test's time)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w1, w2 = (rng.standard_normal(s).astype(np.float32) for s in ((16, 32), (32, 3)))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w1"], ["h"]),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["logits"])], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_measuring_a_tiny_model_and_its_int8(peers: ModuleType, tmp_path: Path) -> None:
    """The fp32 file is the reference (ratios 1, Δ 0); onnxruntime's int8 file is smaller and
    its accuracy is what its own session scores on the labels."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    x = rng.random((40, 16), dtype=np.float32)
    fp32 = tmp_path / "fp32.onnx"
    _tiny_onnx(fp32)
    labels = ort.InferenceSession(str(fp32)).run(None, {"input": x})[0].argmax(1)
    labels[:10] = (labels[:10] + 1) % 3  # 30 of 40 right for the fp32 model
    int8 = peers.ort_int8(fp32, tmp_path / "int8.onnx", x[:16])
    rows = peers.measure("tiny", [peers.Candidate("fp32", "ref", fp32),
                                  peers.Candidate("ORT int8", "q", int8)], x, labels, 2, 3)
    ref, q = rows
    assert (ref.accuracy, ref.delta_pp, ref.onnx_ratio, ref.latency_ratio) == (0.75, 0, 1, 1)
    assert q.onnx_ratio < 1 and q.zipped_ratio < q.onnx_ratio
    assert q.delta_pp == pytest.approx(100 * (q.accuracy - 0.75))
    assert q.latency_us > 0


def test_the_plot_and_verdicts_are_redrawn_from_the_table(peers: ModuleType,
                                                          tmp_path: Path) -> None:
    """--plot-only redraws the PNG and the item-4 section from the doc's table alone; the rest
    of the doc stays as the run wrote it."""
    rows = [_row(peers, "fp32", 0.0, 1.0, 1.0), _row(peers, "ORT int8", -0.25, 0.258, 0.71),
            _row(peers, "edgefit", -0.05, 0.066, 0.48, image=0.048, recipe="E1: x")]
    doc = tmp_path / "bench.md"
    before = "\n".join(["# run header", "", *peers.table(rows), "", peers.VERDICTS, "",
                        "- stale line", "", "Left out: nothing.", ""])
    doc.write_text(before)
    assert peers.main(["--plot-only", "--out", str(doc)]) == 0
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    after = doc.read_text()
    assert after.startswith(before.split(peers.VERDICTS)[0])
    assert "stale" not in after and after.endswith("\n\nLeft out: nothing.\n")
    assert "- **lenet5-mnist**: item-4 target" in after
    assert "edgefit row (Δ pp, ONNX ×, latency × all no worse): ORT int8;" in after
