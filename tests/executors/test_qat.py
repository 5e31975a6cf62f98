"""Quantisation-aware fine-tuning: the STE forward is quant_math's fake-quant bit for bit, the
gradient passes straight through, QAT beats PTQ at int4, zeros and codebooks survive, and a
quantisation-only plan with --qat is fine-tuned and exported faithfully."""

from __future__ import annotations

import copy
import dataclasses
import inspect
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from edgefit_common.errors import PlanError
from executors.distill import distill, output_kl
from executors.qat import (
    QATView,
    _ActivationSTE,
    fake_quant_weight,
    quantization_aware,
    quantized_layers,
    weight_format,
)
from formats import quant_math
from techniques.distill import DistillConfig
from techniques.fakequant import quantized_copy
from techniques.quantize import ActivationFakeQuant, QuantizeConfig
from workloads.data import Dataset, load_dataset
from workloads.train import pretrained

LAYERS = ("conv1", "conv2", "fc1", "fc2", "fc3")
INT4 = QuantizeConfig(weights="int4", activations="fp32")
INT8 = QuantizeConfig(weights="int8", activations="int8")


def _weights(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random weights with a zero channel, a tiny (denormal-scale) channel and exact ties."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32)
    w[1] = 0.0
    w[2] *= np.float32(1e-39)
    w[3].reshape(-1)[:4] = [1.0, -0.5, 0.25, -1.0]  # max 1: x.5 ties at several bit-widths
    return w


def _bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool((a.view(np.uint32) == b.view(np.uint32)).all())


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8, 16])
@pytest.mark.parametrize("shape", [(6, 3, 5, 5), (10, 84)])
def test_forward_equals_quant_math_bit_for_bit(bits: int, shape: tuple[int, ...]) -> None:
    w = _weights(shape, seed=bits)
    got = fake_quant_weight(torch.from_numpy(w), bits).numpy()
    flat = w.reshape(shape[0], -1)
    want = (quant_math.to_fp16_and_back(w) if bits == 16
            else quant_math.fake_quantize(flat, bits).reshape(shape))
    assert _bits_equal(got, want)


@pytest.mark.skipif("symmetric" not in inspect.signature(quant_math.fake_quantize).parameters,
                    reason="quant_math has no asymmetric fake quantisation yet")
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_asymmetric_forward_equals_quant_math(bits: int) -> None:
    w = _weights((6, 3, 5, 5), seed=bits)
    got = fake_quant_weight(torch.from_numpy(w), bits, symmetric=False).numpy()
    want = quant_math.fake_quantize(w.reshape(6, -1), bits, symmetric=False).reshape(w.shape)
    assert _bits_equal(got, want)


def test_weight_format_mapping() -> None:
    assert weight_format(INT4) == (4, True)
    assert weight_format(QuantizeConfig(weights="fp16", activations="fp16")) == (16, True)
    assert weight_format(QuantizeConfig(weights="fp32", activations="fp32")) == (32, True)
    assert weight_format(INT4.model_copy(update={"symmetric": False})) == (4, False)
    assert weight_format(QuantizeConfig(weights="int3", activations="fp32",
                                        symmetric=False)) == (3, False)
    assert weight_format(QuantizeConfig(weights="int6", activations="fp32")) == (6, True)
    with pytest.raises(PlanError, match="int9"):
        weight_format(QuantizeConfig.model_construct(weights="int9", symmetric=True))


def _q(weights: str, activations: str = "fp32", symmetric: bool = True) -> QuantizeConfig:
    return QuantizeConfig.model_validate({"weights": weights, "activations": activations,
                                          "symmetric": symmetric})


MIXES = {
    "int8a8+int4": {"conv1": INT8, "conv2": INT4, "fc1": INT8, "fc3": INT4},
    "int6/int3/int2": {"conv1": _q("int6"), "conv2": _q("int3"), "fc1": _q("int2"),
                       "fc2": _q("int8", "int16")},
    "uint4/uint2+fp16": {"conv2": _q("int4", symmetric=False), "fc1": _q("int2", symmetric=False),
                         "fc2": _q("fp16", "fp16")},
}


