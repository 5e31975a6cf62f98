"""The planning problem as plain data, independent of torch and of any solver backend."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

# The limits the planner knows, with the unit each is expressed in inside the solver's data.
# transfer_bytes: the compressed model image an update sends (its limit is the update time over
# a link, device_specs.links, turned into bytes by planner.resolve.delivery_limits)
METRICS = ("latency_ms", "flash_bytes", "ram_bytes", "energy_mj", "transfer_bytes")
ADDITIVE = ("latency_ms", "flash_bytes", "energy_mj", "transfer_bytes")
# additive metrics a pair of choices can add to (Problem.latency_pairs: precision boundaries)
PAIR_METRICS = ("latency_ms", "energy_mj")
# A RAM-step owner "<layer>:input" is the model input, stored in that (first) layer's element
# type but never shrunk by its channel pruning (Choice.in_act_bytes).
INPUT_SUFFIX = ":input"


def owner_layer(owner: str) -> str:
    """The layer whose choice sizes a RAM-step entry."""
    return owner.removesuffix(INPUT_SUFFIX)


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
    # Channel coupling: (group, kept channels) for every channel group this option's geometry
    # assumes: the group of its output channels (it realises that width) and of its input
    # channels (it follows its producer's width). All options of a layer name the same groups.
    widths: tuple[tuple[str, int], ...] = ()
    # bytes per element of the model input when this (first) layer owns it; None: act_bytes
    in_act_bytes: float | None = None
    # its share of the compressed artifact an update sends (0 when no link is planned)
    transfer_bytes: float = 0.0

    def metric(self, name: str) -> float:
        return float(getattr(self, name))

    def entry_bytes(self, owner: str) -> float:
        """Bytes per element of a RAM-step entry owned by this choice's layer (see owner)."""
        if owner.endswith(INPUT_SUFFIX) and self.in_act_bytes is not None:
            return self.in_act_bytes
        return self.act_bytes

    def width(self, group: str) -> int | None:
        return next((w for g, w in self.widths if g == group), None)

    @property
    def signature(self) -> tuple[tuple[str, int], ...]:
        """The coupling this option commits to (options compare only within one signature)."""
        return tuple(sorted(self.widths))


@dataclass(frozen=True)
class PairTerm:
    """Bytes a RAM step holds when layer ``a`` takes one of ``a_options`` and layer ``b`` one
    of ``b_options`` at once: a copy that exists only for that combination (a float layer
    reading an int8 layer's codes reads DequantizeLinear's fp32 copy of them)."""

    a: str
    a_options: tuple[str, ...]
    b: str
    b_options: tuple[str, ...]
    nbytes: float

    def applies(self, chosen: Mapping[str, Choice]) -> bool:
        return chosen[self.a].option in self.a_options and chosen[self.b].option in self.b_options


@dataclass(frozen=True)
class LatencyPair:
    """Milliseconds a plan spends when layer ``a`` (the producer) takes one of ``a_options``
    and layer ``b`` (its reader) one of ``b_options`` at once: a precision boundary between
    them (an int8 layer reading a float tensor runs a QuantizeLinear first; a float layer
    reading int8 codes a DequantizeLinear), which neither layer's own latency includes (each
    is measured or modelled inside a model of its own precision); ``energy_mj`` what that time
    draws."""

    a: str
    a_options: tuple[str, ...]
    b: str
    b_options: tuple[str, ...]
    latency_ms: float
    energy_mj: float = 0.0

    def metric(self, name: str) -> float:
        return float(getattr(self, name, 0.0))

    def applies(self, chosen: Mapping[str, Choice]) -> bool:
        return chosen[self.a].option in self.a_options and chosen[self.b].option in self.b_options


def crossed(pairs: Iterable[LatencyPair], options: Mapping[str, str]) -> dict[str, float]:
    """Reader layer -> the latency of the precision boundaries a plan's options (layer ->
    option name) cross: the measurement charges a Q/DQ node to the layer it feeds."""
    out: dict[str, float] = {}
    for t in pairs:
        if options.get(t.a) in t.a_options and options.get(t.b) in t.b_options:
            out[t.b] = out.get(t.b, 0.0) + t.latency_ms
    return out


PairKey = tuple[str, tuple[int, ...], str, tuple[int, ...]]


