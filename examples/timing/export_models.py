"""Write the MLPerf Tiny reference models (kws, ic, vww) as fp32 ONNX files beside the example
timing files, which name them: ``.venv/bin/python examples/timing/export_models.py [DIR]``.

Weights are random (workloads/mlperf_tiny.py): calibrate needs only each layer's geometry
(MACs, tensor sizes), which the published MAC counts check.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cost_models.export import export_fp32
from workloads.mlperf_tiny import TINY_MODELS, tiny_model


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for key in ("kws", "ic", "vww"):
        path = out_dir / f"{key}.onnx"
        export_fp32(tiny_model(key), TINY_MODELS[key].input_shape, path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)
