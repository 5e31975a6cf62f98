"""The planning problem as plain data, independent of torch and of any solver backend."""

from __future__ import annotations

from dataclasses import dataclass, field

# The limits the planner knows, with the unit each is expressed in inside the solver's data.
METRICS = ("latency_ms", "flash_bytes", "ram_bytes", "energy_mj")
ADDITIVE = ("latency_ms", "flash_bytes", "energy_mj")


@dataclass(frozen=True)
class Choice:
    option: str
    latency_ms: float
    flash_bytes: float
    energy_mj: float
    # bytes per element of the tensors this layer owns, relative to the unpruned tensor (a layer
    # that keeps half its channels at int8 has 0.5)
    act_bytes: float
    acc_loss: float

    def metric(self, name: str) -> float:
        return float(getattr(self, name))


@dataclass(frozen=True)
class Problem:
    """Pick one choice per layer; additive limits, peak RAM as a max over steps; min acc loss.

    ram_steps[t] lists (owner layer, elements) of every tensor live at step t; its bytes depend on
    the owner's choice. When weights_in_ram, every layer's flash bytes also sit in RAM.
    """

    layers: tuple[str, ...]
    choices: dict[str, tuple[Choice, ...]]
    limits: dict[str, float]  # subset of METRICS
    fixed: dict[str, float] = field(default_factory=dict)  # constant terms (runtime footprint)
    ram_steps: tuple[tuple[tuple[str, int], ...], ...] = ()
    weights_in_ram: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.limits) - set(METRICS)
        if unknown:
            raise ValueError(f"unknown limits {sorted(unknown)}; known: {METRICS}")
        for layer in self.layers:
            if not self.choices.get(layer):
                raise ValueError(f"layer {layer} has no options")

    def totals(self, pick: dict[str, int]) -> dict[str, float]:
        """Exact totals of a full assignment layer -> choice index (the reference evaluation)."""
        chosen = {layer: self.choices[layer][pick[layer]] for layer in self.layers}
        out = {m: self.fixed.get(m, 0.0) + sum(c.metric(m) for c in chosen.values())
               for m in ADDITIVE}
        out["ram_bytes"] = self.peak_ram(chosen)
        out["acc_loss"] = sum(c.acc_loss for c in chosen.values())
        return out

    def step_ram(self, chosen: dict[str, Choice]) -> list[float]:
        weights = sum(c.flash_bytes for c in chosen.values()) if self.weights_in_ram else 0.0
        base = self.fixed.get("ram_bytes", 0.0) + weights
        return [base + sum(n * chosen[owner].act_bytes for owner, n in step)
                for step in self.ram_steps] or [base]

    def peak_ram(self, chosen: dict[str, Choice]) -> float:
        return max(self.step_ram(chosen))

    def feasible(self, totals: dict[str, float]) -> bool:
        return all(totals[m] <= lim + 1e-9 for m, lim in self.limits.items())

    def without_limit(self, name: str) -> Problem:
        return Problem(self.layers, self.choices,
                       {k: v for k, v in self.limits.items() if k != name},
                       self.fixed, self.ram_steps, self.weights_in_ram)
