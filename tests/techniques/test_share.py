"""techniques.share: k-means weight sharing, its stored form, the flash image, centroid tuning."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from edgefit_common.errors import PlanError
from techniques import share as S
from techniques.flash_image import (
    FlashLayer,
    header_bytes,
    layer_weight_bytes,
    payload_bytes,
    read_flash_image,
    write_flash_image,
)
from techniques.prune import magnitude_keep_mask


def _weight(shape=(40, 60), sparsity=0.0, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(shape) * 0.1).astype(np.float32)
    return w * magnitude_keep_mask(w, sparsity) if sparsity else w


# --------------------------------------------------------------------------- config, k-means


def test_config_validates():
    cfg = S.WeightSharingConfig(bits=5, entropy="huffman")
    assert cfg.technique == "share" and cfg.positions == "auto"
    assert S.WeightSharingConfig.model_validate_json(cfg.model_dump_json()) == cfg
    for bad in ({"bits": 1}, {"bits": 9}, {"bits": 4, "entropy": "lzma"},
                {"bits": 4, "extra": 1}, {"bits": 4, "index_bits": 1}):
        with pytest.raises(ValidationError):
            S.WeightSharingConfig(**bad)
    with pytest.raises(ValidationError):
        cfg.bits = 3  # type: ignore[misc]  # frozen


def test_kmeans_finds_separated_clusters_and_is_linear_initialised():
    rng = np.random.default_rng(1)
    groups = [rng.normal(m, 0.01, 200) for m in (-1.0, 0.2, 3.0)]
    v = np.concatenate(groups)
    centroids, labels = S.kmeans_1d(v, 3)
    assert np.allclose(centroids, [g.mean() for g in groups])
    assert np.array_equal(labels, np.repeat([0, 1, 2], 200))
    # one iteration from the linear start: the means of the thirds of [min, max]
    c1, _ = S.kmeans_1d(np.array([0.0, 1.0, 2.0, 9.0, 10.0]), 2, iterations=1)
    assert np.allclose(c1, [1.0, 9.5])


def test_share_weights_maps_each_nonzero_to_its_nearest_centroid_and_keeps_zeros():
    w = _weight(sparsity=0.6)
    cfg = S.WeightSharingConfig(bits=3)
    shared, cb = S.share_weights(w, cfg)
    assert np.array_equal(shared == 0, w == 0)  # zeros kept, no nonzero became zero
    assert 1 <= cb.size <= 8 and np.array_equal(cb, np.unique(shared[shared != 0]))
    nearest = cb[np.abs(w[w != 0][:, None] - cb[None, :]).argmin(axis=1)]
    assert np.array_equal(shared[w != 0], nearest)
    err_shared = np.abs(shared - w).mean()
    assert err_shared < np.abs(w).mean() / 4  # the codebook really fits the weights


def test_share_module_and_check():
    torch.manual_seed(0)
    layer = nn.Linear(30, 20)
    before = S.check_shared(layer, S.WeightSharingConfig(bits=4))
    assert not before["ok"] and before["distinct_nonzero"] == 600
    bias = layer.bias.detach().clone()
    S.share_module(layer, S.WeightSharingConfig(bits=4))
    found = S.check_shared(layer, S.WeightSharingConfig(bits=4))
    assert found["ok"] and found["distinct_nonzero"] <= 16 and found["zeros"] == 0
    assert not S.check_shared(layer, S.WeightSharingConfig(bits=2))["ok"]
    assert torch.equal(layer.bias, bias)  # only the weight is shared
    from techniques.registry import REGISTRY

    assert REGISTRY["share"] is S.SHARE and S.SHARE.config is S.WeightSharingConfig


def test_float16_codebook():
    cfg = S.WeightSharingConfig(bits=4, codebook_dtype="float16")
    shared, cb = S.share_weights(_weight(), cfg)
    assert np.array_equal(cb.astype(np.float16).astype(np.float32), cb)
    assert S.check_shared(shared, cfg)["ok"]
    fp32_shared, _ = S.share_weights(_weight(), S.WeightSharingConfig(bits=4))
    assert not S.check_shared(fp32_shared, cfg)["ok"]
    with pytest.raises(PlanError, match="float16"):
        S.encode_shared(fp32_shared, cfg)


# --------------------------------------------------------------------------- stored form


def test_relative_indices_with_fillers():
    mask = np.zeros(20, dtype=bool)
    mask[[2, 4, 12, 19]] = True
    entries = S.relative_indices(mask, 2)  # filler 3 = skip three positions, no weight
    assert entries.tolist() == [2, 1, 3, 3, 1, 3, 3, 0]
    assert S.positions_from_relative(entries, 2, 20).tolist() == [2, 4, 12, 19]
    with pytest.raises(PlanError, match="reach position"):
        S.positions_from_relative(entries, 2, 19)


@pytest.mark.parametrize("entropy", ["none", "huffman", "zstd"])
@pytest.mark.parametrize("positions", ["auto", "bitmask", "relative"])
@pytest.mark.parametrize("sparsity", [0.0, 0.9])
def test_encode_decode_round_trip_and_exact_size(entropy, positions, sparsity):
    cfg = S.WeightSharingConfig(bits=5, entropy=entropy, positions=positions)
    shared, cb = S.share_weights(_weight((30, 50), sparsity, seed=2), cfg)
    meta, blob = S.encode_shared(shared, cfg)
    assert len(blob) == S.shared_weight_bytes(shared, cfg)
    assert json.loads(json.dumps(meta)) == meta  # goes into the JSON header as it is
    weight, idx, codebook = S.decode_shared(meta, blob, shared.shape)
    assert np.array_equal(weight, shared) and np.array_equal(codebook, cb)
    assert np.array_equal(idx == -1, shared == 0)
    assert np.array_equal(codebook[idx[idx >= 0]], shared[shared != 0])
    assert ("positions" in meta) == (sparsity > 0)
    bound = S.share_cost_delta(shared.size, 30, cfg, int((shared != 0).sum()))
    assert len(blob) <= bound["flash_bytes_bound"]


@pytest.mark.parametrize("entropy", ["none", "huffman"])
def test_degenerate_layers_round_trip(entropy):
    cfg = S.WeightSharingConfig(bits=2, entropy=entropy)
    for w in (np.zeros((3, 4), np.float32), np.full((2, 5), 0.25, np.float32)):
        shared, cb = S.share_weights(w, cfg)
        assert np.array_equal(shared, w) and cb.size == int(w.any())
        meta, blob = S.encode_shared(shared, cfg)
        assert np.array_equal(S.decode_shared(meta, blob, w.shape)[0], w)


def test_raw_size_formula_without_entropy():
    cfg = S.WeightSharingConfig(bits=3, positions="bitmask")
    shared, cb = S.share_weights(_weight((16, 25), 0.75, seed=4), cfg)
    n, nnz = shared.size, int((shared != 0).sum())
    want = 4 * cb.size + (n + 7) // 8 + (nnz * 3 + 7) // 8
    assert S.shared_weight_bytes(shared, cfg) == want
    dense = S.WeightSharingConfig(bits=3)
    full, cbf = S.share_weights(_weight((16, 25), seed=4), dense)
    assert S.shared_weight_bytes(full, dense) == 4 * cbf.size + (n * 3 + 7) // 8


def test_entropy_coding_shrinks_a_skewed_layer():
    cfg = {e: S.WeightSharingConfig(bits=5, entropy=e) for e in ("none", "huffman", "zstd")}
    shared, _ = S.share_weights(_weight((100, 200), 0.92, seed=6), cfg["none"])
    sizes = {e: S.shared_weight_bytes(shared, c) for e, c in cfg.items()}
    assert sizes["huffman"] < sizes["none"] and sizes["zstd"] <= sizes["none"]


def test_encode_rejects_an_unshared_weight_and_decode_a_corrupt_blob():
    cfg = S.WeightSharingConfig(bits=4, entropy="huffman")
    with pytest.raises(PlanError, match="fc9.*more than 2\\*\\*bits = 16"):
        S.encode_shared(_weight(), cfg, "fc9")
    shared, _ = S.share_weights(_weight(sparsity=0.5), cfg)
    meta, blob = S.encode_shared(shared, cfg)
    with pytest.raises(PlanError, match="parts say"):
        S.decode_shared(meta, blob[:-1], shared.shape)
    with pytest.raises(PlanError, match="k must be"):
        S.decode_shared({**meta, "k": 17}, blob, shared.shape)
    with pytest.raises(PlanError):
        S.decode_shared({**meta, "nnz": meta["nnz"] - 1}, blob, shared.shape)


def test_cost_delta_keeps_compute_and_bounds_storage():
    cfg = S.WeightSharingConfig(bits=5)
    d = S.share_cost_delta(1000, 10, cfg, nonzeros=100)
    assert (d["weights"], d["macs"], d["macs_dense"], d["outputs"]) == (1.0, 1.0, 1.0, 1.0)
    assert d["flash_bytes_bound"] == 32 * 4 + 125 + (100 * 5 + 7) // 8
    assert S.share_cost_delta(1000, 10, cfg)["flash_bytes_bound"] == 128 + 625
    with pytest.raises(PlanError, match="nonzeros"):
        S.share_cost_delta(1000, 10, cfg, nonzeros=1001)


# --------------------------------------------------------------------------- flash image


def test_flash_image_stores_shared_layers_exactly(tmp_path):
    rng = np.random.default_rng(7)
    cfgs = {"fc1": S.WeightSharingConfig(bits=5, entropy="huffman"),
            "fc2": S.WeightSharingConfig(bits=3, entropy="zstd", codebook_dtype="float16"),
            "fc3": S.WeightSharingConfig(bits=6)}
    weights = {"fc1": _weight((60, 80), 0.9, 8), "fc2": _weight((20, 60), 0.0, 9),
               "fc3": _weight((10, 20), 0.5, 10)}
    shared = {n: S.share_weights(w, cfgs[n])[0] for n, w in weights.items()}
    biases = {n: rng.standard_normal(w.shape[0]).astype(np.float32) for n, w in shared.items()}
    layers = [FlashLayer(n, "fp16" if n == "fc2" else "fp32", shared[n], biases[n],
                         share=cfgs[n]) for n in shared]
    layers.append(FlashLayer("plain", "int8", _weight((4, 5)), None))
    path = tmp_path / "model.flash"
    write_flash_image(path, layers)
    stored = {s.name: s for s in read_flash_image(path)}
    for n, cfg in cfgs.items():
        s = stored[n]
        assert np.array_equal(s.weight, shared[n])  # from the file alone
        assert s.dtype == f"uint{cfg.bits}" and s.bits == cfg.bits and s.scales is None
        assert s.codebook is not None and s.codebook.size <= 2 ** cfg.bits
        assert s.weight_bytes == layer_weight_bytes(shared[n], s.option, False, share=cfg)
        assert S.check_shared(s, cfg)["ok"]
    assert stored["fc1"].storage.startswith("shared-") and stored["fc1"].storage.endswith(
        "+huffman")
    assert stored["fc2"].storage in ("shared", "shared+zstd")  # zstd only where it is smaller
    assert stored["fc3"].storage.startswith("shared-")
    assert np.array_equal(stored["fc2"].bias, biases["fc2"].astype(np.float16).astype(np.float32))
    assert abs(stored["fc3"].zero_fraction - 0.5) < 1e-9
    assert os.path.getsize(path) == header_bytes(path) + payload_bytes(path)
    assert payload_bytes(path) == sum(s.weight_bytes + s.bias_bytes for s in stored.values())


def test_flash_image_rejects_bad_shared_layers(tmp_path):
    cfg = S.WeightSharingConfig(bits=2)
    w, _ = S.share_weights(_weight((4, 6)), cfg)
    with pytest.raises(PlanError, match="option fp32 or fp16"):
        write_flash_image(tmp_path / "a.flash", [FlashLayer("fc", "int8", w, share=cfg)])
    path = tmp_path / "b.flash"
    write_flash_image(path, [FlashLayer("fc", "fp32", w, share=cfg)])
    data = path.read_bytes()
    (hlen,) = struct.unpack_from("<I", data, 8)
    header = json.loads(data[12:12 + hlen])
    header["layers"][0]["share"]["k"] = 99
    hb = json.dumps(header, separators=(",", ":")).encode()
    path.write_bytes(data[:8] + struct.pack("<I", len(hb)) + hb + data[12 + hlen:])
    with pytest.raises(PlanError, match="b.flash.*'fc'.*k must be"):
        read_flash_image(path)


# --------------------------------------------------------------------------- centroid tuning


def _shared_net(sparsity: float = 0.5) -> tuple[nn.Module, S.WeightSharingConfig]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))
    cfg = S.WeightSharingConfig(bits=3)
    with torch.no_grad():
        for i in (0, 2):
            w = net[i].weight
            w.mul_(torch.from_numpy(magnitude_keep_mask(w.numpy(), sparsity)))
            S.share_module(net[i], cfg)
    return net, cfg


def test_keep_shared_moves_centroids_by_the_summed_member_gradient():
    net, cfg = _shared_net()
    tuner = S.keep_shared(net, ["0", "2"], lr=0.05)
    w0 = net[0].weight.detach().clone()
    cb0 = tuner.codebook("0")
    labels = np.searchsorted(cb0, w0.numpy())
    opt = torch.optim.SGD([net[0].bias, net[2].bias], lr=0.1)
    tuner.attach(opt)
    x, y = torch.randn(32, 12), torch.randint(0, 3, (32,))
    opt.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    grad = net[0].weight.grad.numpy().copy()
    opt.step()
    member = w0.numpy() != 0
    want = cb0 - 0.05 * np.bincount(labels[member], weights=grad[member], minlength=cb0.size)
    assert np.allclose(tuner.codebook("0"), want, atol=1e-7)
    assert not np.allclose(tuner.codebook("0"), cb0)
    expected_w = np.where(member, tuner.codebook("0")[np.minimum(labels, cb0.size - 1)], 0)
    assert np.array_equal(net[0].weight.detach().numpy(), expected_w.astype(np.float32))
    assert tuner.holds()


def test_keep_shared_holds_under_adam_with_weight_decay():
    net, cfg = _shared_net()
    zeros = [net[i].weight.detach() == 0 for i in (0, 2)]
    tuner = S.keep_shared(net, ["0", "2"], lr=1e-3, reduce="mean")
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    tuner.attach(opt)
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        x, y = torch.randn(16, 12, generator=gen), torch.randint(0, 3, (16,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    assert tuner.holds()
    for i, z in zip((0, 2), zeros, strict=True):
        assert S.check_shared(net[i], cfg)["ok"]
        assert torch.equal(net[i].weight.detach() == 0, z)  # zeros zero, nothing else zero
    net[0].weight.data[0, 0] += 1.0
    assert not tuner.holds()


def test_keep_shared_rejects_unshared_layers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(40, 20))
    with pytest.raises(PlanError, match="share it first"):
        S.keep_shared(net, ["0"], lr=0.1)
    with pytest.raises(PlanError, match="no module"):
        S.keep_shared(net, ["fc"], lr=0.1)
