"""The cost table: every layer's options with their predicted costs (``OptionCost``) for one
device profile (``CostTable``). Built by :func:`cost_models.analytical.build_cost_table`."""

from __future__ import annotations

from dataclasses import dataclass, field

from cost_models.runtime_memory import RuntimeMemory


@dataclass(frozen=True)
class OptionCost:
    option: str
    latency_ms: float
    flash_bytes: int  # weights + scales + bias as the deployed file stores them
    energy_mj: float
    act_bytes: float  # bytes per activation element of tensors this layer owns (x kept
    # fraction of its output channels)
    acc_loss: float  # from the accuracy estimator (see CostTable.accuracy)
    widths: tuple[tuple[str, int], ...] = ()  # channel groups' kept widths (Option.widths)
    in_act_bytes: float | None = None  # bytes per element of the model input it may own
    mac_fraction: float = 1.0  # kept fraction of the layer's MACs (channel pruning)
    base: str = ""  # the full-width option of the same kernel ("" = itself)
    # runtime memory (CostTable.memory): weights dequantised to fp32 every run, and whether
    # the kernel runs in the blocked activation layout
    dequantized_weight_numel: int = 0
    blocked: bool = False
    kernel_scratch_bytes: float = 0.0  # the integer kernel's buffers while the layer runs
    # a full-width storage technique runs its kernel (dense zeros, weights decoded at load) or
    # a factorised form of it: latency = latency_of's x latency_ratio (the model's ratio), so a
    # measured kernel latency carries over (edgefit.planning.derived_latency)
    latency_of: str = ""
    latency_ratio: float = 1.0
    # an int8 layer whose consumers read an fp32 tensor (DequantizeLinear + its bias added in
    # float: int8_float_output), so act_bytes is 4 and its codes are kernel scratch
    float_output: bool = False
    # the kernel's activations are int8 codes (Kernel.activations; never read from a name)
    int8_activations: bool = False
    # the layer's bytes in edgefit's packed flash image (model.flash.bin); None: flash_bytes
    # (they differ where the deployed file is a .tflite: CostTable.flash_format)
    image_bytes: int | None = None


@dataclass
class CostTable:
    device: str
    profile: str
    options: dict[str, list[OptionCost]]  # layer name -> its options, in kernel order
    runtime_flash_bytes: int
    runtime_ram_bytes: int
    run_overhead_ms: float  # per inference, added once to the total latency
    power_w: float  # power that scales with latency (active, or active - idle with a period)
    weights_in_ram: bool
    idle_energy_mj: float = 0.0  # P_idle x period, when a duty cycle is given
    provenance: dict[str, str] = field(default_factory=dict)
    # what flash_bytes count: "image" (model.flash.bin, exact) or "tflite" (model.tflite, the
    # file a TFLite runtime loads: cost_models.tflite_size), whose framing is frame_bytes
    flash_format: str = "image"
    tflite_frame_bytes: float = 0.0
    accuracy: str = "none"  # which estimator produced acc_loss, and its unit
    memory: RuntimeMemory = field(default_factory=RuntimeMemory)
    # a precision boundary (QuantizeLinear / DequantizeLinear between an int8 layer and a float
    # one): a fixed cost per boundary node, and per byte it reads and writes (ms); 0: not costed
    boundary_overhead_ms: float = 0.0
    boundary_ms_per_byte: float = 0.0

    def cost(self, layer: str, option: str) -> OptionCost:
        for c in self.options[layer]:
            if c.option == option:
                return c
        raise KeyError(f"{layer}: no option {option!r}")
