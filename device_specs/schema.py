"""DeviceSpec: one board, its runtimes (profiles) and capabilities, every number with provenance."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from device_specs.quantities import (
    Bandwidth,
    Bytes,
    Count,
    Hertz,
    MacRate,
    Millis,
    Sourced,
    Strict,
    Watts,
)

SPEC_SCHEMA_VERSION = 1

Precision = Literal["fp32", "fp16", "int8", "int6", "int4", "int3", "int2"]
ActivationPrecision = Literal["fp32", "fp16", "int8", "int16"]
OpClass = Literal["conv", "pointwise", "depthwise", "linear", "matmul", "elementwise"]
# The processor core that runs the model's kernels (its features: device_specs/cores.yaml). Clock
# scaling of a per-cycle rate is only meaningful within one core type.
Core = Literal["cortex-m0plus", "cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55",
               "cortex-m85", "xtensa-lx7", "cortex-a53", "cortex-a57", "cortex-a72",
               "cortex-a76", "cortex-a78ae", "x86-64"]
# Runtimes whose kernels share a cost structure: the MCU latency model is fitted per family
# (cost_models/mcu_fit.py on the MLPerf Tiny rows of cost_models/mcu_published.yaml).
RuntimeFamily = Literal["tflm-reference", "tflm-cmsis-nn", "tflm-esp-nn", "microtvm",
                        "microtvm-cmsis-nn", "x-cube-ai", "vendor-engine"]
BITS: dict[str, int] = {"fp32": 32, "fp16": 16, "int16": 16, "int8": 8, "int6": 6, "int4": 4,
                        "int3": 3, "int2": 2}


class Kernel(Strict):
    """A precision pair the runtime executes, and how fast.

    The key of a kernel in `Profile.kernels` is the option name the planner offers (fp32, fp16,
    int8, int4, int3, int8a16, ...): a precision absent here is an option the device cannot
    run. Integer weights below 8 bits with float activations are weight-only (decoded at run
    time); int16 activations with int8 weights are the w8a16 form.
    """

    weights: Precision
    activations: ActivationPrecision
    symmetric: bool = Field(default=True, description="integer weights without a zero point; "
                            "false: asymmetric codes + one zero point per channel (weight-only "
                            "kernels, stored as uint<bits>)")
    macs_per_s: MacRate
    op_efficiency: dict[OpClass, Count] = Field(default_factory=dict)
    note: str | None = None

    @model_validator(mode="after")
    def _asymmetric_weight_only(self) -> Kernel:
        if not self.symmetric and (not self.weights.startswith("int")
                                   or self.activations not in ("fp32", "fp16")):
            raise ValueError("symmetric: false needs integer weights with float activations "
                             f"(a weight-only kernel), got {self.weights}/{self.activations}")
        return self

    @property
    def storage(self) -> str:
        """The stored weight form (formats.quant_math option): int4, or uint4 if asymmetric."""
        return self.weights if self.symmetric else "u" + self.weights


class Flag(Sourced):
    """A yes/no behaviour of a runtime, with its provenance like every number."""

    value: bool  # type: ignore[assignment]


class Int8ConvPaths(Strict):
    """Which integer conv kernels a runtime picks, by channel counts: they differ in scratch.

    onnxruntime's QLinearConv (onnxruntime/core/providers/cpu/nn/qlinearconv.cc) runs the MLAS
    symmetric kernel (requantisation fused, an indirection buffer of one pointer per tap and
    output pixel) when the weights are symmetric and the channel counts fit the CPU's kernel;
    otherwise a u8 im2col buffer (taps x input channels per output pixel; none for a 1x1 conv)
    plus an int32 accumulator per output element. A depthwise conv takes the symmetric kernel
    when its channel count is a multiple of ``depthwise_channel_multiple``."""

    input_channel_multiple: Count
    min_output_channels: Count
    output_channel_multiple: Count
    depthwise_channel_multiple: Count
    pointer_bytes: Bytes


class WeightOnlyMatMulScratch(Strict):
    """Scratch of a weight-only integer Linear that the runtime runs as one fused kernel that
    quantises its activations itself (onnxruntime's MatMulNBits at its default accuracy level
    4: int8 activation blocks with their scales): per run
    align(rows x ceil(K / k_block) x block_bytes, align_bytes) + extra_bytes, K the input
    features, rows the Linear's rows (tokens)."""

    k_block: Count
    block_bytes: Bytes
    align_bytes: Bytes
    extra_bytes: Bytes


