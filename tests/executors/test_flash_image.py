"""executors.flash_image: the packed bytes a device stores."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

from edgefit.errors import PlanError
from executors import quant_math as qm
from executors.flash_image import (
    MAGIC,
    FlashLayer,
    header_bytes,
    payload_bytes,
    read_flash_image,
    write_flash_image,
)


def _layers() -> list[FlashLayer]:
    rng = np.random.default_rng(0)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    zero_ch = w(5, 3)
    zero_ch[2] = 0.0
    return [
        FlashLayer("conv1", "int8", w(8, 3, 3, 3), w(8)),
        FlashLayer("features.0.conv", "int4", w(7, 3, 3, 3), w(7)),  # 189 values: odd count
        FlashLayer("fc1", "fp16", w(16, 40), w(16)),
        FlashLayer("fc2", "fp32", w(10, 16), w(10)),
        FlashLayer("nobias", "int4", zero_ch, None),
    ]


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "model.efi"
    layers = _layers()
    write_flash_image(path, layers)
    return path, layers


def test_round_trip_matches_quant_math(image):
    path, layers = image
    stored = read_flash_image(path)
    assert [s.name for s in stored] == [layer.name for layer in layers]
    for src, got in zip(layers, stored, strict=True):
        assert got.option == src.option
        assert got.shape == src.weight.shape
        assert got.weight.dtype == np.float32
        np.testing.assert_array_equal(got.weight, qm.apply_option(src.weight, src.option))
        if src.bias is None:
            assert got.bias is None and got.bias_bytes == 0
        else:
            np.testing.assert_array_equal(got.bias, qm.apply_bias_option(src.bias, src.option))
        assert got.weight_bytes == qm.stored_weight_bytes(
            src.option, src.weight.size, src.weight.shape[0]
        )
        assert got.bias_bytes == qm.stored_bias_bytes(
            src.option, 0 if src.bias is None else src.bias.size
        )
        if src.option in ("int4", "int8"):
            q, scales = qm.quantize_per_channel(src.weight, qm.BITS[src.option])
            np.testing.assert_array_equal(got.q, q)
            np.testing.assert_array_equal(got.scales, scales)
            assert got.distinct_values <= 2 ** qm.BITS[src.option] - 1
        else:
            assert got.q is None and got.scales is None


def test_stored_dtypes_and_bits(image):
    path, _ = image
    by_name = {s.name: s for s in read_flash_image(path)}
    assert {n: (s.dtype, s.bits) for n, s in by_name.items()} == {
        "conv1": ("int8", 8),
        "features.0.conv": ("int4", 4),
        "fc1": ("float16", 16),
        "fc2": ("float32", 32),
        "nobias": ("int4", 4),
    }
    assert by_name["features.0.conv"].distinct_values <= 15
    assert by_name["nobias"].scales[2] == 1.0 and (by_name["nobias"].q[2] == 0).all()


def test_file_size_is_header_plus_predicted_bytes(image):
    path, layers = image
    predicted = sum(
        qm.stored_weight_bytes(ly.option, ly.weight.size, ly.weight.shape[0])
        + qm.stored_bias_bytes(ly.option, 0 if ly.bias is None else ly.bias.size)
        for ly in layers
    )
    data = path.read_bytes()
    (hlen,) = struct.unpack_from("<I", data, 8)
    assert data[:8] == MAGIC == b"EDGEFIT1"
    assert len(data) == 12 + hlen + predicted
    assert payload_bytes(path) == predicted
    assert header_bytes(path) == 12 + hlen
    header = json.loads(data[12 : 12 + hlen])
    assert header["payload_bytes"] == predicted


def test_int4_blob_is_really_packed(image):
    path, layers = image
    data = path.read_bytes()
    (hlen,) = struct.unpack_from("<I", data, 8)
    header = json.loads(data[12 : 12 + hlen])
    entry = next(e for e in header["layers"] if e["name"] == "features.0.conv")
    offset, nbytes = entry["weight"]
    blob = data[12 + hlen + offset : 12 + hlen + offset + nbytes]
    q, _ = qm.quantize_per_channel(layers[1].weight, 4)
    assert nbytes == (189 + 1) // 2
    assert blob == qm.pack_int4(q)
    assert entry["dtype"] == "int4" and entry["shape"] == [7, 3, 3, 3]
    assert entry["scales"][1] == 4 * 7 and entry["bias"][1] == 4 * 7
    fp16 = next(e for e in header["layers"] if e["name"] == "fc1")
    assert fp16["bias"][1] == 2 * 16 and fp16["scales"] is None
    # compact header: ~110 bytes a layer
    assert hlen < 140 * len(header["layers"])


@pytest.mark.parametrize("cut", [0, 5, 11, 40, -1, -100])
def test_truncated_file_raises_naming_it(image, cut):
    path, _ = image
    data = path.read_bytes()
    bad = path.with_name("cut.efi")
    bad.write_bytes(data[:cut])
    with pytest.raises(PlanError, match="truncated") as err:
        read_flash_image(bad)
    assert str(bad) in str(err.value)
    assert "\n" not in str(err.value)


def test_corrupt_files(image, tmp_path):
    path, _ = image
    data = path.read_bytes()
    bad = tmp_path / "bad.efi"
    bad.write_bytes(b"NOTEDGEF" + data[8:])
    with pytest.raises(PlanError, match="bad magic"):
        read_flash_image(bad)
    bad.write_bytes(data + b"\x00")
    with pytest.raises(PlanError, match="trailing"):
        read_flash_image(bad)
    (hlen,) = struct.unpack_from("<I", data, 8)
    bad.write_bytes(data[:12] + b"{" * hlen + data[12 + hlen :])
    with pytest.raises(PlanError, match="corrupt header"):
        read_flash_image(bad)
    with pytest.raises(PlanError, match="cannot read"):
        read_flash_image(tmp_path / "missing.efi")


def test_write_rejects_bad_layers(tmp_path):
    path = tmp_path / "x.efi"
    w = np.ones((2, 3), dtype=np.float32)
    with pytest.raises(PlanError, match="unknown option 'int2'"):
        write_flash_image(path, [FlashLayer("a", "int2", w)])
    with pytest.raises(PlanError, match="bias shape"):
        write_flash_image(path, [FlashLayer("a", "int8", w, np.ones(3, dtype=np.float32))])
    with pytest.raises(PlanError, match="duplicate"):
        write_flash_image(path, [FlashLayer("a", "fp32", w), FlashLayer("a", "fp16", w)])
    with pytest.raises(PlanError, match="float16 range"):
        write_flash_image(path, [FlashLayer("a", "fp16", w * 1e5)])
    assert not path.exists()


def test_atomic_overwrite_keeps_old_file_on_failure(image):
    path, _ = image
    before = path.read_bytes()
    bad = np.full((2, 2), np.nan, dtype=np.float32)
    with pytest.raises(PlanError, match="NaN"):
        write_flash_image(path, [FlashLayer("a", "int8", bad)])
    assert path.read_bytes() == before
    write_flash_image(path, [FlashLayer("a", "fp32", np.ones((1, 1), dtype=np.float32))])
    assert [s.name for s in read_flash_image(path)] == ["a"]
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temp files left behind


def test_empty_image(tmp_path):
    path = tmp_path / "empty.efi"
    write_flash_image(path, [])
    assert read_flash_image(path) == []
    assert payload_bytes(path) == 0


@pytest.mark.parametrize("option", ["fp32", "fp16", "int8", "int4"])
def test_sparse_layers_round_trip_and_size_is_predicted(option: str, tmp_path) -> None:
    from executors.flash_image import FlashLayer, layer_weight_bytes, read_flash_image

    rng = np.random.default_rng(3)
    w = rng.standard_normal((24, 40)).astype(np.float32)
    w[np.abs(w) < np.quantile(np.abs(w), 0.7)] = 0.0  # 70 % pruned
    dense_path, sparse_path = tmp_path / "dense.bin", tmp_path / "sparse.bin"
    write_flash_image(dense_path, [FlashLayer("a", option, w)])
    write_flash_image(sparse_path, [FlashLayer("a", option, w, sparse=True)])
    dense, sparse = read_flash_image(dense_path)[0], read_flash_image(sparse_path)[0]
    assert sparse.storage in ("bitmask", "csr") and dense.storage == "dense"
    assert np.array_equal(sparse.weight, dense.weight)  # same values, other layout
    assert sparse.weight_bytes == layer_weight_bytes(w, option, sparse=True)
    assert sparse.weight_bytes < dense.weight_bytes
    assert sparse.zero_fraction >= 0.7
