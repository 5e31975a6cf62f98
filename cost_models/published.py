"""Published measured latencies (shared/reference/devices.md) as data, and their workloads.

`published_points.yaml` lists every latency row of devices.md that belongs to a catalog device:
device, profile, model, precision, latency, source key, and whether the row is used to *fit*
the analytical model or kept *aside* as an independent test (rows that fit no catalog profile
are listed under `excluded` with the reason). The split rule, applied per (device, profile):

* rows from the primary benchmark studies -- DeepEdgeBench [S-DEB], kentaroy47's TensorRT
  benchmark [S-KY], Idein's aicast benchmark [S-AIC] (`primary_sources`) -- are fitted;
* rows from every other source (ncnn tables, MLPerf logs, the Coral benchmark table, ESP
  kernel tables, ...) are kept aside *when the profile also has primary rows*;
* a profile with no primary rows is fitted on its other rows (and then has nothing kept
  aside).

`check_split_rule` verifies the YAML follows that rule, so the file cannot drift from it.

The workloads are enumerated here layer by layer (MobileNetV1/V2/V3, ResNet-18/34/50, YOLOX-S,
single conv kernels) as :class:`cost_models.graph.Layer` objects -- the same type the planner
costs -- so a published point is predicted with exactly the per-layer roofline of
:mod:`cost_models.analytical`. MAC totals are checked against the published figures
(`published_macs` in the YAML; devices.md where it gives them) by the tests.

Conventions: one MAC per multiply-accumulate; convolutions and fully connected layers only
(batch norm folded into a per-channel bias; pooling, activations, residual adds, upsampling and
concatenation are not layers and are not counted). "same" padding: output = ceil(input / stride).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from cost_models.graph import Layer
from device_specs.quantities import Strict
from device_specs.schema import Precision
from edgefit_common.errors import SpecError
from edgefit_common.yamlio import load_model

POINTS_FILE = Path(__file__).with_name("published_points.yaml")
POINTS_FORMAT = "edgefit-published-points"
POINTS_FORMAT_VERSION = 1
OP_CLASSES = ("conv", "pointwise", "depthwise", "linear")


# --------------------------------------------------------------------------------------------
# workloads: layer-by-layer enumeration


@dataclass(frozen=True)
class Workload:
    """One network at one input size: its weighted layers in execution order."""

    name: str
    input_shape: tuple[int, int, int]  # C, H, W
    layers: tuple[Layer, ...]

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    def macs_by_class(self) -> dict[str, int]:
        out = dict.fromkeys(OP_CLASSES, 0)
        for layer in self.layers:
            out[layer.op_class] = out.get(layer.op_class, 0) + layer.macs
        return out

    def summary(self) -> dict[str, Any]:
        return {"macs": self.macs, "macs_by_class": self.macs_by_class(),
                "params": self.params, "layers": len(self.layers)}


@dataclass
class _Net:
    """A cursor over a feature map (c, h, w) that appends conv / linear layers."""

    name: str
    c: int
    h: int
    w: int
    layers: list[Layer] = field(default_factory=list)

    def conv(self, out: int, k: int, stride: int = 1, groups: int = 1, *,
             padding: Literal["same", "valid"] = "same", c_in: int | None = None,
             hw: tuple[int, int] | None = None, bias: bool = True) -> tuple[int, int, int]:
        """Append a conv reading (c_in or self.c, *hw or current h, w); returns its output."""
        cin = self.c if c_in is None else c_in
        h, w = hw if hw is not None else (self.h, self.w)
        if padding == "same":
            ho, wo = math.ceil(h / stride), math.ceil(w / stride)
        else:
            ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
        if cin % groups or out % groups:
            raise ValueError(f"{self.name}: groups {groups} do not divide {cin} -> {out}")
        weight = out * (cin // groups) * k * k
        if groups > 1 and groups == cin:
            cls = "depthwise"
        elif k == 1:
            cls = "pointwise"
        else:
            cls = "conv"
        b = out if bias else 0
        self.layers.append(Layer(
            name=f"{self.name}.{len(self.layers)}", op_type="Conv2d", op_class=cls,
            params=weight + b, weight_numel=weight, bias_numel=b, out_channels=out,
            macs=ho * wo * weight, input_numel=cin * h * w, output_numel=out * ho * wo))
        self.c, self.h, self.w = out, ho, wo
        return out, ho, wo

    def linear(self, out: int) -> None:
        """Fully connected on the (globally pooled) current features."""
        fan_in = self.c * self.h * self.w
        self.layers.append(Layer(
            name=f"{self.name}.{len(self.layers)}", op_type="Linear", op_class="linear",
            params=fan_in * out + out, weight_numel=fan_in * out, bias_numel=out,
            out_channels=out, macs=fan_in * out, input_numel=fan_in, output_numel=out))
        self.c, self.h, self.w = out, 1, 1

    def pool(self, k: int = 0, stride: int = 1) -> None:
        """Global pooling (k=0) or a k x k / stride pooling with "same" padding (no layer)."""
        if k == 0:
            self.h = self.w = 1
        else:
            self.h, self.w = math.ceil(self.h / stride), math.ceil(self.w / stride)

    def done(self, input_shape: tuple[int, int, int]) -> Workload:
        return Workload(self.name, input_shape, tuple(self.layers))


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Channel rounding of the TF MobileNet implementations."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def mobilenet_v1(alpha: float = 1.0, resolution: int = 224, channels: int = 3,
                 classes: int = 1001, name: str = "mobilenet_v1") -> Workload:
    """MobileNetV1 (Howard et al. 2017, TF-Slim): 3x3 stem, 13 depthwise-separable blocks."""
    def depth(d: int) -> int:
        return max(int(d * alpha), 8)

    net = _Net(name, channels, resolution, resolution)
    net.conv(depth(32), 3, 2)
    for out, stride in [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                        (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]:
        net.conv(net.c, 3, stride, groups=net.c)
        net.conv(depth(out), 1)
    net.pool()
    net.linear(classes)  # the 1x1 "logits" conv of TF-Slim, on 1x1 features
    return net.done((channels, resolution, resolution))


def mobilenet_v2(alpha: float = 1.0, resolution: int = 224, classes: int = 1001,
                 name: str = "mobilenet_v2") -> Workload:
    """MobileNetV2 (Sandler et al. 2018): inverted residual bottlenecks (t, c, n, s)."""
    net = _Net(name, 3, resolution, resolution)
    net.conv(_make_divisible(32 * alpha), 3, 2)
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        out = _make_divisible(c * alpha)
        for i in range(n):
            cin = net.c
            if t != 1:
                net.conv(cin * t, 1)
            net.conv(net.c, 3, s if i == 0 else 1, groups=net.c)
            net.conv(out, 1)
    net.conv(_make_divisible(1280 * max(1.0, alpha)), 1)
    net.pool()
    net.linear(classes)
    return net.done((3, resolution, resolution))


# MobileNetV3 (Howard et al. 2019, Tables 1 and 2): kernel, expansion, out, squeeze-excite, stride
_MNV3 = {
    "large": (16, [(3, 16, 16, False, 1), (3, 64, 24, False, 2), (3, 72, 24, False, 1),
                   (5, 72, 40, True, 2), (5, 120, 40, True, 1), (5, 120, 40, True, 1),
                   (3, 240, 80, False, 2), (3, 200, 80, False, 1), (3, 184, 80, False, 1),
                   (3, 184, 80, False, 1), (3, 480, 112, True, 1), (3, 672, 112, True, 1),
                   (5, 672, 160, True, 2), (5, 960, 160, True, 1), (5, 960, 160, True, 1)],
              960, 1280),
    "small": (16, [(3, 16, 16, True, 2), (3, 72, 24, False, 2), (3, 88, 24, False, 1),
                   (5, 96, 40, True, 2), (5, 240, 40, True, 1), (5, 240, 40, True, 1),
                   (5, 120, 48, True, 1), (5, 144, 48, True, 1), (5, 288, 96, True, 2),
                   (5, 576, 96, True, 1), (5, 576, 96, True, 1)],
              576, 1024),
}


def mobilenet_v3(size: str = "large", resolution: int = 224, classes: int = 1001,
                 name: str = "mobilenet_v3") -> Workload:
    """MobileNetV3-Large/-Small 1.0; squeeze-excite FCs as 1x1 convs on the pooled features."""
    if size not in _MNV3:
        raise ValueError(f"mobilenet_v3 size {size!r}: one of {sorted(_MNV3)}")
    stem, blocks, last, head = _MNV3[size]
    net = _Net(name, 3, resolution, resolution)
    net.conv(stem, 3, 2)
    for k, exp, out, se, stride in blocks:
        if exp != net.c:
            net.conv(exp, 1)
        net.conv(exp, k, stride, groups=exp)
        if se:
            c, h, w = net.c, net.h, net.w
            squeeze = _make_divisible(exp / 4)
            net.conv(squeeze, 1, hw=(1, 1))
            net.conv(exp, 1, hw=(1, 1))
            net.c, net.h, net.w = c, h, w
        net.conv(out, 1)
    net.conv(last, 1)
    net.pool()
    net.conv(head, 1, bias=True)  # 1x1 conv without batch norm on 1x1 features
    net.linear(classes)
    return net.done((3, resolution, resolution))


def resnet(depth: int = 50, resolution: int = 224, classes: int = 1000,
           name: str = "resnet") -> Workload:
    """ResNet-18/34 (basic blocks) and -50 (bottlenecks), stride on the 3x3 (torchvision, "v1.5").

    torchvision's ResNet-50 is the 4.1 GMACs of devices.md; the original "v1" puts the stride
    on the first 1x1 and has ~6 % fewer MACs.
    """
    blocks = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3]}
    if depth not in blocks:
        raise ValueError(f"resnet depth {depth}: one of {sorted(blocks)}")
    bottleneck = depth >= 50
    net = _Net(name, 3, resolution, resolution)
    net.conv(64, 7, 2)
    net.pool(3, 2)
    for stage, n in enumerate(blocks[depth]):
        width = 64 * 2**stage
        out = width * 4 if bottleneck else width
        for i in range(n):
            stride = 2 if (i == 0 and stage > 0) else 1
            cin, h, w = net.c, net.h, net.w
            if bottleneck:
                net.conv(width, 1)
                net.conv(width, 3, stride)
                net.conv(out, 1)
            else:
                net.conv(width, 3, stride)
                net.conv(out, 3)
            if stride != 1 or cin != out:
                c, ho, wo = net.c, net.h, net.w
                net.conv(out, 1, stride, c_in=cin, hw=(h, w))
                net.c, net.h, net.w = c, ho, wo
    net.pool()
    net.linear(classes)
    return net.done((3, resolution, resolution))


def yolox(size: str = "s", resolution: int = 640, classes: int = 80,
          name: str = "yolox") -> Workload:
    """YOLOX (Ge et al. 2021): Focus stem + CSPDarknet, PAFPN, decoupled head, 3 levels.

    Activation (SiLU, or LeakyReLU in Hailo's yolox_s_leaky) does not change the MACs.
    """
    mult = {"s": (0.33, 0.50), "m": (0.67, 0.75), "l": (1.0, 1.0)}
    if size not in mult:
        raise ValueError(f"yolox size {size!r}: one of {sorted(mult)}")
    dep, wid = mult[size]
    base_c, base_d = int(64 * wid), max(round(3 * dep), 1)
    net = _Net(name, 3, resolution, resolution)

    def at(c: int, h: int) -> None:
        net.c, net.h, net.w = c, h, h

    def csp(cin: int, out: int, n: int, h: int) -> int:
        hidden = int(out * 0.5)
        net.conv(hidden, 1, c_in=cin, hw=(h, h))
        net.conv(hidden, 1, c_in=cin, hw=(h, h))
        for _ in range(n):
            net.conv(hidden, 1)
            net.conv(hidden, 3)
        net.conv(out, 1, c_in=2 * hidden, hw=(h, h))
        return out

    # backbone: Focus (space-to-depth 2x2 -> 12 channels) + 3x3 conv
    h = resolution // 2
    net.conv(base_c, 3, c_in=12, hw=(h, h))
    feats = {}
    c = base_c
    for stage, n in enumerate([base_d, base_d * 3, base_d * 3, base_d]):
        net.conv(c * 2, 3, 2)
        c, h = c * 2, net.h
        if stage == 3:  # SPP bottleneck (max pools 5/9/13 are not layers)
            net.conv(c // 2, 1)
            net.conv(c, 1, c_in=(c // 2) * 4, hw=(h, h))
        csp(c, c, n, h)
        at(c, h)
        feats[stage] = (c, h)
    (c3, h3), (c4, h4), (c5, h5) = feats[1], feats[2], feats[3]
    # PAFPN (n = base_d, no shortcut)
    at(c5, h5)
    net.conv(c4, 1)  # lateral_conv0 -> fpn_out0 (c4)
    csp(c4 * 2, c4, base_d, h4)  # C3_p4 on upsample(fpn_out0) ++ dark4
    at(c4, h4)
    net.conv(c3, 1)  # reduce_conv1 -> fpn_out1 (c3)
    csp(c3 * 2, c3, base_d, h3)  # C3_p3 -> pan_out2
    at(c3, h3)
    net.conv(c3, 3, 2)  # bu_conv2
    csp(c3 * 2, c4, base_d, h4)  # C3_n3 on bu_conv2 ++ fpn_out1 -> pan_out1
    at(c4, h4)
    net.conv(c4, 3, 2)  # bu_conv1
    csp(c4 * 2, c5, base_d, h5)  # C3_n4 on bu_conv1 ++ fpn_out0 -> pan_out0
    # decoupled head per level
    hidden = int(256 * wid)
    for cin, hh in [(c3, h3), (c4, h4), (c5, h5)]:
        net.conv(hidden, 1, c_in=cin, hw=(hh, hh))
        for _ in range(2):
            net.conv(hidden, 3)
        net.conv(classes, 1)
        at(hidden, hh)
        for _ in range(2):
            net.conv(hidden, 3)
        net.conv(4, 1, c_in=hidden, hw=(hh, hh))
        net.conv(1, 1, c_in=hidden, hw=(hh, hh))
    return net.done((3, resolution, resolution))


def conv_kernel(in_channels: int, height: int, width: int, out_channels: int, kernel: int,
                depthwise: bool = False, padding: Literal["same", "valid"] = "same",
                name: str = "conv") -> Workload:
    """A single convolution (kernel micro-benchmarks)."""
    net = _Net(name, in_channels, height, width)
    net.conv(out_channels, kernel, groups=in_channels if depthwise else 1, padding=padding)
    return net.done((in_channels, height, width))


BUILDERS = {"mobilenet_v1": mobilenet_v1, "mobilenet_v2": mobilenet_v2,
            "mobilenet_v3": mobilenet_v3, "resnet": resnet, "yolox": yolox,
            "conv_kernel": conv_kernel}


def build_workload(name: str, arch: Mapping[str, Any]) -> Workload:
    """`arch` = {family: <one of BUILDERS>, **arguments of that builder}."""
    args = dict(arch)
    family = args.pop("family", None)
    if family not in BUILDERS:
        raise SpecError(f"model {name!r}: arch.family {family!r} is not one of "
                        f"{', '.join(BUILDERS)}")
    try:
        return BUILDERS[family](**args, name=name)  # type: ignore[operator]
    except (TypeError, ValueError) as exc:
        raise SpecError(f"model {name!r}: {exc}") from None


# --------------------------------------------------------------------------------------------
# the points file


class PublishedMacs(Strict):
    value: float = Field(gt=0)
    source: str | None = None
    derived: str | None = None


class ModelEntry(Strict):
    description: str
    arch: dict[str, Any]
    published_macs: PublishedMacs | None = None
    summary: dict[str, Any] = Field(description="written from the enumeration; tests check it")
    note: str | None = None


class PublishedPoint(Strict):
    device: str
    profile: str
    model: str
    precision: Precision
    latency_ms: float = Field(gt=0)
    source: str
    runtime: str
    statistic: str = "median"
    use: Literal["fit", "aside"]
    note: str | None = None


class ExcludedRow(Strict):
    device: str
    row: str
    source: str
    reason: str


class PointsFile(Strict):
    format: Literal["edgefit-published-points"]
    format_version: Literal[1]
    rule: str
    primary_sources: list[str]
    models: dict[str, ModelEntry]
    points: list[PublishedPoint]
    excluded: list[ExcludedRow] = Field(default_factory=list)


@cache
def load_points_file(path: Path = POINTS_FILE) -> PointsFile:
    data = load_model(path, PointsFile)
    for i, p in enumerate(data.points):
        if p.model not in data.models:
            raise SpecError(f"{path}: points[{i}].model {p.model!r} is not in models")
    return data


@cache
def workload(name: str, path: Path = POINTS_FILE) -> Workload:
    entry = load_points_file(path).models.get(name)
    if entry is None:
        raise SpecError(f"{path}: no model {name!r}")
    return build_workload(name, entry.arch)


def points(device: str | None = None, profile: str | None = None,
           use: str | None = None, path: Path = POINTS_FILE) -> list[PublishedPoint]:
    return [p for p in load_points_file(path).points
            if (device is None or p.device == device) and (profile is None or p.profile == profile)
            and (use is None or p.use == use)]


def expected_use(point: PublishedPoint, profile_points: list[PublishedPoint],
                 primary: list[str]) -> str:
    """The split rule (module docstring) for one point among its profile's points."""
    has_primary = any(q.source in primary for q in profile_points)
    return "fit" if (point.source in primary or not has_primary) else "aside"


def check_split_rule(path: Path = POINTS_FILE) -> list[str]:
    """Points whose `use` disagrees with the rule (empty when the file follows it)."""
    data = load_points_file(path)
    bad = []
    for p in data.points:
        group = [q for q in data.points if (q.device, q.profile) == (p.device, p.profile)]
        want = expected_use(p, group, data.primary_sources)
        if p.use != want:
            bad.append(f"{p.device}/{p.profile} {p.model} {p.precision} [{p.source}]: "
                       f"use {p.use}, rule says {want}")
    return bad


def models_summary_yaml(path: Path = POINTS_FILE) -> dict[str, dict[str, Any]]:
    """What each model's `summary` in the YAML must be (computed from the enumeration)."""
    return {name: build_workload(name, m.arch).summary()
            for name, m in load_points_file(path).models.items()}
