"""Write the kinds of ONNX file real exporters produce, to try `plan --model X.onnx` on
(docs/onnx-models.md). Weights are random (seed 0): these files show what loads, not accuracy.

    .venv/bin/python examples/onnx_files.py out/onnx_files

batch.onnx   a dynamic batch (x.view(x.size(0), -1) exports Shape -> Gather -> Concat)
hw.onnx      dynamic batch, height and width (needs --input-shape 1xHxW)
op11.onnx    opset 11 (upgraded to 13)
const.onnx   every weight in a Constant node instead of an initializer
fold.onnx    a Reshape whose shape is Shape / ReduceProd / Div arithmetic (constant folding)
two.onnx     two graph inputs (refused, with the workaround)
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import onnx
import torch
from onnx import helper
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv(x)))
        return self.fc(x.view(x.size(0), -1))


class Fold(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2)
        self.fc = nn.Linear(4 * 13 * 13, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.numel() // (x.shape[1] * x.shape[2] * x.shape[3])
        y = torch.relu(self.conv(x))
        return self.fc(y.reshape(n, torch.div(y.numel(), n, rounding_mode="floor")))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + state


def _export(model: nn.Module, args: tuple[torch.Tensor, ...], path: Path, **kw: object) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), args, str(path), dynamo=False, **kw)  # type: ignore[arg-type]


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net, fold, two = Net(), Fold(), TwoInputs()
    x = (torch.rand(1, 1, 28, 28),)
    io = {"input_names": ["x"], "output_names": ["y"]}
    _export(net, x, out / "batch.onnx", dynamic_axes={"x": {0: "batch"}}, **io)
    _export(net, x, out / "hw.onnx", dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"}}, **io)
    _export(net, x, out / "op11.onnx", opset_version=11, **io)
    _export(fold, x, out / "fold.onnx", dynamic_axes={"x": {0: "batch"}},
            do_constant_folding=False, opset_version=17, **io)
    _export(two, (torch.rand(1, 8), torch.rand(1, 4)), out / "two.onnx",
            input_names=["input", "state"], opset_version=17)
    _export(net, x, out / "const.onnx", do_constant_folding=False, opset_version=17, **io)
    model = onnx.load(str(out / "const.onnx"))  # move every initializer into a Constant node
    g = model.graph
    nodes = [*(helper.make_node("Constant", [], [i.name], value=i) for i in g.initializer),
             *g.node]
    del g.initializer[:]
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(model, str(out / "const.onnx"))
    print(f"wrote {', '.join(sorted(p.name for p in out.glob('*.onnx')))} to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/onnx_files"))