@pytest.mark.parametrize("mix", list(MIXES))
def test_view_equals_the_pipelines_quantised_model(mix: str) -> None:
    """The QAT forward is exactly the fake-quant model apply evaluates (same calibration)."""
    from workloads.zoo import LeNet5

    torch.manual_seed(0)
    model = LeNet5().eval()
    plan = MIXES[mix]
    x = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    ref = quantized_copy(model, {n: [c] for n, c in plan.items()}, x[:32])
    with quantization_aware(model, plan, x[:32]) as view, torch.no_grad():
        got = view(torch.from_numpy(x)).numpy()
        assert set(view.layers) == set(plan)
    with torch.no_grad():
        want = ref(torch.from_numpy(x)).numpy()
        plain = model(torch.from_numpy(x)).numpy()
    assert np.array_equal(got, want)
    assert not np.array_equal(got, plain)  # the model itself is untouched ...
    with torch.no_grad():
        assert np.array_equal(model(torch.from_numpy(x)).numpy(), plain)  # ... hooks gone


def test_recalibration_follows_the_trained_weights() -> None:
    """After the weights move, recalibrate() gives the scales (and the forward) that a fresh
    calibration of the moved model gives: what the export will calibrate."""
    from workloads.zoo import LeNet5

    torch.manual_seed(0)
    model = LeNet5().eval()
    plan = MIXES["int8a8+int4"]
    x = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
    with quantization_aware(model, plan, x[:32]) as view:
        before = view.activation_scales()
        with torch.no_grad():
            model.conv1.weight.mul_(3.0)  # an epoch that grew the first layer's outputs
        assert view.activation_scales() == before  # stale until recalibrated
        view.recalibrate(x[:32])
        after = view.activation_scales()
        with torch.no_grad():
            got = view(torch.from_numpy(x)).numpy()
    assert after[0] > before[0]
    with quantization_aware(model, plan, x[:32]) as fresh, torch.no_grad():
        assert fresh.activation_scales() == after
        assert np.array_equal(fresh(torch.from_numpy(x)).numpy(), got)


def test_factorised_layer_quantises_every_factor() -> None:
    from techniques.fakequant import pruned_copy
    from techniques.lowrank import LowRankConfig
    from workloads.zoo import LeNet5

    torch.manual_seed(0)
    techniques: dict[str, list[Any]] = {"fc1": [LowRankConfig(rank=8), INT8], "conv2": [INT4]}
    model = pruned_copy(LeNet5().eval(), techniques)
    x = np.random.default_rng(1).random((32, 1, 28, 28), dtype=np.float32)
    ref = quantized_copy(model, techniques, x)
    with quantization_aware(model, {"fc1": INT8, "conv2": INT4}, x) as view, torch.no_grad():
        assert sorted(view.layers) == ["conv2", "fc1.0", "fc1.1"]
        assert len(view.activation_scales()) == 2  # one per factor, as the ONNX has
        assert np.array_equal(view(torch.from_numpy(x)).numpy(),
                              ref(torch.from_numpy(x)).numpy())


def test_weight_gradient_is_straight_through() -> None:
    """d loss / d latent == d loss / d w_hat of a float layer holding the quantised weights."""
    torch.manual_seed(0)
    layer = nn.Linear(12, 5)
    x, target = torch.randn(8, 12), torch.randn(8, 5)
    view = QATView(layer, {"": INT4})
    nn.functional.mse_loss(view(x), target).backward()
    twin = copy.deepcopy(layer)
    with torch.no_grad():
        twin.weight.copy_(fake_quant_weight(layer.weight.detach(), 4))
    nn.functional.mse_loss(twin(x), target).backward()
    assert layer.weight.grad is not None and twin.weight.grad is not None
    assert torch.equal(layer.weight.grad, twin.weight.grad)
    assert not torch.equal(twin.weight, layer.weight)  # the forward really was quantised


