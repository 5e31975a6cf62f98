"""techniques.lowrank: truncated SVD / Tucker-2 factorisation, checks, costs and the plan path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter, ValidationError
from torch import nn

from cost_models.output_fidelity import AGREEMENT_WARN
from edgefit_common.errors import PlanError
from techniques import lowrank as L

# --------------------------------------------------------------------------- fixtures


class _Tiny(nn.Module):
    """A conv + two Linears: small enough to export and quantise in a second."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 12, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(12 * 4 * 4, 40)
        self.fc2 = nn.Linear(40, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x)).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture
def tiny() -> nn.Module:
    torch.manual_seed(0)
    return _Tiny().eval()


def _x(n: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 4, 8, 8)).astype(np.float32)


# --------------------------------------------------------------------------- config


def test_config_needs_exactly_one_of_rank_or_energy() -> None:
    assert L.LowRankConfig(rank=3).rank == 3
    assert L.LowRankConfig(energy=0.9).energy == 0.9
    for bad, words in (({}, "exactly one of rank"), ({"rank": 2, "energy": 0.5}, "exactly one"),
                       ({"energy": 0.5, "rank_in": 2}, "rank_in goes with rank"),
                       ({"rank": 0}, "greater than or equal to 1"),
                       ({"energy": 0.0}, "greater than 0"), ({"energy": 1.5}, "less than or"),
                       ({"rank": 2, "extra": 1}, "Extra inputs")):
        with pytest.raises(ValidationError, match=words):
            L.LowRankConfig(**bad)


def test_config_is_a_plan_technique() -> None:
    from planner.plan import TechniqueConfig

    adapter = TypeAdapter(TechniqueConfig)
    cfg = adapter.validate_python({"technique": "lowrank", "rank": 8, "rank_in": 4})
    assert isinstance(cfg, L.LowRankConfig)
    assert adapter.validate_json(json.dumps(cfg.model_dump())) == cfg


# --------------------------------------------------------------------------- Linear: SVD


def test_linear_truncated_svd_is_the_best_rank_r_approximation() -> None:
    torch.manual_seed(1)
    lin = nn.Linear(30, 20)
    w = lin.weight.detach().double().numpy()
    s = np.linalg.svd(w, compute_uv=False)
    for rank in (1, 5, 20):
        f = L.factorize(lin, L.LowRankConfig(rank=rank))
        assert [tuple(m.weight.shape) for m in f] == [(rank, 30), (20, rank)]
        assert f[0].bias is None and torch.equal(f[1].bias, lin.bias)
        product = (f[1].weight @ f[0].weight).detach().double().numpy()
        # Eckart-Young: the residual's Frobenius norm is that of the dropped singular values
        assert np.linalg.norm(w - product) == pytest.approx(np.sqrt((s[rank:] ** 2).sum()),
                                                            abs=1e-5)
        assert L.check_lowrank(f, L.LowRankConfig(rank=rank))["ok"]
    x = torch.randn(7, 30)
    full = L.factorize(lin, L.LowRankConfig(rank=20))
    assert torch.allclose(full(x), lin(x), atol=1e-5)


def test_energy_picks_the_smallest_rank_keeping_that_energy() -> None:
    s = np.array([4.0, 2.0, 1.0, 1.0])  # squares 16, 4, 1, 1 of 22
    assert L.energy_rank(s, 16 / 22) == 1
    assert L.energy_rank(s, 16 / 22 + 1e-6) == 2
    assert L.energy_rank(s, 21 / 22) == 3
    assert L.energy_rank(s, 1.0) == 4
    u, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 4)))
    v, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((5, 4)))
    lin = nn.Linear(5, 6)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy((u * s) @ v.T).float())
    f = L.factorize(lin, L.LowRankConfig(energy=0.95))
    assert L.check_lowrank(f)["rank"] == 3


def test_ranks_out_of_range_and_unfactorisable_layers_are_clear_errors() -> None:
    with pytest.raises(PlanError, match=r"fc: lowrank.rank 21 is out of range; allowed 1..20"):
        L.factorize(nn.Linear(30, 20), L.LowRankConfig(rank=21), "fc")
    with pytest.raises(PlanError, match="rank_in applies to Conv2d only"):
        L.factorize(nn.Linear(30, 20), L.LowRankConfig(rank=2, rank_in=2))
    with pytest.raises(PlanError, match=r"rank_in 5 is out of range; allowed 1..4"):
        L.factorize(nn.Conv2d(4, 8, 3), L.LowRankConfig(rank=2, rank_in=5))
    with pytest.raises(PlanError, match=r"dw: lowrank cannot factorise a grouped or depthwise"):
        L.factorize(nn.Conv2d(8, 8, 3, groups=8), L.LowRankConfig(rank=2), "dw")
    with pytest.raises(PlanError, match="not BatchNorm2d"):
        L.factorize(nn.BatchNorm2d(4), L.LowRankConfig(rank=2))
    assert L.module_rank_for_fraction(nn.Conv2d(8, 8, 3, groups=8), 0.5, 8 * 64, 8 * 36) is None


