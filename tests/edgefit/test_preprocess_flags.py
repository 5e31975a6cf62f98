"""--mean / --std: the model's input normalisation from the command line (issue #21 item 2):
parsed into the budget, recorded in plan.json, bad values refused in one line (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgefit.budgeting import resolve_budget
from edgefit_common.errors import SpecError

BIN = Path(sys.executable).parent
LIMITS = {"latency": "60ms", "flash": None, "ram": None, "energy": None, "accuracy_drop": None}


def _resolve(tmp_path: Path, mean: str | None, std: str | None):
    return resolve_budget(tmp_path, budget_file=None, target="arduino-nano-33-ble",
                          profile=None, model=None, weights=None, data=None, margin=None,
                          limits=dict(LIMITS), mean=mean, std=std)


def test_one_value_or_one_per_channel(tmp_path: Path) -> None:
    pre = _resolve(tmp_path, "0.1307", "0.3081").budget.preprocess
    assert pre is not None and pre.mean == [0.1307] and pre.std == [0.3081]
    pre = _resolve(tmp_path, "0.485,0.456,0.406", "0.229, 0.224, 0.225").budget.preprocess
    assert pre is not None and pre.std == [0.229, 0.224, 0.225]
    assert _resolve(tmp_path, None, None).budget.preprocess is None


@pytest.mark.parametrize(("mean", "std", "says"), [
    ("0.5", None, "go together"),
    ("0.5", "0", "must be > 0"),
    ("a", "0.2", "one number, or one per channel"),
    ("0.5,0.5", "0.2", "give the same number"),
    ("nan", "0.2", "finite numbers only"),
])
def test_bad_values_are_one_line(tmp_path: Path, mean: str, std: str | None, says: str) -> None:
    with pytest.raises(SpecError, match=says):
        _resolve(tmp_path, mean, std)


def test_the_real_cli_records_it_and_refuses_bad_values(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "160"}
    bad = subprocess.run([str(BIN / "plan"), "--target", "arduino-nano-33-ble", "--max-latency",
                          "60ms", "--mean", "0.5"], cwd=tmp_path, capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "--mean and --std go together" in bad.stderr and not (tmp_path / "plan.json").exists()
    ok = subprocess.run([str(BIN / "plan"), "--target", "arduino-nano-33-ble", "--max-latency",
                         "60ms", "--mean", "0.5", "--std", "0.25", "--data", "mnist"],
                        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert ok.returncode == 0, ok.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["preprocess"] == {"mean": [0.5], "std": [0.25]}
