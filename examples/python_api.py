"""edgefit from Python: your own network (BatchNorm, a residual add), your own data, a plan for an
Arduino Nano 33 BLE, applied and checked. Run: .venv/bin/python examples/python_api.py

The network is trained for one epoch on the built-in MNIST copy (make data) so that accuracy
means something; swap in your own module and (x, y) arrays, a Dataset or a DataLoader.
"""

from __future__ import annotations

import torch
from torch import nn

import edgefit
from workloads.data import load_dataset


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 14 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn0(self.conv0(x)))
        y = self.pool(y + torch.relu(self.bn1(self.conv1(y))))
        return self.fc(y.reshape(y.shape[0], -1))


def train_one_epoch(net: Net, x: torch.Tensor, y: torch.Tensor) -> Net:
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for i in range(0, len(x), 64):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[i:i + 64]), y[i:i + 64]).backward()
        opt.step()
    return net.eval()


def main() -> None:
    train, test = load_dataset("mnist")
    net = train_one_epoch(Net(), torch.from_numpy(train.x), torch.from_numpy(train.y))
    data, held_out = (train.x, train.y), (test.x, test.y)

    plan = edgefit.plan(net, "arduino-nano-33-ble",
                        limits={"latency": "150ms", "ram": "100KB", "accuracy_drop": "1pp"},
                        data=data)
    print(f"plan: {plan.status}; per layer: {plan.options()}")
    if not plan.feasible:
        return
    result = edgefit.apply(plan, net, data=data, test_data=held_out, out="out/python-api")
    acc = result.report["accuracy"]
    print(f"accuracy on {len(test.y)} held-out images: fp32 {100 * acc['fp32']:.2f} % -> "
          f"compressed {100 * acc['compressed']:.2f} % (drop {acc['drop_pp']:.2f} pp)")
    print(f"flash image {result.flash_image.stat().st_size} B; runnable {result.onnx}; "
          f"all checks passed: {result.ok}")


if __name__ == "__main__":
    main()
