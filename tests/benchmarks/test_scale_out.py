"""benchmarks/scale_out.py's pure parts: the layer sample and the N-node projection."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import scale_out  # noqa: E402


def test_spread_keeps_the_ends_and_the_order() -> None:
    options = {f"l{i}": {"o": [i]} for i in range(39)}
    picked = scale_out.spread(options, 4)
    assert list(picked) == ["l0", "l13", "l25", "l38"]
    assert scale_out.pass_inputs_cache == options  # the whole pass, for the scaled estimate
    assert list(scale_out.spread(options, 100)) == list(options)
    assert list(scale_out.spread(options, 1)) == ["l0"]


def test_longest_first_places_the_big_tasks_apart() -> None:
    assert scale_out.longest_first([4.0, 3.0, 2.0, 1.0], 2) == 5.0
    assert scale_out.longest_first([4.0, 3.0, 2.0, 1.0], 1) == 10.0
    assert scale_out.longest_first([4.0, 1.0], 8) == 4.0
