"""TFLM's structs and CMSIS-NN's scratch for a board's build (cost_models.tflm_structs): the
layouts reproduce what tflite-micro's 64-bit build measured here, and the scratch sizes are
CMSIS-NN's get_buffer_size functions on cases worked by hand from their C source."""

from __future__ import annotations

import pytest

from cost_models import tflm_arena as arena
from cost_models.runtime_memory import tflm_build
from cost_models.tflm_structs import (
    HOST_BUILD,
    OpGeometry,
    TflmBuild,
    avgpool_scratch_bytes,
    conv_scratch_bytes,
    depthwise_scratch_bytes,
    fully_connected_persistent_bytes,
    int_array_bytes,
    op_data_struct,
    sizeof,
)
from device_specs.catalog import catalog_names, load_spec
from device_specs.cores import core_spec
from device_specs.schema import TfliteFormat

BOARD = TflmBuild(pointer_bytes=4, compression=False, kernels="cmsis-nn", simd="dsp")


def test_layouts_reproduce_the_measured_64_bit_constants() -> None:
    """The per-item bytes tflite-micro's recording allocator gave on x86-64 (tflm_arena's
    constants) are the C layouts at 8-byte pointers with USE_TFLM_COMPRESSION."""
    assert sizeof("TfLiteEvalTensor", HOST_BUILD) == arena.EVAL_TENSOR_BYTES == 24
    assert sizeof("NodeAndRegistration", HOST_BUILD) == arena.NODE_BYTES == 64
    assert sizeof("TfLiteTensor", HOST_BUILD) == arena.IO_TENSOR_BYTES == arena.TEMP_TENSOR_BYTES
    assert sizeof("TfLiteAffineQuantization", HOST_BUILD) == arena.TEMP_QUANT_BYTES
    assert (sizeof("TfLiteAffineQuantization", HOST_BUILD) + int_array_bytes(1)
            == arena.IO_QUANT_BYTES)
    for code in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D",
                 "AVERAGE_POOL_2D", "ADD"):
        struct = op_data_struct(code, HOST_BUILD)
        assert struct is not None
        assert sizeof(struct, HOST_BUILD) == arena.OP_DATA_BYTES[code], code
        assert arena.op_data_bytes(code) == arena.OP_DATA_BYTES[code]


def test_a_32_bit_build_has_smaller_structs() -> None:
    """ILP32 by hand: EvalTensor 4 + 4 + 4; node 6 pointers + an int, + the registration
    pointer; TfLiteTensor 8 + 8 + 4 + 4 + 4 + 4 + 4 + 1 -> 40; OpDataConv without the
    compression indices 16 + 20 + 8 + 12 = 56, CMSIS-NN's + buffer_idx = 60."""
    assert sizeof("TfLiteEvalTensor", BOARD) == 12
    assert sizeof("NodeAndRegistration", BOARD) == 32
    assert sizeof("TfLiteTensor", BOARD) == 40
    assert sizeof("OpDataConv", BOARD) == 56
    assert sizeof("CmsisConv", BOARD) == 60
    assert sizeof("OpDataPooling", BOARD) == sizeof("OpDataPooling", HOST_BUILD) == 32


def _g(c: int, hw: int, oc: int, ohw: int, k: int, stride: int = 1, pad: int = 0
       ) -> OpGeometry:
    return OpGeometry(c, hw, hw, oc, ohw, ohw, k, k, stride, stride, pad, pad)


def test_conv_scratch_is_cmsis_nn_s_im2col() -> None:
    """arm_convolve_wrapper_s8_get_buffer_size: 3 x 3 x 8 input -> 72 columns: DSP / plain C
    2 x 72 x int16 = 288 B; Helium 4 rows of ceil(72 / 16) x 16 = 320 B; a 1 x 1 unpadded
    convolution none; 1 x N rows (height 1) with Helium their own (3 x 8 + 1 x 8 = 32)."""
    g = _g(8, 16, 16, 16, 3, pad=1)
    assert conv_scratch_bytes(g, "dsp") == conv_scratch_bytes(g, "none") == 288
    assert conv_scratch_bytes(g, "mve") == 320
    assert conv_scratch_bytes(_g(8, 16, 16, 16, 1), "dsp") == 0
    assert conv_scratch_bytes(_g(8, 16, 16, 8, 1, stride=2), "mve") == 0
    row = OpGeometry(8, 1, 49, 16, 1, 49, 1, 3, 1, 1, 0, 1)
    assert conv_scratch_bytes(row, "mve") == 32
    assert conv_scratch_bytes(row, "dsp") == 2 * 24 * 2


