"""How a runtime holds activations and kernel buffers beyond one buffer per live tensor, as the
device profile describes it (``RuntimeMemory``, read from ``Profile`` fields the host probe
measured): blocked layouts, the allocator's grain, int8 and MatMulNBits kernel scratch, an int8
layer's float output, dequantised weight copies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cost_models.graph import Layer
from cost_models.tflm_structs import Simd, TflmBuild
from device_specs.cores import core_spec
from device_specs.schema import Core, Kernel, Profile


@dataclass(frozen=True)
class RuntimeMemory:
    """The profile's activation-memory behaviour (Profile.activation_channel_block ...) as
    plain numbers. The defaults are a runtime holding exactly one buffer per live tensor."""

    channel_block: int = 1
    round_bytes: int = 1
    outputs_outside_plan: bool = False
    exact_shape_reuse: bool = False  # Profile.exact_shape_buffer_reuse (LayerGraph.held_tensors)
    fp32_input: bool = False
    dequantized_weight_copies: bool = False
    conv_workspace_bytes: int = 0
    # Profile.int8_conv_paths: (input multiple, min outputs, output multiple, depthwise
    # multiple, pointer bytes); None: integer kernel scratch is not modelled
    int8_conv_paths: tuple[int, int, int, int, int] | None = None
    # Profile.weight_only_matmul_scratch: (k_block, block_bytes, align_bytes, extra_bytes)
    matmul_scratch: tuple[int, int, int, int] | None = None
    # Profile.tflite.micro: activations live in TFLM's arena (cost_models.tflm_ram)
    tflm_arena: bool = False
    # the firmware build the arena is laid out by (pointer width, kernels, SIMD): None when
    # the profile is not TFLM
    tflm_build: TflmBuild | None = None

    @classmethod
    def of_profile(cls, profile: Profile, core: Core | None = None) -> RuntimeMemory:
        def flag(f: Any) -> bool:
            return bool(f is not None and f.value)

        return cls(
            channel_block=int(profile.activation_channel_block.value)
            if profile.activation_channel_block else 1,
            round_bytes=int(profile.arena_round_bytes.value) if profile.arena_round_bytes else 1,
            outputs_outside_plan=flag(profile.outputs_outside_plan),
            exact_shape_reuse=flag(profile.exact_shape_buffer_reuse),
            fp32_input=flag(profile.qdq_fp32_boundaries),
            dequantized_weight_copies=flag(profile.dequantized_weight_copies),
            conv_workspace_bytes=int(profile.conv_workspace_bytes.value)
            if profile.conv_workspace_bytes else 0,
            int8_conv_paths=_int8_paths(profile),
            matmul_scratch=_matmul_scratch(profile),
            tflm_arena=bool(profile.tflite is not None and profile.tflite.micro),
            tflm_build=tflm_build(profile, core))

    def rounded(self, nbytes: float) -> float:
        """Bytes the runtime's allocator really takes for a buffer of nbytes."""
        return -(-nbytes // self.round_bytes) * self.round_bytes if nbytes > 0 else 0.0

    def padded_numel(self, layer: Layer) -> int:
        """Elements of a conv's output in the blocked layout (0: none, channels already fit)."""
        c, b = layer.out_channels, self.channel_block
        if b <= 1 or layer.op_class not in ("conv", "pointwise") or c % b == 0 or c == 0:
            return 0
        return -(-c // b) * b * (layer.output_numel // c)


def tflm_build(profile: Profile, core: Core | None) -> TflmBuild | None:
    """The TFLM firmware a micro profile runs: the core's pointer width (a 32-bit build when
    the spec names no core: TFLM's targets are), the profile's kernel library, CMSIS-NN's
    variant from the core's features (Helium: MVE, else the DSP extension, else plain C).
    USE_TFLM_COMPRESSION off (assumed: TFLM's build leaves it off unless asked)."""
    if profile.tflite is None or not profile.tflite.micro:
        return None
    kernels = profile.tflite.micro_kernels or "reference"
    if core is None:
        return TflmBuild(pointer_bytes=4, compression=False, kernels=kernels)
    spec = core_spec(core)
    simd: Simd = "mve" if spec.helium.value else "dsp" if spec.dsp.value else "none"
    return TflmBuild(pointer_bytes=int(spec.pointer_bytes.value), compression=False,
                     kernels=kernels, simd=simd)


def _int8_paths(profile: Profile) -> tuple[int, int, int, int, int] | None:
    p = profile.int8_conv_paths
    if p is None:
        return None
    return (int(p.input_channel_multiple.value), int(p.min_output_channels.value),
            int(p.output_channel_multiple.value), int(p.depthwise_channel_multiple.value),
            int(p.pointer_bytes.value))


def _matmul_scratch(profile: Profile) -> tuple[int, int, int, int] | None:
    p = profile.weight_only_matmul_scratch
    if p is None:
        return None
    return (int(p.k_block.value), int(p.block_bytes.value), int(p.align_bytes.value),
            int(p.extra_bytes.value))


def kernel_scratch_bytes(layer: Layer, kernel: Kernel, memory: RuntimeMemory,
                         out_fraction: float = 1.0, in_fraction: float = 1.0) -> float:
    """What a layer's kernel allocates beside its output while it runs: an int8 layer's
    (int8_scratch_bytes) or a weight-only Linear's fused kernel's (matmul_scratch_bytes)."""
    return (int8_scratch_bytes(layer, kernel, memory, out_fraction, in_fraction)
            + matmul_scratch_bytes(layer, kernel, memory, in_fraction))


def int8_float_output(layer: Layer, kernel: Kernel, memory: RuntimeMemory) -> bool:
    """An int8 Linear over token rows is written as QLinearMatMul, which has no bias input
    (techniques.onnx.int8): DequantizeLinear turns its codes to fp32 and the bias is added in
    float, so what its consumers read is an fp32 tensor. (A Linear on one row is a Gemm,
    which onnxruntime fuses into QGemm, bias inside: its consumers read codes.) On a QDQ
    runtime with the int8 memory probe (Profile.qdq_fp32_boundaries, int8_conv_paths)."""
    rows = layer.output_numel // max(1, layer.out_channels)
    return (memory.int8_conv_paths is not None and memory.fp32_input
            and kernel.activations == "int8" and layer.op_type == "Linear" and rows > 1)


def matmul_scratch_bytes(layer: Layer, kernel: Kernel, memory: RuntimeMemory,
                         in_fraction: float = 1.0) -> float:
    """A weight-only integer Linear (written as MatMul, fused with its DequantizeLinear into
    onnxruntime's MatMulNBits) quantises its activations in blocks while it runs
    (Profile.weight_only_matmul_scratch), in the allocator's grain."""
    p = memory.matmul_scratch
    if p is None or layer.op_class != "linear" or len(layer.weight_shape) != 2 or not (
            dequantized_kernel(kernel) and kernel.activations == "fp32"):
        return 0.0
    k_block, block_bytes, align, extra = p
    rows = max(1, layer.output_numel // max(1, layer.out_channels))
    k = max(1, round(layer.weight_shape[1] * in_fraction))
    quantized = rows * -(-k // k_block) * block_bytes
    return memory.rounded(-(-quantized // align) * align + extra)


def int8_scratch_bytes(layer: Layer, kernel: Kernel, memory: RuntimeMemory,
                       out_fraction: float = 1.0, in_fraction: float = 1.0) -> float:
    """Scratch an int8 (w8a8) layer's kernel allocates while it runs, in the allocator's grain.

    onnxruntime (qlinearconv.cc, channels-last QLinearConv): the symmetric kernel
    (Profile.int8_conv_paths) takes an indirection buffer, one pointer per tap and output
    pixel (none for a pointwise conv); the other path an int32 accumulator per output element
    plus a u8 im2col buffer (taps x input channels per pixel; none for a pointwise conv). A
    Linear's QGemm / QLinearMatMul accumulates every output in int32 first."""
    paths = memory.int8_conv_paths
    if paths is None or not (kernel.weights == "int8" and kernel.activations == "int8"):
        return 0.0
    cout = max(1, round(layer.out_channels * out_fraction))
    out_numel = layer.output_numel * out_fraction
    if layer.op_class == "linear":
        return memory.rounded(4 * out_numel)
    if layer.op_class not in ("conv", "pointwise", "depthwise") or len(layer.weight_shape) != 4:
        return 0.0
    in_mult, min_out, out_mult, dw_mult, ptr = paths
    taps = layer.weight_shape[2] * layer.weight_shape[3]
    pixels = layer.output_numel // max(1, layer.out_channels)
    if layer.op_class == "depthwise":
        symmetric, cin = cout % dw_mult == 0, 1
    else:
        cin = max(1, round(layer.weight_shape[1] * in_fraction))
        symmetric = cin % in_mult == 0 and cout >= min_out and cout % out_mult == 0
    gather = 0.0 if taps == 1 and layer.op_class != "depthwise" else (
        ptr * taps * pixels if symmetric or layer.op_class == "depthwise" else cin * taps * pixels)
    accumulator = 0.0 if symmetric else 4 * out_numel
    return memory.rounded(gather) + memory.rounded(accumulator)


def dequantized_kernel(kernel: Kernel) -> bool:
    """Integer weights feeding a float kernel go through DequantizeLinear at run time."""
    return kernel.weights.startswith("int") and kernel.activations in ("fp32", "fp16")


def copies_weight(layer: Layer) -> bool:
    """Whether a dequantised weight is materialised: a conv takes the fp32 copy; a Linear is
    written as MatMul (techniques.onnx.matmulnbits), which onnxruntime fuses with its
    DequantizeLinear into MatMulNBits (reads the packed codes directly)."""
    return layer.op_class != "linear"
