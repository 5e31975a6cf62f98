"""What a model or weights file holds, read before torch is imported (issue #21 item 3: files
exist *and parse* before the 10-20 s torch takes), so a wrong file is one line in a second.

* ``.onnx``: parsed by onnx's protobuf reader (external data not loaded);
* ``.pt2``: a torch.export archive, a zip with an ``archive_format`` entry;
* a state_dict (``--weights``): torch.save's zip with a ``data.pkl``, whose pickle may only
  name what ``torch.load(weights_only=True)`` allows (tensor rebuilds, storages, dtypes,
  OrderedDict): the globals are read from the opcodes with ``pickletools``, never executed.

Loading still checks everything again (workloads.models); this only answers early.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgefit_common.errors import ModelLoadError
from edgefit_common.fsutil import shown

_TORCH_SAFE = ("_rebuild_tensor", "_rebuild_parameter", "_rebuild_qtensor",
               "_rebuild_sparse", "_rebuild_from_type", "_rebuild_device_tensor")
_SAFE_GLOBALS = {("collections", "OrderedDict"), ("torch", "Size"), ("torch", "device"),
                 ("torch.serialization", "_get_layout"), ("builtins", "set"),
                 ("builtins", "frozenset"), ("torch._utils", "_rebuild_meta_tensor_no_storage")}


def check_onnx_file(path: Path) -> None:
    """ModelLoadError unless ``path`` parses as an ONNX model."""
    import onnx  # no torch

    try:
        onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and others on a bad file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise ModelLoadError(f"{shown(path)}: not an ONNX model ({first})") from None


def check_pt2_file(path: Path) -> None:
    """ModelLoadError unless ``path`` is a zip holding a torch.export archive."""
    names = _zip_names(path, "a torch.export archive (.pt2)")
    if not any(n.endswith("archive_format") for n in names):
        raise ModelLoadError(f"{shown(path)}: a zip, but not a torch.export archive (no "
                             "archive_format entry): save it with torch.export.save")


def check_state_dict_file(path: Path) -> None:
    """ModelLoadError unless ``path`` is torch.save's zip whose pickle names only what a
    weights-only load allows."""
    if zipfile.is_zipfile(path):
        names = _zip_names(path, "a state_dict saved with torch.save")
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pickles:
            raise ModelLoadError(f"{shown(path)}: a zip, but not torch.save's format (no "
                                 "data.pkl)")
        with zipfile.ZipFile(path) as z:
            found = _globals(z.read(pickles[0]), path)
    else:  # torch.save's legacy format: pickles one after another, then the raw storages
        found = _legacy_globals(path.read_bytes())
    for module, name in found:
        if not _safe(module, name):
            raise ModelLoadError(
                f"{shown(path)}: holds a pickle that needs code to load ({module}.{name}): "
                "refused; edgefit loads weights only (a state_dict of tensors: torch.save("
                "model.state_dict(), path))")


def _zip_names(path: Path, what: str) -> list[str]:
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(f"{shown(path)}: not {what} (not a zip archive)")
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelLoadError(f"{shown(path)}: a damaged zip archive ({exc})") from None


def _globals(data: bytes, path: Path) -> list[tuple[str, str]]:
    """The (module, name) pairs the pickle imports."""
    try:
        return _scan(pickletools.genops(data))
    except Exception as exc:  # a truncated or garbled pickle
        raise ModelLoadError(f"{shown(path)}: its pickle is damaged ({exc})") from None


def _scan(ops: Iterator[tuple[Any, Any, Any]]) -> list[tuple[str, str]]:
    """GLOBAL's argument, or STACK_GLOBAL's two strings pushed just before it (what pickle
    writes); a STACK_GLOBAL whose names come from the memo is left to the weights-only load."""
    out: list[tuple[str, str]] = []
    recent: list[str] = []
    for op, arg, _ in ops:
        if op.name == "GLOBAL":
            module, _, name = str(arg).partition(" ")
            out.append((module, name))
        elif op.name == "STACK_GLOBAL":
            if len(recent) >= 2:
                out.append((recent[-2], recent[-1]))
            recent = []
        elif isinstance(arg, str) and "UNICODE" in op.name:
            recent.append(arg)
        elif op.name not in ("MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"):
            recent = []
    return out


def _legacy_globals(data: bytes, pickles: int = 5) -> list[tuple[str, str]]:
    """The globals of the first pickles of a non-zip file (what parses: a file that is no
    pickle at all is left to the load, which says what it is)."""
    stream = io.BytesIO(data)
    out: list[tuple[str, str]] = []
    for _ in range(pickles):
        start = stream.tell()
        try:
            out += _scan(pickletools.genops(stream))
        except Exception:  # noqa: BLE001 - not (or no more) pickle data: stop reading
            break
        if stream.tell() == start:
            break
    return out


def _safe(module: str, name: str) -> bool:
    if (module, name) in _SAFE_GLOBALS:
        return True
    if module == "torch._utils" and name.startswith(_TORCH_SAFE):
        return True
    if module == "torch._tensor" and name.startswith("_rebuild_from_type"):
        return True
    # storages (torch.FloatStorage, torch.storage.UntypedStorage) and dtypes (torch.float32)
    return module in ("torch", "torch.storage") and (
        name.endswith("Storage") or name in _DTYPES)


_DTYPES = frozenset({"float32", "float16", "bfloat16", "float64", "int8", "uint8", "int16",
                     "int32", "int64", "bool", "complex64", "complex128", "qint8", "quint8",
                     "qint32", "float8_e4m3fn", "float8_e5m2"})