class NMSparsity(Strict):
    """Kernels that skip the zeros of an N:M pattern (e.g. Ampere sparse Tensor Cores, 2:4)."""

    n: int = Field(ge=1, description="weights kept in each group")
    m: int = Field(ge=2, le=32, description="group size along the input dimension")
    kernels: list[str] = Field(min_length=1, description="kernel keys that run the pattern")
    mac_speedup: Count = Field(description="MAC-rate gain of the sparse kernel over the dense "
                               "one (> 1)")

    @model_validator(mode="after")
    def _valid(self) -> NMSparsity:
        if self.n >= self.m:
            raise ValueError(f"N:M sparsity needs n < m, got {self.n}:{self.m}")
        if self.mac_speedup.value <= 1:
            raise ValueError(f"mac_speedup must exceed 1, got {self.mac_speedup.value:g}")
        return self


class OpNames(Sourced):
    """Operator names of a runtime, with their provenance."""

    value: list[str]  # type: ignore[assignment]


class TfliteFormat(Strict):
    """The runtime loads TensorFlow Lite flatbuffers: `apply` also writes model.tflite, each
    layer in its planned precision (int8 / int4 weights with int8 activations, int8 weights with
    int16 activations, float), converted and checked with the tool virtualenv (.venv-tflite)."""

    micro: bool = Field(description="TensorFlow Lite Micro: the model is compiled into the "
                        "firmware (apply also writes model_data.cc, a C array) and runs in a "
                        "tensor arena, measured with tflite-micro on this machine")
    int4_weight_ops: OpNames | None = Field(
        default=None, description="TFLite builtin operators (CONV_2D, FULLY_CONNECTED, ...) the "
        "runtime runs with int4 weights; unset: none (a plan with an int4 layer on another "
        "operator is refused for the .tflite, with the reason)")
    micro_kernels: Literal["reference", "cmsis-nn", "esp-nn"] | None = Field(
        default=None, description="TFLite Micro only: the kernel library the firmware links "
        "(TFLM's reference kernels, CMSIS-NN, ESP-NN). It decides the kernels' op data and the "
        "scratch buffers they request in the arena (cost_models/tflm_structs.py; CMSIS-NN's "
        "sized by the core's DSP / Helium features; ESP-NN's not modelled)")

    @model_validator(mode="after")
    def _micro_kernels(self) -> TfliteFormat:
        if self.micro and self.micro_kernels is None:
            raise ValueError("micro: true needs micro_kernels (reference, cmsis-nn or esp-nn)")
        if not self.micro and self.micro_kernels is not None:
            raise ValueError("micro_kernels is for TFLite Micro (micro: true) only")
        return self


