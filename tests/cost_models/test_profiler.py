"""cost_models.profile_cache + cost_models.profiler: cache keys and schema, LeNet-5 on this host.

Invariants only (positive, attributed, adds up loosely, cached the second time); the numbers
themselves are printed by ``python tests/cost_models/test_profiler.py`` for the notes.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from cost_models import profiler
from cost_models.analytical import build_cost_table
from cost_models.capture import capture
from cost_models.graph import LayerGraph
from cost_models.profile_cache import (
    SCHEMA_VERSION,
    DeviceFingerprint,
    LayerSignature,
    ProfileCache,
    ProfileCacheError,
)
from device_specs.catalog import load_spec
from workloads.zoo import LeNet5

OPTIONS = ["fp32", "int8"]
INPUT_SHAPE = (1, 28, 28)
FP = DeviceFingerprint("Test CPU", 4, "1.32.0", 1, "all")
SIG = LayerSignature("Conv2d", (1, 1, 28, 28), (1, 6, 28, 28), (6, 1, 5, 5), True,
                     (("kernel_size", "(5, 5)"), ("stride", "(1, 1)"), ("groups", "1")),
                     ("op:MaxPool2d:1176",))


# --------------------------------------------------------------------------------------------
# cache


def test_cache_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "profiles.sqlite"
    with ProfileCache(path) as cache:
        assert len(cache) == 0 and cache.get(FP, SIG, "fp32") is None
        cache.put(FP, SIG, "fp32", 0.0123, 120, 1, extra={"model": "m", "nodes": ["a", "b"]})
        assert len(cache) == 1
    with ProfileCache(path) as again:  # persisted, reopened
        hit = again.get(FP, SIG, "fp32")
        assert hit is not None
        assert (hit.median_ms, hit.runs, hit.format_version, hit.option) == (0.0123, 120, 1,
                                                                             "fp32")
        assert hit.fingerprint == FP and hit.signature_key == SIG.key()
        assert hit.extra == {"model": "m", "nodes": ["a", "b"]}
        assert hit.measured_at.endswith("+00:00")
        again.put(FP, SIG, "fp32", 0.02, 100, 1)  # replaces, never duplicates
        assert len(again) == 1 and again.get(FP, SIG, "fp32").median_ms == 0.02  # type: ignore[union-attr]
        with pytest.raises(ValueError):
            again.put(FP, SIG, "int8", float("nan"), 1, 1)


def test_cache_keys_are_sensitive(tmp_path: Path) -> None:
    with ProfileCache(tmp_path / "p.sqlite") as cache:
        cache.put(FP, SIG, "fp32", 0.01, 100, 1)
        same = LayerSignature(**{**SIG.__dict__})
        assert same.key() == SIG.key() and cache.get(FP, same, "fp32") is not None
        other_shape = LayerSignature(**{**SIG.__dict__, "input_shape": (1, 1, 32, 32)})
        other_weight = LayerSignature(**{**SIG.__dict__, "weight_shape": (8, 1, 5, 5)})
        other_conv = LayerSignature(**{**SIG.__dict__, "conv": (("stride", "(2, 2)"),)})
        other_charged = LayerSignature(**{**SIG.__dict__, "charged": ()})
        for sig in (other_shape, other_weight, other_conv, other_charged):
            assert sig.key() != SIG.key() and cache.get(FP, sig, "fp32") is None
        assert cache.get(FP, SIG, "int8") is None  # another option
        for field, value in (("threads", 2), ("opt_level", "basic"), ("ort_version", "1.31.0"),
                             ("cores", 8), ("cpu_model", "Other CPU")):
            fp = DeviceFingerprint(**{**FP.__dict__, field: value})
            assert fp.key() != FP.key() and cache.get(fp, SIG, "fp32") is None
        assert cache.count(FP) == 1


def test_cache_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    with ProfileCache(path) as cache:
        assert cache.schema_version() == SCHEMA_VERSION
        cache.put(FP, SIG, "fp32", 0.01, 100, 1)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # concurrent readers
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION - 1,))
    db.commit()
    db.close()
    with ProfileCache(path) as cache:  # older layout: dropped, recreated, re-stamped
        assert cache.schema_version() == SCHEMA_VERSION and len(cache) == 0
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(ProfileCacheError, match="newer"):
        ProfileCache(path)
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(ProfileCacheError):
        ProfileCache(tmp_path / "junk.sqlite")


def test_reader_sees_writer(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    with ProfileCache(path) as writer, ProfileCache(path) as reader:
        assert reader.get(FP, SIG, "fp32") is None
        writer.put(FP, SIG, "fp32", 0.01, 100, 1)
        assert reader.get(FP, SIG, "fp32") is not None


# --------------------------------------------------------------------------------------------
# profiler on LeNet-5


@pytest.fixture(scope="module")
def lenet() -> tuple[torch.nn.Module, LayerGraph]:
    torch.manual_seed(0)
    model = LeNet5().eval()
    return model, capture(model, INPUT_SHAPE, "lenet5")


@pytest.fixture(scope="module")
def profiled(lenet: tuple[torch.nn.Module, LayerGraph], tmp_path_factory: pytest.TempPathFactory):
    model, graph = lenet
    cache = ProfileCache(tmp_path_factory.mktemp("profiles") / "profiles.sqlite")
    calib = np.random.default_rng(0).random((32, *INPUT_SHAPE), dtype=np.float32)
    before = profiler.profiled_models
    measured = profiler.profile_host(model, INPUT_SHAPE, graph, OPTIONS, cache, calib,
                                     progress=False)
    assert profiler.profiled_models == before + len(OPTIONS)
    yield measured, cache, calib
    cache.close()


def test_every_layer_and_option_measured(profiled, lenet) -> None:
    measured, _, _ = profiled
    _, graph = lenet
    assert set(measured) == {(layer, o) for layer in graph.layer_names for o in OPTIONS}
    fp = profiler.host_fingerprint()
    for (layer, option), m in measured.items():
        assert (m.layer, m.option) == (layer, option)
        assert m.source == "measured" and not m.cached and m.fingerprint == fp
        assert m.latency_ms > 0 and m.raw_ms is not None and m.raw_ms > 0
        assert m.runs >= 100 and m.nodes and m.model == "lenet5"
    # the layer's own node is among its nodes (possibly under a fused name)
    for layer in graph.layer_names:
        assert any(layer in n or n.endswith("_nchwc") for n in measured[(layer, "fp32")].nodes)
        assert any(layer in n for n in measured[(layer, "int8")].nodes)
    # pooling is charged to the conv that produced its input, as the graph's step owners say
    assert any("max_pool" in n for n in measured[("conv1", "fp32")].nodes)
    # all-int8 runs integer between layers (issue #22): the one QuantizeLinear, on the model
    # input, is charged to the first layer, the last layer's DequantizeLinear to the last
    assert any("Quantize" in n for n in measured[("conv1", "int8")].nodes)
    assert any("Dequantize" in n for n in measured[("fc3", "int8")].nodes)


def test_every_layer_and_the_whole_model_are_timed(profiled, lenet) -> None:
    # how well the layers add up to the whole is a timing ratio: it belongs in
    # benchmarks/cost_model_accuracy.py, not in a test (the machine is noisy)
    measured, _, _ = profiled
    _, graph = lenet
    for option in OPTIONS:
        assert all(measured[(layer, option)].latency_ms > 0 for layer in graph.layer_names)
        e2e = measured[(graph.layer_names[0], option)].model_latency_ms
        assert e2e is not None and e2e > 0


def test_closed_times_add_up_to_each_uniform_run(profiled, lenet) -> None:
    """The planner's per-layer charge: profiled shares scaled to the unprofiled run, so a
    uniform plan's layers + run overhead equal that model's measured end to end."""
    measured, _, _ = profiled
    _, graph = lenet
    for option in OPTIONS:
        rows = [measured[(layer, option)] for layer in graph.layer_names]
        first = rows[0]
        assert first.model_latency_ms is not None and first.run_overhead_ms is not None
        total = sum(m.closed_ms for m in rows) + first.run_overhead_ms
        if first.model_latency_ms > first.run_overhead_ms:
            assert total == pytest.approx(first.model_latency_ms, rel=1e-6)
        ratios = {round(m.closed_ms / m.latency_ms, 9) for m in rows}
        assert len(ratios) == 1  # one scale per model: the profile's proportions are kept
    bare = dataclasses.replace(first, closure_scale=None)
    assert bare.closed_ms == bare.latency_ms


def test_second_call_hits_the_cache(profiled, lenet) -> None:
    measured, cache, calib = profiled
    model, graph = lenet
    rows, runs = len(cache), profiler.profiled_models
    again = profiler.profile_host(model, INPUT_SHAPE, graph, OPTIONS, cache, calib,
                                  progress=False)
    assert profiler.profiled_models == runs and len(cache) == rows == 2 * len(graph.layers)
    assert set(again) == set(measured)
    for key, m in again.items():
        assert m.cached and m.source == "measured"
        assert m.latency_ms == pytest.approx(measured[key].latency_ms)
        assert m.closed_ms == pytest.approx(measured[key].closed_ms)
        assert m.nodes == measured[key].nodes and m.fingerprint == measured[key].fingerprint


def test_signatures_reused_across_models(lenet) -> None:
    model, graph = lenet
    sigs = profiler.layer_signatures(model, INPUT_SHAPE, graph)
    assert sigs["conv1"].input_shape == (1, 1, 28, 28)
    assert sigs["conv1"].output_shape == (1, 6, 28, 28)
    assert sigs["fc1"].weight_shape == (120, 400) and sigs["fc1"].conv == ()
    assert dict(sigs["conv2"].conv)["kernel_size"] == "(5, 5)"
    assert any("MaxPool2d" in c for c in sigs["conv1"].charged)
    torch.manual_seed(1)  # other weights, same architecture: same keys
    other = profiler.layer_signatures(LeNet5(), INPUT_SHAPE, graph)
    assert {k: s.key() for k, s in other.items()} == {k: s.key() for k, s in sigs.items()}


def test_into_cost_table(profiled, lenet) -> None:
    measured, _, _ = profiled
    _, graph = lenet
    table = build_cost_table(graph, load_spec("raspberry-pi-4"))
    over = profiler.latency_overrides(measured)
    assert over[("conv1", "int8")] == measured[("conv1", "int8")].closed_ms
    new = profiler.with_measured_latency(table, measured, run_overhead=True)
    for layer, row in new.options.items():
        for c, old in zip(row, table.options[layer], strict=True):
            if (layer, c.option) in over:
                assert c.latency_ms == over[(layer, c.option)]
                assert c.energy_mj == pytest.approx(table.power_w * c.latency_ms)
            else:
                assert c == old
            assert (c.flash_bytes, c.act_bytes) == (old.flash_bytes, old.act_bytes)
    assert "measured on this host" in new.provenance["latency"]
    assert new.run_overhead_ms == pytest.approx(measured[("fc1", "fp32")].run_overhead_ms)
    assert table.options["conv1"][0].latency_ms != 0  # the original is untouched


def test_step_owner_overrides_use_the_graph() -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3)
            self.pool = torch.nn.MaxPool2d(2)
            self.fc = torch.nn.Linear(2 * 3 * 3, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(self.pool(self.conv(x)), 1))

    graph = capture(Net(), (1, 8, 8), "net")
    em = profiler.em
    onnx_graph = em.Graph([
        em.Node("conv", "Conv", "", ["x", "w"], ["c"], ["", "conv", "conv2d"]),
        em.Node("node_max_pool2d", "MaxPool", "", ["c"], ["p"], ["", "pool", "max_pool2d"]),
        em.Node("node_view", "Reshape", "", ["p", "s"], ["v"], ["", "view"]),
        em.Node("fc", "Gemm", "", ["v", "w2"], ["y"], ["", "fc", "linear"]),
    ], {"w", "s", "w2"}, ["x"], ["y"])
    assert profiler.step_owner_overrides(onnx_graph, graph) == {"node_max_pool2d": "conv"}


if __name__ == "__main__":  # the numbers for the notes: python tests/cost_models/test_profiler.py
    import tempfile

    torch.manual_seed(0)
    net = LeNet5().eval()
    g = capture(net, INPUT_SHAPE, "lenet5")
    data = np.random.default_rng(0).random((64, *INPUT_SHAPE), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp, ProfileCache(Path(tmp) / "p.sqlite") as pc:
        result = profiler.profile_host(net, INPUT_SHAPE, g, ["fp32", "fp16", "int8", "int4"],
                                       pc, data)
    first = next(iter(result.values()))
    print(f"host: {first.fingerprint}")
    opts = ["fp32", "fp16", "int8", "int4"]
    print(f"{'layer':24}" + "".join(f"{o:>12}" for o in opts) + "   (ms per inference)")
    for r in profiler.summarize(result, opts):
        print(f"{r['layer']:24}" + "".join(f"{r[o]:12.4f}" for o in opts))
    print(f"{'raw profiled sum':24}" + "".join(
        f"{sum(result[(lay, o)].raw_ms or 0 for lay in g.layer_names):12.4f}" for o in opts))
    print(f"{'closure':24}" + "".join(f"{result[('fc1', o)].closure:12.3f}" for o in opts))
    print(f"run overhead {first.run_overhead_ms:.4f} ms; profiled runs {first.runs}")
    for o in opts:
        for lay in g.layer_names:
            print(f"  {o} {lay}: {', '.join(result[(lay, o)].nodes)}")


def test_an_onnx_only_model_is_profiled_from_its_file(lenet, tmp_path: Path) -> None:
    """Issue #22 item 2: the .onnx route measures every option on the host too (the prepared
    file is the fp32 model each option is written from), with ONNX signatures of its own."""
    import warnings

    from cost_models.capture_onnx import capture_onnx, prepare_onnx

    model, _ = lenet
    raw, prepared = tmp_path / "raw.onnx", tmp_path / "prepared.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, *INPUT_SHAPE),), str(raw), dynamo=True,
                          external_data=False, verbose=False)
    prepare_onnx(raw, prepared)
    graph = capture_onnx(prepared, "lenet5.onnx")
    cache = ProfileCache(tmp_path / "profiles.sqlite")
    calib = np.random.default_rng(0).random((8, *INPUT_SHAPE), dtype=np.float32)
    measured = profiler.profile_host(prepared, INPUT_SHAPE, graph, ["fp32", "int8"], cache,
                                     calib, progress=False)
    assert set(measured) == {(layer, o) for layer in graph.layer_names for o in ("fp32", "int8")}
    assert all(m.source == "measured" and m.latency_ms > 0 for m in measured.values())
    sigs = profiler.onnx_layer_signatures(prepared, graph)
    conv = next(s for s in sigs.values() if s.op_type == "Conv")
    assert conv.input_shape[0] == 1 and len(conv.weight_shape) == 4 and conv.conv
    assert {s.op_type for s in sigs.values()} <= {"Conv", "Gemm", "MatMul"}
    cache.close()
