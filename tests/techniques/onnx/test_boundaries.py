"""Every precision boundary the solver can choose on the host is one apply can write: for every
ordered pair of the host profile's kernels (their ONNX forms), a Conv -> Linear and a
Linear -> Linear boundary at those forms gives a model onnxruntime loads and runs, close to
torch (issue #21: an int8 layer feeding an int8a16 one once wrote an unloadable model)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cost_models.export import export_fp32
from cost_models.host_probe import host_spec
from cost_models.options import plain_option
from techniques.onnx.writer import ort_session_options, quantize_onnx
from techniques.quantize import onnx_option


class _Three(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc1 = nn.Linear(8 * 8 * 8, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        return self.fc2(torch.relu(self.fc1(y.flatten(1))))


KERNELS = host_spec().profile().kernels
CONFIGS = {onnx_option(plain_option(k, v).to_list()): plain_option(k, v).to_list()
           for k, v in KERNELS.items()}
FORMS = sorted(CONFIGS)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    model = _Three().eval()
    path = tmp_path_factory.mktemp("bounds") / "fp32.onnx"
    export_fp32(model, (1, 8, 8), path)
    x = np.random.default_rng(0).random((64, 1, 8, 8), dtype=np.float32)
    return path, x, model


@pytest.mark.parametrize(("a", "b"), list(itertools.product(FORMS, repeat=2)))
def test_boundary_loads_and_runs(a: str, b: str, exported, tmp_path: Path) -> None:
    import onnxruntime as ort

    from techniques.fakequant import quantized_copy

    fp32, x, model = exported
    out = tmp_path / "q.onnx"
    quantize_onnx(fp32, out, {"conv": a, "fc1": b, "fc2": a}, x)  # conv->fc1: a->b, fc1->fc2: b->a
    sess = ort.InferenceSession(str(out), ort_session_options(),
                                providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x[:1]})[0]
    sim = quantized_copy(model, {"conv": CONFIGS[a], "fc1": CONFIGS[b], "fc2": CONFIGS[a]}, x)
    with torch.no_grad():
        ref = sim(torch.from_numpy(x[:1])).numpy()  # torch's simulation of the same choices
    assert y.shape == ref.shape and np.isfinite(y).all()
    assert float(np.abs(y - ref).max()) <= 0.1 * float(np.abs(ref).max()) + 0.02
