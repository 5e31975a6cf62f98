"""Load YAML into a strict pydantic model, reporting errors as `file:line: field: problem`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from edgefit_common.errors import SpecError
from edgefit_common.fsutil import read_text

M = TypeVar("M", bound=BaseModel)


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Line (1-based) of the YAML node at pydantic location `loc`, or of its deepest parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(key)), None)
            key_node = next((k for k, _ in node.value if k.value == str(key)), None)
            if match is None:
                return line
            line = (key_node or match).start_mark.line + 1
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    text = read_text(path)
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{path}{where}: malformed YAML: {problem}") from None


def load_model(path: Path, model: type[M]) -> M:
    data, root = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of fields at the top level")
    return validate(data, model, path=path, root=root)


def validate(data: dict[str, Any], model: type[M], *, path: Path | str,
             root: yaml.Node | None = None) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError(describe(exc, path, root, model)) from None


def describe(exc: ValidationError, path: Path | str, root: yaml.Node | None = None,
             model: type[BaseModel] | None = None) -> str:
    """One line for the first error (the rest are counted)."""
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
    field = ".".join(str(p) for p in loc) or "(top level)"
    line = _line_of(root, loc) if root is not None else None
    where = f"{path}:{line}" if line else f"{path}"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
        parent = allowed_fields(model, loc[:-1]) if model is not None else []
        if parent:
            msg += f" (allowed: {', '.join(parent)})"
    more = len(exc.errors()) - 1
    suffix = f" (+{more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{where}: {field}: {msg}{suffix}"


def allowed_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model at `loc`, to tell the user what they could have meant."""
    current: Any = model
    skip_key = False  # the previous field was a dict/list: this loc element is a key or index
    for key in loc:
        if skip_key:
            skip_key = False
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(key))
        if field is None:
            return []
        skip_key = _is_container(field.annotation)
        current = _unwrap(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _is_container(annotation: Any) -> bool:
    origin = getattr(annotation, "__origin__", None)
    if origin in (dict, list, tuple):
        return True
    return any(_is_container(a) for a in getattr(annotation, "__args__", ()) or ())


def _unwrap(annotation: Any) -> Any:
    """Model type inside Optional[...], dict[str, ...] or list[...]."""
    for arg in reversed(getattr(annotation, "__args__", ()) or ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        inner = _unwrap(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return annotation
