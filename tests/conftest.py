"""Shared fixtures: the built-in LeNet-5, trained once (cached under EDGEFIT_CACHE), plans, and a
user's own network (BatchNorm, PReLU, a residual add) as a module and as a .pt2."""

from __future__ import annotations

import os

import pytest

# apply writes model.tflite for TFLite / TFLM targets through the tool virtualenv (~30 s a plan);
# the suite's many applies skip it, tests/executors/test_tflite.py turns it back on
os.environ.setdefault("EDGEFIT_TFLITE", "off")

from device_specs.budget import Budget


@pytest.fixture(scope="session")
def image_target(tmp_path_factory) -> str:
    """The Arduino Nano 33 BLE's device file without its `tflite` fields: the same board and
    rates, deployed as edgefit's packed image (model.flash.bin), where sparse and shared
    weights save flash (a .tflite stores them dense)."""
    import yaml

    from device_specs.catalog import CATALOG_DIR

    data = yaml.safe_load((CATALOG_DIR / "arduino-nano-33-ble.yaml").read_text())
    data["name"] = "arduino-nano-33-ble-image"
    for profile in data["profiles"].values():
        profile.pop("tflite", None)
    path = tmp_path_factory.mktemp("image-target") / "arduino-nano-33-ble-image.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(path)


@pytest.fixture(scope="session")
def lenet5_plan_factory():
    """Make a plan for the trained LeNet-5 under the given budget fields."""
    from edgefit.planning import make_plan

    def make(target: str = "arduino-nano-33-ble", **limits: str):
        budget = Budget(target=target, limits=limits, model="lenet5-mnist")
        return make_plan(budget, "test")

    return make


def _user_net():
    """A network nobody here wrote as a zoo model: conv -> BatchNorm -> PReLU, a residual
    conv -> BatchNorm -> ReLU added back, max-pool, ``x.reshape(x.shape[0], -1)``, Linear;
    BatchNorm statistics from a few training-mode passes, then eval."""
    import torch
    from torch import nn

    class UserNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv0 = nn.Conv2d(1, 8, 3, padding=1)
            self.bn0 = nn.BatchNorm2d(8)
            self.act = nn.PReLU(8)
            self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.pool = nn.MaxPool2d(2)
            self.fc = nn.Linear(8 * 14 * 14, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.act(self.bn0(self.conv0(x)))
            y = self.pool(y + torch.relu(self.bn1(self.conv1(y))))
            return self.fc(y.reshape(y.shape[0], -1))

    torch.manual_seed(0)
    net = UserNet().train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(16, 1, 28, 28))
    return net.eval()


@pytest.fixture(scope="session")
def user_net():
    return _user_net()


@pytest.fixture(scope="session")
def user_net_pt2(user_net, tmp_path_factory):
    """(the module, its torch.export archive exported at batch 1)."""
    import torch

    path = tmp_path_factory.mktemp("user-pt2") / "usernet.pt2"
    torch.export.save(torch.export.export(user_net, (torch.zeros(1, 1, 28, 28),)), str(path))
    return user_net, path


@pytest.fixture(scope="session")
def ray_cluster():
    """A two-node Ray cluster on 127.0.0.1 only (docs/scale-out.md): a head and one more node,
    one CPU each, every server bound to loopback; started when a test first asks for it and
    stopped when the session ends, with no process of it left behind. Yields the address."""
    import psutil

    from edgefit_common.ray_executor import LOOPBACK, LOOPBACK_ENV

    os.environ.update(LOOPBACK_ENV)  # before ray is imported: the node address stays 127.0.0.1
    from ray.cluster_utils import Cluster

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": LOOPBACK, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
        cluster.wait_for_nodes(timeout=120)  # CI shares 2 cores: give a slow start time
        yield cluster.address
    finally:
        import ray

        # listed while the cluster runs: a worker orphaned by its raylet is no child of ours
        started = [p for p in psutil.Process().children(recursive=True)
                   if p.pid not in before and _is_ray(p)]
        ray.shutdown()
        cluster.shutdown()
        _, alive = psutil.wait_procs(started, timeout=30)
        assert not alive, f"Ray processes left running: {[p.name() for p in alive]}"


def _is_ray(process) -> bool:
    """A process of Ray's (its daemons, workers and agents), not another test's child."""
    import psutil

    try:
        name, command = process.name(), " ".join(process.cmdline())
        return (name in ("raylet", "gcs_server") or name.startswith("ray::")
                or "/ray/" in command or "ray::" in command)
    except psutil.Error:  # already gone
        return False
