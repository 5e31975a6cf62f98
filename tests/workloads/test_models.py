"""User models: torch.export .pt2 and module:factory + weights_only state_dict."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cost_models.capture import capture
from edgefit_common.errors import ModelLoadError
from workloads.models import load_model_ref
from workloads.refs import factory_allowed
from workloads.zoo import LeNet5


def test_pt2_archive_is_planned_like_the_module(tmp_path: Path) -> None:
    model = LeNet5().eval()
    path = tmp_path / "lenet.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 1, 28, 28),)), str(path))
    loaded = load_model_ref(str(path))
    assert loaded.kind == "pt2" and loaded.input_shape == (1, 28, 28)
    graph = capture(loaded.module, loaded.input_shape, loaded.name)
    reference = capture(model, (1, 28, 28), "ref")
    assert [(ly.name, ly.params, ly.macs) for ly in graph.layers] == [
        (ly.name, ly.params, ly.macs) for ly in reference.layers]
    x = torch.rand(4, 1, 28, 28)
    assert torch.allclose(loaded.module(x), model(x))


def test_factory_with_state_dict(tmp_path: Path) -> None:
    model = LeNet5()
    weights = tmp_path / "w.pt"
    torch.save(model.state_dict(), weights)
    with factory_allowed("workloads.zoo:LeNet5"):  # as the CLI does for --model
        loaded = load_model_ref("workloads.zoo:LeNet5", str(weights), (1, 28, 28))
    assert torch.equal(loaded.module.conv1.weight, model.conv1.weight)


def test_factory_needs_shape_and_importable(tmp_path: Path) -> None:
    with factory_allowed("workloads.zoo:LeNet5"), pytest.raises(ModelLoadError,
                                                                match="input shape"):
        load_model_ref("workloads.zoo:LeNet5")
    with factory_allowed("nosuchpkg.mod:make"), pytest.raises(ModelLoadError,
                                                              match="cannot import"):
        load_model_ref("nosuchpkg.mod:make", None, (1, 28, 28))


def test_a_factory_is_imported_only_where_the_command_line_allowed_it() -> None:
    with pytest.raises(ModelLoadError, match="refused: a module:factory model is code"):
        load_model_ref("os:abort", None, (1, 28, 28))
    with factory_allowed("workloads.zoo:LeNet5"), pytest.raises(ModelLoadError,
                                                                match="refused"):
        load_model_ref("os:abort", None, (1, 28, 28))  # another factory than the one allowed
    with factory_allowed("workloads.zoo:LeNet5"):
        pass
    with pytest.raises(ModelLoadError, match="refused"):  # nothing stays allowed
        load_model_ref("workloads.zoo:LeNet5", None, (1, 28, 28))


def test_corrupt_pt2_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="bad.pt2: not a readable torch.export archive"):
        load_model_ref(str(bad))


class _TwoHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(16, 10)
        self.face = torch.nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc(x), torch.softmax(self.face(x), dim=1)


def test_a_multi_output_torch_model_takes_the_onnx_route(tmp_path: Path) -> None:
    """Issue #21 item 0: it used to crash in the sensitivity pass (a tuple has no
    log_softmax), then was refused; now it is planned through its ONNX export, where every
    output is judged, and plan.json records the kind it was given as (apply loads it so)."""
    from workloads.models import weights_hash

    path = tmp_path / "heads.pt2"
    torch.export.save(torch.export.export(_TwoHeads().eval(), (torch.zeros(1, 16),)), str(path))
    loaded = load_model_ref(str(path))
    assert loaded.kind == "onnx" and loaded.module is None
    assert loaded.given_kind == "pt2" and loaded.onnx_path is not None
    assert loaded.onnx_path.is_file()
    import onnx

    outputs = [o.name for o in onnx.load(str(loaded.onnx_path)).graph.output]
    assert outputs == ["output_0", "output_1"]
    again = load_model_ref(str(path))  # the same export (cached by the weights' hash)
    assert again.onnx_path == loaded.onnx_path
    from edgefit.api import _loaded

    module = _TwoHeads().eval()
    via_api = _loaded(module, (16,), None)
    assert via_api is not None and via_api.given_kind == "module"
    assert via_api.exported_sha256 == weights_hash(module)


class _DictOut(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.fc(x)}


def test_a_dict_output_is_refused_in_one_line() -> None:
    from edgefit.api import _loaded

    with pytest.raises(ModelLoadError, match="returns a dict of 1 entries.*tuple of tensors"):
        _loaded(_DictOut(), (16,), None)
