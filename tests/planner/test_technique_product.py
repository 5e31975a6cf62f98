"""The decision space is the full product: kernel x storage technique (sparsity, low rank,
sharing, N:M) x channel widths. Every full-width option is offered at every width combination,
its costs compose (channels first, then the technique on the kept weights), and a plan that
takes combined options applies and verifies (read back from the files)."""

from __future__ import annotations

import onnx
import pytest
from onnx import numpy_helper

from cost_models.capture import capture
from cost_models.channels import channel_group_specs, layer_couplings
from cost_models.options import layer_options, pruned_weight_shape
from device_specs.budget import Budget
from device_specs.catalog import load_spec
from techniques.lowrank import LowRankConfig, lowrank_config
from techniques.option import OfferContext
from techniques.prune import ChannelPruneConfig, UnstructuredPruneConfig, coupling, kept_slice
from workloads.zoo import LeNet5

SHAPE = (1, 28, 28)
# pinned: conv2 factorised at 12 of 16 channels, fc1 half-sparse reading those 12 channels
PINS = {"conv2": "int8+r50+w12", "fc1": "int8+s50+in12"}


def _ranks(layer, option, fraction):  # every low-rank offer resolves (shapes are not tested)
    return LowRankConfig(rank=1)


def _couplings(multiple: int = 4):
    model = LeNet5()
    return model, capture(model, SHAPE), layer_couplings(
        channel_group_specs(coupling(model, SHAPE), multiple))


def test_every_full_width_option_is_offered_at_every_width_combination() -> None:
    _, graph, couplings = _couplings()
    kernels = load_spec("arduino-nano-33-ble").profile().kernels
    share = ((4, 0.0), (4, 0.75))
    for name in ("conv2", "fc1", "fc2"):
        layer, c = graph.layer(name), couplings[name]
        ctx = OfferContext(levels={"lowrank": (0.5,), "share": share})
        full = [s.name for s in layer_options(kernels, layer, ctx, ranks=_ranks)]
        specs = layer_options(kernels, layer, ctx, coupling=c, ranks=_ranks)
        combos = 1
        for g in c.groups:
            combos *= len(g.widths)
        assert combos > 1
        assert len(specs) == len(full) * combos, name
        by_base: dict[str, set[tuple]] = {}
        for s in specs:
            by_base.setdefault(s.base, set()).add(s.widths)
            assert s.name.startswith(s.base)
        assert set(by_base) == set(full)
        assert all(len(w) == combos for w in by_base.values())


def test_nm_options_keep_only_widths_with_an_nm_form() -> None:
    from techniques.prune import NMPruneConfig, nm_applicable

    _, graph, couplings = _couplings(multiple=2)  # 2-channel steps: some widths break 2:4
    gpu = load_spec("jetson-orin-nano").profile("tensorrt-gpu")
    assert gpu.nm_sparsity is not None
    cfg = NMPruneConfig(n=gpu.nm_sparsity.n, m=gpu.nm_sparsity.m)
    seen = 0
    for name in ("conv2", "fc1", "fc2"):
        layer = graph.layer(name)
        for s in layer_options(gpu.kernels, layer, OfferContext(nm=gpu.nm_sparsity),
                               coupling=couplings[name]):
            if s.has("prune_nm") and s.weight_fraction < 1.0:
                seen += 1
                shape = pruned_weight_shape(layer.weight_shape, s.out_fraction,
                                            s.weight_fraction)
                assert nm_applicable(shape, cfg), (name, s.name, shape)
    assert seen


def test_kept_slice_has_the_pruned_shape_and_the_largest_channels() -> None:
    import numpy as np
    import torch

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 16, 5)
    with torch.no_grad():
        conv.weight[3] *= 100  # the loudest output channel must survive
    cut = kept_slice(conv, (12, 4, 5, 5))
    assert tuple(cut.weight.shape) == (12, 4, 5, 5) and cut.bias.shape == (12,)
    assert cut.out_channels == 12 and cut.in_channels == 4
    w = conv.weight.detach().numpy()
    rows = np.sort(np.argsort(-np.abs(w).sum(axis=(1, 2, 3)), kind="stable")[:12])
    cols = np.sort(np.argsort(-np.abs(w[rows]).sum(axis=(0, 2, 3)), kind="stable")[:4])
    assert 3 in rows
    np.testing.assert_array_equal(cut.weight.detach().numpy(), w[rows][:, cols])
    np.testing.assert_array_equal(cut.bias.detach().numpy(), conv.bias.detach().numpy()[rows])
    with pytest.raises(Exception, match="cannot cut"):
        kept_slice(conv, (20, 6, 5, 5))


