"""Weight sharing as a planned technique: options, exact flash, apply, fine-tuning, plan JSON."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from techniques.share import WeightSharingConfig, check_shared, share_config, shared_weight_bytes


def _lenet5() -> nn.Module:
    from workloads.zoo import LeNet5

    torch.manual_seed(0)
    return LeNet5().eval()


def _options(model: nn.Module, device: str):
    from cost_models.capture import capture
    from device_specs.catalog import load_spec
    from edgefit.planning import configs_of, layer_options

    graph = capture(model, (1, 28, 28))
    spec = load_spec(device)
    kernels = spec.profile().kernels
    return graph, spec, configs_of(layer_options(graph, kernels, model))


def _reference_bytes(layer: nn.Module, sparsity: float, cfg: WeightSharingConfig,
                     bias_itemsize: int) -> int:
    """Stored bytes computed independently of the planner: magnitude pruning by hand, k-means
    sharing, the encoder's blob length, the bias."""
    from techniques.share import share_weights

    w = layer.weight.detach().numpy().copy()
    if sparsity:
        k = round(sparsity * w.size)
        w.reshape(-1)[np.argsort(np.abs(w).reshape(-1), kind="stable")[:k]] = 0
    shared, _ = share_weights(w, cfg)
    header_entry = image_file_bytes(shared, layer, cfg, bias_itemsize)
    return shared_weight_bytes(shared, cfg) + bias_itemsize * layer.bias.numel() + header_entry


def image_file_bytes(shared: np.ndarray, layer: nn.Module, cfg: WeightSharingConfig,
                     bias_itemsize: int) -> int:
    """The layer's header entry, read from a one-layer image written with the shared weight."""
    import tempfile

    from techniques.flash_image import (
        FlashLayer,
        image_overhead_bytes,
        payload_bytes,
        write_flash_image,
    )

    option = "fp32" if bias_itemsize == 4 else "fp16"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "one.bin"
        write_flash_image(path, [FlashLayer("fc1", option, shared,
                                            layer.bias.detach().numpy(), share=cfg)])
        return path.stat().st_size - payload_bytes(path) - image_overhead_bytes()


# --------------------------------------------------------------------------- k-means


