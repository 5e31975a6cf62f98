"""cost_models.micro_latency: the one-layer models are the layer (onnxruntime vs torch), the
variants are apply's (kept shape, then factors), the ratios go into the table by the kernel's
measured latency, and a host measures each variant once (cache)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from cost_models import micro_latency as ml
from cost_models.capture import capture
from cost_models.profile_cache import DeviceFingerprint, LayerSignature, ProfileCache
from cost_models.table import CostTable, OptionCost
from techniques.lowrank import LowRankConfig
from techniques.option import Option

FP = DeviceFingerprint("Test CPU", 2, "1.32.0", 1, "all")


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, {"input": x})[0])


@pytest.mark.parametrize("modules, shape", [
    ((nn.Conv2d(3, 8, 3, stride=2, padding=1),), (1, 3, 9, 9)),
    ((nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),), (1, 8, 6, 6)),
    ((nn.Conv2d(4, 2, 1, bias=False), nn.Conv2d(2, 3, (3, 1), dilation=2),
      nn.Conv2d(3, 6, 1)), (1, 4, 10, 10)),
    ((nn.Linear(12, 5),), (1, 12)),
    ((nn.Linear(12, 3, bias=False), nn.Linear(3, 7)), (1, 4, 12)),  # over tokens: MatMul
])
def test_one_layer_model_computes_what_torch_does(modules, shape) -> None:
    torch.manual_seed(0)
    model = ml.micro_model(modules, shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want = torch.from_numpy(x)
    with torch.no_grad():
        for m in modules:
            want = m(want)
    np.testing.assert_allclose(_run(model, x), want.numpy(), rtol=1e-4, atol=1e-5)
    names = [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert names == [f"m{i}" for i in range(len(modules))]  # the writer's layer contract


def test_variants_are_apply_s_shapes() -> None:
    conv = nn.Conv2d(16, 32, 3, padding=1)
    lowrank = Option("fp32", (LowRankConfig(rank=8, rank_in=4),), ("r25",))
    mods = ml.variant_modules(conv, lowrank, None, "conv")
    assert [tuple(m.weight.shape) for m in mods] == [(4, 16, 1, 1), (8, 4, 3, 3), (32, 8, 1, 1)]
    narrowed = Option("fp32", widths=(("g0", 16),), width_tag="+w16", out_fraction=0.5,
                      weight_fraction=0.25, in_fraction=0.5)
    assert ml.needs_measuring(narrowed) and ml.needs_measuring(lowrank)
    assert not ml.needs_measuring(Option("int8"))
    (cut,) = ml.variant_modules(conv, narrowed, (16, 8, 3, 3), "conv")
    assert tuple(cut.weight.shape) == (16, 8, 3, 3) and conv.weight.shape[0] == 32  # a copy
    assert ml._input_shape((1, 16, 7, 7), cut) == (1, 8, 7, 7)
    assert ml._input_shape((1, 5, 64), nn.Linear(40, 3)) == (1, 5, 40)
    a = ml.Variant("int8", (conv,), (1, 16, 7, 7))
    assert a.key != ml.Variant("int4", (conv,), (1, 16, 7, 7)).key
    assert a.key != ml.Variant("int8", (cut,), (1, 8, 7, 7)).key


def test_an_int8_variant_is_written_and_runs(tmp_path: Path) -> None:
    lin = (nn.Linear(64, 16), nn.Linear(16, 32))
    path = ml.write_variant(ml.Variant("int8", lin, (1, 64)), tmp_path / "v.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    x = np.random.default_rng(1).random((1, 64), np.float32)
    with torch.no_grad():
        want = lin[1](lin[0](torch.from_numpy(x))).numpy()
    got = _run(onnx.load(str(path)), x)
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()


def _table(rows: dict[str, list[OptionCost]], latency: str) -> CostTable:
    return CostTable(device="host", profile="p", options=rows, runtime_flash_bytes=0,
                     runtime_ram_bytes=0, run_overhead_ms=0.0, power_w=2.0,
                     weights_in_ram=True, provenance={"latency": latency})


def test_ratios_replace_the_formula_by_the_kernel_s_measured_latency() -> None:
    rows = {"fc": [OptionCost("int8", 0.010, 100, 0.02, 1.0, 0.0),
                   OptionCost("int8+r25", 0.003, 40, 0.006, 1.0, 0.1, latency_of="int8",
                              latency_ratio=0.3),
                   OptionCost("fp32", 0.008, 400, 0.016, 4.0, 0.0)]}
    table = ml.scaled_pruned_latency(_table(rows, "measured"))
    assert ml.SCALED in table.provenance["latency"]
    ratios = ml.measured_ratios({("fc", "v"): 14.0, ("fc", "d"): 10.0, ("fc", "tiny"): 1e-3},
                                {("fc", "int8+r25"): ("v", "d"), ("fc", "fp32"): ("tiny", "d")})
    assert ratios[("fc", "int8+r25")] == pytest.approx(1.4)
    assert ratios[("fc", "fp32")] == ml.RATIO_BOUNDS[0]  # clipped: noise, not a kernel
    out = ml.with_measured_ratios(table, {("fc", "int8+r25"): 1.4},
                                  {("fc", "int8+r25"): "int8"})
    got = {c.option: c for c in out.options["fc"]}
    assert got["int8+r25"].latency_ms == pytest.approx(0.014)  # slower than dense: kept
    assert got["int8+r25"].energy_mj == pytest.approx(0.028)
    assert got["int8"] == rows["fc"][0] and got["fp32"] == rows["fc"][2]
    text = out.provenance["latency"]
    assert ml.MEASURED in text and ml.SCALED not in text


def test_each_variant_is_measured_once_per_host(tmp_path: Path, monkeypatch) -> None:
    calls: list[list[str]] = []
    real = ml.interleaved_us

    def counting(paths, *args, **kwargs):
        calls.append([p.name for p in paths])
        return real(paths, *args, rounds=2, runs=3)

    monkeypatch.setattr(ml, "interleaved_us", counting)
    lin = nn.Linear(32, 8)
    sig = LayerSignature("Linear", (1, 32), (1, 8), (8, 32), True)
    row = [ml.Variant("fp32", (lin,), (1, 32)),
           ml.Variant("fp32", (nn.Linear(32, 2, bias=False), nn.Linear(2, 8)), (1, 32))]
    with ProfileCache(tmp_path / "p.sqlite") as cache:
        first = ml.measure_variants({"fc": row}, {"fc": sig}, FP, cache)
        again = ml.measure_variants({"fc": row}, {"fc": sig}, FP, cache)
        other = dataclasses.replace(FP, cpu_model="Other CPU")
        ml.measure_variants({"fc": row}, {"fc": sig}, other, cache)
    assert len(calls) == 2  # the second call is all hits; another CPU measures its own
    assert len(calls[0]) == 3 and calls[0][-1] == "empty0.onnx"  # one empty per shape
    assert set(first) == {("fc", v.key) for v in row} and again == pytest.approx(first)
    assert all(v >= ml.NET_FLOOR_US for v in first.values())


def test_lenet_variants_cover_every_low_rank_option() -> None:
    from cost_models.profiler import layer_signatures
    from device_specs.catalog import load_spec
    from edgefit.planning import layer_options
    from workloads.zoo import LeNet5

    model = LeNet5().eval()
    graph = capture(model, (1, 28, 28), "lenet5")
    kernels = load_spec("jetson-nano").profile(None).kernels
    offered = layer_options(graph, dict(kernels), model)
    sigs = layer_signatures(model, (1, 28, 28), graph)
    variants, pairs = ml.variants_of(model, graph, offered, sigs)
    lowrank = {(ly, name) for ly, row in offered.items() for name, o in row.items()
               if o.has("lowrank")}
    assert lowrank and set(pairs) == lowrank
    for (layer, _), (var, dense) in pairs.items():
        keys = {v.key for v in variants[layer]}
        assert var in keys and dense in keys and var != dense
