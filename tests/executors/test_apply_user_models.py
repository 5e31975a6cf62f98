"""User models end to end: a torch.export .pt2 and an ONNX-only file, planned and applied."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from device_specs.budget import Budget
from edgefit.applying import apply_plan
from edgefit.planning import make_plan
from techniques.flash_image import read_flash_image
from techniques.onnx.inspect import inspect_onnx
from techniques.quantize import onnx_option
from workloads.train import pretrained


@pytest.fixture(scope="module")
def trained_lenet5() -> torch.nn.Module:
    return pretrained("lenet5-mnist").model


def _export_onnx(model: torch.nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), str(path), dynamo=True,
                          external_data=False, verbose=False)


@pytest.mark.parametrize("kind", ["pt2", "onnx"])
def test_user_model_plan_and_apply(kind: str, trained_lenet5: torch.nn.Module,
                                   tmp_path: Path) -> None:
    path = tmp_path / f"lenet5.{kind}"
    if kind == "pt2":
        program = torch.export.export(trained_lenet5, (torch.zeros(1, 1, 28, 28),))
        torch.export.save(program, str(path))
    else:
        _export_onnx(trained_lenet5, path)
    budget = Budget(target="arduino-nano-33-ble", limits={"latency": "45ms",
                                                          "accuracy_drop": "1pp"},
                    model=str(path), data="mnist")
    plan, _ = make_plan(budget, "test")
    assert plan.feasible and plan.model.kind == kind
    assert len(set(plan.options().values())) >= 2
    if kind == "onnx":  # ONNX-only: the plan keys are the ONNX node names
        assert all(name.startswith(("Conv", "Gemm", "MatMul", "node_")) or "." not in name
                   for name in plan.layers)
    report = apply_plan(plan, tmp_path / "out")
    assert all(c["ok"] for c in report["checks"]), report["checks"]
    assert report["accuracy"]["fp32"] >= 0.97  # the trained weights came through
    storage = inspect_onnx(tmp_path / "out" / "model.onnx")
    stored = {s.name: s for s in read_flash_image(tmp_path / "out" / "model.flash.bin")}
    for name, lp in plan.layers.items():
        assert storage[name].option == onnx_option(lp.techniques)
        assert stored[name].weight_bytes + stored[name].bias_bytes + stored[name].header_bytes == \
            lp.image_bytes


def test_pt2_model_takes_low_rank_options(trained_lenet5: torch.nn.Module,
                                          tmp_path: Path) -> None:
    """An exported program's layers are modules again (remodularize), so they can be swapped
    for their factors: low rank is offered, applied, and the ranks read back from the files."""
    path = tmp_path / "lenet5.pt2"
    program = torch.export.export(trained_lenet5, (torch.zeros(1, 1, 28, 28),))
    torch.export.save(program, str(path))
    budget = Budget(target="raspberry-pi-4", limits={"latency": "1s"}, model=str(path),
                    data="mnist")
    plan, _ = make_plan(budget, "test", pins={"fc1": "fp32+r50", "conv2": "int8+r50"})
    assert plan.options()["fc1"] == "fp32+r50" and plan.options()["conv2"] == "int8+r50"
    report = apply_plan(plan, tmp_path / "out")
    assert all(c["ok"] for c in report["checks"]), report["checks"]
    assert report["accuracy"]["fp32"] >= 0.97
    storage = inspect_onnx(tmp_path / "out" / "model.onnx")
    assert {"fc1.0", "fc1.1", "conv2.0", "conv2.1", "conv2.2"} <= set(storage)
    assert storage["conv2.1"].option == "int8"


class _WithFaceHead(torch.nn.Module):
    """The trained LeNet-5's logits (output 0) and a second, probability head (output 1)."""

    def __init__(self, base: torch.nn.Module) -> None:
        super().__init__()
        self.base = base
        self.face = torch.nn.Linear(784, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.base(x), torch.softmax(self.face(torch.flatten(x, 1)), dim=1)


def test_a_multi_output_onnx_model_is_planned_and_judged_on_every_output(
        trained_lenet5: torch.nn.Module, tmp_path: Path) -> None:
    """Issue #21 item 0: the second head's layer has an accuracy cost in the plan, and apply
    compares every output with the fp32 model's (a check, and a line in the report)."""
    torch.manual_seed(0)
    model = _WithFaceHead(trained_lenet5).eval()
    path = tmp_path / "two_heads.onnx"
    _export_onnx(model, path)
    budget = Budget(target="arduino-nano-33-ble", limits={"latency": "45ms"}, model=str(path),
                    data="mnist")
    plan, _ = make_plan(budget, "test")
    assert plan.feasible
    assert "every output counts" in plan.provenance["accuracy"]
    face = next(name for name, lp in plan.layers.items() if lp.macs == 784 * 2)
    costs = {a.option: a.acc_loss for a in plan.layers[face].alternatives}
    assert costs["fp32"] == 0.0 and max(costs.values()) > 0.0, costs
    report = apply_plan(plan, tmp_path / "out")
    rows = report["accuracy"]["outputs"]
    assert [r["kind"] for r in rows] == ["values", "class"]
    assert all(r.get("top1_agreement", r.get("rel_sq_error", 0.0)) >= 0.0 for r in rows)
    check = next(c for c in report["checks"] if c["check"].startswith("every output"))
    assert check["ok"] == all(r["ok"] for r in rows)


@pytest.mark.parametrize("head", ["logits", "face"])
def test_apply_fails_when_either_output_degrades(head: str, trained_lenet5: torch.nn.Module,
                                                 tmp_path: Path) -> None:
    """The done-when of issue #21 item 0: the second output's head (or the first's) at int2
    weights, everything else fp32; apply's every-output check fails and names that output."""
    torch.manual_seed(0)
    model = _WithFaceHead(trained_lenet5).eval()
    with torch.no_grad():
        model.face.weight.mul_(20.0)  # confident faces: 2-bit weights flip them
    path = tmp_path / "two_heads.onnx"
    _export_onnx(model, path)
    budget = Budget(target="host", limits={"latency": "1s"}, model=str(path), data="mnist")
    plan, _ = make_plan(budget, "test")
    face = next(name for name, lp in plan.layers.items() if lp.macs == 784 * 2)
    degrade = [face] if head == "face" else [n for n in plan.layers if n != face]
    pins = {n: ("int2" if n in degrade else "fp32") for n in plan.layers}
    plan, _ = make_plan(budget, "test", pins=pins)
    report = apply_plan(plan, tmp_path / "out")
    rows = report["accuracy"]["outputs"]
    bad = 0 if head == "logits" else 1  # the graph's output order
    assert not rows[bad]["ok"], rows
    assert rows[1 - bad]["ok"], rows
    check = next(c for c in report["checks"] if c["check"].startswith("every output"))
    assert not check["ok"]


@pytest.mark.parametrize("head", ["logits", "face"])
def test_a_two_output_torch_model_fails_when_either_output_degrades(
        head: str, trained_lenet5: torch.nn.Module, tmp_path: Path) -> None:
    """The same done-when for a torch model (a .pt2 of it): planned through its ONNX export,
    applied from plan.json's reference; the degraded output's check fails, the other's holds."""
    torch.manual_seed(0)
    model = _WithFaceHead(trained_lenet5).eval()
    with torch.no_grad():
        model.face.weight.mul_(20.0)
    path = tmp_path / "two_heads.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 1, 28, 28),)), str(path))
    budget = Budget(target="host", limits={"latency": "1s"}, model=str(path), data="mnist")
    plan, _ = make_plan(budget, "test")
    assert plan.model.kind == "pt2" and plan.model.path == str(path)
    assert "every output counts" in plan.provenance["accuracy"]
    face = next(name for name, lp in plan.layers.items() if lp.macs == 784 * 2)
    degrade = [face] if head == "face" else [n for n in plan.layers if n != face]
    pins = {n: ("int2" if n in degrade else "fp32") for n in plan.layers}
    plan, _ = make_plan(budget, "test", pins=pins)
    report = apply_plan(plan, tmp_path / "out")
    rows = report["accuracy"]["outputs"]
    bad = 0 if head == "logits" else 1
    assert not rows[bad]["ok"], rows
    assert rows[1 - bad]["ok"], rows
    assert not next(c for c in report["checks"] if c["check"].startswith("every output"))["ok"]


def test_a_two_output_module_through_the_python_api(trained_lenet5: torch.nn.Module,
                                                    tmp_path: Path) -> None:
    """edgefit.plan / edgefit.apply with the module object: every output judged."""
    import edgefit

    torch.manual_seed(0)
    model = _WithFaceHead(trained_lenet5).eval()
    plan = edgefit.plan(model, "host", limits={"latency": "1s"}, data="mnist",
                        input_shape=(1, 28, 28))
    assert plan.feasible and plan.model.kind == "module"
    result = edgefit.apply(plan, model, data="mnist", out=tmp_path / "out")
    rows = result.report["accuracy"]["outputs"]
    assert [r["kind"] for r in rows] == ["values", "class"]
