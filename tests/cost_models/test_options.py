"""Options per layer: kernels x sparsity levels, with the techniques that realise them."""

from __future__ import annotations

from cost_models.capture import capture
from cost_models.options import MIN_WEIGHTS_FOR_SPARSITY, option_specs, techniques
from device_specs.catalog import load_spec
from executors.prune import UnstructuredPruneConfig
from executors.quantize import QuantizeConfig
from workloads.zoo import LeNet5


def test_sparse_variants_only_for_layers_worth_it() -> None:
    graph = capture(LeNet5(), (1, 28, 28))
    kernels = load_spec("arduino-nano-33-ble").profile().kernels
    for layer in graph.layers:
        names = [s.name for s in option_specs(kernels, layer)]
        assert set(kernels) <= set(names)
        has_sparse = any("+s" in n for n in names)
        assert has_sparse == (layer.weight_numel >= MIN_WEIGHTS_FOR_SPARSITY), layer.name
    assert [s.name for s in option_specs(kernels, graph.layer("fc1"), ())] == list(kernels)


def test_techniques_prune_then_quantise() -> None:
    graph = capture(LeNet5(), (1, 28, 28))
    kernels = load_spec("arduino-nano-33-ble").profile().kernels
    spec = next(s for s in option_specs(kernels, graph.layer("fc1")) if s.name == "int4+s50")
    configs = techniques(spec, kernels[spec.kernel])
    assert isinstance(configs[0], UnstructuredPruneConfig) and configs[0].sparsity == 0.5
    assert isinstance(configs[1], QuantizeConfig) and configs[1].weights == "int4"
    fp32 = next(s for s in option_specs(kernels, graph.layer("fc1")) if s.name == "fp32")
    assert techniques(fp32, kernels["fp32"]) == []
