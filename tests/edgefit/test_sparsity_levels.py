"""--sparsity-levels (issue #22 item 3): the planner offers the unstructured sparsity levels a
user asks for (Deep Compression's 90-95 %), and bad levels are one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from cost_models.capture import capture
from device_specs.budget import Budget
from device_specs.catalog import load_spec
from edgefit.cli import _plan_app, _run
from edgefit.planning import layer_options
from workloads.zoo import LeNet5

BASE = ["--target", "arduino-nano-33-ble", "--max-flash", "1MB"]


@pytest.mark.parametrize("text, needle", [
    ("100", "strictly between 0 and 100"), ("0", "strictly between 0 and 100"),
    ("ninety", "give percentages separated by commas"), ("50,,75", "give percentages"),
    ("10,20,30,40,50,60,70", "1 to 6 levels")])
def test_bad_levels_exit_2_with_one_line(text: str, needle: str, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code = _run(_plan_app, [*BASE, "--sparsity-levels", text])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0], lines
    assert not (tmp_path / "plan.json").exists()


def test_budget_levels_are_sorted_and_unique() -> None:
    b = Budget(target="arduino-nano-33-ble", limits={"flash": "1MB"},
               sparsity_levels=[95, 90, 90.0, 50])
    assert b.sparsity_levels == [50, 90, 95]
    with pytest.raises(ValidationError):
        Budget(target="arduino-nano-33-ble", limits={"flash": "1MB"}, sparsity_levels=[])


def test_the_levels_asked_for_are_the_levels_offered() -> None:
    torch.manual_seed(0)
    model = LeNet5().eval()
    graph = capture(model, (1, 28, 28), "lenet5")
    spec = load_spec("arduino-nano-33-ble")
    kernels = spec.profile(spec.default_profile).kernels
    default = layer_options(graph, kernels, model)
    deep = layer_options(graph, kernels, model, sparsity_levels=[90, 95])

    def sparse_tags(options: dict[str, dict[str, object]]) -> set[str]:
        return {part for row in options.values() for name in row
                for part in name.split("+") if part.startswith("s") and part[1:].isdigit()}

    assert sparse_tags(default) == {"s50", "s75"}
    assert sparse_tags(deep) == {"s90", "s95"}  # pruning alone and pruning before sharing
    assert {"fp32+k4", "fp32+k4+s95"} <= set(deep["fc1"])
    fc1 = deep["fc1"]
    (opt,) = [o for n, o in fc1.items() if n == "int8+s95"]
    cfg = next(c for c in opt.to_list() if getattr(c, "technique", "") == "prune_unstructured")
    assert cfg.sparsity == pytest.approx(0.95)
