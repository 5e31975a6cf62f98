"""Export a trained network to ONNX, to plan it as a model given only as an ONNX file
(docs/onnx-models.md, "What the ONNX route offers"): edgefit's built-in LeNet-5 (trained on
MNIST on first use, deterministic) stands in for your own trained model.

    .venv/bin/python examples/onnx_sparse_shared.py out/onnx_sparse
    cd out/onnx_sparse
    plan --target host --max-latency 1s --max-flash 20KB --model lenet5.onnx --data mnist \
         --apply --report-dir art

The plan's options include unstructured sparsity (+s50, +s75) and weight sharing (+k4,
+k4+s75) on the layers' initializers beside the quantisation forms; `apply` writes them into
model.onnx and the flash image and checks both files.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

from workloads.train import pretrained


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model = pretrained("lenet5-mnist").model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), str(out / "lenet5.onnx"),
                          dynamo=True, external_data=False, verbose=False)
    print(f"wrote lenet5.onnx to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/onnx_sparse"))
