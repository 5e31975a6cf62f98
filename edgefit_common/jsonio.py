"""Read JSON input files strictly: one line `path: problem` for anything a plan, a measure result
or a calibration file never holds.

Refused: NaN and Infinity (and numbers that overflow to them, such as 1e999), integers longer than
MAX_INT_DIGITS digits (Python's own limit fails with a traceback), duplicate keys in an object (the
last would silently win), nesting deeper than MAX_DEPTH. The file itself is read by
`fsutil.read_text`: a regular file of at most MAX_JSON_BYTES.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from edgefit_common.errors import SpecError
from edgefit_common.fsutil import MAX_JSON_BYTES, read_text, shown
from edgefit_common.yamlio import MAX_DEPTH, MAX_INT_DIGITS


class _Refused(Exception):
    """Raised inside the decoder's hooks; turned into a SpecError naming the file."""


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not a number JSON allows (write a finite number)")


def _int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise _Refused(f"an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"{text[:40]} is out of range (not a finite number)")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            shown_key = key if len(key) <= 60 else key[:57] + "..."
            raise _Refused(f"duplicate key {shown_key!r} in an object")
        out[key] = value
    return out


def _depth(data: Any) -> int:
    """Nesting depth of parsed JSON (without recursion)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1)
                         for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def loads_json(text: str, path: Path | str) -> Any:
    """Parse `text` strictly (see the module), or raise a one-line SpecError naming `path`."""
    name = shown(path)
    try:
        data = json.loads(text, parse_constant=_constant, parse_int=_int, parse_float=_float,
                          object_pairs_hook=_object)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{name}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    except _Refused as exc:
        raise SpecError(f"{name}: refused JSON: {exc}") from None
    except RecursionError:
        raise SpecError(f"{name}: refused JSON: nested deeper than {MAX_DEPTH} levels") from None
    if _depth(data) > MAX_DEPTH:
        raise SpecError(f"{name}: refused JSON: nested deeper than {MAX_DEPTH} levels")
    return data


def read_json(path: Path, what: str = "file", max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The data of JSON file `path`, read by the one safe reader, or a one-line SpecError."""
    return loads_json(read_text(path, what, max_bytes), path)
