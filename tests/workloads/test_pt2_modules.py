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


def test_a_pt2_with_parameters_read_by_ops_plans_and_applies(tmp_path) -> None:
    """LayerNorm's weights (and a bare parameter, e.g. a layer scale) stay outside modules in
    a .pt2 (torch.export inlines the op): they are weights, stored as they are in the
    unplanned bytes, and the linears around them are planned and applied."""
    from torch import nn

    from cost_models.capture import capture
    from device_specs.budget import Budget
    from edgefit.applying import apply_plan
    from edgefit.planning import make_plan

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.norm = nn.Linear(784, 32), nn.LayerNorm(32)
            self.gamma = nn.Parameter(torch.full((32,), 0.5))
            self.fc2 = nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(self.norm(self.fc1(torch.flatten(x, 1))) * self.gamma)

    path = tmp_path / "ln.pt2"
    net = Scaled().eval()
    torch.export.save(torch.export.export(net, (torch.zeros(2, 1, 28, 28),)), str(path))
    loaded = load_model_ref(str(path))
    graph = capture(loaded.torch_module(), loaded.input_shape, loaded.name)
    assert graph.layer_names == ["fc1", "fc2"]
    assert graph.meta["unplanned_weight_bytes"] == 3 * 32 * 4  # LayerNorm's two + gamma
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(loaded.torch_module()(x), net(x), atol=1e-5)
    budget = Budget(target="arduino-nano-33-ble", limits={"latency": "2s"}, model=str(path),
                    data="mnist")
    plan, _ = make_plan(budget, "test", pins={"fc1": "int8", "fc2": "int8"})
    report = apply_plan(plan, tmp_path / "out")
    stored = next(c for c in report["checks"] if c["check"].startswith("artifacts stored"))
    assert stored["ok"], stored