# --------------------------------------------------------------------------- Conv2d: Tucker-2


def test_tucker2_full_rank_is_exact_and_keeps_the_conv_geometry() -> None:
    torch.manual_seed(2)
    conv = nn.Conv2d(4, 12, 3, stride=2, padding=1, dilation=1)
    x = torch.randn(3, 4, 9, 9)
    full = L.factorize(conv, L.LowRankConfig(rank=12, rank_in=4))
    assert torch.allclose(full(x), conv(x), atol=1e-4)
    low = L.factorize(conv, L.LowRankConfig(rank=5, rank_in=2))
    assert low(x).shape == conv(x).shape
    assert [tuple(m.weight.shape) for m in low] == [(2, 4, 1, 1), (5, 2, 3, 3), (12, 5, 1, 1)]
    assert low[1].stride == (2, 2) and low[1].padding == (1, 1)
    assert low[2].bias is not None and torch.equal(low[2].bias, conv.bias)
    found = L.check_lowrank(low, L.LowRankConfig(rank=5, rank_in=2))
    assert found["ok"] and (found["rank"], found["rank_in"]) == (5, 2)
    assert not L.check_lowrank(low, L.LowRankConfig(rank=6, rank_in=2))["ok"]
    # more rank never fits worse (HOOI from the same SVD start)
    w = conv.weight.detach().numpy()
    errs = []
    for r in (2, 6, 12):
        f = L.factorize(conv, L.LowRankConfig(rank=r, rank_in=min(r, 4)))
        with torch.no_grad():
            errs.append(float((f(x) - conv(x)).abs().mean()))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-4 * float(np.abs(w).mean()) + 1e-4


# --------------------------------------------------------------------------- cost delta


def test_cost_delta_matches_the_factorised_module_params_and_fvcore_macs(tiny) -> None:
    from cost_models.capture import count_macs

    example = torch.zeros((1, 4, 8, 8))
    conv_in, conv_out = 4 * 64, 12 * 16  # per-sample activation sizes of tiny.conv
    for name, cfg, numels in (("conv", L.LowRankConfig(rank=5, rank_in=2), (conv_in, conv_out)),
                              ("fc1", L.LowRankConfig(rank=7), (192, 40))):
        module = dict(tiny.named_modules())[name]
        delta = L.module_cost_delta(module, cfg, *numels)
        factored = L.factorize(module, cfg)
        assert delta["kept_weights"] == sum(m.weight.numel() for m in factored)
        assert sum(f["bias_numel"] for f in delta["factors"]) == module.bias.numel()
        inp = example if name == "conv" else torch.zeros((1, 192))
        macs = count_macs(factored, inp)[""]
        assert delta["factored_macs"] == macs, name
        assert delta["dense_macs"] == count_macs(module, inp)[""]
        assert delta["macs"] == pytest.approx(macs / delta["dense_macs"])


def test_rank_for_fraction_is_the_largest_rank_within_the_fraction() -> None:
    for shape, frac in (((300, 784), 0.5), ((300, 784), 0.25), ((100, 300), 0.5)):
        cfg = L.rank_for_fraction(shape, frac)
        assert cfg is not None and cfg.rank is not None
        dense = shape[0] * shape[1]
        assert cfg.rank * sum(shape) <= frac * dense < (cfg.rank + 1) * sum(shape)
    conv = L.rank_for_fraction((16, 6, 5, 5), 0.5, 12 * 12, 8 * 8)
    assert conv is not None
    delta = L.lowrank_cost_delta((16, 6, 5, 5), conv, True, 144, 64)
    assert delta["weights"] <= 0.5 and delta["macs"] < 1.0
    assert L.rank_for_fraction((2, 2), 0.25) is None  # nothing smaller than a 2x2 matrix


# --------------------------------------------------------------------------- artifacts