@pytest.fixture(scope="module")
def planned():
    from edgefit.planning import make_plan

    budget = Budget(target="arduino-nano-33-ble", limits={"latency": "40ms"},
                    model="lenet5-mnist")
    return make_plan(budget, "test", pins=PINS)


def test_combined_costs_compose(planned) -> None:
    _, ctx = planned
    row = {c.option: c for c in ctx.table.options["conv2"]}
    acc = {c.option: c.acc_loss for c in row.values()}
    # zeros on a dense MCU kernel: the narrow layer's latency, fewer bytes than the narrow dense
    assert row["int8+s50+w12"].latency_ms == pytest.approx(row["int8+w12"].latency_ms)
    # (in the packed image: the Nano's model.tflite stores zeros dense, same flash as narrow)
    assert row["int8+s50+w12"].image_bytes < row["int8+w12"].image_bytes  # type: ignore[operator]
    assert row["int8+s50+w12"].image_bytes < row["int8+s50"].image_bytes  # type: ignore[operator]
    assert row["int8+s50+w12"].flash_bytes == row["int8+w12"].flash_bytes
    # factors of the narrow layer: fewer MACs than either alone
    assert row["int8+r50+w12"].latency_ms < min(row["int8+r50"].latency_ms,
                                                row["int8+w12"].latency_ms)
    assert row["int8+r50+w12"].flash_bytes < row["int8+r50"].flash_bytes
    # accuracy: the full-width option's cost plus the group's pruning cost (additive)
    charge = acc["int8+w12"] - acc["int8"]
    for base in ("int8+s50", "int8+r50", "fp32+k4"):
        assert acc[f"{base}+w12"] == pytest.approx(acc[base] + charge)


def test_combined_low_rank_ranks_fit_the_kept_shape(planned) -> None:
    plan, _ = planned
    cfg = lowrank_config(plan.layers["conv2"].techniques)
    assert isinstance(cfg, LowRankConfig) and cfg.rank is not None
    assert cfg.rank < 12 and cfg.rank_in is not None and cfg.rank_in < 6
    kinds = [type(t) for t in plan.layers["conv2"].techniques]
    assert kinds.index(ChannelPruneConfig) < kinds.index(LowRankConfig)


def test_pinned_combinations_are_in_the_plan(planned) -> None:
    plan, _ = planned
    assert plan.feasible
    assert {n: plan.layers[n].option for n in PINS} == PINS
    assert any(isinstance(t, UnstructuredPruneConfig) for t in plan.layers["fc1"].techniques)


@pytest.fixture(scope="module")
def applied(planned, tmp_path_factory: pytest.TempPathFactory):
    from edgefit.applying import apply_plan

    plan, _ = planned
    out = tmp_path_factory.mktemp("apply-product")
    return plan, apply_plan(plan, out), out


def test_apply_realises_every_technique_of_the_combination(applied) -> None:
    plan, report, out = applied
    v = report["verification"]
    assert v["ok"], v["problems"]
    assert report["artifacts"]["flash_match"]
    weights = {i.name: numpy_helper.to_array(i)
               for i in onnx.load(str(out / "model.onnx")).graph.initializer}
    # fc1 reads the 12 kept channels of conv2 (x 5 x 5 positions); half its weights are zero
    fc1 = weights["fc1.weight_quantized"]
    assert fc1.shape == (120, 12 * 25)
    assert (fc1 == 0).mean() == pytest.approx(0.5, abs=0.02)
    # conv2's factors (1x1 in, k x k core, 1x1 out): the last writes the 12 kept channels
    factors = [weights[f"conv2.{i}.weight_quantized"] for i in range(3)]
    assert factors[0].shape[1] == 6 and factors[-1].shape[0] == 12
    assert factors[1].shape[2:] == (5, 5)
