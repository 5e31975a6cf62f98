"""YAML input is parsed once, safely: no anchors/aliases, no duplicate keys, bounded nesting and
integers; every refusal is one line `path:line: problem`, and it comes quickly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from edgefit_common.errors import SpecError
from edgefit_common.yamlio import MAX_DEPTH, load_model, loads_yaml, read_yaml


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str
    limits: dict[str, str] = {}
    notes: str | None = None


def alias_bomb() -> str:
    """The billion laughs in under 1 KB: nine levels, each a list of nine aliases of the last."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},"
                     f"*{prev},*{prev},*{prev}]")
    return "\n".join(lines) + "\n"


def refused(text: str, tmp_path: Path) -> str:
    path = tmp_path / "budget.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        read_yaml(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    return message


def test_plain_yaml_loads_with_its_node_tree(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text("target: esp32-s3\nlimits:\n  latency: 30ms\n")
    data, root = read_yaml(path)
    assert data == {"target": "esp32-s3", "limits": {"latency": "30ms"}}
    assert isinstance(root, yaml.MappingNode) and root.value[1][0].start_mark.line == 1


def test_an_alias_bomb_is_refused_at_its_first_anchor(tmp_path: Path) -> None:
    bomb = alias_bomb()
    assert len(bomb) < 1024  # 9**9 = 387 million strings once expanded
    assert refused(bomb, tmp_path).endswith(
        ":1: malformed YAML: anchor &a is not accepted (anchors and aliases are refused in "
        "edgefit files)")


def test_a_bomb_in_a_limit_is_refused(tmp_path: Path) -> None:
    text = alias_bomb() + "target: esp32-s3\nlimits:\n  latency: *i\n"
    assert "anchor &a" in refused(text, tmp_path)


def test_a_lone_alias_is_refused(tmp_path: Path) -> None:
    assert "alias *x is not accepted" in refused("a: *x\n", tmp_path)


def test_duplicate_keys_name_both_lines(tmp_path: Path) -> None:
    text = "target: esp32-s3\nlimits:\n  latency: 30ms\ntarget: jetson-nano\n"
    assert refused(text, tmp_path).endswith(":4: malformed YAML: duplicate key 'target' (first "
                                            "at line 1)")
    nested = "limits:\n  latency: 30ms\n  latency: 40ms\n"
    assert ":3:" in refused(nested, tmp_path) and "'latency'" in refused(nested, tmp_path)


@pytest.mark.parametrize("text", ["[" * 100_000, "a:\n" + "".join(
    f"{' ' * (2 * i)}- k{i}:\n" for i in range(1, 200)) + "    x\n"], ids=["flow", "block"])
def test_deep_nesting_is_refused(text: str, tmp_path: Path) -> None:
    message = refused(text, tmp_path)
    assert "nested deeper than" in message or "nesting depth" in message


def test_nesting_up_to_the_cap_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("[" * MAX_DEPTH + "]" * MAX_DEPTH)
    assert read_yaml(path)[0] is not None
    path.write_text("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(SpecError, match=f"nested deeper than {MAX_DEPTH} levels"):
        read_yaml(path)


def test_a_5000_digit_integer(tmp_path: Path) -> None:
    assert refused("limits:\n  latency: " + "9" * 5000 + "\n", tmp_path).endswith(
        ":2: malformed YAML: an integer of 5000 digits (at most 64)")


def test_python_tags_are_not_constructed(tmp_path: Path) -> None:
    assert "could not determine a constructor" in refused(
        "model: !!python/object/apply:os.system [echo pwned]\n", tmp_path)


def test_the_file_is_parsed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = loads_yaml.__globals__["_Loader"].get_single_node

    def counting(self: object) -> object:
        calls.append(1)
        return original(self)

    monkeypatch.setattr(loads_yaml.__globals__["_Loader"], "get_single_node", counting)
    for name in ("safe_load", "compose", "load"):
        monkeypatch.setattr(yaml, name, lambda *a, **k: pytest.fail("parsed a second time"))
    path = tmp_path / "b.yaml"
    path.write_text("target: esp32-s3\nlimits:\n  latency: 30ms\n")
    assert load_model(path, Budget).limits == {"latency": "30ms"}
    assert calls == [1]


def test_a_fifo_budget_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.yaml")
    with pytest.raises(SpecError, match="named pipe"):
        load_model(tmp_path / "fifo.yaml", Budget, "budget file")


def test_a_big_budget_is_refused_by_size(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("notes: " + "x" * (2 << 20) + "\n")
    with pytest.raises(SpecError, match="over the 1 MiB limit for a budget file"):
        load_model(path, Budget, "budget file")
