"""Load YAML into a strict pydantic model, reporting errors as `file:line: field: problem`.

YAML is read safely: no anchors or aliases, no duplicate keys, nesting at most MAX_DEPTH deep,
integers at most MAX_INT_DIGITS long, the file itself through `fsutil.read_text` (size-capped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from yaml.composer import Composer, ComposerError
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.resolver import Resolver

from edgefit_common.errors import SpecError
from edgefit_common.fsutil import MAX_YAML_BYTES, read_text, shown

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


MAX_DEPTH = 64
"""Deepest nesting of mappings and lists a YAML or JSON input may have."""

MAX_INT_DIGITS = 64
"""Longest integer (in digits) a YAML or JSON input may hold (Python's own limit, 4300, fails
with a traceback)."""


class _StrictComposer(Composer):
    """Composes the node tree, refusing what a data file never needs: anchors and aliases (an
    alias bomb expands 1 KB into gigabytes), duplicate mapping keys (the second would silently
    win) and nesting deeper than MAX_DEPTH (a RecursionError)."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event: Any = self.peek_event()  # type: ignore[attr-defined]
        mark = event.start_mark
        if isinstance(event, AliasEvent):
            raise ComposerError(None, None, f"alias *{event.anchor} is not accepted (anchors "
                                "and aliases are refused in edgefit files)", mark)
        if getattr(event, "anchor", None) is not None:
            raise ComposerError(None, None, f"anchor &{event.anchor} is not accepted (anchors "
                                "and aliases are refused in edgefit files)", event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels",
                                    event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], int] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode):
                raise ComposerError(None, None, "a mapping key must be a plain value",
                                    key.start_mark)
            ident = (key.tag, key.value)
            if ident in first:
                raise ComposerError(None, None, f"duplicate key {_short(key.value)!r} (first at "
                                    f"line {first[ident]})", key.start_mark)
            first[ident] = key.start_mark.line + 1
        return node


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _StrictConstructor(SafeConstructor):
    def construct_yaml_int(self, node: ScalarNode) -> int:  # type: ignore[override]
        digits = len(str(node.value).replace("_", "").lstrip("+-"))
        if digits > MAX_INT_DIGITS:
            raise ConstructorError(None, None, f"an integer of {digits} digits (at most "
                                   f"{MAX_INT_DIGITS})", node.start_mark)
        return int(super().construct_yaml_int(node))


_StrictConstructor.add_constructor(  # type: ignore[type-var]
    "tag:yaml.org,2002:int", _StrictConstructor.construct_yaml_int)

if getattr(yaml, "__with_libyaml__", False):  # libyaml scans and parses; Python composes
    from yaml._yaml import CParser

    class _Loader(_StrictComposer, CParser, _StrictConstructor, Resolver):  # type: ignore[misc]
        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            _StrictComposer.__init__(self)
            _StrictConstructor.__init__(self)
            Resolver.__init__(self)
else:  # pragma: no cover - PyYAML built without libyaml
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Loader(Reader, Scanner, Parser, _StrictComposer,  # type: ignore[no-redef]
                  _StrictConstructor, Resolver):
        def __init__(self, stream: str) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            _StrictComposer.__init__(self)
            _StrictConstructor.__init__(self)
            Resolver.__init__(self)


def loads_yaml(text: str, path: Path | str) -> tuple[Any, Node | None]:
    """Parse `text` once (composing the node tree, then constructing from it): the data and the
    root node (for line numbers), or a one-line SpecError `path:line: problem`."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{shown(path)}{where}: malformed YAML: {problem}") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # a constructor's own checks
        raise SpecError(f"{shown(path)}: malformed YAML: {_short(str(exc).splitlines()[0])}") \
            from None
    finally:
        loader.dispose()
    return data, root


def read_yaml(path: Path, what: str = "file") -> tuple[Any, Node | None]:
    """The data of YAML file `path` and its root node, read by the one safe reader (regular
    file, at most MAX_YAML_BYTES, UTF-8), or a one-line SpecError."""
    return loads_yaml(read_text(path, what, MAX_YAML_BYTES), path)


def load_model(path: Path, model: type[M], what: str = "file") -> M:
    data, root = read_yaml(path, what)
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of fields at the top level")
    return validate(data, model, path=path, root=root)


def check_format(data: Any, path: Path | str, fmt: str, version: int, what: str) -> None:
    """A file edgefit wrote (or a user wrote in edgefit's format) names its format and version:
    SpecError naming the file when it is another kind of file (`what`: e.g. "an edgefit-timing
    file") or a version this edgefit does not read."""
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise SpecError(f"{path}: not {what} (format "
                        f"{data.get('format') if isinstance(data, dict) else None!r})")
    if data.get("format_version") != version:
        raise SpecError(f"{path}: format_version {data.get('format_version')!r} is not "
                        f"supported (this edgefit reads {version})")


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
