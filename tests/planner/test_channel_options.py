"""Channel pruning as plan options: coupled groups on a residual + depthwise network, widths
rounded to the device's multiple, exact pruned geometry, coupling held by both backends."""

from __future__ import annotations

import copy

import pytest
import torch

from cost_models.analytical import build_cost_table, pruned_layer
from cost_models.capture import capture
from cost_models.channels import channel_group_specs, group_widths, layer_couplings
from cost_models.options import graph_options, layer_options
from cost_models.table import CostTable, OptionCost
from device_specs.catalog import load_spec
from edgefit.planning import build_problem, scaled_pruned_latency, width_accuracy
from planner.solve import solve
from techniques.option import OfferContext
from techniques.prune import coupling, kept_channels, prune_channels
from workloads.models import load_model_ref
from workloads.refs import factory_allowed

SHAPE = (1, 28, 28)
MULTIPLE = 8  # esp32-s3's preferred_channel_multiple (esp-nn profile)
PLAIN = OfferContext(weights=False)  # kernel options only


def _fp32():
    from device_specs.schema import Kernel

    return Kernel.model_validate({"weights": "fp32", "activations": "fp32",
                                  "macs_per_s": {"value": "1GMAC/s", "unverified": "test"}})


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(0)
    ref = "workloads.mobilenet:MobileNetV2Small"
    with factory_allowed(ref):  # a factory runs only when the caller names it (workloads.refs)
        loaded = load_model_ref(ref, None, SHAPE)
    model = loaded.torch_module()
    groups = channel_group_specs(coupling(model, SHAPE), MULTIPLE)
    return model, capture(model, SHAPE), groups


@pytest.mark.parametrize(("channels", "multiple"), [(6, 4), (16, 8), (120, 4), (84, 4),
                                                    (10, 8), (7, 8), (256, 8), (3, 1)])
def test_widths_are_multiples_never_zero_and_reproducible(channels: int, multiple: int) -> None:
    widths = group_widths(channels, multiple)
    assert widths[-1] == channels
    for w in widths[:-1]:
        assert 0 < w < channels and w % multiple == 0
    if channels < multiple:
        assert widths == (channels,)


def test_residual_and_depthwise_layers_share_one_group(mobilenet) -> None:
    _, _, groups = mobilenet
    by_name = {g.name: g for g in groups}
    # block 0 (expansion 1, residual): stem, its depthwise conv and the projection added to it
    assert by_name["stem.conv"].layers == ("stem.conv", "blocks.0.depthwise.conv",
                                           "blocks.0.project.conv")
    # the residual stream of blocks 1-2 ties both projections together
    assert by_name["blocks.1.project.conv"].layers == ("blocks.1.project.conv",
                                                       "blocks.2.project.conv")
    assert all(w % MULTIPLE == 0 for g in groups for w in g.widths[:-1])


def test_pruned_geometry_matches_the_really_pruned_model(mobilenet) -> None:
    """Weights, bias, MACs, input and output sizes of every affected layer, as costs see
    them, equal those of the model Torch-Pruning produced (exact counts)."""
    model, graph, groups = mobilenet
    couplings = layer_couplings(groups)
    for g in groups[:3]:
        narrow = g.widths[0]
        pruned = prune_channels(copy.deepcopy(model), dict.fromkeys(g.layers,
                                                                    g.prune_config(narrow)),
                                SHAPE)
        after = {layer.name: layer for layer in capture(pruned, SHAPE).layers}
        checked = 0
        for layer in graph.layers:
            c = couplings.get(layer.name)
            if c is None or g.name not in {x.name for x in c.groups}:
                continue
            kept = {x.name: narrow if x.name == g.name else x.channels for x in c.groups}
            spec = next(s for s in layer_options({"fp32": _fp32()}, layer, PLAIN, coupling=c)
                        if dict(s.widths) == kept)
            assert pruned_layer(layer, spec) == after[layer.name], layer.name
            checked += 1
        assert checked >= len(set(g.layers) | set(g.consumers))


