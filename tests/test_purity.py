"""`import planner` (every module of it) and `device_specs` pull in no torch, onnx, onnxruntime,
tensorly or Torch-Pruning: the technique files they read configs from import those lazily.
import-linter checks the direct imports (pyproject.toml); this checks what really loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "onnx", "onnxruntime", "tensorly", "torch_pruning", "executors")


def test_planner_and_device_specs_load_nothing_heavy() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "import planner, device_specs\n"
        "for pkg in (planner, device_specs):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(len(sys.modules), heavy)\n"
        "assert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr + out.stdout
    assert int(out.stdout.split()[0]) > 50  # the walk imported something
