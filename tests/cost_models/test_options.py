"""Options per layer: kernels x technique offers, with the techniques that realise them."""

from __future__ import annotations

from cost_models.capture import capture
from cost_models.options import layer_options
from device_specs.catalog import load_spec
from techniques.option import OfferContext
from techniques.prune import MIN_WEIGHTS_FOR_SPARSITY, UnstructuredPruneConfig
from techniques.quantize import QuantizeConfig
from workloads.zoo import LeNet5


def test_sparse_variants_only_for_layers_worth_it() -> None:
    graph = capture(LeNet5(), (1, 28, 28))
    kernels = load_spec("arduino-nano-33-ble").profile().kernels
    for layer in graph.layers:
        names = [s.name for s in layer_options(kernels, layer)]
        assert set(kernels) <= set(names)
        has_sparse = any("+s" in n for n in names)
        assert has_sparse == (layer.weight_numel >= MIN_WEIGHTS_FOR_SPARSITY), layer.name
    none = OfferContext(levels={"prune_unstructured": (), "share": ()})
    assert [s.name for s in layer_options(kernels, graph.layer("fc1"), none)] == list(kernels)


def test_techniques_prune_then_quantise() -> None:
    graph = capture(LeNet5(), (1, 28, 28))
    kernels = load_spec("arduino-nano-33-ble").profile().kernels
    spec = next(s for s in layer_options(kernels, graph.layer("fc1")) if s.name == "int4+s50")
    configs = spec.to_list()
    assert isinstance(configs[0], UnstructuredPruneConfig) and configs[0].sparsity == 0.5
    assert isinstance(configs[1], QuantizeConfig) and configs[1].weights == "int4"
    fp32 = next(s for s in layer_options(kernels, graph.layer("fc1")) if s.name == "fp32")
    assert fp32.to_list() == []


def test_nm_options_only_where_the_profile_has_nm_kernels() -> None:
    from techniques.prune import NMPruneConfig

    graph = capture(LeNet5(), (1, 28, 28))
    orin = load_spec("jetson-orin-nano")
    gpu = orin.profile("tensorrt-gpu")
    assert gpu.nm_sparsity is not None
    fc1 = graph.layer("fc1")  # 400 inputs: a multiple of 4
    nm = OfferContext(nm=gpu.nm_sparsity)
    names = [s.name for s in layer_options(gpu.kernels, fc1, nm)]
    assert {"fp16+nm24", "int8+nm24"} <= set(names) and "fp32+nm24" not in names
    conv1 = graph.layer("conv1")  # one input channel x 5 x 5: no 4-wide groups along the input
    assert not any("+nm" in s.name for s in layer_options(gpu.kernels, conv1, nm))
    cpu = orin.profile("onnxruntime-cpu")
    assert cpu.nm_sparsity is None
    assert not any("+nm" in s.name for s in layer_options(cpu.kernels, fc1))
    spec = next(s for s in layer_options(gpu.kernels, fc1, nm) if s.name == "int8+nm24")
    configs = spec.to_list()
    assert configs[0] == NMPruneConfig(n=2, m=4)
    assert isinstance(configs[1], QuantizeConfig) and configs[1].weights == "int8"


def test_asymmetric_kernel_stores_uint_codes_and_its_costs_match_the_image(tmp_path) -> None:
    import numpy as np

    from cost_models.analytical import image_entry_bytes, layer_flash_bytes
    from device_specs.schema import Kernel
    from techniques.flash_image import FlashLayer, read_flash_image, write_flash_image

    model = LeNet5()
    graph = capture(model, (1, 28, 28))
    kernel = Kernel.model_validate({"weights": "int3", "activations": "fp32", "symmetric": False,
                                    "macs_per_s": {"value": "1GMAC/s", "unverified": "test"}})
    assert kernel.storage == "uint3"
    fc1 = graph.layer("fc1")
    specs = layer_options({"uint3": kernel}, fc1)
    assert [s.name for s in specs] == ["uint3"], "sparse codes are symmetric: no +s options"
    (cfg,) = specs[0].to_list()
    assert cfg.symmetric is False and cfg.storage == "uint3"
    w = model.fc1.weight.detach().numpy()
    write_flash_image(tmp_path / "x.bin", [FlashLayer("fc1", "uint3", w,
                                                      model.fc1.bias.detach().numpy())])
    (stored,) = read_flash_image(tmp_path / "x.bin")
    assert stored.weight_bytes + stored.bias_bytes == layer_flash_bytes(fc1, kernel)
    assert stored.header_bytes == image_entry_bytes(fc1, kernel)
    assert np.unique(stored.q).size <= 8
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError, match="weight-only kernel"):
        Kernel.model_validate({"weights": "int8", "activations": "int8", "symmetric": False,
                               "macs_per_s": {"value": "1GMAC/s", "unverified": "test"}})


def test_tflite_profiles_offer_int4_only_on_the_operators_their_runtime_runs() -> None:
    """arduino-nano-33-ble's TFLM profile runs int4 weights in CONV_2D only (its tflite field):
    a Linear (FULLY_CONNECTED) and a one-input-channel conv (DEPTHWISE_CONV_2D) get no int4."""
    graph = capture(LeNet5(), (1, 28, 28))
    profile = load_spec("arduino-nano-33-ble").profile()
    assert profile.tflite is not None and "int4" in profile.kernels

    def kernels_of(name: str) -> set[str]:
        return {o.kernel for o in layer_options(profile.kernels, graph.layer(name),
                                                tflite=profile.tflite)}

    assert "int4" in kernels_of("conv2")
    assert "int4" not in kernels_of("conv1") and "int4" not in kernels_of("fc1")
    assert "int4" in {o.kernel for o in layer_options(profile.kernels, graph.layer("fc1"))}
