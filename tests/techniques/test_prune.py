"""techniques.prune (unstructured, N:M, channels) and workloads.mobilenet (the residual CNN)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter, ValidationError
from torch import nn

from edgefit_common.errors import PlanError
from techniques import prune as P
from workloads.mobilenet import MobileNetV2Small, fuse_bn, residual_blocks
from workloads.zoo import LeNet5

SAMPLE = (1, 28, 28)


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model


@pytest.fixture
def mobilenet() -> nn.Module:
    torch.manual_seed(0)
    return _randomize_bn(MobileNetV2Small()).eval()


# --------------------------------------------------------------------------- configs


def test_configs_validate_and_discriminate():
    adapter = TypeAdapter(P.PruneConfig)
    assert isinstance(adapter.validate_python({"technique": "prune_nm"}), P.NMPruneConfig)
    cfg = adapter.validate_python({"technique": "prune_unstructured", "sparsity": 0.5})
    assert cfg == P.UnstructuredPruneConfig(sparsity=0.5) and cfg.scope == "layer"
    ch = adapter.validate_python({"technique": "prune_channels", "ratio": 0.25, "round_to": 8})
    assert isinstance(ch, P.ChannelPruneConfig)
    assert adapter.validate_json(json.dumps(ch.model_dump())) == ch
    for bad in ({"technique": "prune_unstructured", "sparsity": 0.995},
                {"technique": "prune_nm", "n": 4, "m": 4},
                {"technique": "prune_channels", "ratio": 0.95},
                {"technique": "prune_channels", "ratio": 0.5, "round_to": 0},
                {"technique": "prune_unstructured", "sparsity": 0.5, "scope": "model"},
                {"technique": "prune_nm", "extra": 1}):
        with pytest.raises(ValidationError):
            adapter.validate_python(bad)
    with pytest.raises(ValidationError):
        cfg.sparsity = 0.1  # type: ignore[misc]  # frozen


def test_no_torch_import():
    code = "import sys, techniques.prune; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --------------------------------------------------------------------------- unstructured


@pytest.mark.parametrize("sparsity", [0.0, 0.37, 0.5, 0.9, 0.99])
def test_unstructured_zeroes_exactly_the_smallest(sparsity):
    torch.manual_seed(1)
    layer = nn.Linear(50, 64)
    before = layer.weight.detach().clone()
    keys = set(layer.state_dict())
    out = P.prune_unstructured(layer, P.UnstructuredPruneConfig(sparsity=sparsity))
    assert out is layer
    w = layer.weight.detach()
    k = round(sparsity * w.numel())
    assert int((w == 0).sum()) == k
    pruned = (w == 0)
    if 0 < k < w.numel():
        assert before.abs()[pruned].max() <= before.abs()[~pruned].min()
    assert torch.equal(w[~pruned], before[~pruned])  # the rest is untouched
    # physically zero, nothing left behind: no masks, buffers, reparametrisation or hooks
    assert set(layer.state_dict()) == keys and not hasattr(layer, "weight_orig")
    assert not layer._forward_pre_hooks and not layer._forward_hooks
    assert isinstance(layer.weight, nn.Parameter) and layer.weight._backward_hooks is None
    found = P.check_unstructured(layer, P.UnstructuredPruneConfig(sparsity=sparsity))
    assert found["zeros"] == k and found["ok"] and found["sparsity"] == k / w.numel()


def test_unstructured_ties_break_by_position():
    layer = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -1.0, 2.0, 1.0], [0.5, 1.0, -0.5, 3.0]]))
    P.prune_unstructured(layer, P.UnstructuredPruneConfig(sparsity=0.5))
    # |w| sorted (stable): 0.5@4, 0.5@6, then 1.0@0, 1.0@1 (the lower indices of the 1.0 tie)
    expected = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 1.0, 0.0, 3.0]])
    assert torch.equal(layer.weight.detach(), expected)


def test_strips_torch_prune_reparametrisation():
    from torch.nn.utils import prune as torch_prune

    layer = nn.Linear(10, 10)
    torch_prune.l1_unstructured(layer, "weight", amount=0.2)
    P.prune_unstructured(layer, P.UnstructuredPruneConfig(sparsity=0.5))
    assert not hasattr(layer, "weight_orig") and not hasattr(layer, "weight_mask")
    assert int((layer.weight == 0).sum()) == 50


def _tiny_step(model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, *SAMPLE, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def test_zeros_stay_zero_after_a_training_step():
    torch.manual_seed(0)
    model = LeNet5()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    _tiny_step(model, opt, 0)  # optimizer state (momentum) from before pruning
    cfg = P.UnstructuredPruneConfig(sparsity=0.8)
    for name in ("conv2", "fc1", "fc2"):
        P.prune_unstructured(model.get_submodule(name), cfg)
    P.prune_nm(model.fc3, P.NMPruneConfig())
    zeros = {n: (model.get_submodule(n).weight == 0).clone() for n in ("conv2", "fc1", "fc2",
                                                                         "fc3")}
    mask = P.keep_zeros(model)
    assert set(mask.layers) == set(zeros)
    handle = mask.attach(opt)
    before = model.fc1.weight.detach().clone()
    _tiny_step(model, opt, 1)
    for n, z in zeros.items():
        w = model.get_submodule(n).weight.detach()
        assert torch.equal(w == 0, z), n  # exactly the same zeros, no new ones lost
    assert not torch.equal(model.fc1.weight.detach(), before)  # the step did train
    assert P.check_nm(model.fc3, P.NMPruneConfig())["compliant"]
    # without the mask the same step would move the zeros (momentum from the first step)
    handle.remove()
    _tiny_step(model, opt, 2)
    assert int((model.fc1.weight == 0).sum()) < int(zeros["fc1"].sum())
    mask.reapply()
    assert torch.equal(model.fc1.weight == 0, zeros["fc1"])


# --------------------------------------------------------------------------- N:M


@pytest.mark.parametrize(("n", "m"), [(2, 4), (1, 4), (4, 8)])
@pytest.mark.parametrize("layer", ["linear", "conv"])
def test_nm_pattern_from_weights(n, m, layer):
    torch.manual_seed(2)
    mod: nn.Module = nn.Linear(16, 6) if layer == "linear" else nn.Conv2d(16, 5, 3)
    before = mod.weight.detach().clone()
    cfg = P.NMPruneConfig(n=n, m=m)
    P.prune_nm(mod, cfg)
    w = mod.weight.detach().numpy()
    found = P.check_nm(w, cfg)
    assert found["compliant"] and found["max_nonzeros_per_group"] == n
    assert found["groups"] == w.size // m and found["sparsity"] == 1 - n / m
    # brute force: along the input axis, in each run of m keep the n largest |w|
    b = np.moveaxis(before.numpy(), 1, -1)
    got = np.moveaxis(w, 1, -1)
    for idx in np.ndindex(b.shape[:-1]):
        for start in range(0, b.shape[-1], m):
            run, out = b[idx][start:start + m], got[idx][start:start + m]
            top = set(np.argsort(-np.abs(run), kind="stable")[:n])
            for j in range(m):
                assert out[j] == (run[j] if j in top else 0.0)


def test_nm_check_reads_the_flash_image(tmp_path):
    from techniques.flash_image import FlashLayer, read_flash_image, write_flash_image

    torch.manual_seed(3)
    fc = nn.Linear(32, 8)
    cfg = P.NMPruneConfig()
    P.prune_nm(fc, cfg)
    path = tmp_path / "m.efi"
    write_flash_image(path, [FlashLayer("fc", "int8", fc.weight.detach().numpy(),
                                        fc.bias.detach().numpy())])
    stored = read_flash_image(path)[0]
    assert P.check_nm(stored, cfg)["compliant"]
    assert P.check_unstructured(stored)["sparsity"] >= 0.5
    dense = nn.Linear(32, 8)
    assert not P.check_nm(dense, cfg)["compliant"]


def test_nm_needs_a_divisible_input_dimension():
    assert not P.nm_applicable((16, 1, 3, 3), P.NMPruneConfig())  # depthwise
    assert P.nm_applicable((16, 8, 3, 3), P.NMPruneConfig())
    with pytest.raises(PlanError, match="input channels"):
        P.prune_nm(nn.Conv2d(6, 16, 5), P.NMPruneConfig())


# --------------------------------------------------------------------------- cost deltas


def test_kept_channels_and_cost_deltas():
    assert P.kept_channels(16, 0.0, 8) == 16
    assert P.kept_channels(16, 0.5) == 8
    assert P.kept_channels(6, 0.5, 4) == 4  # 3 -> nearest multiple, at least round_to
    assert P.kept_channels(24, 0.3, 8) == 16  # 24 - 7 = 17 -> 16
    assert P.kept_channels(24, 0.1, 8) == 24  # 24 - 2 = 22 -> 24
    assert P.kept_channels(6, 0.5, 8) == 6  # fewer channels than round_to: untouched
    assert P.kept_channels(10, 0.9) == 1
    d = P.cost_delta(3200, 64, P.UnstructuredPruneConfig(sparsity=0.37))
    assert d["kept_weights"] == 3200 - 1184 and d["macs_dense"] == 1.0 and d["outputs"] == 1.0
    assert d["storage"] == "sparse" and d["weights"] == d["macs"] == 2016 / 3200
    d = P.cost_delta(1600, 16, P.NMPruneConfig())
    assert d["kept_weights"] == 800 and d["weights"] == 0.5 and d["out_channels"] == 16
    d = P.cost_delta(2400, 16, P.ChannelPruneConfig(ratio=0.3, round_to=4))
    assert d["out_channels"] == 12 and d["kept_weights"] == 1800
    assert d["weights"] == d["macs"] == d["macs_dense"] == d["outputs"] == 0.75
    assert d["consumer_inputs"] == 0.75 and d["storage"] == "dense"
    with pytest.raises(PlanError):
        P.cost_delta(10, 3, P.NMPruneConfig())


# --------------------------------------------------------------------------- channels: LeNet-5


def test_channel_pruning_lenet5_removes_dead_channels_exactly():
    torch.manual_seed(4)
    model = LeNet5().eval()
    with torch.no_grad():  # channels 2 and 4 of conv1 contribute nothing: they must go first
        for c in (2, 4):
            model.conv1.weight[c] = 0.0
            model.conv1.bias[c] = 0.0
            model.conv2.weight[:, c] = 0.0
    x = torch.randn(3, *SAMPLE)
    ref = model(x)
    groups = P.coupled_groups(model, SAMPLE)
    assert groups == [["conv1"], ["conv2"], ["fc1"], ["fc2"]]  # fc3 feeds the output
    P.prune_channels(model, {"conv1": P.ChannelPruneConfig(ratio=1 / 3)}, SAMPLE)
    assert model.conv1.out_channels == 4 and model.conv2.in_channels == 4
    torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-6)


def test_channel_pruning_lenet5_smaller_and_consistent():
    torch.manual_seed(5)
    model = LeNet5().train()
    params = sum(p.numel() for p in model.parameters())
    cfg = P.ChannelPruneConfig(ratio=0.5, round_to=4)
    groups = P.coupling(model, torch.zeros(1, *SAMPLE))
    predicted = P.channel_fractions(groups, {n: cfg for g in groups for n in g.layers})
    numel = {n: m.weight.numel() for n, m in model.named_modules() if hasattr(m, "weight")}
    P.prune_channels(model, {n: cfg for g in groups for n in g.layers}, torch.zeros(1, *SAMPLE))
    assert model.training  # the mode is restored
    found = P.check_channels(model)
    layers = found["layers"]
    assert found["params"] < params / 2
    assert model(torch.randn(2, *SAMPLE)).shape == (2, 10)
    for name in ("conv1", "conv2", "fc1", "fc2"):
        assert layers[name]["out_channels"] % 4 == 0
    assert layers["conv2"]["in_channels"] == layers["conv1"]["out_channels"]
    assert layers["fc1"]["in_channels"] == layers["conv2"]["out_channels"] * 25  # flatten
    assert layers["fc3"]["in_channels"] == layers["fc2"]["out_channels"]
    assert layers["fc3"]["out_channels"] == 10
    for name, frac in predicted.items():  # the cost model's fractions are the real ones
        assert layers[name]["weight_numel"] == round(frac["weights"] * numel[name]), name


def test_channel_pruning_rejects_bad_plans():
    model = LeNet5()
    cfg = P.ChannelPruneConfig(ratio=0.5)
    with pytest.raises(PlanError, match="model's output"):
        P.prune_channels(model, {"fc3": cfg}, SAMPLE)
    with pytest.raises(PlanError, match="no such layer"):
        P.prune_channels(model, {"conv9": cfg}, SAMPLE)
    mnet = MobileNetV2Small()
    with pytest.raises(PlanError, match="share their channels"):
        P.prune_channels(mnet, {"blocks.1.project.conv": cfg}, SAMPLE)
    with pytest.raises(PlanError, match="different"):
        P.prune_channels(mnet, {"blocks.1.project.conv": cfg,
                                "blocks.2.project.conv": P.ChannelPruneConfig(ratio=0.25)},
                         SAMPLE)


# --------------------------------------------------------------------------- channels: MobileNet


def test_coupled_groups_of_the_residual_net(mobilenet):
    groups = P.coupled_groups(mobilenet, SAMPLE)
    assert ["stem.conv", "blocks.0.depthwise.conv", "blocks.0.project.conv"] in groups
    for a, b in ((1, 2), (3, 4), (5, 6)):  # the projections feeding one residual add
        assert [f"blocks.{a}.project.conv", f"blocks.{b}.project.conv"] in groups
    for i in range(1, 7):  # a depthwise conv shares its producer's channels
        assert [f"blocks.{i}.expand.conv", f"blocks.{i}.depthwise.conv"] in groups
    assert ["head.conv"] in groups
    flat = [n for g in groups for n in g]
    assert len(flat) == len(set(flat)) and "classifier" not in flat
    assert P.coupled_groups(fuse_bn(mobilenet), SAMPLE) == groups


@pytest.mark.parametrize("fused", [False, True])
def test_channel_pruning_mobilenet(mobilenet, fused):
    model = fuse_bn(mobilenet) if fused else mobilenet
    x = torch.randn(2, *SAMPLE)
    params = sum(p.numel() for p in model.parameters())
    groups = P.coupling(model, SAMPLE)
    cfg = P.ChannelPruneConfig(ratio=0.5, round_to=8)
    configs = {n: cfg for g in groups for n in g.layers}
    original = {n: (m.weight.shape[0], m.weight.numel()) for n, m in model.named_modules()
                if isinstance(m, nn.Conv2d | nn.Linear)}
    predicted = P.channel_fractions(groups, configs)
    P.prune_channels(model, configs, SAMPLE)
    assert model(x).shape == (2, 10)
    found = P.check_channels(model)
    assert found["params"] < 0.5 * params
    layers = found["layers"]
    for g in groups:
        kept = P.kept_channels(g.channels, cfg.ratio, cfg.round_to)
        for name in g.layers:
            assert layers[name]["out_channels"] == kept and kept % 8 == 0 and kept < g.channels
    for name, (out_ch, numel) in original.items():
        frac = predicted.get(name, {"weights": 1.0, "outputs": 1.0})
        assert layers[name]["weight_numel"] == round(frac["weights"] * numel), name
        assert layers[name]["out_channels"] == round(frac["outputs"] * out_ch), name
    for block in residual_blocks(model):  # every residual add still adds equal shapes
        dw = model.get_submodule(f"{block}.depthwise.conv")
        first = getattr(model.get_submodule(f"{block}.expand"), "conv", dw)
        assert model.get_submodule(f"{block}.project.conv").out_channels == first.in_channels
        assert dw.groups == dw.in_channels == dw.out_channels
    if not fused:  # BatchNorm pruned with its conv
        for name in layers:
            if name.endswith(".conv"):
                bn = model.get_submodule(name.removesuffix("conv") + "bn")
                assert bn.num_features == layers[name]["out_channels"]


def test_tracing_leaves_train_mode_and_bn_statistics(mobilenet):
    mobilenet.train()
    stats = {k: v.clone() for k, v in mobilenet.state_dict().items()}
    P.coupled_groups(mobilenet, torch.randn(4, *SAMPLE))
    assert mobilenet.training and all(m.training for m in mobilenet.modules())
    for k, v in mobilenet.state_dict().items():
        assert torch.equal(v, stats[k]), k


def test_channel_ratio_zero_is_identity(mobilenet):
    x = torch.randn(2, *SAMPLE)
    ref = mobilenet(x)
    groups = P.coupled_groups(mobilenet, SAMPLE)
    cfg = P.ChannelPruneConfig(ratio=0.0, round_to=8)
    P.prune_channels(mobilenet, {n: cfg for g in groups for n in g}, SAMPLE)
    torch.testing.assert_close(mobilenet(x), ref, rtol=0, atol=0)


# --------------------------------------------------------------------------- the workload


def test_mobilenet_shape_and_size(mobilenet):
    params = sum(p.numel() for p in mobilenet.parameters())
    assert 50_000 <= params <= 150_000
    assert mobilenet(torch.randn(3, *SAMPLE)).shape == (3, 10)
    assert len(residual_blocks(mobilenet)) == 4
    assert sum(isinstance(m, nn.Conv2d) and m.groups > 1 for m in mobilenet.modules()) == 7


def test_fuse_bn_is_exact_and_keeps_names(mobilenet):
    from cost_models.capture import capture

    x = torch.randn(4, *SAMPLE)
    fused = fuse_bn(mobilenet)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in mobilenet.modules())  # original intact
    with torch.no_grad():
        torch.testing.assert_close(fused(x), mobilenet(x), rtol=0, atol=1e-5)
    convs = [n for n, m in mobilenet.named_modules() if isinstance(m, nn.Conv2d)]
    graph = capture(fused, SAMPLE)
    assert graph.layer_names == convs + ["classifier"]
    assert {graph.layer(n).op_class for n in convs} == {"conv", "depthwise", "pointwise"}
    assert all(graph.layer(n).bias_numel == graph.layer(n).out_channels for n in convs)


def test_fused_export_names_every_conv(mobilenet, tmp_path):
    import onnx

    from cost_models.export import export_fp32
    from formats.onnx_io import LAYERS_KEY

    path = tmp_path / "m.onnx"
    export_fp32(fuse_bn(mobilenet), SAMPLE, path)
    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    convs = [n for n, m in mobilenet.named_modules() if isinstance(m, nn.Conv2d)]
    assert json.loads(meta[LAYERS_KEY]) == convs + ["classifier"]


def test_global_pruning_is_one_threshold_over_all_layers() -> None:
    from techniques.prune import global_sparsities, magnitude_keep_mask

    rng = np.random.default_rng(0)
    weights = {"a": rng.normal(0, 1.0, (40, 50)).astype(np.float32),
               "b": rng.normal(0, 0.5, (30, 20)).astype(np.float32),  # small: pruned harder
               "c": rng.normal(0, 3.0, (10, 10)).astype(np.float32)}
    configs = global_sparsities(weights, 0.6)
    assert all(c.scope == "global" for c in configs.values())
    assert configs["b"].sparsity > 0.6 > configs["a"].sparsity > configs["c"].sparsity
    masks = {n: magnitude_keep_mask(w, configs[n].sparsity) for n, w in weights.items()}
    total = sum(w.size for w in weights.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.6 * total)
    pruned = max(float(np.abs(w[~masks[n]]).max()) for n, w in weights.items())
    kept = min(float(np.abs(w[masks[n]]).min()) for n, w in weights.items())
    assert pruned <= kept  # one threshold separates every layer's pruned and kept weights
    with pytest.raises(PlanError, match="global sparsity"):
        global_sparsities(weights, 1.5)