@dataclass(frozen=True)
class Problem:
    """Pick one choice per layer; additive limits, peak RAM as a max over steps; min acc loss.

    ram_steps[t] lists (owner layer, elements) of every tensor live at step t; its bytes depend on
    the owner's choice. When weights_in_ram, every layer's flash bytes also sit in RAM.

    Coupled channel groups live in the choices (Choice.widths), so any copy of the choices keeps
    them: every layer naming a group must pick an option with the group's one chosen width.

    step_extra[t] maps (layer, option) -> bytes that option adds at step t beyond the live
    tensors (a weight dequantised to an fp32 copy, a conv working buffer; negative when its
    layout frees a buffer the step charges). One constant per option and step, so linear in
    the choice; keys naming options the problem no longer offers are ignored. Empty: none.
    """

    layers: tuple[str, ...]
    choices: dict[str, tuple[Choice, ...]]
    limits: dict[str, float]  # subset of METRICS
    fixed: dict[str, float] = field(default_factory=dict)  # constant terms (runtime footprint)
    ram_steps: tuple[tuple[tuple[str, int], ...], ...] = ()
    weights_in_ram: bool = False
    step_extra: tuple[Mapping[tuple[str, str], float], ...] = ()
    step_pairs: tuple[tuple[PairTerm, ...], ...] = ()
    # precision-boundary latencies: added to the latency total when both choices hold
    latency_pairs: tuple[LatencyPair, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.limits) - set(METRICS)
        if unknown:
            raise ValueError(f"unknown limits {sorted(unknown)}; known: {METRICS}")
        self._check_step_extra()
        self._check_step_pairs()
        for layer in self.layers:
            if not self.choices.get(layer):
                raise ValueError(f"layer {layer} has no options")
            self._check_coupling(layer)

    def _check_step_extra(self) -> None:
        n_steps = len(self.ram_steps or ((),))
        if self.step_extra and len(self.step_extra) != n_steps:
            raise ValueError(f"step_extra has {len(self.step_extra)} steps; the RAM steps have "
                             f"{n_steps} (one mapping per step, or none)")
        layers = set(self.layers)
        for t, extra in enumerate(self.step_extra):
            bad = sorted({ly for ly, _ in extra} - layers)
            if bad:
                raise ValueError(f"step_extra[{t}] names unknown layers {bad}")

    def _check_step_pairs(self) -> None:
        n_steps = len(self.ram_steps or ((),))
        if self.step_pairs and len(self.step_pairs) != n_steps:
            raise ValueError(f"step_pairs has {len(self.step_pairs)} steps; the RAM steps have "
                             f"{n_steps} (one tuple per step, or none)")
        layers = set(self.layers)
        named: list[tuple[str, PairTerm | LatencyPair]] = [
            (f"step_pairs[{t}]", term) for t, terms in enumerate(self.step_pairs)
            for term in terms]
        named += [("latency_pairs", term) for term in self.latency_pairs]
        for where, term in named:
            if term.a not in layers or term.b not in layers or term.a == term.b:
                raise ValueError(f"{where}: a term needs two different known layers, got "
                                 f"{term.a!r} and {term.b!r}")

    def pair_terms(self, t: int) -> list[tuple[PairKey, float]]:
        """((a, option indices, b, option indices), bytes) of step t's pair terms, for the
        options still offered (a term none of whose options is offered is dropped)."""
        if not self.step_pairs:
            return []
        return self._keyed((term, term.nbytes) for term in self.step_pairs[t])

    def latency_pair_terms(self, metric: str = "latency_ms") -> list[tuple[PairKey, float]]:
        """((a, option indices, b, option indices), cost) of the precision boundaries' latency
        (or energy), for the options still offered (see pair_terms)."""
        return self._keyed((term, term.metric(metric)) for term in self.latency_pairs)

    def _keyed(self, terms: Iterable[tuple[PairTerm | LatencyPair, float]]
               ) -> list[tuple[PairKey, float]]:
        out = []
        for term, value in terms:
            ia = tuple(i for i, c in enumerate(self.choices[term.a])
                       if c.option in term.a_options)
            ib = tuple(i for i, c in enumerate(self.choices[term.b])
                       if c.option in term.b_options)
            if ia and ib and value:
                out.append(((term.a, ia, term.b, ib), value))
        return out

    def boundary_cost(self, chosen: Mapping[str, Choice], metric: str = "latency_ms") -> float:
        """The precision boundaries' latency (or energy) a full plan spends."""
        return sum(term.metric(metric) for term in self.latency_pairs if term.applies(chosen))

    def extra_terms(self, t: int) -> list[tuple[str, int, float]]:
        """(layer, choice index, bytes) of step t's workspace, for the options still offered."""
        if not self.step_extra:
            return []
        index = {}
        for (layer, option), nbytes in self.step_extra[t].items():
            for i, c in enumerate(self.choices[layer]):
                if c.option == option and nbytes:
                    index[layer, i] = nbytes
        return [(ly, i, b) for (ly, i), b in index.items()]

    def _check_coupling(self, layer: str) -> None:
        names = {tuple(sorted(g for g, _ in c.widths)) for c in self.choices[layer]}
        if len(names) > 1:
            raise ValueError(f"layer {layer}: its options name different channel groups "
                             f"{sorted(names)}; every option must name the same groups")
        (groups,) = names
        if len(set(groups)) != len(groups):
            raise ValueError(f"layer {layer}: an option names one channel group twice")

    @property
    def groups(self) -> dict[str, tuple[int, ...]]:
        """Coupled channel group -> the kept widths some member offers (ascending)."""
        widths: dict[str, set[int]] = defaultdict(set)
        for layer in self.layers:
            for c in self.choices[layer]:
                for g, w in c.widths:
                    widths[g].add(w)
        return {g: tuple(sorted(ws)) for g, ws in widths.items()}

    def members(self) -> dict[str, tuple[str, ...]]:
        """Coupled channel group -> the layers whose options name it (execution order)."""
        out: dict[str, list[str]] = defaultdict(list)
        for layer in self.layers:
            for g, _ in self.choices[layer][0].widths:
                out[g].append(layer)
        return {g: tuple(ls) for g, ls in out.items()}

    def coupling_violations(self, chosen: dict[str, Choice]) -> int:
        """How many groups the chosen options give more than one width (0: consistent)."""
        seen: dict[str, set[int]] = defaultdict(set)
        for c in chosen.values():
            for g, w in c.widths:
                seen[g].add(w)
        return sum(len(ws) > 1 for ws in seen.values())

    def totals(self, pick: dict[str, int]) -> dict[str, float]:
        """Exact totals of a full assignment layer -> choice index (the reference evaluation)."""
        chosen = {layer: self.choices[layer][pick[layer]] for layer in self.layers}
        out = {m: self.fixed.get(m, 0.0) + sum(c.metric(m) for c in chosen.values())
               for m in ADDITIVE}
        for m in PAIR_METRICS:
            out[m] += self.boundary_cost(chosen, m)
        out["ram_bytes"] = self.peak_ram(chosen)
        out["acc_loss"] = sum(c.acc_loss for c in chosen.values())
        out["coupling_violations"] = float(self.coupling_violations(chosen))
        return out

    def step_ram(self, chosen: dict[str, Choice], workspace: bool = True) -> list[float]:
        """Bytes at each step; workspace=False: the live tensors only (no step_extra)."""
        weights = sum(c.flash_bytes for c in chosen.values()) if self.weights_in_ram else 0.0
        base = self.fixed.get("ram_bytes", 0.0) + weights
        n_steps = len(self.ram_steps or ((),))
        extra = [sum(b for (ly, o), b in step.items() if chosen[ly].option == o)
                 for step in self.step_extra if workspace] or [0.0] * n_steps
        if workspace and self.step_pairs:
            extra = [e + sum(term.nbytes for term in terms if term.applies(chosen))
                     for e, terms in zip(extra, self.step_pairs, strict=True)]
        live = [sum(n * chosen[owner_layer(owner)].entry_bytes(owner) for owner, n in step)
                for step in self.ram_steps or ((),)]
        return [base + a + e for a, e in zip(live, extra, strict=True)]

    def peak_ram(self, chosen: dict[str, Choice]) -> float:
        return max(self.step_ram(chosen))

    def feasible(self, totals: dict[str, float]) -> bool:
        """Every limit holds and, when the totals say, every coupled group has one width."""
        return totals.get("coupling_violations", 0.0) == 0.0 and all(
            totals[m] <= lim + 1e-9 for m, lim in self.limits.items())

    def with_limits(self, limits: dict[str, float]) -> Problem:
        return replace(self, limits=dict(limits))

    def without_limit(self, name: str) -> Problem:
        return self.with_limits({k: v for k, v in self.limits.items() if k != name})