def test_factorised_onnx_matches_torch_and_carries_the_rank(tiny, tmp_path: Path) -> None:
    """fp32 export of the factorised model == torch; int8 factors keep the rank readable."""
    from cost_models.export import export_fp32
    from executors.apply import onnx_outputs
    from techniques.fakequant import pruned_copy
    from techniques.onnx.inspect import inspect_onnx
    from techniques.onnx.writer import quantize_onnx

    plan = {"conv": [L.LowRankConfig(rank=5, rank_in=2)], "fc1": [L.LowRankConfig(rank=7)]}
    model = pruned_copy(tiny, plan)
    assert isinstance(model.fc1, nn.Sequential) and isinstance(tiny.fc1, nn.Linear)
    assert pruned_copy(model, plan).fc1[0].weight.shape == (7, 192)  # factorised once
    fp32 = tmp_path / "m.fp32.onnx"
    export_fp32(model, (4, 8, 8), fp32)
    x = _x()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(onnx_outputs(fp32, x) - ref).max() < 1e-4
    layers = {"conv": "Conv2d", "fc1": "Linear"}
    ranks = L.onnx_ranks(fp32, layers)
    assert (ranks["conv"]["rank"], ranks["conv"]["rank_in"], ranks["fc1"]["rank"]) == (5, 2, 7)
    opts = {n: "int8" for n in ("conv.0", "conv.1", "conv.2", "fc1.0", "fc1.1")}
    q = tmp_path / "m.int8.onnx"
    quantize_onnx(fp32, q, opts, x)
    storage = inspect_onnx(q)
    assert all(storage[n].option == "int8" for n in opts)
    assert L.onnx_ranks(q, layers)["fc1"]["rank"] == 7
    assert L.onnx_ranks(q, layers)["conv"]["rank_in"] == 2


def test_flash_image_holds_every_factor_and_its_rank(tiny, tmp_path: Path) -> None:
    from formats.quant_math import stored_bias_bytes, stored_weight_bytes
    from techniques.flash_image import FlashLayer, read_flash_image, write_flash_image

    f = L.factorize(tiny.fc1, L.LowRankConfig(rank=7))
    layers = [FlashLayer(name, "int8", m.weight.detach().numpy(),
                         None if m.bias is None else m.bias.detach().numpy())
              for name, m in zip(L.factor_names("fc1", "Linear"), f, strict=True)]
    write_flash_image(tmp_path / "img.bin", layers)
    stored = {s.name: s for s in read_flash_image(tmp_path / "img.bin")}
    assert L.image_ranks(stored, {"fc1": "Linear"})["fc1"]["rank"] == 7
    expected = sum(stored_weight_bytes("int8", m.weight.numel(), m.weight.shape[0]) for m in f)
    expected += stored_bias_bytes("int8", 40)
    assert sum(s.weight_bytes + s.bias_bytes for s in stored.values()) == expected
    with pytest.raises(PlanError, match="no factor fc2.0, fc2.1"):
        L.image_ranks(stored, {"fc2": "Linear"})


def test_quantized_copy_quantises_each_factor(tiny) -> None:
    from techniques.fakequant import quantized_copy
    from techniques.quantize import QuantizeConfig

    cfgs = {"fc1": [L.LowRankConfig(rank=7), QuantizeConfig(weights="int8", activations="int8")]}
    q = quantized_copy(tiny, cfgs, _x(16))
    for m in q.fc1:
        assert len(torch.unique(m.weight[0])) <= 255
        assert len(m._forward_hooks) == 1  # activation fake-quant on each factor's output


# --------------------------------------------------------------------------- cost table


def test_cost_table_offers_lowrank_with_exact_flash_and_fewer_macs() -> None:
    from cost_models.analytical import build_cost_table
    from cost_models.capture import capture
    from device_specs.catalog import load_spec
    from edgefit.planning import configs_of, layer_options, lowrank_factors
    from formats.quant_math import stored_bias_bytes, stored_weight_bytes
    from workloads.zoo import LeNet300100

    torch.manual_seed(0)
    model = LeNet300100().eval()
    graph = capture(model, (1, 28, 28))
    spec = load_spec("arduino-nano-33-ble")
    kernels = spec.profile().kernels
    offered = layer_options(graph, kernels, model)
    options = configs_of(offered)
    assert not any("+r" in o for o in options["fc3"]), "1010 weights: too small to factorise"
    cfg = options["fc1"]["int8+r50"][0]
    assert isinstance(cfg, L.LowRankConfig) and cfg.rank == 108
    table = build_cost_table(graph, spec, factored=lowrank_factors(model, graph, options),
                             layer_options={k: list(v.values()) for k, v in offered.items()})
    dense, half, quarter = (table.cost("fc1", o) for o in ("int8", "int8+r50", "int8+r25"))
    want = (stored_weight_bytes("int8", 108 * 784, 108) + stored_weight_bytes("int8", 300 * 108,
                                                                               300)
            + stored_bias_bytes("int8", 300))
    # + the two factors' header entries in the image
    assert 2 * 60 < half.flash_bytes - want < 2 * 160
    assert dense.latency_ms > half.latency_ms > quarter.latency_ms
    assert dense.flash_bytes > half.flash_bytes > quarter.flash_bytes
    without = build_cost_table(graph, spec)
    assert not any("+r" in c.option for c in without.options["fc1"])


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def lowrank_applied(tmp_path_factory: pytest.TempPathFactory):
    """LeNet-5 planned with conv2 (Tucker-2) and fc1 (SVD) pinned to low-rank options, then
    applied. Calibration subset of 64 images keeps the accuracy estimate fast."""
    from device_specs.budget import Budget
    from edgefit import planning
    from edgefit.applying import apply_plan

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(planning, "CALIBRATION_SIZE", 64)
        budget = Budget(target="arduino-nano-33-ble", limits={"latency": "60ms"},
                        model="lenet5-mnist")
        plan, _ = planning.make_plan(budget, "test",
                                     pins={"conv2": "int4+r50", "fc1": "int8+r25"})
        out = tmp_path_factory.mktemp("lowrank")
        return plan, apply_plan(plan, out), out


