"""A .pt2 a user exported from their own network (BatchNorm, PReLU, a residual add, the
``x.reshape(x.shape[0], -1)`` idiom; tests/conftest.py ``user_net``) loads with its modules back:
same outputs at any batch size, BatchNorm folded, every conv and linear a plannable layer
(issue #21)."""

from __future__ import annotations

import torch

from workloads.models import load_model_ref


def test_pt2_with_batchnorm_prelu_and_a_residual_loads(user_net_pt2) -> None:
    net, path = user_net_pt2
    loaded = load_model_ref(str(path))
    module = loaded.torch_module()
    assert loaded.kind == "pt2" and loaded.input_shape == (1, 28, 28)
    kinds = {name: type(m).__name__ for name, m in module.named_modules() if name}
    assert "BatchNorm2d" not in kinds.values(), "BatchNorm folded"
    assert [kinds.get(n) for n in ("conv0", "conv1", "fc", "act")] == [
        "Conv2d", "Conv2d", "Linear", "PReLU"]
    x = torch.rand(37, 1, 28, 28)  # not the example's batch size
    with torch.no_grad():
        assert torch.allclose(module(x), net(x), atol=1e-5)


def test_pt2_user_net_layers_are_captured(user_net_pt2) -> None:
    from cost_models.capture import capture

    _, path = user_net_pt2
    loaded = load_model_ref(str(path))
    graph = capture(loaded.torch_module(), loaded.input_shape, loaded.name)
    assert graph.layer_names == ["conv0", "conv1", "fc"]


def test_a_pt2_op_with_parameters_edgefit_cannot_rebuild_names_the_way_out(tmp_path) -> None:
    """LayerNorm (any op but conv, linear, BatchNorm, PReLU) keeps its parameters outside
    modules in a .pt2: refused naming the op and the routes that work (factory, ONNX)."""
    import pytest
    from torch import nn

    from cost_models.capture import capture
    from edgefit_common.errors import ModelLoadError

    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.LayerNorm(32), nn.Linear(32, 10))
    path = tmp_path / "ln.pt2"
    torch.export.save(torch.export.export(net.eval(), (torch.zeros(2, 1, 28, 28),)), str(path))
    with pytest.raises(ModelLoadError) as info:
        loaded = load_model_ref(str(path))
        capture(loaded.torch_module(), loaded.input_shape, loaded.name)
    text = str(info.value)
    assert "layer_norm" in text and "module:factory" in text and "ONNX" in text