def _problem(mobilenet):
    model, graph, groups = mobilenet
    spec = load_spec("esp32-s3")
    couplings = layer_couplings(groups)
    kernels = spec.profile(spec.default_profile).kernels
    # accuracy: a synthetic per-kernel cost plus a pruning cost growing with the removed share
    acc = {(ly.name, k): 0.01 * i for ly in graph.layers for i, k in enumerate(kernels)}
    prune_kl = {(g.name, f"w{w}"): (1 - w / g.channels) for g in groups for w in g.widths}
    offered = {ly: {o.name: o for o in row} for ly, row in graph_options(
        graph, kernels, PLAIN, couplings).items()}
    acc = width_accuracy(graph, offered, couplings, acc, prune_kl)
    table = build_cost_table(graph, spec, None, acc, coupling=couplings)
    free = build_problem(graph, table, {})

    channels = {g.name: g.channels for g in groups}

    def fastest(full_width: bool) -> float:
        return free.fixed["latency_ms"] + sum(
            min(c.latency_ms for c in free.choices[ly]
                if not full_width or all(w == channels[n] for n, w in c.widths))
            for ly in free.layers)

    # below the fastest full-width plan, above the fastest pruned one: pruning is forced
    limit = 0.5 * (fastest(True) + fastest(False))
    assert fastest(False) < limit < fastest(True)
    return free.with_limits({"latency_ms": limit}), groups, table


def test_solvers_keep_groups_consistent_on_mobilenet(mobilenet) -> None:
    problem, groups, table = _problem(mobilenet)
    assert set(problem.groups) == {g.name for g in groups}
    for g in groups:
        assert set(problem.members()[g.name]) == set(g.layers) | set(g.consumers)
    results = {b: solve(problem, backend=b, explain=False) for b in ("cpsat", "cbc")}
    for backend, r in results.items():
        assert r.feasible, backend
        assert problem.feasible(r.totals), backend
        chosen = {ly: table.cost(ly, o) for ly, o in r.picks.items()}
        for g in groups:
            used = {dict(chosen[ly].widths)[g.name] for ly in problem.members()[g.name]}
            assert len(used) == 1, (backend, g.name, used)
            (w,) = used
            assert w == g.channels or (w % MULTIPLE == 0 and w > 0)
        assert any(dict(c.widths)[g] < full for c in chosen.values()
                   for g, full in ((g.name, g.channels) for g in groups)
                   if g in dict(c.widths)), "the limit forces some channel pruning"
    assert results["cpsat"].totals["acc_loss"] == pytest.approx(
        results["cbc"].totals["acc_loss"], abs=1e-6)


def test_configs_reproduce_every_offered_width(mobilenet) -> None:
    _, _, groups = mobilenet
    for g in groups:
        for w in g.widths[:-1]:
            cfg = g.prune_config(w)
            assert kept_channels(g.channels, cfg.ratio, cfg.round_to) == w


def test_host_latency_of_pruned_options_scales_the_measured_one() -> None:
    full = OptionCost("int8", 2.0, 100, 4.0, 1, 0.0, (("g", 16),), 1, 1.0, "int8")
    narrow = OptionCost("int8+w8", 9.9, 50, 9.9, 0.5, 0.1, (("g", 8),), 1, 0.5, "int8")
    table = CostTable("host", "ort", {"a": [full, narrow]}, 0, 0, 0.0, 1.0, True,
                      provenance={"latency": "measured"})
    scaled = scaled_pruned_latency(table)
    assert scaled.cost("a", "int8+w8").latency_ms == pytest.approx(1.0)
    assert scaled.cost("a", "int8+w8").energy_mj == pytest.approx(2.0)
    assert scaled.cost("a", "int8") == full
    assert "kept fraction of the layer's MACs" in scaled.provenance["latency"]
