"""cost_models.onnx_techniques: an ONNX-only model's sparse and shared options costed as the
torch route costs them -- stored bytes exactly what the flash image writer writes for the
pruned / shared initializer, accuracy a measured divergence -- one cached row each (a second
plan measures nothing), and plan's note on the techniques the ONNX route offers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cost_models import accuracy_onnx
from cost_models.onnx_techniques import onnx_stored_bytes, onnx_technique_accuracy, route_note
from techniques.flash_image import read_flash_image, write_flash_image
from techniques.onnx.weights import flash_layer, layer_arrays, weights_after
from techniques.prune import UnstructuredPruneConfig
from techniques.quantize import QuantizeConfig
from techniques.share import WeightSharingConfig
from workloads.onnx_model import prepare_onnx


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture
def prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    monkeypatch.setenv("EDGEFIT_CACHE", str(tmp_path / "cache"))  # a row cache of its own
    torch.manual_seed(0)
    src, dst = tmp_path / "net.onnx", tmp_path / "net.prepared.onnx"
    torch.onnx.export(Net().eval(), (torch.zeros(1, 1, 8, 8),), str(src), dynamo=False,
                      input_names=["x"])
    layers = prepare_onnx(src, dst)
    return dst, next(n for n in layers if "Gemm" in n)


OPTIONS = {
    "int8+s75": [UnstructuredPruneConfig(sparsity=0.75),
                 QuantizeConfig(weights="int8", activations="int8")],
    "fp32+k4": [WeightSharingConfig(bits=4, entropy="huffman")],
    "int8": [QuantizeConfig(weights="int8", activations="int8")],  # no array technique
}


def test_stored_bytes_are_the_image_writers(prepared: tuple[Path, str], tmp_path: Path) -> None:
    path, fc = prepared
    got = onnx_stored_bytes(path, {fc: OPTIONS})
    assert set(got) == {(fc, "int8+s75"), (fc, "fp32+k4")}
    weight, bias = layer_arrays(path, [fc])[fc]
    for option in ("int8+s75", "fp32+k4"):
        configs = OPTIONS[option]
        image = tmp_path / f"{option}.bin"
        write_flash_image(image, [flash_layer(fc, configs, weights_after(weight, configs, fc),
                                              bias)])
        stored = read_flash_image(image)[0]
        assert got[fc, option] == stored.weight_bytes + stored.bias_bytes + stored.header_bytes
    assert got[fc, "int8+s75"] < got[fc, "fp32+k4"] < weight.size * 4


def test_accuracy_rows_are_measured_once(prepared: tuple[Path, str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path, fc = prepared
    x = np.random.default_rng(0).random((40, 1, 8, 8), dtype=np.float32)
    first = onnx_technique_accuracy(path, {fc: OPTIONS}, x)
    assert set(first) == {(fc, "int8+s75"), (fc, "fp32+k4")}
    assert all(v > 0.0 for v in first.values())

    def measured_again(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached row was measured again")

    monkeypatch.setattr(accuracy_onnx, "onnx_technique_kl", measured_again)
    assert onnx_technique_accuracy(path, {fc: OPTIONS}, x) == first


def test_route_note_names_what_the_options_hold() -> None:
    from techniques.option import Option

    quant_only = {"a": {"int8": Option("int8", (OPTIONS["int8"][0],))}}
    assert "quantisation" in route_note(quant_only)
    assert "sparsity" not in route_note(quant_only).split(";")[0].split("(")[0]
    both = {"a": {o: Option("x", tuple(c)) for o, c in OPTIONS.items()}}
    note = route_note(both)
    assert "unstructured magnitude sparsity, weight sharing (k-means codebook)" in note
    assert "need the torch model" in note
