"""Calibration sizes through the real CLI (issue #21 item 0: fewer than 640 images crashed with
a traceback): a small data file plans, a too-small one is one line and exit 2 naming the
minimum."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgefit.planning import MIN_CALIBRATION

BIN = Path(sys.executable).parent


def _plan(data: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "plan"), "--target", "jetson-nano", "--max-latency", "30ms",
                           "--model", "lenet5-mnist", "--data", str(data)], cwd=cwd,
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "160"},
                          timeout=900)


def _npz(path: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random((n, 1, 28, 28), np.float32), y=rng.integers(0, 10, n))
    return path


@pytest.mark.parametrize("n, ok", [(10, False), (120, True)])
def test_small_data_plans_or_names_the_minimum(n: int, ok: bool, tmp_path: Path) -> None:
    out = _plan(_npz(tmp_path / "d.npz", n), tmp_path)
    if ok:
        assert out.returncode == 0, out.stderr
        assert (tmp_path / "plan.json").is_file()
    else:
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert f"at least {MIN_CALIBRATION} are needed" in out.stderr
        assert not (tmp_path / "plan.json").exists()