def _lloyd(v: np.ndarray, k: int, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain Lloyd over every value (the O(n)-per-iteration form kmeans_1d replaces)."""
    c = np.linspace(v.min(), v.max(), k)
    labels = np.full(v.size, -1)
    for _ in range(iterations):
        new = np.searchsorted((c[1:] + c[:-1]) / 2, v, side="left")
        if np.array_equal(new, labels):
            break
        labels = new
        sums, counts = np.bincount(labels, v, k), np.bincount(labels, minlength=k)
        c[counts > 0] = sums[counts > 0] / counts[counts > 0]
        c = np.sort(c)
    return c, np.searchsorted((c[1:] + c[:-1]) / 2, v, side="left")


def test_sorted_kmeans_equals_plain_lloyd() -> None:
    from techniques.share import kmeans_1d

    rng = np.random.default_rng(0)
    for n, k, iterations in ((7, 4, 100), (5000, 16, 100), (20000, 32, 3), (3000, 256, 100)):
        v = rng.standard_normal(n)
        v = v[np.abs(v) > 0.4]  # a pruned layer's bimodal nonzeros: empty middle clusters
        got, labels = kmeans_1d(v, k, iterations)
        want, want_labels = _lloyd(v, k, iterations)
        assert np.array_equal(labels, want_labels)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------- options and costs


def test_sharing_options_on_float_kernels_with_exact_flash() -> None:
    from cost_models.analytical import build_cost_table
    from edgefit.planning import sparse_flash_bytes
    from techniques.prune import UnstructuredPruneConfig
    from techniques.quantize import QuantizeConfig

    model = _lenet5()
    graph, spec, options = _options(model, "arduino-nano-33-ble")
    fc1 = options["fc1"]
    assert {"fp32+k4", "fp32+k4+s75"} <= set(fc1)
    assert not any("+k" in o for o in options["conv1"]), "156 weights: too small to share"
    assert not any(o.startswith(("int8+k", "int4+k")) for o in fc1), "float kernels only"
    assert [type(c) for c in fc1["fp32+k4+s75"]] == [UnstructuredPruneConfig,
                                                      WeightSharingConfig]
    cfg = fc1["fp32+k4"][0]
    assert cfg == WeightSharingConfig(bits=4, entropy="huffman")
    sparse = sparse_flash_bytes(model, options)
    table = build_cost_table(graph, spec, sparse_flash=sparse)
    dense = table.cost("fc1", "fp32")
    for option, sparsity in (("fp32+k4", 0.0), ("fp32+k4+s75", 0.75)):
        got = table.cost("fc1", option)
        assert got.flash_bytes == _reference_bytes(model.fc1, sparsity, cfg, 4)
        assert got.latency_ms == dense.latency_ms  # decoded to the fp32 kernel at load time
    assert dense.flash_bytes > 6 * table.cost("fc1", "fp32+k4").flash_bytes
    assert table.cost("fc1", "fp32+k4").flash_bytes > table.cost("fc1", "fp32+k4+s75").flash_bytes
    # without the weights the sizes are unknown: not offered (an ONNX-only model has them:
    # its initializers, tests/executors/test_apply_onnx_techniques.py)
    assert not any("+k" in c.option for c in build_cost_table(graph, spec).options["fc1"])
    # an fp16 kernel decodes a float16 codebook, then the fp16 weights are exact
    _, _, jetson = _options(model, "jetson-nano")
    half = jetson["fc1"]["fp16+k4"]
    assert half[0].codebook_dtype == "float16" and isinstance(half[1], QuantizeConfig)


def test_prune_then_share_then_quantise_and_the_kl_is_measured() -> None:
    from cost_models.accuracy import measured_output_kl
    from techniques.fakequant import pruned_copy, quantized_copy

    model = _lenet5()
    _, _, options = _options(model, "jetson-nano")
    configs = options["fc1"]["fp16+k4+s75"]
    x = np.random.default_rng(0).random((32, 1, 28, 28), dtype=np.float32)
    q = quantized_copy(model, {"fc1": configs}, x)
    w = q.fc1.weight.detach().numpy()
    assert (w == 0).mean() >= 0.75
    found = check_shared(w, share_config(configs))
    assert found["ok"] and 2 <= found["distinct_nonzero"] <= 16
    once = pruned_copy(model, {"fc1": configs})
    twice = pruned_copy(once, {"fc1": configs})
    assert torch.equal(once.fc1.weight, twice.fc1.weight)  # re-applying changes nothing
    kl = measured_output_kl(model, {"fc1": {o: options["fc1"][o]
                                            for o in ("fp16", "fp16+k4", "fp16+k4+s75")}}, x).loss
    assert 0 < kl["fc1", "fp16+k4"] < kl["fc1", "fp16+k4+s75"]


# --------------------------------------------------------------------------- fine-tuning


def test_distillation_keeps_shared_weights_on_their_codebook() -> None:
    from executors.distill import distill
    from techniques.distill import DistillConfig
    from techniques.fakequant import pruned_copy
    from techniques.prune import UnstructuredPruneConfig
    from workloads.data import Dataset

    teacher = _lenet5()
    with torch.no_grad():
        teacher.fc3.weight.mul_(30)  # sharp outputs: a 2-bit student has something to learn
    cfg = WeightSharingConfig(bits=2)
    student = pruned_copy(teacher, {"fc1": [UnstructuredPruneConfig(sparsity=0.5), cfg],
                                    "fc2": [cfg]})
    before = {n: check_shared(getattr(student, n)) for n in ("fc1", "fc2")}
    cb_before = np.unique(student.fc1.weight.detach().numpy())
    rng = np.random.default_rng(0)
    data = Dataset("synthetic", rng.random((512, 1, 28, 28), dtype=np.float32),
                   rng.integers(0, 10, 512), 10, "test")
    tuned, rep = distill(student, teacher, data,
                         DistillConfig(epochs=2, batch_size=64, alpha=1.0), shared=["fc1", "fc2"])
    assert rep.best_epoch > 0 and rep.val_kl_after < rep.val_kl_before
    assert rep.codebook_kept is True and rep.zeros_kept
    for n in ("fc1", "fc2"):
        after = check_shared(getattr(tuned, n), cfg)
        assert after["ok"] and after["zeros"] == before[n]["zeros"]
    assert not np.array_equal(np.unique(tuned.fc1.weight.detach().numpy()), cb_before)
    assert dataclasses.asdict(rep)["codebook_kept"] is True


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def shared_applied(tmp_path_factory: pytest.TempPathFactory):
    """LeNet-5 on the Arduino with fc1 pruned + shared and fc2 shared, distilled one epoch on
    2,000 training images (calibration subset of 64 images), then applied."""
    from device_specs.budget import Budget
    from edgefit import planning
    from edgefit.applying import apply_plan
    from executors import apply as apply_mod

    real_load = apply_mod.load_dataset

    def small(name):  # the fine-tuning split only: evaluation keeps the full test set
        train, test = real_load(name)
        return dataclasses.replace(train, x=train.x[:2000], y=train.y[:2000]), test

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(planning, "CALIBRATION_SIZE", 64)
        mp.setattr(apply_mod, "load_dataset", small)
        budget = Budget(target="arduino-nano-33-ble", limits={"latency": "60ms"},
                        model="lenet5-mnist")
        plan, _ = planning.make_plan(budget, "test", pins={"fc1": "fp32+k4+s75",
                                                           "fc2": "fp32+k4"},
                                     finetune_epochs=1)
        out = tmp_path_factory.mktemp("share")
        return plan, apply_plan(plan, out), out


def test_apply_stores_and_verifies_the_shared_layers(shared_applied) -> None:
    from techniques.flash_image import read_flash_image

    plan, report, out = shared_applied
    assert plan.layers["fc1"].option == "fp32+k4+s75" and plan.layers["fc2"].option == "fp32+k4"
    assert report["verification"]["ok"], report["verification"]["problems"]
    rows = {r["layer"]: r for r in report["verification"]["layers"]}
    stored = {s.name: s for s in read_flash_image(out / "model.flash.bin")}
    for name in ("fc1", "fc2"):
        lp = plan.layers[name]
        assert stored[name].storage.startswith("shared") and stored[name].bits == 4
        assert stored[name].codebook is not None and stored[name].codebook.size <= 16
        assert stored[name].weight_bytes + stored[name].bias_bytes + stored[name].header_bytes == \
            lp.image_bytes
        assert rows[name]["onnx_distinct_nonzero"] <= 16
        assert rows[name]["image_distinct_nonzero"] == stored[name].codebook.size
    assert stored["fc1"].zero_fraction >= 0.75
    ft = report["accuracy"]["finetune"]
    assert ft["codebook_kept"] is True and ft["zeros_kept"] is True
    assert report["accuracy"]["onnx_vs_torch"]["top1_agreement"] >= 0.98
    assert all(c["ok"] for c in report["checks"]), report["checks"]


def test_verification_catches_a_codebook_larger_than_planned(shared_applied) -> None:
    from executors.apply import verify_artifacts
    from techniques.quantize import onnx_option

    plan, _, out = shared_applied
    fc2 = plan.layers["fc2"]
    wrong = [WeightSharingConfig(bits=2, entropy="huffman")
             if isinstance(t, WeightSharingConfig) else t for t in fc2.techniques]
    bad = plan.model_copy(deep=True)
    bad.layers["fc2"] = fc2.model_copy(update={"techniques": wrong})
    opts = {n: onnx_option(lp.techniques) for n, lp in bad.layers.items()}
    result = verify_artifacts(bad, out / "model.onnx", out / "model.flash.bin", opts)
    assert not result["ok"]
    assert any(p.startswith("fc2: flash image stores no 2-bit codebook") for p in
               result["problems"])
    assert any("fc2: ONNX weight holds" in p and "2**2 = 4" in p for p in result["problems"])


def test_plan_json_round_trips_the_sharing_config(shared_applied, tmp_path: Path) -> None:
    from planner.plan import Plan

    plan, _, _ = shared_applied
    plan.save(tmp_path / "plan.json")
    again = Plan.load(tmp_path / "plan.json")
    assert again == plan
    cfg = share_config(again.layers["fc1"].techniques)
    assert cfg == WeightSharingConfig(bits=4, entropy="huffman")
    alts = {a.option for a in again.layers["fc1"].alternatives}
    assert {"fp32+k4", "fp32+k4+s75"} <= alts
