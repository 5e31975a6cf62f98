"""techniques.flash_image: the packed bytes a device stores."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest

from edgefit_common.errors import PlanError
from formats import quant_math as qm
from techniques.flash_image import (
    MAGIC,
    FlashLayer,
    entry_bytes,
    header_bytes,
    image_overhead_bytes,
    layer_file_bytes,
    layer_weight_bytes,
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
    assert header["version"] == 2 and "payload_bytes" not in header
    # the whole file, to the byte, from each layer alone (what the planner predicts)
    assert len(data) == image_overhead_bytes() + sum(layer_file_bytes(ly) for ly in layers)
    for stored in read_flash_image(path):
        entry = next(e for e in header["layers"] if e["name"] == stored.name)
        blobs = {k: entry[k] for k in ("weight", "scales", "bias") if entry[k] is not None}
        assert stored.header_bytes == entry_bytes(stored.name, stored.option, stored.shape,
                                                  blobs)


def test_int4_blob_is_really_packed(image):
    path, layers = image
    data = path.read_bytes()
    (hlen,) = struct.unpack_from("<I", data, 8)
    header = json.loads(data[12 : 12 + hlen])
    entry = next(e for e in header["layers"] if e["name"] == "features.0.conv")
    offset = sum((e[k] or 0) for e in header["layers"][:header["layers"].index(entry)]
                 for k in ("weight", "scales", "bias"))
    nbytes = entry["weight"]
    blob = data[12 + hlen + offset : 12 + hlen + offset + nbytes]
    q, _ = qm.quantize_per_channel(layers[1].weight, 4)
    assert nbytes == (189 + 1) // 2
    assert blob == qm.pack_int4(q)
    assert entry["dtype"] == "int4" and entry["shape"] == [7, 3, 3, 3]
    assert entry["scales"] == 4 * 7 and entry["bias"] == 4 * 7
    fp16 = next(e for e in header["layers"] if e["name"] == "fc1")
    assert fp16["bias"] == 2 * 16 and fp16["scales"] is None
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
    with pytest.raises(PlanError, match="unknown option 'int5'"):
        write_flash_image(path, [FlashLayer("a", "int5", w)])
    with pytest.raises(PlanError, match="sparse storage takes symmetric codes"):
        write_flash_image(path, [FlashLayer("a", "uint4", w, sparse=True)])
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
    from techniques.flash_image import FlashLayer, layer_weight_bytes, read_flash_image

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


@pytest.mark.parametrize("option", [f"{u}int{b}" for b in qm.INT_BITS for u in ("", "u")])
def test_every_integer_form_round_trips_packed(tmp_path, option):
    rng = np.random.default_rng(3)
    w = rng.normal(0.2, 1.0, (5, 3, 3, 3)).astype(np.float32)
    bias = rng.normal(size=5).astype(np.float32)
    path = tmp_path / "x.efi"
    write_flash_image(path, [FlashLayer("conv", option, w, bias)])
    (stored,) = read_flash_image(path)
    bits, symmetric = qm.int_format(option)
    assert stored.bits == bits and stored.dtype == option
    # really packed: bits x count / 8 + scales (+ zero points), nothing in an 8-bit container
    assert stored.weight_bytes == -(-w.size * bits // 8) + 4 * 5 + (0 if symmetric
                                                                      else -(-5 * bits // 8))
    np.testing.assert_array_equal(stored.weight, qm.apply_option(w, option))
    assert stored.distinct_values <= 2**bits - (1 if symmetric else 0)
    assert path.stat().st_size == image_overhead_bytes() + layer_file_bytes(
        FlashLayer("conv", option, w, bias))


@pytest.mark.parametrize("bits", [6, 3, 2])
def test_sparse_sub4_bit_layer(tmp_path, bits):
    w = np.random.default_rng(4).normal(size=(8, 64)).astype(np.float32)
    w[np.abs(w) < 1.0] = 0.0
    path = tmp_path / "x.efi"
    layer = FlashLayer("fc", f"int{bits}", w, sparse=True)
    write_flash_image(path, [layer])
    (stored,) = read_flash_image(path)
    assert stored.storage in ("bitmask", "csr") and stored.zero_fraction >= float(np.mean(w == 0))
    assert stored.weight_bytes == layer_weight_bytes(w, f"int{bits}", True)
    np.testing.assert_array_equal(stored.weight, qm.apply_option(w, f"int{bits}"))
