"""TFLM's structs and kernel scratch for the build a board runs, not only the one measured here.

tflite-micro's Python wheel (the arena measured by benchmarks/tflm_arena.py) is an x86-64
build with 64-bit pointers, TFLM's reference kernels and ``USE_TFLM_COMPRESSION`` defined. A
Cortex-M firmware is a 32-bit build (pointers and ``size_t`` of 4 bytes), usually with CMSIS-NN
kernels, which ask for scratch buffers in the arena sized by the core's features (the DSP
extension, Helium). Neither is measurable on this machine, so both come from the sources:

* ``sizeof``: the C layout (natural alignment, AAPCS / System V) of the structs TFLM puts in
  the arena's tail, field lists copied from tflite-micro's headers
  (tensorflow/lite/core/c/common.h under TF_LITE_STATIC_MEMORY; kernels/conv.h,
  fully_connected.h, pooling.h, add.h; kernels/cmsis_nn/*.cc ``struct OpData``). At the
  measured build they reproduce the measured per-item constants exactly (tests assert it);
* ``cmsis_nn_scratch_bytes``: CMSIS-NN's ``*_get_buffer_size`` functions
  (Source/ConvolutionFunctions/arm_convolve_get_buffer_sizes_s8.c,
  arm_depthwise_conv_get_buffer_sizes_s8.c, FullyConnectedFunctions/..._s8.c,
  PoolingFunctions/arm_avgpool_get_buffer_sizes_s8.c; CMSIS-NN 99f736a, 2026-07-15) as TFLM's
  cmsis_nn kernels call them in Prepare.

Pure python (the planner side and the tool virtualenv both use it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kernels = Literal["reference", "cmsis-nn", "esp-nn"]
Simd = Literal["none", "dsp", "mve"]


@dataclass(frozen=True)
class TflmBuild:
    """What decides the arena's structs and scratch: the pointer width, whether the build
    defines USE_TFLM_COMPRESSION (two more ints in conv / fully connected op data), the
    kernel library and, for CMSIS-NN, its SIMD variant (ARM_MATH_DSP / ARM_MATH_MVEI)."""

    pointer_bytes: int = 8
    compression: bool = True
    kernels: Kernels = "reference"
    simd: Simd = "none"

    def describe(self) -> str:
        bits = 8 * self.pointer_bytes
        simd = f" ({self.simd})" if self.kernels == "cmsis-nn" else ""
        return f"{bits}-bit, {self.kernels} kernels{simd}"


HOST_BUILD = TflmBuild()
"""tflite-micro 0.dev20261023182759's wheel on x86-64: the build every measured arena is from."""

# ------------------------------------------------------------------ C layout
# A field is a scalar kind or the name of another struct below.
_SCALARS = {"i32": 4, "f32": 4, "f64": 8, "bool": 1}

_STRUCTS: dict[str, tuple[str, ...]] = {
    # common.h, TF_LITE_STATIC_MEMORY
    "TfLiteEvalTensor": ("ptr", "ptr", "i32"),  # data, dims, type
    # inputs, outputs, intermediates, user_data, builtin_data, custom_initial_data, its size
    "TfLiteNode": ("ptr",) * 6 + ("i32",),
    "NodeAndRegistration": ("TfLiteNode", "ptr"),  # micro_allocator.h
    "TfLiteQuantization": ("i32", "ptr"),  # type, params
    "TfLiteQuantizationParams": ("f32", "i32"),
    # quantization, params, data, dims, bytes, type, allocation_type, is_variable
    "TfLiteTensor": ("TfLiteQuantization", "TfLiteQuantizationParams", "ptr", "ptr", "size",
                     "i32", "i32", "bool"),
    "TfLiteAffineQuantization": ("ptr", "ptr", "i32"),  # scale, zero_point, quantized_dimension
    "TfLitePaddingValues": ("i32",) * 4,
    # kernels/conv.h: padding, 3 zero points, multiplier, shift, per-channel multiplier and
    # shift arrays, activation min / max, filter_buffer_index (+ 2 compression indices)
    "OpDataConv": ("TfLitePaddingValues",) + ("i32",) * 5 + ("ptr", "ptr") + ("i32",) * 3,
    # kernels/fully_connected.h: multiplier, shift, activation min / max, input_quantized_index,
    # 3 zero points, filter_buffer_index, per-channel arrays, is_per_channel (+ compression)
    "OpDataFullyConnected": ("i32",) * 9 + ("ptr", "ptr", "bool"),
    "OpDataPooling": ("TfLitePaddingValues", "i32", "i32", "f32", "f32"),  # kernels/pooling.h
    "OpDataAdd": ("bool",) + ("i32",) * 12 + ("f32", "f32"),  # kernels/add.h
    # kernels/cmsis_nn/*.cc: the reference op data + buffer indices (+ FC's kernel sums)
    "CmsisConv": ("OpDataConv", "i32"),
    "CmsisFullyConnected": ("OpDataFullyConnected", "i32", "i32", "ptr", "i32", "i32", "i32"),
    "CmsisPooling": ("OpDataPooling", "i32"),
}
_COMPRESSED = {"OpDataConv": 2, "OpDataFullyConnected": 2}  # weights / bias scratch indices