def test_depthwise_scratch() -> None:
    """arm_depthwise_conv_wrapper_s8_get_buffer_size: 3 x 3 with padding <= 1 runs without
    one (non-Helium); 5 x 5 on 8 channels with DSP 8 x 25 x int16 = 400 B, plain C none;
    Helium 4 x CH_IN_BLOCK_MVE (124) x 9 = 4,464 B."""
    assert depthwise_scratch_bytes(_g(8, 16, 8, 16, 3, pad=1), "dsp") == 0
    assert depthwise_scratch_bytes(_g(8, 16, 8, 16, 5, pad=2), "dsp") == 400
    assert depthwise_scratch_bytes(_g(8, 16, 8, 16, 5, pad=2), "none") == 0
    assert depthwise_scratch_bytes(_g(8, 16, 8, 16, 3, pad=1), "mve") == 4464
    # a channel multiplier (1 input channel, 6 outputs) is not the optimised path
    assert depthwise_scratch_bytes(_g(1, 28, 6, 28, 5, pad=2), "dsp") == 0


def test_pooling_and_fully_connected() -> None:
    assert avgpool_scratch_bytes(_g(16, 8, 16, 1, 8), "dsp") == 64
    assert avgpool_scratch_bytes(_g(16, 8, 16, 1, 8), "mve") == 0
    assert fully_connected_persistent_bytes(10, "mve") == 40
    assert fully_connected_persistent_bytes(10, "dsp") == 0


def test_reference_kernels_ask_for_no_scratch() -> None:
    """The arena measured here (reference kernels) has no scratch: the default build adds none."""
    from cost_models.capture import capture
    from workloads.mlperf_tiny import tiny_model

    graph = capture(tiny_model("ic"), (3, 32, 32), "ic")
    conv = arena.converted_graph(graph)
    assert all(arena.op_scratch_bytes(o) == 0 for o in conv.ops)
    assert any(arena.op_scratch_bytes(o, BOARD) > 0 for o in conv.ops)
    host = arena.predict_arena(graph, dict.fromkeys(graph.layer_names, 1.0))
    board = arena.predict_arena(graph, dict.fromkeys(graph.layer_names, 1.0), build=BOARD)
    assert board.tail_bytes < host.tail_bytes


@pytest.mark.parametrize("name", [n for n in catalog_names() if n != "host"])
def test_every_micro_profile_has_a_board_build(name: str) -> None:
    """Each TFLM profile's build follows its data: the core's pointer width and DSP / Helium,
    the profile's kernel library, which agrees with its runtime family."""
    spec = load_spec(name)
    for pname, profile in spec.profiles.items():
        build = tflm_build(profile, spec.core)
        if profile.tflite is None or not profile.tflite.micro:
            assert build is None
            continue
        assert build is not None and spec.core is not None
        assert build.pointer_bytes == core_spec(spec.core).pointer_bytes.value == 4
        assert build.kernels == profile.tflite.micro_kernels
        family = {"tflm-cmsis-nn": "cmsis-nn", "tflm-reference": "reference",
                  "tflm-esp-nn": "esp-nn"}
        assert family[str(profile.runtime_family)] == build.kernels, (name, pname)
        want = ("mve" if core_spec(spec.core).helium.value
                else "dsp" if core_spec(spec.core).dsp.value else "none")
        assert build.simd == want


def test_micro_kernels_is_required_for_micro_only() -> None:
    with pytest.raises(ValueError, match="micro_kernels"):
        TfliteFormat(micro=True)
    with pytest.raises(ValueError, match="micro_kernels"):
        TfliteFormat(micro=False, micro_kernels="cmsis-nn")
    assert TfliteFormat(micro=True, micro_kernels="reference").micro_kernels == "reference"