def test_plan_records_the_ranks_it_chose(lowrank_applied) -> None:
    plan, _, _ = lowrank_applied
    conv2, fc1 = plan.layers["conv2"], plan.layers["fc1"]
    assert conv2.option == "int4+r50" and fc1.option == "int8+r25"
    c = L.lowrank_config(conv2.techniques)
    f = L.lowrank_config(fc1.techniques)
    assert c is not None and c.rank_in is not None and f is not None and f.rank is not None
    assert c.rank < 16 and c.rank_in <= 6 and f.rank * (400 + 120) <= 0.25 * 48000
    dense = plan.layers["fc1"].alternative("int8")
    assert fc1.cost.latency_ms < dense.latency_ms and fc1.cost.flash_bytes < dense.flash_bytes


def test_apply_verifies_the_rank_and_bytes_from_the_files(lowrank_applied) -> None:
    from techniques.flash_image import read_flash_image

    plan, report, out = lowrank_applied
    assert report["verification"]["ok"], report["verification"]["problems"]
    rows = {r["layer"]: r for r in report["verification"]["layers"]}
    for name in ("conv2", "fc1"):
        cfg = L.lowrank_config(plan.layers[name].techniques)
        assert cfg is not None
        assert rows[name]["onnx_rank"] == rows[name]["image_rank"] == cfg.rank
        assert rows[name]["image_bytes"] == plan.layers[name].image_bytes
    stored = {s.name: s for s in read_flash_image(out / "model.flash.bin")}
    assert {"conv2.0", "conv2.1", "conv2.2", "fc1.0", "fc1.1"} <= set(stored)
    assert "conv2" not in stored and stored["fc1.0"].option == "int8"
    assert stored["conv2.1"].option == "int4"  # the Tucker core (TFLM runs int4 on CONV_2D)
    planned = sum(lp.image_bytes for lp in plan.layers.values())
    size = (out / "model.flash.bin").stat().st_size
    assert abs(size - planned) <= max(0.02 * planned, 1024)
    fidelity = report["accuracy"]["onnx_vs_torch"]
    # apply's own bar (cost_models.output_fidelity.AGREEMENT_WARN): the ONNX int8 layers hold
    # 7-bit weight codes (exact u8 x s8 kernels) where the torch simulation rounds to 8 bits
    assert fidelity["top1_agreement"] >= AGREEMENT_WARN
    assert all(c["ok"] for c in report["checks"]), report["checks"]


def test_verification_catches_a_rank_that_is_not_the_planned_one(lowrank_applied) -> None:
    from executors.apply import verify_artifacts
    from techniques.quantize import onnx_option

    plan, _, out = lowrank_applied
    fc1 = plan.layers["fc1"]
    cfg = L.lowrank_config(fc1.techniques)
    assert cfg is not None and cfg.rank is not None
    wrong = [L.LowRankConfig(rank=cfg.rank + 1) if isinstance(t, L.LowRankConfig) else t
             for t in fc1.techniques]
    bad = plan.model_copy(deep=True)
    bad.layers["fc1"] = fc1.model_copy(update={"techniques": wrong})
    opts = {n: onnx_option(lp.techniques) for n, lp in bad.layers.items()}
    result = verify_artifacts(bad, out / "model.onnx", out / "model.flash.bin", opts)
    assert not result["ok"]
    assert any(f"holds rank {cfg.rank}, plan says {cfg.rank + 1}" in p
               for p in result["problems"])
