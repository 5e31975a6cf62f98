"""Coupled channel groups as planning data: which kept widths each group is offered.

techniques.prune.coupling finds the groups (layers that share channels through residual adds,
depthwise convs, BatchNorm, flatten -> Linear); here each gets its widths: full, plus each kept
fraction rounded to the device profile's preferred_channel_multiple. Plain data, no torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from techniques.prune import ChannelPruneConfig, CoupledGroup, kept_channels

# Kept fractions of a coupled channel group offered besides full width, before rounding the kept
# count to the profile's preferred_channel_multiple.
CHANNEL_KEEP_FRACTIONS: tuple[float, ...] = (0.75, 0.5)
MAX_PRUNE_RATIO = 0.9  # ChannelPruneConfig's own bound


@dataclass(frozen=True)
class ChannelGroupSpec:
    """A coupled channel group with the widths offered to it."""

    name: str  # its first layer's name
    channels: int
    multiple: int  # kept counts are multiples of this (or the full count)
    widths: tuple[int, ...]  # ascending; the last is `channels`
    layers: tuple[str, ...]  # output channels are these
    consumers: tuple[str, ...]  # input channels are these
    depthwise: tuple[str, ...]

    def prune_config(self, width: int) -> ChannelPruneConfig:
        """The config that keeps exactly `width` channels (kept_channels reproduces it)."""
        cfg = ChannelPruneConfig(ratio=(self.channels - width) / self.channels,
                                 round_to=self.multiple)
        if kept_channels(self.channels, cfg.ratio, cfg.round_to) != width:
            raise ValueError(f"group {self.name}: no config keeps {width} of {self.channels}")
        return cfg


@dataclass(frozen=True)
class LayerCoupling:
    """The channel groups one layer's geometry depends on."""

    out: ChannelGroupSpec | None  # the group of its output channels
    ins: tuple[ChannelGroupSpec, ...]  # groups of its input channels
    depthwise: bool  # its input channels are its output channels (they scale once)

    @property
    def groups(self) -> tuple[ChannelGroupSpec, ...]:
        both = ((self.out,) if self.out is not None else ()) + self.ins
        return tuple({g.name: g for g in both}.values())

    def fractions(self, kept: dict[str, int]) -> tuple[float, float, float]:
        """(output, weight/MAC, input-tensor) kept fractions at these group widths."""
        f_out = kept[self.out.name] / self.out.channels if self.out is not None else 1.0
        f_in = 1.0
        for g in self.ins:
            if not (self.depthwise and self.out is not None and g.name == self.out.name):
                f_in *= kept[g.name] / g.channels
        return f_out, f_out * f_in, f_out if self.depthwise else f_in


def group_widths(channels: int, multiple: int,
                 keep_fractions: Iterable[float] = CHANNEL_KEEP_FRACTIONS) -> tuple[int, ...]:
    """Full width plus each kept fraction rounded to a multiple of `multiple`; never zero. A
    group narrower than the multiple stays at full width only."""
    widths = {channels}
    for f in keep_fractions:
        kept = kept_channels(channels, 1.0 - f, multiple)
        if (0 < kept < channels and kept % multiple == 0
                and channels - kept <= MAX_PRUNE_RATIO * channels):
            widths.add(kept)
    return tuple(sorted(widths))


def channel_group_specs(groups: Iterable[CoupledGroup], multiple: int,
                        keep_fractions: Iterable[float] = CHANNEL_KEEP_FRACTIONS
                        ) -> list[ChannelGroupSpec]:
    fractions = tuple(keep_fractions)
    return [ChannelGroupSpec(g.layers[0], g.channels, multiple,
                             group_widths(g.channels, multiple, fractions), g.layers,
                             g.consumers, g.depthwise) for g in groups]


def layer_couplings(groups: Iterable[ChannelGroupSpec]) -> dict[str, LayerCoupling]:
    """Layer -> the groups of its output and input channels (groups with one width: none)."""
    out: dict[str, ChannelGroupSpec] = {}
    ins: dict[str, list[ChannelGroupSpec]] = {}
    dw: set[str] = set()
    for g in groups:
        if len(g.widths) < 2:
            continue
        dw.update(g.depthwise)
        for n in g.layers:
            out[n] = g
        for n in g.consumers:
            ins.setdefault(n, []).append(g)
    return {n: LayerCoupling(out.get(n), tuple(ins.get(n, ())), n in dw)
            for n in sorted(set(out) | set(ins))}


def width_tag(coupling: LayerCoupling, kept: dict[str, int]) -> str:
    """Option-name suffix: "+w12" keeps 12 output channels, "+in24" reads 24 input channels."""
    tag = ""
    if coupling.out is not None and kept[coupling.out.name] < coupling.out.channels:
        tag += f"+w{kept[coupling.out.name]}"
    for g in coupling.ins:
        if g is not coupling.out and kept[g.name] < g.channels:
            tag += f"+in{kept[g.name]}"
    return tag
