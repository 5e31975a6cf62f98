"""The README's example outputs are blocks scripts/readme_examples.py rewrites from real runs
(`make readme`): every block it knows is in the README, and each starts with its command."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("readme_examples",
                                                  ROOT / "scripts" / "readme_examples.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["readme_examples"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_example_block_is_in_the_readme_and_shows_its_command() -> None:
    mod = _module()
    assert mod.main(["--check"]) == 0
    text = (ROOT / "README.md").read_text()
    for example in mod.EXAMPLES:
        found = mod.block(example.name).search(text)
        assert found is not None
        assert found.group(2).splitlines()[0] == example.shown, example.name
