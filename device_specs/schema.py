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

Precision = Literal["fp32", "fp16", "int8", "int4"]
OpClass = Literal["conv", "pointwise", "depthwise", "linear", "matmul", "elementwise"]
BITS: dict[str, int] = {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}


class Kernel(Strict):
    """A precision pair the runtime executes, and how fast.

    The key of a kernel in `Profile.kernels` is the option name the planner offers (fp32, fp16,
    int8, int4): a precision absent here is an option the device cannot run.
    """

    weights: Precision
    activations: Precision
    macs_per_s: MacRate
    op_efficiency: dict[OpClass, Count] = Field(default_factory=dict)
    note: str | None = None


class Flag(Sourced):
    """A yes/no behaviour of a runtime, with its provenance like every number."""

    value: bool  # type: ignore[assignment]


class Profile(Strict):
    """Board x runtime x threads: what actually runs the model."""

    description: str
    processor: Literal["cpu", "gpu", "npu", "mcu"]
    runtime: str
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
    qdq_fp32_boundaries: Flag | None = Field(
        default=None, description="The model input stays fp32 whatever the first layer's "
        "precision (quantised inside the graph).")
    dequantized_weight_copies: Flag | None = Field(
        default=None, description="Integer weights of a float kernel are dequantised to fp32 "
        "every run; the copy is live from the run's start until its layer has run.")
    conv_workspace_bytes: Bytes | None = Field(
        default=None, description="Scratch of a k x k conv that runs outside the blocked layout "
        "(its weight is dequantised at run time), while it runs.")

    @model_validator(mode="after")
    def _whole_block(self) -> Profile:
        block = self.activation_channel_block
        if block is not None and (block.value < 1 or block.value != int(block.value)):
            raise ValueError(f"activation_channel_block must be a whole number >= 1 "
                             f"(1: no blocked layout), got {block.value:g}")
        return self


class DeviceSpec(Strict):
    schema_version: Literal[1] = 1  # SPEC_SCHEMA_VERSION
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    board: str
    kind: Literal["mcu", "sbc", "accelerator", "host"]
    cpu: str
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
        if self.default_profile not in self.profiles:
            raise ValueError(
                f"default_profile {self.default_profile!r} is not one of {sorted(self.profiles)}"
            )
        return self

    def profile(self, name: str | None = None) -> Profile:
        return self.profiles[name or self.default_profile]