def _fields(name: str, build: TflmBuild) -> tuple[str, ...]:
    extra = _COMPRESSED.get(name, 0) if build.compression else 0
    return _STRUCTS[name] + ("i32",) * extra


def _kind_size_align(kind: str, build: TflmBuild) -> tuple[int, int]:
    if kind in ("ptr", "size"):
        return build.pointer_bytes, build.pointer_bytes
    if kind in _SCALARS:
        return _SCALARS[kind], _SCALARS[kind]
    return sizeof(kind, build), alignof(kind, build)


def alignof(name: str, build: TflmBuild) -> int:
    return max(_kind_size_align(k, build)[1] for k in _fields(name, build))


def sizeof(name: str, build: TflmBuild) -> int:
    """The struct's size as the C compiler lays it out: each field at its alignment, the
    whole rounded up to the largest."""
    offset = 0
    for kind in _fields(name, build):
        size, align = _kind_size_align(kind, build)
        offset = -(-offset // align) * align + size
    align = alignof(name, build)
    return -(-offset // align) * align


def int_array_bytes(n: int) -> int:
    """A TfLiteIntArray / TfLiteFloatArray of ``n`` entries: its int size + the entries."""
    return 4 + 4 * n


def op_data_struct(code: str, build: TflmBuild) -> str | None:
    """The struct a kernel's Init allocates, where its layout is known (else None: the
    measured constant stands)."""
    cmsis = build.kernels == "cmsis-nn"
    return {
        "CONV_2D": "CmsisConv" if cmsis else "OpDataConv",
        "DEPTHWISE_CONV_2D": "CmsisConv" if cmsis else "OpDataConv",
        "FULLY_CONNECTED": "CmsisFullyConnected" if cmsis else "OpDataFullyConnected",
        "MAX_POOL_2D": "CmsisPooling" if cmsis else "OpDataPooling",
        "AVERAGE_POOL_2D": "CmsisPooling" if cmsis else "OpDataPooling",
        "ADD": "OpDataAdd",
    }.get(code)


# ------------------------------------------------------------------ CMSIS-NN scratch


@dataclass(frozen=True)
class OpGeometry:
    """An operator's shapes as CMSIS-NN's dims see them (NHWC, batch 1)."""

    in_c: int
    in_h: int
    in_w: int
    out_c: int
    out_h: int
    out_w: int
    k_h: int = 1
    k_w: int = 1
    stride_h: int = 1
    stride_w: int = 1
    pad_h: int = 0
    pad_w: int = 0


def _align4(n: int) -> int:
    return n + (4 - n % 4) % 4


def _conv_s8_bytes(g: OpGeometry, simd: Simd) -> int:
    """arm_convolve_s8_get_buffer_size (and its _mve variant)."""
    cols = g.in_c * g.k_w * g.k_h
    if simd == "mve":
        return 4 * (-(-cols // 16)) * 16  # four im2col rows of whole 16-lane registers
    return 2 * _align4(cols) * 2  # two im2col columns of int16


def _conv_1_x_n_mve_bytes(g: OpGeometry) -> int:
    """arm_convolve_1_x_n_s8_get_buffer_size_mve."""
    total_pad = (g.out_w - 1) * g.stride_w + g.k_w - g.in_w
    asym = total_pad % 2
    right = max(1, (g.pad_w + asym + g.stride_w - 1) // g.stride_w) if g.pad_w + asym else 0
    left = max(1, (g.pad_w + g.stride_w - 1) // g.stride_w) if g.pad_w else 0
    if right + max(g.out_w - (right + left), 0) + left != g.out_w:
        return _conv_s8_bytes(g, "mve")
    pad_left = g.pad_w * g.in_c
    pad_right = right * g.in_c if asym else pad_left
    left_elems = g.k_w * g.in_c
    return max(left_elems + pad_left, left_elems - g.in_c + pad_right)


def conv_scratch_bytes(g: OpGeometry, simd: Simd) -> int:
    """arm_convolve_wrapper_s8_get_buffer_size: 1 x 1 convolutions need none (the unit-stride
    fast path's DSP buffer exists only with Arm Compiler 6; GCC, which Arduino and STM32Cube
    builds use, compiles it to 0), 1 x N rows their own, the rest an im2col buffer."""
    if g.pad_h == 0 and g.pad_w == 0 and g.k_h == 1 and g.k_w == 1:
        return 0
    one_by_n = g.in_h == 1 and g.k_h == 1 and (g.stride_w * g.in_c) % 4 == 0
    if one_by_n and simd == "mve":
        return _conv_1_x_n_mve_bytes(g)
    return _conv_s8_bytes(g, simd)


CH_IN_BLOCK_MVE = 124  # Include/arm_nnsupportfunctions.h
DW_ONE_IN_CH_THRESHOLD = 1  # CONVERT_DW_CONV_WITH_ONE_INPUT_CH_AND_OUTPUT_CH_ABOVE_THRESHOLD (GCC;
# Arm Compiler 6: 8)


def depthwise_scratch_bytes(g: OpGeometry, simd: Simd) -> int:
    """arm_depthwise_conv_wrapper_s8_get_buffer_size (channel multiplier 1: in_c == out_c)."""
    if simd == "mve":
        if g.in_c == 1 and g.out_c > DW_ONE_IN_CH_THRESHOLD:  # run as a convolution
            as_conv = OpGeometry(g.in_c, g.in_h, g.in_w, g.out_c, g.out_h, g.out_w, g.k_h,
                                 g.k_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w)
            return conv_scratch_bytes(as_conv, "mve") + g.k_h * g.k_w * g.out_c
        return 4 * CH_IN_BLOCK_MVE * g.k_w * g.k_h if g.in_c == g.out_c else 0
    if g.in_c != g.out_c:
        return 0
    if g.k_h == 3 and g.k_w == 3 and g.pad_h <= 1 and g.pad_w <= 1:
        return 0  # the 3 x 3 kernel works without one
    return g.in_c * g.k_w * g.k_h * 2 if simd == "dsp" else 0


def avgpool_scratch_bytes(g: OpGeometry, simd: Simd) -> int:
    """arm_avgpool_s8_get_buffer_size: one int32 accumulator per channel with the DSP
    extension."""
    return 4 * g.in_c if simd == "dsp" else 0


def cmsis_nn_scratch_bytes(code: str, g: OpGeometry, simd: Simd) -> int:
    """The scratch buffer an int8 operator's CMSIS-NN kernel requests in the arena (0: none).
    Fully connected layers with a 2-D output request none (with Helium their kernel sums are
    persistent: fully_connected_persistent_bytes)."""
    if code == "CONV_2D":
        return conv_scratch_bytes(g, simd)
    if code == "DEPTHWISE_CONV_2D":
        return depthwise_scratch_bytes(g, simd)
    if code == "AVERAGE_POOL_2D":
        return avgpool_scratch_bytes(g, simd)
    return 0


def fully_connected_persistent_bytes(out_c: int, simd: Simd) -> int:
    """With Helium, arm_fully_connected_s8_get_buffer_size is out_c int32 kernel sums, which
    TFLM's kernel (KERNELS_OPTIMIZED_FOR_SPEED, the default) keeps as a persistent buffer."""
    return 4 * out_c if simd == "mve" else 0