class Profile(Strict):
    """Board x runtime x threads: what actually runs the model."""

    description: str
    processor: Literal["cpu", "gpu", "npu", "mcu"]
    runtime: str
    runtime_family: RuntimeFamily | None = Field(
        default=None, description="The family of the MCU latency model (cost_models/mcu_fit.py) "
        "this runtime belongs to; unset for non-MCU runtimes")
    threads: int = Field(ge=1)
    runtime_flash: Bytes
    runtime_ram: Bytes
    weights_in_ram: bool = Field(
        description="True when the runtime copies weights into RAM (SBCs); False when it executes "
        "them from flash (MCUs)."
    )
    layer_overhead: Millis
    run_overhead: Millis | None = Field(
        default=None, description="fixed cost of one inference call (runtime entry, I/O copy)"
    )
    memory_bandwidth: Bandwidth
    preferred_channel_multiple: int = Field(default=1, ge=1)
    power_active: Watts | None = Field(
        default=None,
        description="Board power while this profile runs, if it differs from the board's.",
    )
    kernels: dict[str, Kernel] = Field(min_length=1)
    # How the runtime holds activations beyond one buffer per live tensor (unset: it does not).
    activation_channel_block: Count | None = Field(
        default=None, description="Conv outputs of float kernels are stored in a blocked layout "
        "with channels rounded up to this block (onnxruntime NCHWc).")
    arena_round_bytes: Bytes | None = Field(
        default=None, description="Every runtime-allocated tensor is rounded up to this grain.")
    outputs_outside_plan: Flag | None = Field(
        default=None, description="Graph outputs are allocated beside the planned activation "
        "block, so they count at every step.")
    exact_shape_buffer_reuse: Flag | None = Field(
        default=None, description="An activation takes a freed buffer of exactly its shape, and "
        "a buffer stays allocated until the last tensor placed in it has been read "
        "(onnxruntime's allocation planner), so buffers are held between their tensors.")
    qdq_fp32_boundaries: Flag | None = Field(
        default=None, description="The model input stays fp32 whatever the first layer's "
        "precision (quantised inside the graph).")
    dequantized_weight_copies: Flag | None = Field(
        default=None, description="Integer weights of a float kernel are dequantised to fp32 "
        "every run; the copy is live from the run's start until its layer has run.")
    conv_workspace_bytes: Bytes | None = Field(
        default=None, description="Scratch of a k x k conv that runs outside the blocked layout "
        "(its weight is dequantised at run time), while it runs.")
    int8_conv_paths: Int8ConvPaths | None = Field(
        default=None, description="Channel counts that take the runtime's symmetric int8 conv "
        "kernel (indirection buffer, no int32 accumulator); unset: int8 kernel scratch is not "
        "modelled")
    weight_only_matmul_scratch: WeightOnlyMatMulScratch | None = Field(
        default=None, description="Scratch of a weight-only integer Linear's fused kernel "
        "(unset: not modelled)")
    nm_sparsity: NMSparsity | None = Field(
        default=None, description="N:M sparse kernels (unset: zeros are computed like any "
        "weight, so N:M pruning is not offered)")
    tflite: TfliteFormat | None = Field(
        default=None, description="The runtime loads .tflite files (TFLite, TFLite Micro): "
        "apply writes model.tflite too (unset: ONNX and the flash image only)")

    @model_validator(mode="after")
    def _whole_block(self) -> Profile:
        block = self.activation_channel_block
        if block is not None and (block.value < 1 or block.value != int(block.value)):
            raise ValueError(f"activation_channel_block must be a whole number >= 1 "
                             f"(1: no blocked layout), got {block.value:g}")
        nm = self.nm_sparsity
        if nm is not None and (unknown := sorted(set(nm.kernels) - set(self.kernels))):
            raise ValueError(f"nm_sparsity.kernels names {', '.join(unknown)}, not kernels of "
                             f"this profile ({', '.join(self.kernels)})")
        return self


class DeviceSpec(Strict):
    schema_version: Literal[1] = 1  # SPEC_SCHEMA_VERSION
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    board: str
    kind: Literal["mcu", "sbc", "accelerator", "host"]
    cpu: str
    core: Core | None = Field(default=None, description="The core type (device_specs/cores.yaml "
                              "gives its DSP / SIMD / Helium / FPU / dual-issue features); "
                              "required for an MCU")
    cores: Count
    clock: Hertz
    ram: Bytes
    flash: Bytes = Field(description="Storage the model is stored in (MCU flash, SBC eMMC/SD).")
    power_idle: Watts
    power_active: Watts
    default_profile: str
    profiles: dict[str, Profile] = Field(min_length=1)
    sources: dict[str, str] = Field(
        default_factory=dict, description="Source key -> URL, for every key the file cites."
    )
    notes: str | None = None

    @model_validator(mode="after")
    def _default_exists(self) -> DeviceSpec:
        if self.kind == "mcu" and self.core is None:
            raise ValueError("an MCU needs core: (its per-cycle rates depend on the core type)")
        if self.default_profile not in self.profiles:
            raise ValueError(
                f"default_profile {self.default_profile!r} is not one of {sorted(self.profiles)}"
            )
        return self

    def profile(self, name: str | None = None) -> Profile:
        return self.profiles[name or self.default_profile]