@pytest.mark.parametrize("precision", ["int8", "int16"])
def test_activation_gradient_passes_inside_the_integer_range_only(precision: str) -> None:
    hook = ActivationFakeQuant(precision)
    hook.max_abs, hook.calibrating = 1.0, False
    x = torch.tensor([-2.0, -0.5, 0.3, 1.0, 1.5], requires_grad=True)
    y = _ActivationSTE.apply(x, hook)
    assert torch.equal(y.detach(), hook(None, None, x.detach()))
    y.sum().backward()
    assert x.grad is not None and x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


@pytest.fixture(scope="module")
def lenet() -> tuple[nn.Module, Dataset, Dataset]:
    """The trained LeNet-5, 3000 training images and 2000 held-out test images."""
    train, test = load_dataset("mnist")
    small = dataclasses.replace(train, x=train.x[:3000], y=train.y[:3000])
    held = dataclasses.replace(test, x=test.x[:2000], y=test.y[:2000])
    return pretrained("lenet5-mnist").model, small, held


def test_qat_int4_beats_ptq_of_the_same_weights(lenet) -> None:
    teacher, train, held = lenet
    plan = {n: INT4 for n in LAYERS}
    calib = train.x[:512]
    ptq = quantized_copy(teacher, {n: [c] for n, c in plan.items()}, calib)
    student, rep = distill(copy.deepcopy(teacher), teacher, train,
                           DistillConfig(epochs=2, quantization_aware=True), quantized=plan,
                           calibration=calib)
    assert rep.quantization_aware and rep.best_epoch >= 1
    qat = quantized_copy(student, {n: [c] for n, c in plan.items()}, calib)
    kl_ptq, kl_qat = output_kl(ptq, teacher, held.x), output_kl(qat, teacher, held.x)
    # QAT's gain must stand out of the held-out set's own noise: the paired per-image KL
    # differences' mean is more than 3 standard errors above zero (no threshold fitted to one
    # trained model)
    gain = _per_image_kl(ptq, teacher, held.x) - _per_image_kl(qat, teacher, held.x)
    standard_error = gain.std(ddof=1) / np.sqrt(len(gain))
    assert gain.mean() > 3 * standard_error, (kl_ptq, kl_qat, gain.mean(), standard_error)
    assert np.isclose(gain.mean(), kl_ptq - kl_qat, rtol=1e-3, atol=1e-9)
    # the report's "before" is the PTQ model (what plain apply would have shipped)
    assert rep.val_kl_before > rep.val_kl_after


def _per_image_kl(model: nn.Module, teacher: nn.Module, x: np.ndarray) -> np.ndarray:
    """KL(teacher || model) of each image's output distribution (nats)."""
    with torch.no_grad():
        t = torch.from_numpy(x)
        log_p = nn.functional.log_softmax(teacher(t), dim=1)
        log_q = nn.functional.log_softmax(model(t), dim=1)
        return (log_p.exp() * (log_p - log_q)).sum(dim=1).double().numpy()


def test_plain_distillation_reports_no_qat(lenet) -> None:
    teacher, train, _ = lenet
    _, rep = distill(copy.deepcopy(teacher), teacher, train, DistillConfig(epochs=1),
                     quantized={n: INT4 for n in LAYERS})
    assert not rep.quantization_aware
    assert rep.val_kl_before == 0.0  # the float student is the teacher: nothing quantised


def test_qat_keeps_pruned_zeros_and_shared_codebooks(lenet) -> None:
    from techniques.prune import UnstructuredPruneConfig, prune_unstructured
    from techniques.share import WeightSharingConfig, share_module

    teacher, train, _ = lenet
    student = copy.deepcopy(teacher)
    prune_unstructured(student.fc1, UnstructuredPruneConfig(sparsity=0.75))
    share_module(student.fc2, WeightSharingConfig(bits=4, iterations=20))
    zeros = (student.fc1.weight == 0).clone()
    plan = {"conv1": INT8, "conv2": INT4, "fc1": INT4, "fc3": INT4}
    student, rep = distill(student, teacher, train, DistillConfig(epochs=1, patience=1,
                                                                 quantization_aware=True),
                           shared=["fc2"], quantized=plan)
    assert rep.quantization_aware and rep.zeros_kept and rep.codebook_kept
    assert bool((_weight(student, "fc1")[zeros] == 0).all())
    assert torch.unique(_weight(student, "fc2")).numel() <= 16
    assert rep.best_epoch == 1, "one epoch of QAT improved the quantised student"


