"""Analytical per-layer x per-option costs for one device profile.

latency = per-layer overhead + max(compute, memory) (a roofline per layer), with the constants
taken from the device spec (each carries its provenance, which the table repeats). Flash is the
bytes the packed image stores (executors.quant_math defines the formats), energy = board power
during inference x latency.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cost_models.graph import Layer, LayerGraph, Step
from cost_models.options import option_specs
from device_specs.schema import BITS, DeviceSpec, Kernel, Profile
from edgefit.units import fmt_rate
from executors.quant_math import stored_bias_bytes, stored_weight_bytes


@dataclass(frozen=True)
class OptionCost:
    option: str
    latency_ms: float
    flash_bytes: int  # weights + scales + bias as stored
    energy_mj: float
    act_bytes: int  # bytes per activation element of tensors this layer owns
    acc_loss: float  # from the accuracy estimator (see CostTable.accuracy)


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
    accuracy: str = "none"  # which estimator produced acc_loss, and its unit

    def cost(self, layer: str, option: str) -> OptionCost:
        for c in self.options[layer]:
            if c.option == option:
                return c
        raise KeyError(f"{layer}: no option {option!r}")


def activation_bytes(kernel: Kernel) -> int:
    return max(1, BITS[kernel.activations] // 8)


def layer_flash_bytes(layer: Layer, kernel: Kernel) -> int:
    return stored_weight_bytes(kernel.weights, layer.weight_numel, layer.out_channels) + (
        stored_bias_bytes(kernel.weights, layer.bias_numel)
    )


def layer_latency_ms(layer: Layer, kernel: Kernel, profile: Profile, flash_bytes: int,
                     charged_ops: list[tuple[Step, int]]) -> float:
    """Roofline for the layer plus the elementwise/pool steps charged to it.

    charged_ops: (step, elements read + written) for non-fused ops that run in this layer's
    element type, e.g. max-pooling after the conv.
    """
    act_b = activation_bytes(kernel)
    efficiency = kernel.op_efficiency[layer.op_class].value if (
        layer.op_class in kernel.op_efficiency) else 1.0
    compute_s = layer.macs / (kernel.macs_per_s.value * efficiency)
    moved_bytes = flash_bytes + act_b * (layer.input_numel + layer.output_numel)
    memory_s = moved_bytes / profile.memory_bandwidth.value
    layer_ms = profile.layer_overhead.value + 1e3 * max(compute_s, memory_s)
    ops_ms = sum(
        profile.layer_overhead.value + 1e3 * act_b * elems / profile.memory_bandwidth.value
        for _, elems in charged_ops
    )
    return layer_ms + ops_ms


def _charged_ops(graph: LayerGraph) -> dict[str, list[tuple[Step, int]]]:
    out: dict[str, list[tuple[Step, int]]] = {name: [] for name in graph.layer_names}
    for s in graph.steps:
        if s.kind == "op" and s.owner is not None:
            elems = graph.tensors[s.output].numel + sum(graph.tensors[t].numel for t in s.inputs)
            out[s.owner].append((s, elems))
    return out


def build_cost_table(graph: LayerGraph, spec: DeviceSpec, profile_name: str | None = None,
                     acc_loss: Mapping[tuple[str, str], float] | None = None,
                     accuracy: str = "none",
                     sparse_flash: Mapping[tuple[str, str], int] | None = None,
                     period_ms: float | None = None) -> CostTable:
    """sparse_flash: exact stored bytes of each (layer, sparse option), computed from the
    weights; sparse options without an entry are not offered (e.g. ONNX-only models).

    period_ms: time between inferences (duty cycle). Energy per inference is then
    E = P_idle x period + (P_active - P_idle) x latency: each layer carries the second term and
    the idle floor is a constant (`idle_energy_mj`). Without it, inferences run back to back
    (period = latency) and E = P_active x latency."""
    profile_name = profile_name or spec.default_profile
    profile = spec.profile(profile_name)
    power_w = (profile.power_active or spec.power_active).value
    charged = _charged_ops(graph)
    idle_w = spec.power_idle.value
    layer_power_w = power_w - idle_w if period_ms else power_w
    options: dict[str, list[OptionCost]] = {}
    for layer in graph.layers:
        row = []
        for opt in option_specs(profile.kernels, layer):
            kernel = profile.kernels[opt.kernel]
            dense_flash = layer_flash_bytes(layer, kernel)
            if opt.sparsity and (layer.name, opt.name) not in (sparse_flash or {}):
                continue
            flash = (sparse_flash or {}).get((layer.name, opt.name), dense_flash)
            # dense kernels: zeros are computed and the weights decompressed at load time
            latency = layer_latency_ms(layer, kernel, profile, dense_flash, charged[layer.name])
            row.append(OptionCost(
                option=opt.name,
                latency_ms=latency,
                flash_bytes=flash,
                energy_mj=layer_power_w * latency,  # W x ms = mJ
                act_bytes=activation_bytes(kernel),
                acc_loss=(acc_loss or {}).get((layer.name, opt.name), 0.0),
            ))
        options[layer.name] = row
    return CostTable(
        device=spec.name,
        profile=profile_name,
        options=options,
        runtime_flash_bytes=int(profile.runtime_flash.value),
        run_overhead_ms=profile.run_overhead.value if profile.run_overhead else 0.0,
        power_w=layer_power_w,
        idle_energy_mj=idle_w * period_ms if period_ms else 0.0,
        runtime_ram_bytes=int(profile.runtime_ram.value),
        weights_in_ram=profile.weights_in_ram,
        provenance=_provenance(spec, profile, profile_name, period_ms),
        accuracy=accuracy,
    )


def _provenance(spec: DeviceSpec, profile: Profile, profile_name: str,
                period_ms: float | None = None) -> dict[str, str]:
    kernels = "; ".join(f"{k} {fmt_rate(v.macs_per_s.value)} ({v.macs_per_s.provenance})"
                        for k, v in profile.kernels.items())
    return {
        "latency": f"analytical roofline on {spec.name}/{profile_name}: {kernels}; "
                   f"layer overhead {profile.layer_overhead.value} ms "
                   f"({profile.layer_overhead.provenance}); bandwidth "
                   f"{profile.memory_bandwidth.value / 1e9:.4g} GB/s "
                   f"({profile.memory_bandwidth.provenance})",
        "flash": "bytes of the packed image (exact format; computed, then checked on the file); "
                 f"runtime {profile.runtime_flash.value:.0f} B "
                 f"({profile.runtime_flash.provenance})",
        "ram": "activation liveness over the execution order + runtime "
               f"{profile.runtime_ram.value:.0f} B ({profile.runtime_ram.provenance})"
               + ("; weights held in RAM" if profile.weights_in_ram else "; weights execute "
                  "from flash"),
        "energy": (f"P_idle x period + (P_active - P_idle) x latency, period {period_ms:g} ms, "
                   if period_ms else "P_active x latency (back-to-back inference), ")
                  + f"P_active {(profile.power_active or spec.power_active).value} W "
                  f"({(profile.power_active or spec.power_active).provenance}), P_idle "
                  f"{spec.power_idle.value} W ({spec.power_idle.provenance})",
    }