def _weight(model: nn.Module, name: str) -> torch.Tensor:
    w = model.get_submodule(name).weight
    assert isinstance(w, torch.Tensor)
    return w


def test_quantized_layers_skips_float_layers() -> None:
    got = quantized_layers({"a": [INT4], "b": [], "c": [QuantizeConfig(weights="fp32",
                                                                       activations="fp32")]})
    assert got == {"a": INT4}


def test_quantisation_only_plan_with_qat_is_fine_tuned_and_exported(tmp_path, monkeypatch,
                                                                    lenet) -> None:
    from device_specs.budget import Budget
    from edgefit.applying import apply_plan
    from edgefit.planning import make_plan
    from executors import apply as apply_mod

    _, small, _ = lenet
    budget = Budget.model_validate({"target": "arduino-nano-33-ble", "model": "lenet5-mnist",
                                    "limits": {"latency": "60ms"}})
    # TFLM runs int4 weights on CONV_2D only: conv2 is pinned to them (a flash limit that forces
    # int4 there alone is a few hundred bytes wide)
    plan, _ = make_plan(budget, "test", exclude=("prune_unstructured", "prune_channels",
                                                 "lowrank", "share"),
                        finetune_epochs=1, quantization_aware=True, pins={"conv2": "int4"})
    assert plan.feasible and plan.finetune is not None and plan.finetune.quantization_aware
    assert all("+" not in str(lp.option) for lp in plan.layers.values()), plan.options()
    assert plan.options()["conv2"] == "int4"
    # fine-tune on 3000 images (not 60k) to stay fast; the test set stays the full one
    monkeypatch.setattr(apply_mod, "load_dataset", lambda _name: (small, small))
    report = apply_plan(plan, tmp_path)
    assert all(c["ok"] for c in report["checks"]), report["checks"]
    acc = report["accuracy"]
    assert acc["finetune"]["quantization_aware"] and "quantisation-aware" in acc["how"]
    # the best epoch is kept (epoch 0: the post-training-quantised model, when one epoch on
    # 3000 images did not improve it): never worse, and "after" is that epoch's figure
    ft = acc["finetune"]
    assert ft["val_kl_after"] <= ft["val_kl_before"]
    assert (ft["val_kl_after"] == ft["val_kl_before"]) == (ft["best_epoch"] == 0), ft
    assert acc["onnx_vs_torch"]["top1_agreement"] >= 0.98, acc["onnx_vs_torch"]


def test_qat_without_epochs_is_an_error() -> None:
    from device_specs.budget import Budget
    from edgefit.planning import make_plan
    from edgefit_common.errors import SpecError

    with pytest.raises(SpecError, match="finetune_epochs"):
        make_plan(Budget.model_validate({"target": "arduino-nano-33-ble",
                                         "model": "lenet5-mnist"}), "test",
                  quantization_aware=True)


def test_cli_qat_without_finetune_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    from edgefit.cli import _plan_app, _run

    monkeypatch.chdir(tmp_path)
    code = _run(_plan_app, ["--target", "arduino-nano-33-ble", "--max-latency", "60ms",
                            "--model", "lenet5-mnist", "--qat"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "--qat needs --finetune" in lines[0]
    assert not (tmp_path / "plan.json").exists()


def test_cli_finetune_qat_is_stored_in_the_plan(tmp_path, monkeypatch) -> None:
    import json

    from edgefit.cli import _plan_app, _run

    monkeypatch.chdir(tmp_path)
    code = _run(_plan_app, ["--target", "arduino-nano-33-ble", "--max-latency", "60ms",
                            "--model", "lenet5-mnist", "--finetune", "2", "--qat"])
    assert code == 0
    finetune = json.loads((tmp_path / "plan.json").read_text())["finetune"]
    assert finetune["epochs"] == 2 and finetune["quantization_aware"] is True
